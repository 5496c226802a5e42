"""Accounts: creation, lookup, confirmation state."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

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


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the account routes and mails see it, with its app label."""

    user_id: int
    email: str
    lang: str
    email_confirmed: bool
    two_factor_enabled: bool
    app_label: str | None
    label_name: str | None
    android_store_url: str | None
    ios_store_url: str | None


_ACCOUNT_SQL = """
    SELECT u.id AS user_id, u.email, u.lang, u.email_confirmed_at IS NOT NULL AS email_confirmed,
           u.totp_secret IS NOT NULL AS two_factor_enabled, l.name AS app_label, l.label_name,
           l.android_store_url, l.ios_store_url
    FROM users u LEFT JOIN app_labels l ON l.id = u.app_label_id
"""


async def load_account(conn: asyncpg.Connection, user_id: int) -> Account | None:
    row = await conn.fetchrow(_ACCOUNT_SQL + " WHERE u.id = $1", user_id)
    return None if row is None else Account(**dict(row))


async def account_by_email(conn: asyncpg.Connection, email: str) -> Account | None:
    row = await conn.fetchrow(_ACCOUNT_SQL + " WHERE lower(u.email) = $1", normalize_email(email))
    return None if row is None else Account(**dict(row))


async def organization_name(conn: asyncpg.Connection, email: str) -> str | None:
    """The organisation whose ``email_domain`` is the address's domain, if any."""
    domain = normalize_email(email).rpartition("@")[2]
    name: str | None = await conn.fetchval(
        "SELECT name FROM organizations WHERE lower(email_domain) = $1", domain
    )
    return name


async def mark_email_confirmed(conn: asyncpg.Connection, user_id: int) -> None:
    await conn.execute(
        "UPDATE users SET email_confirmed_at = COALESCE(email_confirmed_at, now()) WHERE id = $1", user_id
    )


async def change_email(conn: asyncpg.Connection, user_id: int, email: str) -> None:
    """Give the account a new address, confirmed (the user proved they read it)."""
    try:
        await conn.execute(
            "UPDATE users SET email = $2, email_confirmed_at = now() WHERE id = $1", user_id, normalize_email(email)
        )
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(ErrorCode.EMAIL_ALREADY_USED) from exc


async def set_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What re-authenticating a logged-in user checks: the password, or for a social-only account
    (no password) a current second-factor code or a login of the last few minutes."""

    email: str
    password_hash: str | None
    two_factor_enabled: bool
    recent_login: bool  # the caller's session opened within the window asked for


async def load_credentials(
    conn: asyncpg.Connection, user_id: int, session_id: object, recent: timedelta
) -> Credentials | None:
    row = await conn.fetchrow(
        """SELECT u.email, u.password_hash, u.totp_secret IS NOT NULL AS two_factor_enabled,
                  COALESCE(s.created_at > now() - $3::interval, false) AS recent_login
           FROM users u LEFT JOIN sessions s ON s.id = $2 AND s.user_id = u.id AND s.revoked_at IS NULL
           WHERE u.id = $1""",
        user_id, session_id, recent,
    )
    return None if row is None else Credentials(**dict(row))
