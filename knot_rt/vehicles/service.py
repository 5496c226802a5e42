"""The vehicles domain's entry point: the one owner of every vehicle's live state.

Why a package of its own: a vehicle's live state (battery, voltage, range,
online, docked spot and station or position, and next its rent) has one
writer, its actor (DESIGN.md, "Rents"), and until now three holders: the
station views, a dict of the views changed since start, and the catalog's
copy of the rows; routes merged them by hand with their own defaults. Here it
is held once (``live.LiveVehicles``), fed by the actors only, and read by the
catalog (its map layer of free-floating vehicles), the cluster routes and the
map's rents through this service. The station side only tells the actors what
its stations report (``docking.VehicleMover``).

Layout: ``store.py`` is the SQL, ``live.py`` the read model, ``docking.py``
the station -> vehicle messages; the actors themselves are
``actors/vehicle.py``, run under the ``vehicles`` supervisor of
``stations.service`` (stations talk to them, so the two subtrees start and
stop in order). The static facts of a vehicle (serial, model, network, state)
stay in the catalog, which imports this package and not the reverse.

Reads are in memory (the map is the hottest path: no query per vehicle); the
rows are read at start and on a catalog reload, under one lock, while the
actors keep reporting.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import asyncpg
import trio

from actors import Registry
from actors.rent import RentBook
from actors.vehicle import Vehicle, VehicleView, vehicle_factory

from ..db import Database
from ..uow import Work
from .docking import UnknownVehicle, VehicleMover
from .live import LiveVehicles
from .store import PgVehicleStore, create_model, create_vehicle, load_records, network_vehicles


class VehicleService:
    def __init__(
        self, db: Database, work: Work, *, idle_after: float = math.inf, rents: RentBook | None = None,
        unlock_timeout: float = 30.0,
    ) -> None:
        self.db = db
        self.work = work
        self.rents = rents  # where the actors write their rents (``knot_rt.rents``), handed in by the root
        self.unlock_timeout = unlock_timeout
        self.store = PgVehicleStore(db)
        self.live = LiveVehicles()
        self.idle_after = idle_after
        self._load_lock = trio.Lock()

    # wiring ----------------------------------------------------------------------

    def actor_factory(self) -> Callable[[str], Vehicle]:
        """The factory of the vehicle actors (register it as ``VEHICLE``): they save to the store
        and report to the live state."""
        return vehicle_factory(
            self.store, [self.live], idle_after=self.idle_after, rents=self.rents, unlock_timeout=self.unlock_timeout
        )

    def mover(self, registry: Registry, *, unknown: UnknownVehicle | None = None) -> VehicleMover:
        """What delivers the station's reports to these actors (ids checked against the station's network)."""
        return VehicleMover(registry, members=self._network_vehicles, unknown=unknown)

    async def _network_vehicles(self, station_id: int, vehicle_ids: list[int]) -> set[int]:
        return await self.db.run(lambda conn: network_vehicles(conn, station_id, vehicle_ids))

    async def load(self) -> None:
        """Read every vehicle's saved state (raises ``DatabaseUnavailable`` when the database is away)."""
        async with self._load_lock:
            await self.live.load(lambda: self.db.run(load_records))

    # reads -----------------------------------------------------------------------

    def state(self, vehicle_id: int) -> VehicleView:
        """The vehicle's live state (``VehicleView.unknown`` for one never saved nor reported)."""
        return self.live.state(vehicle_id)

    def free_floating_in(self, south: float, north: float, west: float, east: float) -> list[VehicleView]:
        return self.live.free_floating_in(south, north, west, east)

    def docked_at(self, station_id: int) -> dict[int, VehicleView]:
        """The vehicles docked at a station now, by spot number."""
        return self.live.docked_at(station_id)


    # writes ----------------------------------------------------------------------

    async def create(
        self, network_id: int, serial_number: str, *, vehicle_id: int | None = None, model_id: int | None = None,
        avg_max_range: int = 0,
    ) -> asyncpg.Record:
        """Add a vehicle to a network in one unit of work: its row (``vehicle_id``, ``serial_number``,
        ``network_id``, ``model_id``, ``vehicle_type``). ``ApiError`` NOT_FOUND for an unknown network or
        model, CONFLICT for a serial number or id already used.

        Its live state starts unknown (no battery, offline) until its actor first reports; the map shows it
        from the catalog's next read of the rows (``Catalog.reload``, or the periodic refresh)."""
        return await self.work.run(lambda uow: create_vehicle(
            uow.conn, network_id, serial_number, vehicle_id=vehicle_id, model_id=model_id,
            avg_max_range=avg_max_range,
        ))

    async def create_model(self, name: str, manufacturer: str, vehicle_type: str = "kick-scooter") -> int:
        """A vehicle model (its type: kick-scooter, bike, ...), to give to vehicles."""
        return await self.work.run(lambda uow: create_model(uow.conn, name, manufacturer, vehicle_type))
