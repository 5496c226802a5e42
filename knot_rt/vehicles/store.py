"""PostgreSQL persistence of the vehicles' live state: SQL only.

A vehicle's row (battery, voltage, online, spot, position) is written by its
actor only (``PgVehicleStore.save``); ``load_records`` reads every row at once
for the live read model (``live.LiveVehicles``) at start and on a catalog
reload; ``network_vehicles`` tells the station side which ids it reports are
vehicles of the station's network; ``create_vehicle`` adds a vehicle (an operator's
write, run by ``VehicleService.create`` in one unit of work).
"""

from __future__ import annotations

import asyncpg

from actors.vehicle import VehicleRecord, VehicleView
from protocols.errors import ErrorCode

from ..db import Database
from ..errors import ApiError

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


# creating a vehicle (an operator's write, in the caller's unit of work) --------------------------------

_CREATED = """SELECT v.id AS vehicle_id, v.serial_number, v.network_id, v.model_id, m.vehicle_type
              FROM vehicles v LEFT JOIN vehicle_models m ON m.id = v.model_id WHERE v.id = $1"""


async def create_vehicle(
    conn: asyncpg.Connection, network_id: int, serial_number: str, *, vehicle_id: int | None = None,
    model_id: int | None = None, avg_max_range: int = 0,
) -> asyncpg.Record:
    """Insert a vehicle of ``network_id`` (inside a transaction); its row as created.

    The id is the one the stations read from the vehicle, so it is given when known; without one the
    next free id (one above the highest) is taken under a transaction-scoped advisory lock, so two
    creations at once never pick the same id (vehicles are created rarely: the lock costs nothing).
    An unknown network or model is ``NOT_FOUND``; a serial number or id already used is ``CONFLICT``:
    nothing is written then."""
    if await conn.fetchval("SELECT 1 FROM networks WHERE id = $1", network_id) is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no network {network_id}")
    if model_id is not None and await conn.fetchval("SELECT 1 FROM vehicle_models WHERE id = $1", model_id) is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle model {model_id}")
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext('vehicles.create'))")
    if await conn.fetchval("SELECT 1 FROM vehicles WHERE serial_number = $1", serial_number) is not None:
        raise ApiError(ErrorCode.CONFLICT, f"serial number {serial_number!r} is already used")
    if vehicle_id is None:
        vehicle_id = int(await conn.fetchval("SELECT coalesce(max(id), 0) + 1 FROM vehicles"))
    elif await conn.fetchval("SELECT 1 FROM vehicles WHERE id = $1", vehicle_id) is not None:
        raise ApiError(ErrorCode.CONFLICT, f"vehicle id {vehicle_id} is already used")
    await conn.execute(
        """INSERT INTO vehicles (id, serial_number, network_id, model_id, avg_max_range)
           VALUES ($1, $2, $3, $4, $5)""",
        vehicle_id, serial_number, network_id, model_id, avg_max_range,
    )
    row: asyncpg.Record = await conn.fetchrow(_CREATED, vehicle_id)
    return row


async def create_model(conn: asyncpg.Connection, name: str, manufacturer: str, vehicle_type: str) -> int:
    model_id: int = await conn.fetchval(
        "INSERT INTO vehicle_models (name, manufacturer, vehicle_type) VALUES ($1, $2, $3) RETURNING id",
        name, manufacturer, vehicle_type,
    )
    return model_id
