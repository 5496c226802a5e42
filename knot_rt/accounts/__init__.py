"""Accounts domain: users, sessions, mailed tokens, the second factor, consents.

``store.py`` holds its SQL, ``service.py`` (``AccountService``) is the one entry
point; ``totp.py`` (codes and the wrong-code lock's rule) and ``notifications.py``
(the account mails) are its pure parts.
"""
