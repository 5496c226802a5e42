"""Keys derived from the service secret, opaque tokens and their hashes."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string

from cryptography.fernet import Fernet, InvalidToken

EMAIL_TOKEN_ALPHABET = string.ascii_letters + string.digits
EMAIL_TOKEN_LENGTH = 10


def derive_key(secret_key: str, purpose: str) -> bytes:
    """A 32-byte key for one purpose, so that no two uses share a key."""
    return hmac.new(secret_key.encode(), purpose.encode(), hashlib.sha256).digest()


def token_hash(token: str) -> bytes:
    """What the database stores of a token: its SHA-256."""
    return hashlib.sha256(token.encode()).digest()


def new_email_token() -> str:
    """The 10-character token of confirmation, email-change and password-reset mails."""
    return "".join(secrets.choice(EMAIL_TOKEN_ALPHABET) for _ in range(EMAIL_TOKEN_LENGTH))


def new_opaque_token() -> str:
    return secrets.token_urlsafe(32)


class SecretBox:
    """Symmetric encryption of secrets that must be read back (TOTP keys)."""

    def __init__(self, secret_key: str) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, "knot-rt/secret-box")))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, sealed: str) -> str | None:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None
