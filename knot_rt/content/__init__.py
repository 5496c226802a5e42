"""Content domain: app labels (white labels), the FAQ and global announcements; read-only for the apps."""
