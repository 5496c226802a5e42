"""Accounts: creation, lookup, confirmation state."""

from __future__ import annotations

import asyncpg

from protocols.errors import ErrorCode

from ..errors import ApiError
from .permissions import grant


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def find_user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM users WHERE lower(email) = $1", normalize_email(email)
    )
    return row


async def app_label_id(conn: asyncpg.Connection, name: str | None) -> int | None:
    """The id of an app label by its name; unknown names are an error, None stays None."""
    if name is None:
        return None
    found: int | None = await conn.fetchval("SELECT id FROM app_labels WHERE name = $1", name)
    if found is None:
        raise ApiError(ErrorCode.UNKNOWN_APP_LABEL)
    return found


async def insert_user(
    conn: asyncpg.Connection,
    email: str,
    password_hash: str | None,
    *,
    confirmed: bool,
    lang: str = "en",
    app_label: int | None = None,
) -> int:
    try:
        user_id: int = await conn.fetchval(
            """INSERT INTO users (email, password_hash, email_confirmed_at, lang, app_label_id)
               VALUES ($1, $2, CASE WHEN $3 THEN now() END, $4, $5) RETURNING id""",
            normalize_email(email), password_hash, confirmed, lang.lower(), app_label,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(ErrorCode.EMAIL_ALREADY_USED) from exc
    return user_id


async def create_confirmed_user(
    conn: asyncpg.Connection,
    email: str,
    password_hash: str,
    *,
    perms: list[tuple[str, bool]] = [],  # noqa: B006 - read only
    networks: list[int] = [],  # noqa: B006
) -> int:
    """An operator-made account: confirmed, with permissions on the given networks."""
    user_id = await insert_user(conn, email, password_hash, confirmed=True)
    for key, write in perms:
        await grant(conn, user_id, key, write=write, networks=networks)
    return user_id
