"""PostgreSQL persistence of the station actors (their ``StationStore``)."""

from __future__ import annotations

from typing import Any

import asyncpg

from actors.station import Changes, FeedItem, SpotView, StationView, VehicleReading
from protocols.feed import Topic

from ..devices.messages import STATION_MESSAGES
from ..uow import UnitOfWork, Work


def _view(station: asyncpg.Record, spots: list[asyncpg.Record]) -> StationView:
    state = station["last_state"] or {}
    return StationView(
        station_id=station["id"],
        cluster_id=station["cluster_id"],
        enabled=station["enabled"],
        online=station["online"],
        last_seen_ms=int(station["last_seen_at"].timestamp() * 1000) if station["last_seen_at"] else None,
        spots=tuple(
            SpotView(
                number=s["number"], spot_id=s["id"], vehicle=s["vehicle_id"], lock=s["lock_status"],
                in_maintenance=s["in_maintenance"], is_accessible=s["is_accessible"],
            )
            for s in spots
        ),
        vehicles=tuple(
            VehicleReading(v["vehicle"], v["voltage"], v.get("battery")) for v in state.get("vehicles", [])
        ),
        mainboard=state.get("mainboard"),
        connectivity=state.get("connectivity"),
        firmware=station["firmware"],
    )


async def load_station(conn: asyncpg.Connection, station_id: int) -> StationView | None:
    station = await conn.fetchrow("SELECT * FROM stations WHERE id = $1", station_id)
    if station is None:
        return None
    spots = await conn.fetch("SELECT * FROM spots WHERE station_id = $1 ORDER BY number", station_id)
    return _view(station, spots)


async def load_all_stations(conn: asyncpg.Connection) -> list[StationView]:
    stations = await conn.fetch("SELECT * FROM stations ORDER BY id")
    spots = await conn.fetch("SELECT * FROM spots ORDER BY station_id, number")
    by_station: dict[int, list[asyncpg.Record]] = {}
    for spot in spots:
        by_station.setdefault(spot["station_id"], []).append(spot)
    return [_view(s, by_station.get(s["id"], [])) for s in stations]


async def _apply_changes(conn: asyncpg.Connection, station_id: int, changes: Changes) -> None:
    """Spots and the station's last state; the vehicles' rows belong to the vehicle actors."""
    await conn.executemany(
        "UPDATE spots SET vehicle_id = $3, lock_status = $4 WHERE station_id = $1 AND number = $2",
        [(station_id, spot.number, spot.vehicle, spot.lock) for spot in changes.spots],
    )
    if changes.state is not None:
        await conn.execute(
            "UPDATE stations SET last_state = $2, last_seen_at = now() WHERE id = $1", station_id, changes.state
        )
    else:
        await conn.execute("UPDATE stations SET last_seen_at = now() WHERE id = $1", station_id)


class PgStationStore:
    def __init__(self, work: Work) -> None:
        self._db = work.db
        self._work = work

    async def load(self, station_id: int) -> StationView | None:
        return await self._db.run(lambda conn: load_station(conn, station_id))

    async def record(
        self, station_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        changes: Changes, feed: FeedItem | None = None,
    ) -> dict[str, Any] | None:
        topic = Topic.station(station_id)

        async def record(uow: UnitOfWork) -> dict[str, Any] | None:
            conn = uow.conn
            earlier = await STATION_MESSAGES.record(conn, station_id, message_id, action, payload, result)
            if earlier is not None:
                return earlier
            await _apply_changes(conn, station_id, changes)
            if feed is not None:
                await uow.publish(topic, feed.event, feed.data)
            return None

        return await self._work.run(record, topics=[topic])

    async def set_online(self, station_id: int, online: bool, *, firmware: dict[str, Any] | None = None) -> None:
        await self._db.execute(
            """UPDATE stations SET online = $2, last_seen_at = now(), firmware = coalesce($3, firmware)
               WHERE id = $1""",
            station_id, online, firmware,
        )

    async def next_unlock_id(self) -> int:
        value: int = await self._db.fetchval("SELECT nextval('station_unlock_ids')")
        return value

    async def set_spot_maintenance(self, station_id: int, spot: int, in_maintenance: bool) -> None:
        await self._db.execute(
            "UPDATE spots SET in_maintenance = $3 WHERE station_id = $1 AND number = $2",
            station_id, spot, in_maintenance,
        )

    async def secret_hash(self, station_id: int) -> str | None:
        found: str | None = await self._db.fetchval("SELECT secret_hash FROM stations WHERE id = $1", station_id)
        return found

    async def secret_hashes(self, station_ids: list[int]) -> dict[int, str]:
        """The stored secret hash of each station that still exists."""
        rows = await self._db.fetch("SELECT id, secret_hash FROM stations WHERE id = ANY($1::bigint[])", station_ids)
        return {row["id"]: row["secret_hash"] for row in rows}

    async def prune_messages(self) -> int:
        return await STATION_MESSAGES.prune(self._db)
