"""Wiring of the live station side: supervisors, registry, actors, gateway, live availability.

The supervision tree: ``knot`` (the root) runs ``vehicles`` then ``stations``.

- ``stations`` and ``vehicles`` count restarts per actor (3 in 5 s) with a
  back-off between restarts (``station_restart_backoff``, doubling, capped at
  30 s). An actor past its own intensity is stopped alone: a station's socket
  is then closed (1013) and the station reconnects to a fresh actor; its
  siblings never notice. Many actors restarting together
  (``station_restart_storm`` within 5 s) means something they share is broken:
  that subtree escalates.
- The root never gives up: a subtree that escalated is restarted after a
  back-off (``subtree_restart_backoff``, doubling, capped at 60 s) for as long
  as it keeps failing, while HTTP and the other subtree keep serving;
  ``down()`` names it, and ``/health`` answers ``degraded`` meanwhile.
"""

from __future__ import annotations

import logging

import trio

from actors import ActorKind, ActorMetrics, Registry, RestartIntensity, Supervisor, SupervisorSpec
from actors.station import StationActor, StationMessage, StationReply, StationView
from actors.vehicle import VEHICLE

from ..bus import FeedBus
from ..config import Settings
from ..db import Database, repeat
from ..vehicles.service import VehicleService
from .gateway import StationGateway, StationRef
from .live import LiveStations
from .store import PgStationStore, load_all_stations

log = logging.getLogger(__name__)

STATION = ActorKind[StationMessage, StationReply]("station")


class StationService:
    """Everything live about stations, run by ``run()`` inside the server's nursery."""

    def __init__(
        self,
        db: Database,
        bus: FeedBus,
        vehicles: VehicleService,
        *,
        heartbeat_interval: int = 1800,
        call_timeout: float = 10.0,
        ping_interval: float = 30.0,
        settings: Settings | None = None,
    ) -> None:
        options = settings or Settings()
        self.db = db
        self.bus = bus
        self.store = PgStationStore(db, bus)
        self.live = LiveStations(bus)
        self.metrics = ActorMetrics()
        actors = _per_child_intensity(options.station_restart_backoff, options.station_restart_storm)
        self.stations = Supervisor("stations", intensity=actors, metrics=self.metrics)
        self.vehicles = Supervisor("vehicles", intensity=actors, metrics=self.metrics)
        # Vehicles start first and stop last: stations talk to them.
        self.root = Supervisor(
            "knot", [SupervisorSpec("vehicles", self.vehicles), SupervisorSpec("stations", self.stations)],
            intensity=RestartIntensity(
                max_restarts=0, period=60.0, backoff=options.subtree_restart_backoff, max_backoff=60.0,
                exceeded="back_off",
            ),
            metrics=self.metrics,
        )
        self.registry = Registry()
        # The vehicles' actors run in this tree (stations talk to them); their state belongs to the
        # vehicles domain, which the station side only feeds with what its stations report.
        self.vehicle_service = vehicles
        self.registry.register(VEHICLE, self.vehicles, self.vehicle_service.actor_factory())
        self.live.vehicle_moves = self.vehicle_service.mover(self.registry, unknown=self._unknown_vehicle)
        self.heartbeat_interval = heartbeat_interval
        self.call_timeout = call_timeout
        self.gateway = StationGateway(
            self.store.secret_hash, self.actor, ping_interval=ping_interval, secret_hashes=self.store.secret_hashes,
            max_connections=options.station_max_connections, max_handshakes=options.station_max_handshakes,
            handshake_timeout=options.station_handshake_seconds, auth_failures=options.station_auth_failures,
            secret_check_interval=options.station_secret_check_seconds,
        )
        self.registry.register(STATION, self.stations, self._new_station_actor)

    async def _unknown_vehicle(self, view: StationView, vehicle_id: int, spot: int | None) -> None:
        """A station reports an id that is no vehicle of its network: a fault on its topic, no actor."""
        data: dict[str, object] = {
            "station_id": view.station_id, "fault_name": "unknown-vehicle", "fault_status": "appearing",
            "vehicle": vehicle_id,
        }
        if spot is not None:
            data["spot"] = spot
        await self.bus.publish(f"station:{view.station_id}", "fault", data)

    def down(self) -> dict[str, str]:
        """Subtrees of the actors that are down, waiting to be restarted: name -> why."""
        return self.root.down()

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


def _per_child_intensity(backoff: float, storm: int) -> RestartIntensity:
    """Counted per actor: many stations crashing once each never restarts them all; one crashing
    again and again is stopped alone; a storm of restarts across them escalates."""
    return RestartIntensity(
        max_restarts=3, period=5.0, scope="child", backoff=backoff, max_backoff=30.0, exceeded="stop_child",
        max_total_restarts=storm,
    )
