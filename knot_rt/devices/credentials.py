"""Device secrets: the password half of a station's or a vehicle's HTTP Basic credentials.

A secret is 32 random URL-safe characters (192 bits), shown once when it is
issued (``knot-rt station create``, ``knot-rt vehicle create --free-floating``,
their ``secret`` commands) and stored as its SHA-256. Being random and long, a
slow password hash would add nothing but CPU cost at every reconnect of
thousands of devices; the comparison is in constant time
(``hmac.compare_digest``), so the answer's timing tells nothing of the hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

SECRET_BYTES = 24  # 32 characters once encoded: more than a protocol's MIN_SECRET_LENGTH (16)


def new_device_secret() -> str:
    return secrets.token_urlsafe(SECRET_BYTES)


def hash_device_secret(secret: str) -> str:
    """The stored form of a secret (hex SHA-256 of its UTF-8 bytes; a lone surrogate is kept, not an error)."""
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def device_secret_matches(secret: str, stored_hash: str) -> bool:
    return hmac.compare_digest(hash_device_secret(secret), stored_hash)
