"""PostgreSQL persistence of the vehicles' live state: SQL only.

A vehicle's row (battery, voltage, online, spot, position, and for a vehicle
with an IoT module its speed and lock) is written by its actor only
(``PgVehicleStore.save``, ``PgVehicleStore.record``); ``load_records`` reads
every row at once for the live read model (``live.LiveVehicles``) at start and
on a catalog reload; ``network_vehicles`` tells the station side which ids it
reports are vehicles of the station's network; ``create_vehicle`` adds a
vehicle and ``rotate_vehicle_secret`` issues a new secret to a free-floating
one (an operator's writes, run by ``VehicleService`` in one unit of work).

The CALLs of a vehicle's module are recorded by id in ``vehicle_messages``
with their RESULT, in the transaction that saves what they changed: a repeated
id finds the row, gets the stored RESULT and writes nothing; ids are pruned
as the stations' are (``knot_rt/devices/messages.py``).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from actors.vehicle import VehicleRecord, VehicleView
from protocols import vehicle as wire
from protocols.errors import ErrorCode

from ..db import Database
from ..devices.batch import GroupCommit, each_alone
from ..devices.credentials import hash_device_secret, new_device_secret
from ..devices.messages import VEHICLE_MESSAGES
from ..errors import ApiError

_RECORD = """SELECT v.id, v.battery_level, v.voltage, v.avg_max_range, v.online, v.latitude, v.longitude,
                    v.free_floating, v.speed, v.locked, s.id AS spot_id, s.number AS spot_number, s.station_id
             FROM vehicles v LEFT JOIN spots s ON s.id = v.spot_id"""


def _record(row: asyncpg.Record) -> VehicleRecord:
    return VehicleRecord(
        battery_level=row["battery_level"], voltage=row["voltage"], avg_max_range=row["avg_max_range"] or 0,
        station_id=row["station_id"], spot_id=row["spot_id"], spot_number=row["spot_number"],
        latitude=row["latitude"], longitude=row["longitude"], online=row["online"],
        has_module=row["free_floating"], speed=row["speed"], locked=row["locked"],
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


async def _load_many(db: Database, vehicle_ids: list[int]) -> list[VehicleRecord | None]:
    """Many vehicles' records in one query, in the order asked."""
    rows = await db.fetch(_RECORD + " WHERE v.id = ANY($1::bigint[])", sorted(set(vehicle_ids)))
    found = {row["id"]: _record(row) for row in rows}
    return [found.get(vehicle_id) for vehicle_id in vehicle_ids]


async def _save_many(db: Database, views: list[VehicleView]) -> list[None]:
    """Many vehicles' live fields in one statement (the last view of a vehicle saved twice wins, as in turn)."""
    latest = {view.vehicle_id: view for view in views}
    rows = list(latest.values())
    await db.execute(
        """UPDATE vehicles v SET battery_level = u.battery_level, voltage = u.voltage, online = u.online,
                  spot_id = u.spot_id, latitude = u.latitude, longitude = u.longitude, speed = u.speed,
                  locked = u.locked, updated_at = now(),
                  reported_at = CASE WHEN v.free_floating THEN now() ELSE v.reported_at END
           FROM unnest($1::bigint[], $2::int[], $3::int[], $4::boolean[], $5::bigint[], $6::float8[], $7::float8[],
                       $8::float8[], $9::boolean[])
                AS u(id, battery_level, voltage, online, spot_id, latitude, longitude, speed, locked)
           WHERE v.id = u.id""",
        [v.vehicle_id for v in rows], [v.battery_level for v in rows], [v.voltage for v in rows],
        [v.online for v in rows], [v.spot_id for v in rows], [v.latitude for v in rows],
        [v.longitude for v in rows], [v.speed for v in rows], [v.locked for v in rows],
    )
    return [None] * len(views)


class PgVehicleStore:
    """The vehicle actors' ``VehicleStore``.

    Loads and saves of many actors are grouped (``devices/batch.py``: group commit): a reconnecting fleet's
    vehicles cost a statement per flush, not a round trip each."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._loads: GroupCommit[int, VehicleRecord | None] = GroupCommit(lambda ids: _load_many(db, ids), shield=False)
        self._saves: GroupCommit[VehicleView, None] = GroupCommit(
            lambda views: each_alone(lambda batch: _save_many(db, batch), views),
        )

    async def load(self, vehicle_id: int) -> VehicleRecord | None:
        return await self._loads.submit(vehicle_id)

    async def save(self, view: VehicleView) -> None:
        await self._saves.submit(view)

    async def record(
        self, vehicle_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        view: VehicleView | None,
    ) -> dict[str, Any] | None:
        """Record a CALL of the vehicle's module once, and save ``view`` (None: nothing changed) in the same
        transaction; the earlier RESULT when the id was seen already (then nothing is written)."""

        async def record(conn: asyncpg.Connection) -> dict[str, Any] | None:
            earlier = await VEHICLE_MESSAGES.record(conn, vehicle_id, message_id, action, payload, result)
            if earlier is not None:
                return earlier
            if view is not None:
                await _save(conn, view)
            return None

        return await self._db.transaction(record)

    # the vehicle gateway's lookups ---------------------------------------------------------------------

    async def credentials(self, serial_number: str) -> tuple[int, str] | None:
        """``(vehicle id, secret hash)`` of the free-floating vehicle with a secret and this serial number."""
        row = await self._db.fetchrow(
            """SELECT id, secret_hash FROM vehicles
               WHERE serial_number = $1 AND free_floating AND secret_hash IS NOT NULL""",
            serial_number,
        )
        return None if row is None else (row["id"], row["secret_hash"])

    async def secret_hashes(self, vehicle_ids: list[int]) -> dict[int, str]:
        """The stored secret hash of each of these vehicles that may still connect (free-floating, a secret)."""
        rows = await self._db.fetch(
            """SELECT id, secret_hash FROM vehicles
               WHERE id = ANY($1::bigint[]) AND free_floating AND secret_hash IS NOT NULL""",
            vehicle_ids,
        )
        return {row["id"]: row["secret_hash"] for row in rows}

    async def prune_messages(self) -> int:
        """Forget the CALL ids past their retention; how many."""
        return await VEHICLE_MESSAGES.prune(self._db)


async def _save(conn: asyncpg.Connection, view: VehicleView) -> None:
    """The live fields of ``view``; ``reported_at`` tells when a vehicle with a module was last saved."""
    await conn.execute(
        """UPDATE vehicles SET battery_level = $2, voltage = $3, online = $4, spot_id = $5,
                               latitude = $6, longitude = $7, speed = $8, locked = $9, updated_at = now(),
                               reported_at = CASE WHEN free_floating THEN now() ELSE reported_at END
           WHERE id = $1""",
        view.vehicle_id, view.battery_level, view.voltage, view.online, view.spot_id, view.latitude,
        view.longitude, view.speed, view.locked,
    )


# creating a vehicle (an operator's write, in the caller's unit of work) --------------------------------

_CREATED = """SELECT v.id AS vehicle_id, v.serial_number, v.network_id, v.model_id, m.vehicle_type
              FROM vehicles v LEFT JOIN vehicle_models m ON m.id = v.model_id WHERE v.id = $1"""


async def create_vehicle(
    conn: asyncpg.Connection, network_id: int, serial_number: str, *, vehicle_id: int | None = None,
    model_id: int | None = None, avg_max_range: int = 0, free_floating: bool = False,
) -> dict[str, Any]:
    """Insert a vehicle of ``network_id`` (inside a transaction); its row as created, and for a
    free-floating vehicle (one with its own IoT module) ``free_floating`` and its ``secret`` (shown once,
    stored hashed).

    The id is the one the stations read from the vehicle, so it is given when known; without one the
    next free id (one above the highest) is taken under a transaction-scoped advisory lock, so two
    creations at once never pick the same id (vehicles are created rarely: the lock costs nothing).
    A serial number a module could not log in with (``protocols.vehicle.valid_serial``) is
    ``INVALID_INPUT``; an unknown network or model is ``NOT_FOUND``; a serial number or id already used
    is ``CONFLICT``: nothing is written then."""
    if not wire.valid_serial(serial_number):
        raise ApiError(ErrorCode.INVALID_INPUT, f"a serial number has 1 to {wire.MAX_SERIAL_LENGTH} printable "
                                                "characters and no colon")
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
    secret = new_device_secret() if free_floating else None
    await conn.execute(
        """INSERT INTO vehicles (id, serial_number, network_id, model_id, avg_max_range, free_floating, secret_hash)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        vehicle_id, serial_number, network_id, model_id, avg_max_range, free_floating,
        None if secret is None else hash_device_secret(secret),
    )
    created = dict(await conn.fetchrow(_CREATED, vehicle_id))
    if secret is not None:
        created.update(free_floating=True, secret=secret)
    return created


async def rotate_vehicle_secret(conn: asyncpg.Connection, serial_number: str) -> tuple[int, str]:
    """A new secret for the free-floating vehicle ``serial_number``: ``(vehicle id, secret)``; the sockets
    that used the old one are closed by the gateway's next check. ``NOT_FOUND`` for an unknown serial
    number, ``CONFLICT`` for a vehicle without a module (it talks through its station)."""
    secret = new_device_secret()
    row = await conn.fetchrow(
        """UPDATE vehicles SET secret_hash = CASE WHEN free_floating THEN $2 ELSE secret_hash END
           WHERE serial_number = $1 RETURNING id, free_floating""",
        serial_number, hash_device_secret(secret),
    )
    if row is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle with serial number {serial_number!r}")
    if not row["free_floating"]:
        raise ApiError(ErrorCode.CONFLICT, f"vehicle {serial_number!r} is not free-floating: it has no secret")
    return row["id"], secret


async def create_model(conn: asyncpg.Connection, name: str, manufacturer: str, vehicle_type: str) -> int:
    model_id: int = await conn.fetchval(
        "INSERT INTO vehicle_models (name, manufacturer, vehicle_type) VALUES ($1, $2, $3) RETURNING id",
        name, manufacturer, vehicle_type,
    )
    return model_id
