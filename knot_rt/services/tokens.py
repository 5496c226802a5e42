"""Signed tokens: access JWTs and the narrow purpose tokens of the login steps.

Access token: HS256 JWT ``{user_id, session_id, iat, exp}``, one hour. It is
valid only while its session is not revoked (checked on every request).
Purpose tokens (email-confirmation resend, second factor, unsubscribe) carry a
``typ`` claim and no ``session_id``: an access check refuses them, and each
purpose check refuses every other kind.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from protocols.errors import ErrorCode

from ..errors import ApiError
from .secrets import derive_key

ALGORITHM = "HS256"

PURPOSE_CONFIRM = "confirm"  # resend the confirmation mail (login answered code 7)
PURPOSE_MFA = "mfa"  # second factor (login answered code 146)
PURPOSE_UNSUBSCRIBE = "unsubscribe"  # consents from a newsletter link


@dataclass(frozen=True, slots=True)
class AccessClaims:
    user_id: int
    session_id: uuid.UUID


class TokenSigner:
    def __init__(self, secret_key: str, *, access_seconds: int = 3600) -> None:
        self._key = derive_key(secret_key, "knot-rt/jwt")
        self.access_seconds = access_seconds
        # Access tokens read already (their signature checked): token -> (exp, claims). A client sends the
        # same token on every request for an hour; its expiry is still checked on every use.
        self._read: dict[str, tuple[int, AccessClaims]] = {}
        self.read_limit = 100_000

    def _encode(self, claims: dict[str, Any], lifetime: int) -> str:
        now = int(time.time())
        return jwt.encode({**claims, "iat": now, "exp": now + lifetime}, self._key, algorithm=ALGORITHM)

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token, self._key, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "user_id"]}
            )
        except jwt.PyJWTError as exc:
            raise ApiError(ErrorCode.INVALID_TOKEN) from exc

    def access_token(self, user_id: int, session_id: uuid.UUID) -> str:
        return self._encode({"user_id": user_id, "session_id": str(session_id)}, self.access_seconds)

    def read_access(self, token: str) -> AccessClaims:
        known = self._read.get(token)
        if known is not None:
            if time.time() < known[0]:
                return known[1]
            del self._read[token]
        claims = self._decode(token)
        if "typ" in claims or "session_id" not in claims:
            raise ApiError(ErrorCode.INVALID_TOKEN)
        try:
            access = AccessClaims(int(claims["user_id"]), uuid.UUID(str(claims["session_id"])))
            expires = int(claims["exp"])
        except (TypeError, ValueError) as exc:
            raise ApiError(ErrorCode.INVALID_TOKEN) from exc
        if len(self._read) >= self.read_limit:
            del self._read[next(iter(self._read))]  # the oldest read
        self._read[token] = (expires, access)
        return access

    def purpose_token(self, purpose: str, user_id: int, lifetime: int, **extra: Any) -> str:
        return self._encode({"user_id": user_id, "typ": purpose, **extra}, lifetime)

    def read_purpose(self, token: str, purpose: str) -> dict[str, Any]:
        claims = self._decode(token)
        if claims.get("typ") != purpose or "session_id" in claims:
            raise ApiError(ErrorCode.INVALID_TOKEN)
        return claims
