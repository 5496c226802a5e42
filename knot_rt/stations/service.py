"""Wiring of the live station side: supervisors, registry, actors, gateway, live availability."""

from __future__ import annotations

import logging

import trio

from actors import ActorKind, ActorMetrics, Registry, RestartIntensity, Supervisor, SupervisorSpec
from actors.station import StationActor, StationMessage, StationReply, StationView
from actors.vehicle import VEHICLE, vehicle_factory

from ..bus import FeedBus
from ..db import Database, repeat
from .gateway import StationGateway, StationRef
from .live import LiveStations
from .store import PgStationStore, load_all_stations
from .vehicles import LiveVehicles, PgVehicleStore, VehicleMover

log = logging.getLogger(__name__)

STATION = ActorKind[StationMessage, StationReply]("station")


class StationService:
    """Everything live about stations, run by ``run()`` inside the server's nursery."""

    def __init__(
        self,
        db: Database,
        bus: FeedBus,
        *,
        heartbeat_interval: int = 1800,
        call_timeout: float = 10.0,
        ping_interval: float = 30.0,
    ) -> None:
        self.db = db
        self.store = PgStationStore(db, bus)
        self.live = LiveStations(bus)
        self.metrics = ActorMetrics()
        self.stations = Supervisor("stations", intensity=_per_child_intensity(), metrics=self.metrics)
        self.vehicles = Supervisor("vehicles", intensity=_per_child_intensity(), metrics=self.metrics)
        # Vehicles start first and stop last: stations talk to them.
        self.root = Supervisor(
            "knot", [SupervisorSpec("vehicles", self.vehicles), SupervisorSpec("stations", self.stations)],
            metrics=self.metrics,
        )
        self.registry = Registry()
        self.live_vehicles = LiveVehicles()
        self.registry.register(VEHICLE, self.vehicles, vehicle_factory(PgVehicleStore(db), [self.live_vehicles]))
        self.live.vehicle_moves = VehicleMover(self.registry)
        self.heartbeat_interval = heartbeat_interval
        self.call_timeout = call_timeout
        self.gateway = StationGateway(self.store.secret_hash, self.actor, ping_interval=ping_interval)
        self.registry.register(STATION, self.stations, self._new_station_actor)

    def _new_station_actor(self, actor_id: str) -> StationActor:
        return StationActor(
            int(actor_id), self.store, self.gateway.links, self.live,
            heartbeat_interval=self.heartbeat_interval, call_timeout=self.call_timeout,
        )

    async def actor(self, station_id: int) -> StationRef:
        """The station's actor, started (and its state loaded) on first use."""
        return await self.registry.get(STATION, str(station_id))

    def running_actor(self, station_id: int) -> StationRef | None:
        return self.registry.lookup(STATION, str(station_id))

    async def view(self, station_id: int) -> StationView | None:
        """The live view when the station's actor runs, else the last known one."""
        return self.live.station(station_id) or await self.store.load(station_id)

    async def run(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        self.live.seed(await self.db.run(load_all_stations))
        async with trio.open_nursery() as nursery:
            await nursery.start(self.root.run)
            async with trio.open_nursery() as gateway:
                bound: int = await gateway.start(self.gateway.serve, host, port)
                gateway.start_soon(self._prune_messages)
                gateway.start_soon(self._pick_up_new_stations)
                gateway.start_soon(self.live.run)
                task_status.started(bound)
            nursery.cancel_scope.cancel()  # reached only when the gateway ends

    async def _pick_up_new_stations(self, every: float = 30.0) -> None:
        """Stations created after start count in their cluster's totals before they first connect."""

        async def pick_up() -> None:
            added = self.live.add_missing(await self.db.run(load_all_stations))
            if added:
                log.info("stations: %s new stations in the live view", added)

        await repeat("stations: reading new stations", pick_up, every, wait_first=True)

    async def _prune_messages(self, every: float = 3600.0) -> None:
        async def prune() -> None:
            removed = await self.store.prune_messages()
            if removed:
                log.info("stations: forgot %s answered message ids", removed)

        await repeat("stations: pruning message ids", prune, every, wait_first=True)


def _per_child_intensity() -> RestartIntensity:
    """Counted per actor: many stations crashing once each never restarts them all."""
    return RestartIntensity(max_restarts=3, period=5.0, scope="child")
