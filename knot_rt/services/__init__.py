"""Domain services: accounts, sessions, mail, second factor, social login, permissions."""
