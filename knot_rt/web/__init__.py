"""HTTP plumbing shared by every blueprint: errors, authentication, the app factory."""
