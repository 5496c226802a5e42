"""PostgreSQL persistence of the vehicles' live state: SQL only.

A vehicle's row (battery, voltage, online, spot, position) is written by its
actor only (``PgVehicleStore.save``); ``load_records`` reads every row at once
for the live read model (``live.LiveVehicles``) at start and on a catalog
reload; ``network_vehicles`` tells the station side which ids it reports are
vehicles of the station's network.
"""

from __future__ import annotations

import asyncpg

from actors.vehicle import VehicleRecord, VehicleView

from ..db import Database

_RECORD = """SELECT v.id, v.battery_level, v.voltage, v.avg_max_range, v.online, v.latitude, v.longitude,
                    s.id AS spot_id, s.number AS spot_number, s.station_id
             FROM vehicles v LEFT JOIN spots s ON s.id = v.spot_id"""


def _record(row: asyncpg.Record) -> VehicleRecord:
    return VehicleRecord(
        battery_level=row["battery_level"], voltage=row["voltage"], avg_max_range=row["avg_max_range"] or 0,
        station_id=row["station_id"], spot_id=row["spot_id"], spot_number=row["spot_number"],
        latitude=row["latitude"], longitude=row["longitude"], online=row["online"],
    )


async def load_record(conn: asyncpg.Connection, vehicle_id: int) -> VehicleRecord | None:
    row = await conn.fetchrow(_RECORD + " WHERE v.id = $1", vehicle_id)
    return None if row is None else _record(row)


async def load_records(conn: asyncpg.Connection) -> dict[int, VehicleRecord]:
    """Every vehicle's saved state, by id."""
    return {row["id"]: _record(row) for row in await conn.fetch(_RECORD)}


async def network_vehicles(conn: asyncpg.Connection, station_id: int, vehicle_ids: list[int]) -> set[int]:
    """Which of ``vehicle_ids`` are vehicles of the network of ``station_id``."""
    rows = await conn.fetch(
        """SELECT v.id FROM vehicles v
           JOIN clusters c ON c.network_id = v.network_id
           JOIN stations s ON s.cluster_id = c.id
           WHERE s.id = $1 AND v.id = ANY($2::bigint[])""",
        station_id, vehicle_ids,
    )
    return {row["id"] for row in rows}


class PgVehicleStore:
    """The vehicle actors' ``VehicleStore``."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def load(self, vehicle_id: int) -> VehicleRecord | None:
        return await self._db.run(lambda conn: load_record(conn, vehicle_id))

    async def save(self, view: VehicleView) -> None:
        await self._db.execute(
            """UPDATE vehicles SET battery_level = $2, voltage = $3, online = $4, spot_id = $5,
                                   latitude = $6, longitude = $7, updated_at = now()
               WHERE id = $1""",
            view.vehicle_id, view.battery_level, view.voltage, view.online, view.spot_id, view.latitude,
            view.longitude,
        )
