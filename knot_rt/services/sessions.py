"""Login sessions and their rotating refresh tokens.

A session is one device's login. Its refresh tokens form one family: each use
marks the token used and issues the next; presenting a used token again means
it leaked, so the whole session is revoked. Revoking a session ends its access
tokens at once, since every request checks the session.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from protocols.errors import ErrorCode

from ..errors import ApiError
from .permissions import load_permissions
from .secrets import new_opaque_token, token_hash
from .tokens import TokenSigner


@dataclass(frozen=True, slots=True)
class Device:
    id: str | None = None
    os: str | None = None
    model: str | None = None
    app_version: str | None = None


async def _new_refresh_token(conn: asyncpg.Connection, session_id: uuid.UUID, days: int) -> str:
    token = new_opaque_token()
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, now() + $3::interval)",
        token_hash(token), session_id, timedelta(days=days),
    )
    return token


async def open_session(
    conn: asyncpg.Connection,
    signer: TokenSigner,
    user_id: int,
    *,
    scope: str,
    device: Device,
    app_label_id: int | None,
    refresh_days: int,
) -> dict[str, Any]:
    """Create a session and answer as the login routes do."""
    session_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO sessions (id, user_id, scope, device_id, device_os, device_model, app_version, app_label_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        session_id, user_id, scope, device.id, device.os, device.model, device.app_version, app_label_id,
    )
    refresh = await _new_refresh_token(conn, session_id, refresh_days)
    permissions = await load_permissions(conn, user_id)
    return {
        "token": signer.access_token(user_id, session_id),
        "refresh_token": refresh,
        "user_id": user_id,
        "permissions": permissions.as_json(),
    }


async def active_session_user(conn: asyncpg.Connection, session_id: uuid.UUID) -> int | None:
    row = await conn.fetchrow(
        "SELECT user_id FROM sessions WHERE id = $1 AND revoked_at IS NULL", session_id
    )
    return None if row is None else int(row["user_id"])


async def rotate_refresh_token(
    conn: asyncpg.Connection, signer: TokenSigner, presented: str, *, refresh_days: int
) -> tuple[str, str] | uuid.UUID:
    """(access token, next refresh token); or, for a token used before, the id of its session, now revoked.

    Must run inside a transaction: the token row is locked while it is rotated.
    """
    row = await conn.fetchrow(
        """SELECT r.session_id, r.used_at, r.expires_at < now() AS expired, s.user_id, s.revoked_at
           FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
           WHERE r.token_hash = $1 FOR UPDATE OF r""",
        token_hash(presented),
    )
    if row is None or row["revoked_at"] is not None or row["expired"]:
        raise ApiError(ErrorCode.INVALID_TOKEN)
    if row["used_at"] is not None:
        await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", row["session_id"]
        )
        revoked: uuid.UUID = row["session_id"]
        return revoked
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash(presented))
    await conn.execute("UPDATE sessions SET last_seen_at = now() WHERE id = $1", row["session_id"])
    refresh = await _new_refresh_token(conn, row["session_id"], refresh_days)
    return signer.access_token(int(row["user_id"]), row["session_id"]), refresh


async def revoke_sessions(conn: asyncpg.Connection, user_id: int, device_id: str | None = None) -> list[uuid.UUID]:
    """Revoke one device's sessions, or every session of the user."""
    if device_id is None:
        rows = await conn.fetch(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
            user_id,
        )
    else:
        rows = await conn.fetch(
            """UPDATE sessions SET revoked_at = now()
               WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL RETURNING id""",
            user_id, device_id,
        )
    return [r["id"] for r in rows]


async def update_device(conn: asyncpg.Connection, session_id: uuid.UUID, device: Device) -> None:
    """Record what a session's device now reports; fields it leaves out keep their value."""
    await conn.execute(
        """UPDATE sessions SET device_id = COALESCE($2, device_id), device_os = COALESCE($3, device_os),
                  device_model = COALESCE($4, device_model), app_version = COALESCE($5, app_version),
                  last_seen_at = now()
           WHERE id = $1""",
        session_id, device.id, device.os, device.model, device.app_version,
    )
