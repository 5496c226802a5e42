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
the station -> vehicle messages, ``gateway.py`` the door of the free-floating
vehicles' own sockets (on the station gateway's server, which
``stations.service`` runs); the actors themselves are
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
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import Registry
from actors.rent import RentBook
from actors.vehicle import VEHICLE, SpeedZones, Vehicle, VehicleView, vehicle_factory
from protocols import vehicle as wire

from ..db import Database
from ..devices.gateway import LinkTable
from ..uow import Work
from .docking import UnknownVehicle, VehicleMover
from .gateway import VehicleDoor, VehicleRef
from .live import LiveVehicles
from .store import (
    PgVehicleStore,
    create_model,
    create_vehicle,
    load_records,
    network_vehicles,
    rotate_vehicle_secret,
)


class VehicleService:
    def __init__(
        self, db: Database, work: Work, *, idle_after: float = math.inf, rents: RentBook | None = None,
        unlock_timeout: float = 30.0, call_timeout: float = wire.DEFAULT_CALL_TIMEOUT,
        status_interval: int = wire.DEFAULT_HEARTBEAT_INTERVAL,
    ) -> None:
        self.db = db
        self.work = work
        self.rents = rents  # where the actors write their rents (``knot_rt.rents``), handed in by the root
        self.unlock_timeout = unlock_timeout
        self.call_timeout = call_timeout  # a command to a vehicle's module
        self.status_interval = status_interval  # seconds between its `status` reports, told at its boot
        self.store = PgVehicleStore(db)
        self.live = LiveVehicles()
        self.idle_after = idle_after
        self.links = LinkTable()  # the live sockets of the free-floating vehicles (their door's)
        self.zones: SpeedZones | None = None  # the catalog's speed zones, set by the root before the actors run
        self._load_lock = trio.Lock()

    # wiring ----------------------------------------------------------------------

    def actor_factory(self) -> Callable[[str], Vehicle]:
        """The factory of the vehicle actors (register it as ``VEHICLE``): they save to the store,
        report to the live state and talk to their modules through ``links``."""
        return vehicle_factory(
            self.store, [self.live], idle_after=self.idle_after, rents=self.rents, unlock_timeout=self.unlock_timeout,
            links=self.links, zones=self.zones, call_timeout=self.call_timeout,
            heartbeat_interval=self.status_interval,
        )

    def door(
        self, registry: Registry, *, before_attach: Callable[[int], Awaitable[None]] | None = None
    ) -> VehicleDoor:
        """The free-floating vehicles' door of the device gateway: their sockets reach the ``VEHICLE``
        actors of ``registry`` and fill ``links``. ``before_attach``: awaited first (several processes:
        the vehicle is taken over from the process that held it)."""

        async def actor_for(vehicle_id: int) -> VehicleRef:
            if before_attach is not None:
                await before_attach(vehicle_id)
            return await registry.get(VEHICLE, str(vehicle_id))

        return VehicleDoor(self.store.credentials, self.store.secret_hashes, actor_for, links=self.links)

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

    def rented(self) -> frozenset[int]:
        """The vehicles rented now (as their actors last reported)."""
        return self.live.rented()

    def free_floating_in(self, south: float, north: float, west: float, east: float) -> list[VehicleView]:
        return self.live.free_floating_in(south, north, west, east)

    def docked_at(self, station_id: int) -> dict[int, VehicleView]:
        """The vehicles docked at a station now, by spot number."""
        return self.live.docked_at(station_id)

    def in_maintenance(self, vehicle_id: int) -> bool:
        """Out of rent for an open ``high`` maintenance (``knot_rt.maintenance.live`` keeps it)."""
        return self.live.in_maintenance(vehicle_id)


    # writes ----------------------------------------------------------------------

    async def create(
        self, network_id: int, serial_number: str, *, vehicle_id: int | None = None, model_id: int | None = None,
        avg_max_range: int = 0, free_floating: bool = False,
    ) -> dict[str, Any]:
        """Add a vehicle to a network in one unit of work: its row (``vehicle_id``, ``serial_number``,
        ``network_id``, ``model_id``, ``vehicle_type``), and for a ``free_floating`` one (its own IoT module)
        ``free_floating: True`` and its ``secret``, shown this once (stored hashed). ``ApiError``
        INVALID_INPUT for a serial number a module could not log in with, NOT_FOUND for an unknown network
        or model, CONFLICT for a serial number or id already used.

        Its live state starts unknown (no battery, offline) until its actor first reports; the map shows it
        from the catalog's next read of the rows (``Catalog.reload``, or the periodic refresh)."""
        return await self.work.run(lambda uow: create_vehicle(
            uow.conn, network_id, serial_number, vehicle_id=vehicle_id, model_id=model_id,
            avg_max_range=avg_max_range, free_floating=free_floating,
        ))

    async def rotate_secret(self, serial_number: str) -> tuple[int, str]:
        """A new secret for the free-floating vehicle ``serial_number``: ``(vehicle id, secret)``, shown this
        once. Its socket that used the old one is closed (4003) at the gateway's next check. ``ApiError``
        NOT_FOUND for an unknown serial number, CONFLICT for a vehicle without a module."""
        return await self.work.run(lambda uow: rotate_vehicle_secret(uow.conn, serial_number))

    async def create_model(self, name: str, manufacturer: str, vehicle_type: str = "kick-scooter") -> int:
        """A vehicle model (its type: kick-scooter, bike, ...), to give to vehicles."""
        return await self.work.run(lambda uow: create_model(uow.conn, name, manufacturer, vehicle_type))
