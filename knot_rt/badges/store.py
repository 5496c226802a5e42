"""PostgreSQL of the badges domain (SQL only, asyncio side).

A badge's UID is never stored nor looked up in clear: callers pass its keyed
hash (``service.uid_hash``).
"""

from __future__ import annotations

import asyncpg

BADGE_COLUMNS = "id, name, masked_uid, created_at"


async def badges_of(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """The user's badges, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {BADGE_COLUMNS} FROM badges WHERE user_id = $1 ORDER BY id", user_id
    )
    return rows


async def rename(conn: asyncpg.Connection, user_id: int, badge_id: int, name: str) -> bool:
    """False when the user has no such badge (unknown, or another user's)."""
    found = await conn.fetchval(
        "UPDATE badges SET name = $3 WHERE id = $1 AND user_id = $2 RETURNING true", badge_id, user_id, name
    )
    return bool(found)


async def delete(conn: asyncpg.Connection, user_id: int, badge_id: int) -> bool:
    """False when the user has no such badge (unknown, or another user's)."""
    found = await conn.fetchval("DELETE FROM badges WHERE id = $1 AND user_id = $2 RETURNING true", badge_id, user_id)
    return bool(found)


async def link(
    conn: asyncpg.Connection, user_id: int, uid_hash: bytes, masked_uid: str, name: str
) -> asyncpg.Record | None:
    """Link the badge to the user and return its row; None when it belongs to another account.

    A badge the user already has is linked again under the new name (one row, same id).
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""INSERT INTO badges (user_id, uid_hash, masked_uid, name) VALUES ($1, $2, $3, $4)
            ON CONFLICT (uid_hash) DO UPDATE SET name = EXCLUDED.name WHERE badges.user_id = EXCLUDED.user_id
            RETURNING {BADGE_COLUMNS}""",
        user_id, uid_hash, masked_uid, name,
    )
    return row


async def owner_of(conn: asyncpg.Connection, uid_hash: bytes) -> int | None:
    found: int | None = await conn.fetchval("SELECT user_id FROM badges WHERE uid_hash = $1", uid_hash)
    return found


async def spot_station(conn: asyncpg.Connection, cluster_id: int, spot_id: int) -> asyncpg.Record | None:
    """The spot's number and its station (id, version), when the spot is in a station of the cluster."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT st.id AS station_id, st.version, s.number
           FROM spots s JOIN stations st ON st.id = s.station_id
           WHERE s.id = $1 AND st.cluster_id = $2""",
        spot_id, cluster_id,
    )
    return row


async def cluster_stations(conn: asyncpg.Connection, cluster_id: int) -> list[asyncpg.Record]:
    """The cluster's stations (id, version) by id."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, version FROM stations WHERE cluster_id = $1 ORDER BY id", cluster_id
    )
    return rows
