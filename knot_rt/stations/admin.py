"""Creating stations and rotating their secrets.

A station secret is a device secret (``knot_rt/devices/credentials.py``, shared
with the free-floating vehicles): 32 random URL-safe characters, stored as its
SHA-256, compared in constant time.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from protocols.errors import ErrorCode

from ..devices.credentials import hash_device_secret, new_device_secret
from ..errors import ApiError


@dataclass(frozen=True, slots=True)
class NewStation:
    station_id: int
    secret: str
    spot_ids: list[int]


async def create_station(
    conn: asyncpg.Connection, cluster_id: int, spot_count: int, *, version: str = "v6",
    first_displayed_number: int = 1,
) -> NewStation:
    """A station with its spots numbered 1..N (asyncio side, inside a transaction)."""
    if not 1 <= spot_count <= 32:
        raise ApiError(ErrorCode.INVALID_INPUT, "a station has 1 to 32 spots")
    if await conn.fetchval("SELECT 1 FROM clusters WHERE id = $1", cluster_id) is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no cluster {cluster_id}")
    secret = new_device_secret()
    station_id: int = await conn.fetchval(
        """INSERT INTO stations (cluster_id, secret_hash, version, spot_count)
           VALUES ($1, $2, $3, $4) RETURNING id""",
        cluster_id, hash_device_secret(secret), version, spot_count,
    )
    spot_ids = [
        await conn.fetchval(
            "INSERT INTO spots (station_id, number, displayed_number) VALUES ($1, $2, $3) RETURNING id",
            station_id, number, first_displayed_number + number - 1,
        )
        for number in range(1, spot_count + 1)
    ]
    return NewStation(station_id, secret, spot_ids)


async def rotate_station_secret(conn: asyncpg.Connection, station_id: int) -> str:
    secret = new_device_secret()
    status = await conn.execute(
        "UPDATE stations SET secret_hash = $2 WHERE id = $1", station_id, hash_device_secret(secret)
    )
    if status.endswith(" 0"):
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    return secret
