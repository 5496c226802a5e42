"""The 10-character tokens mailed to a user: confirmation, email change, password reset.

Only a token's SHA-256 is stored. A token is valid until it expires, is used,
or a newer token of the same purpose supersedes it. Using one marks it used in
the caller's transaction, so a token works once even under concurrent use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import asyncpg

from protocols.errors import ErrorCode

from ..errors import ApiError
from .secrets import new_email_token, token_hash


class Purpose(StrEnum):
    CONFIRM = "confirm"
    EMAIL_CHANGE = "email_change"
    PASSWORD_RESET = "password_reset"


# What a password reset or a logout of every device cancels: links that change the account.
# (A pending confirmation link stays: it only proves the user reads the address.)
ACCOUNT_CHANGES = (Purpose.EMAIL_CHANGE, Purpose.PASSWORD_RESET)


@dataclass(frozen=True, slots=True)
class EmailToken:
    user_id: int
    new_email: str | None


_VALID = "token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()"


async def issue(
    conn: asyncpg.Connection, user_id: int, purpose: Purpose, *, hours: int, new_email: str | None = None
) -> str:
    """A new token for the user; earlier unused tokens of the purpose stop working."""
    await revoke(conn, user_id, purpose)
    token = new_email_token()
    await conn.execute(
        """INSERT INTO email_tokens (token_hash, user_id, purpose, new_email, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5::interval)""",
        token_hash(token), user_id, purpose.value, new_email, timedelta(hours=hours),
    )
    return token


async def revoke(conn: asyncpg.Connection, user_id: int, *purposes: Purpose) -> None:
    """End the user's unused tokens of these purposes (of every purpose when none is given)."""
    names = [p.value for p in purposes or tuple(Purpose)]
    await conn.execute(
        "UPDATE email_tokens SET used_at = now() WHERE user_id = $1 AND purpose = ANY($2) AND used_at IS NULL",
        user_id, names,
    )


async def peek(conn: asyncpg.Connection, token: str, purpose: Purpose) -> EmailToken:
    """A valid token's content, leaving it unused; 400 code 11 otherwise."""
    row = await conn.fetchrow(
        f"SELECT user_id, new_email FROM email_tokens WHERE {_VALID}", token_hash(token), purpose.value
    )
    return _found(row)


async def use(conn: asyncpg.Connection, token: str, purpose: Purpose, *, new_email: str | None = None) -> EmailToken:
    """Mark a valid token used and return its content; 400 code 11 otherwise.

    With ``new_email``, only a token made for that address qualifies (and a
    mismatch leaves the token unused).
    """
    row = await conn.fetchrow(
        f"""UPDATE email_tokens SET used_at = now()
            WHERE {_VALID} AND ($3::text IS NULL OR new_email = $3)
            RETURNING user_id, new_email""",
        token_hash(token), purpose.value, new_email,
    )
    return _found(row)


def _found(row: asyncpg.Record | None) -> EmailToken:
    if row is None:
        raise ApiError(ErrorCode.INVALID_EMAIL_TOKEN)
    return EmailToken(int(row["user_id"]), row["new_email"])
