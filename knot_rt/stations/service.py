"""Wiring of the live station side: supervisors, registry, actors, gateway, live availability.

The device gateway (``knot_rt/devices/gateway.py``) runs here with two doors:
the stations' (``gateway.StationDoor``) and the free-floating vehicles'
(``VehicleService.door``), whose actors live in this tree too.

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

import contextlib
import logging
from functools import partial
from typing import Any

import trio

from actors import (
    ActorError,
    ActorKind,
    ActorMetrics,
    AskTimeout,
    Registry,
    RestartIntensity,
    RunsElsewhere,
    Supervisor,
    SupervisorSpec,
)
from actors.badge_reader import BadgeBook, BadgeReaderBusy, StartBadgeLink
from actors.station import (
    Command,
    CommandFailed,
    Failure,
    GetView,
    PendingCommand,
    SetSpotMaintenance,
    StationActor,
    StationMessage,
    StationReply,
    StationView,
    UnlockSpot,
)
from actors.vehicle import VEHICLE
from protocols import station as wire
from protocols.errors import ErrorCode
from protocols.feed import EventName, Topic

from ..cluster.node import Cluster
from ..config import Settings
from ..db import repeat
from ..devices.gateway import DeviceGateway, Door
from ..errors import ApiError
from ..services.permissions import Scope, station_scope
from ..uow import Work
from ..vehicles.service import VehicleService
from .admin import NewStation, create_station
from .gateway import StationDoor, StationRef
from .live import LiveStations
from .store import PgStationStore, load_all_stations

log = logging.getLogger(__name__)

STATION = ActorKind[StationMessage, StationReply]("station")


class StationService:
    """Everything live about stations, run by ``run()`` inside the server's nursery."""

    def __init__(
        self,
        work: Work,
        vehicles: VehicleService,
        *,
        heartbeat_interval: int = wire.DEFAULT_HEARTBEAT_INTERVAL,
        call_timeout: float = wire.DEFAULT_CALL_TIMEOUT,
        ping_interval: float = wire.DEFAULT_PING_INTERVAL,
        settings: Settings | None = None,
    ) -> None:
        options = settings or Settings()
        self.db = work.db
        self.work = work
        self.store = PgStationStore(work)
        self.live = LiveStations(work)
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
        self.live.vehicle_blocked = self.vehicle_service.in_maintenance
        self.heartbeat_interval = heartbeat_interval
        self.call_timeout = call_timeout
        # Wiring point of the badges domain (``Services.build`` sets it before anything runs): the station
        # actors hand it the badges their readers see. None: badges are recorded, nothing more.
        self.badges: BadgeBook | None = None
        self.badge_link_seconds = options.badge_link_seconds
        self.station_door = StationDoor(self.store.secret_hash, self.store.secret_hashes, self._socket_actor)
        self.vehicle_door = self.vehicle_service.door(self.registry, before_attach=self._claim_vehicle)
        # Several processes on one database (``knot_rt/cluster``): set by ``join`` before anything runs.
        self.cluster: Cluster | None = None
        self._remote_dirty: set[int] = set()
        self._remote_wake = trio.Event()
        self.gateway = DeviceGateway(
            [self.station_door, self.vehicle_door], ping_interval=ping_interval,
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
        await self.work.publish(Topic.station(view.station_id), EventName.FAULT, data)

    def down(self) -> dict[str, str]:
        """Subtrees of the actors that are down, waiting to be restarted: name -> why."""
        return self.root.down()

    def _new_station_actor(self, actor_id: str) -> StationActor:
        return StationActor(
            int(actor_id), self.store, self.station_door.links, self.live,
            heartbeat_interval=self.heartbeat_interval, call_timeout=self.call_timeout,
            badges=self.badges, badge_link_seconds=self.badge_link_seconds,
        )

    async def actor(self, station_id: int) -> StationRef:
        """The station's actor, started (and its state loaded) on first use. Several processes: raises
        ``RunsElsewhere`` when another process holds the station's socket."""
        return await self.registry.get(STATION, str(station_id))

    async def _socket_actor(self, station_id: int) -> StationRef:
        """The actor of a station that just connected here: the newest socket wins, in any process."""
        if self.cluster is not None:
            await self.cluster.ownership.claim("station", station_id, socket=True)
        return await self.actor(station_id)

    async def _claim_vehicle(self, vehicle_id: int) -> None:
        if self.cluster is not None:
            await self.cluster.ownership.claim("vehicle", vehicle_id, socket=True)

    # several processes ---------------------------------------------------------------------------

    def join(self, cluster: Cluster) -> None:
        """Share the work with the other processes on the database: an actor runs only where its device's
        lock is held, commands for a station held elsewhere are forwarded there, and the live views of the
        stations held elsewhere follow their records."""
        self.cluster = cluster
        self.registry.gate = cluster.ownership
        cluster.ownership.releaser = self._release
        cluster.feed.on_station = self._station_changed_elsewhere
        calls = cluster.calls
        calls.handle("station.command", self._remote_command)
        calls.handle("station.unlock", self._remote_unlock)
        calls.handle("station.badge_link", self._remote_badge_link)
        calls.handle("station.spot_maintenance", self._remote_spot_maintenance)

    async def _release(self, kind: str, device_id: int, socket: bool) -> bool:
        """Another process takes the device (``cluster/ownership.py``): refused while its socket is here,
        unless ``socket`` (a newer socket is there); otherwise the socket is closed and the actor stopped."""
        door: Door[Any] = self.station_door if kind == "station" else self.vehicle_door
        connection = door.links.current(device_id)
        if connection is not None:
            if not socket:
                return False
            door.count("replaced")
            await connection.close(wire.REPLACED, "replaced")
        if kind == "station":
            await self.registry.stop(STATION, str(device_id))
        else:
            await self.registry.stop(VEHICLE, str(device_id))
        return True

    async def _forward(self, station_id: int, op: str, args: dict[str, Any], node: int | None = None) -> Any:
        """Run ``op`` in the process that holds the station; 503 (50) when no process does."""
        if self.cluster is None:
            raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is offline")
        if node is None:
            node = await self.cluster.ownership.elsewhere("station", station_id)
        if not node:
            raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is offline")
        return await self.cluster.calls.call(node, op, args, timeout=self.call_timeout + 10)

    async def _remote_command(self, args: dict[str, Any]) -> dict[str, Any]:
        action = wire.Action(args["action"])
        payload = wire.ACTIONS[action].model_validate(args["payload"])
        _, result = await self._command(int(args["station_id"]), Command(action, payload), forward=False)
        return result

    async def _remote_unlock(self, args: dict[str, Any]) -> int:
        return await self.unlock(int(args["station_id"]), int(args["spot"]), args.get("unlock_id"), forward=False)

    async def _remote_badge_link(self, args: dict[str, Any]) -> None:
        await self._command(
            int(args["station_id"]), StartBadgeLink(int(args["user_id"]), str(args["name"]), args.get("spot")),
            forward=False,
        )

    async def _remote_spot_maintenance(self, args: dict[str, Any]) -> None:
        await self.set_spot_maintenance(int(args["station_id"]), int(args["spot"]), bool(args["in_maintenance"]),
                                        forward=False)

    def _station_changed_elsewhere(self, station_id: int) -> None:
        if self.running_actor(station_id) is None:
            self._remote_dirty.add(station_id)
            self._remote_wake.set()

    async def _follow_remote_stations(self, every: float = 0.1) -> None:
        """Read again the stations other processes changed, for the map's live views (one pass per
        ``every`` seconds at most, whatever the number of changes)."""
        while True:
            await self._remote_wake.wait()
            self._remote_wake = trio.Event()
            dirty, self._remote_dirty = self._remote_dirty, set()
            for station_id in sorted(dirty):
                if self.running_actor(station_id) is not None:
                    continue
                try:
                    view = await self.store.load(station_id)
                except Exception as exc:
                    log.warning("stations: station %s held elsewhere could not be read: %r", station_id, exc)
                    self._remote_dirty.add(station_id)
                    continue
                if view is not None:
                    self.live.replace_remote(view)
            if self._remote_dirty:
                self._remote_wake.set()
            await trio.sleep(every)

    def running_actor(self, station_id: int) -> StationRef | None:
        return self.registry.lookup(STATION, str(station_id))

    async def view(self, station_id: int) -> StationView | None:
        """The station with its live state: its actor's when it runs, else the last one recorded."""
        actor = self.running_actor(station_id)
        if actor is not None:
            with contextlib.suppress(ActorError):  # restarting or stopping: the record is as good
                view = await actor.ask(GetView())
                if isinstance(view, StationView):
                    return view
        return await self.store.load(station_id)

    async def scope(self, station_id: int) -> Scope | None:
        """Where the station sits (network, cluster, organisation), for the access policy; None if unknown."""
        return await self.db.run(lambda conn: station_scope(conn, station_id))

    async def create_station(
        self, cluster_id: int, spot_count: int, *, first_displayed_number: int = 1, version: str = "v6",
    ) -> NewStation:
        """A new station of the cluster with its spots and secret, in one unit of work (``ApiError`` for a bad
        spot count or an unknown cluster). The gateway lets it in at its first connection: its actor starts
        then, reading the rows. ``version``: "v6" (a badge reader per spot) or "v5" (one for the station)."""
        return await self.work.run(lambda uow: create_station(
            uow.conn, cluster_id, spot_count, version=version, first_displayed_number=first_displayed_number,
        ))

    async def unlock(self, station_id: int, spot: int, unlock_id: int | None = None, *, forward: bool = True) -> int:
        """Unlock a spot; returns the unlock id once the station accepted (``ApiError`` otherwise).

        ``unlock_id``: an id the caller already recorded (a rent's); None: the station's actor draws one."""
        if forward and self.running_actor(station_id) is None and self.cluster is not None:
            node = await self.cluster.ownership.elsewhere("station", station_id)
            if node:
                found: int = await self._forward(
                    station_id, "station.unlock", {"station_id": station_id, "spot": spot, "unlock_id": unlock_id},
                    node,
                )
                return found
        pending, _ = await self._command(station_id, UnlockSpot(spot, unlock_id), forward=False)
        assert pending.unlock_id is not None
        return pending.unlock_id

    async def set_spot_maintenance(
        self, station_id: int, spot: int, in_maintenance: bool, *, forward: bool = True
    ) -> StationView:
        """Put a spot into maintenance or take it out (its actor writes it; a ``locked`` there is then
        answered DENY). Raises ``ApiError`` 400 (2) for a spot the station does not have."""
        try:
            actor = await self.actor(station_id)
        except RunsElsewhere as elsewhere:
            if not forward or not elsewhere.node:
                raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, f"station {station_id} is moving; retry") from None
            await self._forward(
                station_id, "station.spot_maintenance",
                {"station_id": station_id, "spot": spot, "in_maintenance": in_maintenance}, elsewhere.node,
            )
            view = await self.store.load(station_id)
            if view is None:
                raise ApiError(ErrorCode.NOT_FOUND) from None
            return view
        reply = await actor.ask(SetSpotMaintenance(spot, in_maintenance))
        if isinstance(reply, CommandFailed):
            raise ApiError(_FAILURES[reply.failure], reply.message)
        assert isinstance(reply, StationView)
        return reply

    async def command(self, station_id: int, action: wire.Action, payload: wire.Payload) -> dict[str, Any]:
        """Send a command through the station's actor; returns the station's RESULT payload.

        Raises ``ApiError``: offline 503 (50), no answer 504 (40), refused 409 (41), not fitting the station
        400 (2), the backend could not record it 503 (48).
        """
        _, result = await self._command(station_id, Command(action, payload))
        return result  # (forwarded to the process holding the station when it is not here)

    async def start_badge_link(self, station_id: int, user_id: int, name: str, spot: int | None) -> None:
        """Wait for the user's badge at a reader of the station (``spot`` None: its one reader); returns once
        the station took LINK_STARTED. Raises ``ApiError``: a link already waits there 409 (38), else as
        ``command``."""
        await self._command(station_id, StartBadgeLink(user_id, name, spot))

    async def _command(
        self, station_id: int, message: Command | UnlockSpot | StartBadgeLink, *, forward: bool = True
    ) -> tuple[PendingCommand, dict[str, Any]]:
        actor = self.running_actor(station_id)
        if actor is None:
            if forward and self.cluster is not None and not isinstance(message, UnlockSpot):
                return await self._forward_command(station_id, message)
            raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is offline")
        try:
            reply = await actor.ask(message, timeout=self.call_timeout)
        except AskTimeout as exc:
            raise ApiError(ErrorCode.DEVICE_TIMEOUT, f"station {station_id} is busy") from exc
        except ActorError as exc:  # crashed or stopping: it restarts on its own
            raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is restarting") from exc
        if isinstance(reply, PendingCommand):
            try:  # the actor settles it within its call timeout; this bound only guards against a lost reply
                outcome = await reply.wait_within(self.call_timeout + 5)
            except trio.TooSlowError:
                outcome = CommandFailed(Failure.TIMEOUT, f"station {station_id} did not answer")
            if isinstance(outcome, dict):
                return reply, outcome
            failed: CommandFailed = outcome
        elif isinstance(reply, CommandFailed):
            failed = reply
        elif isinstance(reply, BadgeReaderBusy):
            raise ApiError(ErrorCode.BADGE_LINK_WAITING)
        else:  # pragma: no cover - the actor answers one of the two
            raise ApiError(ErrorCode.INTERNAL)
        raise ApiError(_FAILURES[failed.failure], failed.message)

    async def _forward_command(
        self, station_id: int, message: Command | StartBadgeLink
    ) -> tuple[PendingCommand, dict[str, Any]]:
        if isinstance(message, Command):
            result = await self._forward(
                station_id, "station.command",
                {"station_id": station_id, "action": str(message.action),
                 "payload": message.payload.model_dump(mode="json", exclude_none=True)},
            )
        else:
            await self._forward(
                station_id, "station.badge_link",
                {"station_id": station_id, "user_id": message.user_id, "name": message.name, "spot": message.spot},
            )
            result = {}
        return PendingCommand(str(message.action) if isinstance(message, Command) else "badge-link"), result

    async def run(
        self, host: str, port: int, *, fd: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.live.seed(await self.db.run(load_all_stations))
        async with trio.open_nursery() as nursery:
            await nursery.start(self.root.run)
            async with trio.open_nursery() as gateway:
                bound: int = await gateway.start(partial(self.gateway.serve, fd=fd), host, port)
                gateway.start_soon(self._prune_messages)
                gateway.start_soon(self._pick_up_new_stations)
                gateway.start_soon(self.live.run)
                if self.cluster is not None:
                    gateway.start_soon(self._follow_remote_stations)
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
        """Forget the answered CALL ids of stations and vehicles past their retention."""

        async def prune() -> None:
            for kind, store in (("station", self.store), ("vehicle", self.vehicle_service.store)):
                removed = await store.prune_messages()
                if removed:
                    log.info("%ss: forgot %s answered message ids", kind, removed)

        await repeat("devices: pruning message ids", prune, every, wait_first=True)


def _per_child_intensity(backoff: float, storm: int) -> RestartIntensity:
    """Counted per actor: many stations crashing once each never restarts them all; one crashing
    again and again is stopped alone; a storm of restarts across them escalates."""
    return RestartIntensity(
        max_restarts=3, period=5.0, scope="child", backoff=backoff, max_backoff=30.0, exceeded="stop_child",
        max_total_restarts=storm,
    )


_FAILURES: dict[Failure, ErrorCode] = {
    Failure.OFFLINE: ErrorCode.DEVICE_OFFLINE,
    Failure.TIMEOUT: ErrorCode.DEVICE_TIMEOUT,
    Failure.REJECTED: ErrorCode.DEVICE_REJECTED,
    Failure.INVALID: ErrorCode.INVALID_INPUT,
    Failure.UNAVAILABLE: ErrorCode.SERVICE_UNAVAILABLE,
}
