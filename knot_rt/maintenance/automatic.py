"""Maintenances opened and resolved by the stations themselves.

What opens one (``started_by`` "automatic", ``automatic_code_description`` the code below):

- a ``fault`` whose status is ``appearing``: a spot maintenance of its spot (type ``charge-fault`` for a
  charge fault, ``spot-fault`` for the others), code the fault's name; ``disappeared`` resolves it;
- the alerts ``locker-stuck`` (type ``lock-stuck``) and ``incorrect-lock`` of a spot, the same way;
- an ``unexpected-unlock`` of a spot holding a vehicle that is not rented: a vehicle maintenance
  ``check-vehicle``, code ``unexpected-unlock`` (resolved by an operator);
- a station offline for ``offline_after`` seconds: a station maintenance ``station-offline``, code
  ``offline``, resolved when the station is back online. A station the server saw offline at start
  (and that had been seen before) counts from the start.

Only once: the station actor calls its listener for an event it recorded and applied, never for a
resent id (it answers those from the record); a new id repeating an open fault opens nothing either
(``MaintenanceService.open_automatic``: one open automatic maintenance per target and code, a unique index
deciding). Resolving touches only an automatic maintenance of that code (an operator's stays open).

Why a queue: the station actor tells its listener from inside its turn, and opening a ``high``
maintenance asks that same actor to take its spot out of service; waiting there would deadlock. So the
listener only decides and queues (never blocking: a full queue drops the report, logged); one task
(``run``) opens and resolves in the order the reports came. A report whose opening fails (the database is
away) is retried a few times, then dropped with a warning: the maintenance is then opened by an operator.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import trio

from actors.station import StationView
from protocols import station as wire

from ..stations.service import StationService
from ..vehicles.service import VehicleService
from .live import LiveMaintenance
from .service import MaintenanceService
from .store import Target

log = logging.getLogger(__name__)

#: The spot maintenance type of a fault (others: ``spot-fault``) and of an alert (others open nothing).
FAULT_TYPES = {wire.Fault.CHARGE_FAULT.label: "charge-fault"}
DEFAULT_FAULT_TYPE = "spot-fault"
ALERT_TYPES = {wire.Alert.LOCKER_STUCK.label: "lock-stuck", wire.Alert.INCORRECT_LOCK.label: "incorrect-lock"}
UNEXPECTED_UNLOCK = "unexpected-unlock"
OFFLINE = "offline"
QUEUE = 10_000
ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Job:
    """Open (``open``) or resolve an automatic maintenance of ``code`` on a target; or, for ``offline``,
    the station went off (``open``) or came back (not ``open``); ``due``: its offline time is up."""

    kind: Literal["spot", "vehicle", "station", "offline", "due"]
    station_id: int
    code: str
    open: bool = True
    spot: int | None = None
    vehicle_id: int | None = None
    type_key: str = ""


class StationWatch:
    def __init__(self, service: MaintenanceService, stations: StationService, vehicles: VehicleService, *,
                 offline_after: float) -> None:
        self.service = service
        self.stations = stations
        self.vehicles = vehicles
        self.offline_after = offline_after
        self._send, self._receive = trio.open_memory_channel[Job](QUEUE)
        self._timers: dict[int, trio.CancelScope] = {}
        # The open maintenances in memory, once loaded: a station coming online with no ``offline`` one open
        # (the common case: every reconnection) then costs no query.
        self.live: LiveMaintenance | None = None
        stations.live.reports = self.reported
        stations.live.online_changes = self.online_changed

    # the station side's listener (sync, never blocks the actor) ---------------------------------------------

    def reported(self, before: StationView, after: StationView, payload: wire.Payload) -> None:
        station_id = after.station_id
        if isinstance(payload, wire.FaultPayload):
            status = payload.fault_status
            if status in ("appearing", "disappeared"):
                self._queue(Job("spot", station_id, payload.fault_name, status == "appearing", spot=payload.spot,
                                type_key=FAULT_TYPES.get(payload.fault_name, DEFAULT_FAULT_TYPE)))
        elif isinstance(payload, wire.AlertPayload):
            type_key = ALERT_TYPES.get(payload.alert_name)
            if type_key is not None and payload.spot is not None:
                self._queue(Job("spot", station_id, payload.alert_name,
                                payload.alert_status is wire.AlertStatus.APPEARING, spot=payload.spot,
                                type_key=type_key))
        elif isinstance(payload, wire.UnexpectedUnlockPayload):
            spot = before.spot(payload.spot)
            vehicle_id = spot.vehicle if spot is not None else None
            if vehicle_id and not self.vehicles.state(vehicle_id).rented:
                self._queue(Job("vehicle", station_id, UNEXPECTED_UNLOCK, vehicle_id=vehicle_id,
                                type_key="check-vehicle"))

    def online_changed(self, view: StationView) -> None:
        self._queue(Job("offline", view.station_id, OFFLINE, not view.online, type_key="station-offline"))

    def _queue(self, job: Job) -> None:
        try:
            self._send.send_nowait(job)
        except trio.WouldBlock:
            log.warning("maintenances: the automatic queue is full; dropped %r", job)

    # the worker --------------------------------------------------------------------------------------------

    async def run(self, seen_offline: list[int] | None = None) -> None:
        """Open and resolve in the order of the reports; time the offline stations (``seen_offline``: those
        offline at start, timed from now)."""
        async with trio.open_nursery() as nursery:
            for station_id in seen_offline or ():
                self._start_timer(nursery, station_id)
            async for job in self._receive:
                if job.kind == "offline":
                    self._timer(nursery, job)
                    if job.open:
                        continue
                await self._handle(job)

    def _timer(self, nursery: trio.Nursery, job: Job) -> None:
        old = self._timers.pop(job.station_id, None)
        if old is not None:
            old.cancel()
        if job.open:
            self._start_timer(nursery, job.station_id)

    def _start_timer(self, nursery: trio.Nursery, station_id: int) -> None:
        scope = trio.CancelScope()
        self._timers[station_id] = scope

        async def wait() -> None:
            with scope:
                await trio.sleep(self.offline_after)
                self._queue(Job("due", station_id, OFFLINE, type_key="station-offline"))
            if self._timers.get(station_id) is scope:
                del self._timers[station_id]

        nursery.start_soon(wait)

    async def _handle(self, job: Job) -> None:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                await self._do(job)
                return
            except Exception:
                if attempt == ATTEMPTS:
                    log.warning("maintenances: %r failed %s times; dropped", job, ATTEMPTS, exc_info=True)
                    return
                log.info("maintenances: %r failed; retrying", job, exc_info=True)
                await trio.sleep(attempt)

    async def _do(self, job: Job) -> None:
        if job.kind == "due":
            view = self.stations.live.station(job.station_id)
            if view is None or view.online or not view.enabled:
                return  # back meanwhile (its online job cancelled a timer that had fired already)
        if (job.kind == "offline" and not job.open and self.live is not None and self.live.loaded.is_set()
                and not self.live.station_automatic_open(job.station_id, OFFLINE)):
            return
        target = await self._target(job)
        if target is None:
            return
        if job.open and job.kind != "offline":
            opened = await self.service.open_automatic(target, job.type_key, job.code)
            if opened is not None:
                log.info("maintenance %s opened on station %s: %s", opened.id, job.station_id, job.code)
        else:
            await self.service.resolve_automatic(target, job.code)

    async def _target(self, job: Job) -> Target | None:
        if job.kind == "spot":
            assert job.spot is not None
            return await self.service.spot_by_number(job.station_id, job.spot)
        if job.kind == "vehicle":
            return await self.service.vehicle(job.vehicle_id)
        return await self.service.station(job.station_id)


def offline_at_start(stations: StationService) -> list[int]:
    """The enabled stations the live side has offline now and that were seen once: timed from start."""
    found = []
    for station_id in stations.live.station_ids():
        view = stations.live.station(station_id)
        if view is not None and view.enabled and not view.online and view.last_seen_ms is not None:
            found.append(station_id)
    return found


__all__ = ["StationWatch", "offline_at_start"]
