"""Station simulator: many hardware docking stations over real WebSockets.

Each :class:`SimulatedStation` speaks ``station-protocol.md`` exactly, as
firmware would:

- connects to ``ws://host:port/api/stations/ws`` with HTTP Basic auth
  (station id : secret) and subprotocol ``knot-station.v1``;
- sends ``boot`` first and waits for its RESULT (``accepted``: go on,
  ``rejected``: stop for good), then ``state`` at once and every heartbeat
  (the boot RESULT's ``heartbeat_interval`` unless ``heartbeat`` overrides it);
- answers every backend CALL (several may be in flight): ``ping``, ``reboot``,
  ``unlock`` (opens the spot and sends ``unlocked``), ``refresh`` (``locked``
  again), ``badge-feedback``, ``config`` (``configured``); an unknown action
  gets ``NotImplemented``, a malformed frame ``FormatViolation``;
- reconnects with bounded exponential backoff and jitter.

Delivery guarantee, station side: every station CALL except ``boot`` is an
*event* and is kept in an ordered outbox until its RESULT arrives. After a
reconnect (once the new ``boot`` is accepted) every unanswered event is sent
again, in order and with the same id, before anything new. An ``InternalError``
answer (the backend could not record it now, e.g. its database is down) keeps
the event in the outbox and sends it again on the same connection after a
back-off (``backoff_min`` doubling per such answer, capped at ``backoff_max``).
Any other ERROR answer (or a RESULT whose payload does not fit) ends that
event: it is logged and counted, never retried. An event left unanswered for ``call_timeout`` makes
the station drop the connection and reconnect, so that it is resent.

Call ids are ``<token>-<boot counter>-<sequence>``: ``token`` is random per
simulated station instance, so ids stay unique across reboots, reconnects and
restarts of the simulator against the same backend (which remembers ids for
days and would answer a reused id without applying the event).

A close with code 4001 ("replaced": another connection of this station won)
stops the instance by default (``stop_when_replaced``): two live instances of
one station would otherwise keep replacing each other.

:class:`Simulator` runs many stations in one nursery and sums up their
counters; :func:`add_arguments` and :func:`run_from_args` are the
``knot-rt simulate`` command. Only ``protocols`` and the standard library are
used from here, besides Trio and trio-websocket.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import random
import secrets
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, TextIO

import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
    open_websocket_url,
)
from wsproto.utilities import LocalProtocolError

from protocols import station as st

log = logging.getLogger(__name__)

DEFAULT_SPOTS: Final = 8
DEFAULT_BATTERY: Final = 80
DEFAULT_BACKOFF_MIN: Final = 0.5
DEFAULT_BACKOFF_MAX: Final = 30.0
MAINBOARD_FIRMWARE: Final = "knot-sim 1.0"
MAINBOARD_REVISION: Final = "B2"
SPOT_FIRMWARE: Final = "knot-sim-spot 1.0"
SPOT_REVISION: Final = "A1"
MAINBOARD_STATE: Final = st.MainboardState(v5=5020, v48=48150, temp=24.5)
CONNECTIVITY: Final = st.Connectivity(type=st.ConnectivityType.CAT_M1, rssi=-71, rsrp=-96)
VEHICLE_VOLTAGE: Final = 41800  # mV
_CLOSE_TIMEOUT: Final = 5.0


def default_url() -> str:
    """``ws://127.0.0.1:<KNOT_STATION_PORT or 8001>/api/stations/ws``."""
    port = os.environ.get("KNOT_STATION_PORT") or str(st.DEFAULT_PORT)
    return f"ws://127.0.0.1:{port}{st.WS_PATH}"


def default_vehicles(station_id: int, occupied: int) -> dict[int, int]:
    """Spots 1..``occupied`` hold vehicle ``station_id * 100 + spot``."""
    return {spot: station_id * 100 + spot for spot in range(1, occupied + 1)}


def _now_ms() -> int:
    return int(time.time() * 1000)


class StopReason(StrEnum):
    STOPPED = "stopped"  # stop() was called
    REJECTED = "rejected"  # the backend answered boot with "rejected"
    REPLACED = "replaced"  # closed with 4001 and stop_when_replaced


class _End(StrEnum):
    """How one connection ended."""

    CONNECT_FAILED = "connect-failed"
    CLOSED = "closed"
    REPLACED = "replaced"
    REBOOT = "reboot"
    TIMEOUT = "timeout"
    BOOT_FAILED = "boot-failed"
    REJECTED = "rejected"
    STOPPED = "stopped"


@dataclass(slots=True)
class StationStats:
    """Counters of one station; owned and updated by the station, read them only."""

    events_sent: int = 0  # event CALL frames written, resends included
    events_resent: int = 0  # of which resends after a reconnect
    events_acknowledged: int = 0  # events answered with a RESULT
    events_failed: int = 0  # events answered with an ERROR or an unusable RESULT
    events_retried: int = 0  # InternalError answers: the event is sent again later
    commands_answered: int = 0  # RESULT or ERROR frames sent to the backend
    commands_failed: int = 0  # of which ERRORs (unknown action, malformed frame)
    connects: int = 0  # WebSocket handshakes that succeeded
    connect_failures: int = 0  # attempts that failed before a session (refused, 401, no boot)
    boots: int = 0  # boots accepted
    reconnects: int = 0  # boots accepted after the first
    timeouts: int = 0  # CALLs left unanswered for call_timeout
    unmatched_answers: int = 0  # RESULT/ERROR frames for no CALL of ours in flight


@dataclass(frozen=True, slots=True)
class SpotStatus:
    spot: int
    vehicle: int | None
    lock: st.Lock
    battery: int | None


class _Spot:
    __slots__ = ("battery", "lock", "vehicle")

    def __init__(self, vehicle: int | None, battery: int | None) -> None:
        self.vehicle = vehicle
        self.lock = st.Lock.CLOSED if vehicle is not None else st.Lock.OPEN
        self.battery = battery if vehicle is not None else None


class Delivery:
    """One event in the outbox; ``await delivery.wait()`` until it is answered."""

    __slots__ = ("_answered", "action", "error", "frame", "id", "internal_errors", "payload", "result", "sends")

    def __init__(self, id: str, action: st.Action, payload: st.Payload) -> None:
        self.id = id
        self.action = action
        self.payload = payload
        self.frame = st.call(id, action, payload)  # written once: a resend is byte-identical
        self.sends = 0
        self.internal_errors = 0
        self.result: dict[str, Any] | None = None
        self.error: st.Error | None = None
        self._answered = trio.Event()

    @property
    def answered(self) -> bool:
        return self._answered.is_set()

    @property
    def acknowledged(self) -> bool:
        return self.result is not None

    async def wait(self) -> Delivery:
        await self._answered.wait()
        return self

    def _finish(self, result: dict[str, Any] | None, error: st.Error | None) -> None:
        self.result, self.error = result, error
        self._answered.set()

    def __repr__(self) -> str:
        return f"<Delivery {self.action} {self.id} sends={self.sends} answered={self.answered}>"


class _Session:
    """One connection: its cancel scope, what is in flight, what is left to send."""

    __slots__ = ("boot_answer", "boot_done", "boot_id", "close_code", "end_reason", "in_flight", "retries",
                 "retry_wake", "scope", "unsent", "wake", "ws")

    def __init__(self, ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        self.ws = ws
        self.scope = scope
        self.end_reason: _End | None = None
        self.close_code: int | None = None
        self.boot_id = ""
        self.boot_done = trio.Event()
        self.boot_answer: st.Result | st.Error | None = None
        self.in_flight: dict[str, float] = {}  # event id -> time sent, in send order
        self.unsent: deque[Delivery] = deque()
        self.wake = trio.Event()
        self.retries: list[tuple[float, Delivery]] = []  # (when, event) answered InternalError, to send again
        self.retry_wake = trio.Event()

    def end(self, reason: _End, code: int | None = None) -> None:
        if self.end_reason is None:
            self.end_reason, self.close_code = reason, code
        self.scope.cancel()

    async def send(self, text: str) -> None:
        """Write one frame; a closed connection ends the session (and this task)."""
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            self.end(_End.CLOSED, exc.reason.code if exc.reason else None)
            await trio.lowlevel.checkpoint()  # raises Cancelled: the session is over


class SimulatedStation:
    """One simulated docking station; ``await run()`` until it stops."""

    def __init__(
        self,
        station_id: int,
        secret: str,
        url: str | None = None,
        *,
        spots: int = DEFAULT_SPOTS,
        vehicles: Mapping[int, int] | None = None,
        battery: int = DEFAULT_BATTERY,
        heartbeat: float | None = None,
        backoff_min: float = DEFAULT_BACKOFF_MIN,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        call_timeout: float = st.DEFAULT_CALL_TIMEOUT,
        stop_when_replaced: bool = True,
        changed: trio.lowlevel.ParkingLot | None = None,
    ) -> None:
        """
        ``vehicles`` maps spot number -> vehicle id of the vehicles docked at start.
        ``heartbeat`` (seconds) overrides the boot RESULT's ``heartbeat_interval``.
        ``changed`` is a parking lot unparked on every change (a :class:`Simulator`
        shares one across its stations).
        """
        if not 1 <= spots <= st.MAX_SPOTS:
            raise ValueError(f"spots must be 1..{st.MAX_SPOTS}, not {spots}")
        vehicles = dict(vehicles or {})
        for spot in vehicles:
            if not 1 <= spot <= spots:
                raise ValueError(f"vehicle at spot {spot}, but the station has spots 1..{spots}")
        if not 0 < backoff_min <= backoff_max:
            raise ValueError("need 0 < backoff_min <= backoff_max")
        self.station_id = station_id
        self.url = url or default_url()
        self.heartbeat = heartbeat
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.call_timeout = call_timeout
        self.stop_when_replaced = stop_when_replaced
        self.battery = battery
        #: The heartbeat in use: the override, else the last boot RESULT's interval.
        self.heartbeat_interval: float | None = heartbeat
        self.stats = StationStats()
        #: ``config`` values applied so far (``"volume"`` / ``"alarm-threshold"`` -> value).
        self.config: dict[str, int] = {}
        #: The ``badge-feedback`` payloads received, oldest first (the last 16).
        self.badge_feedback: deque[st.BadgeFeedbackPayload] = deque(maxlen=16)
        self.last_close_code: int | None = None
        self._auth = b"Basic " + base64.b64encode(f"{station_id}:{secret}".encode())
        self._spots = {n: _Spot(vehicles.get(n), battery) for n in range(1, spots + 1)}
        self._token = secrets.token_hex(4)
        self._boot_count = 0
        self._seq = 0
        self._outbox: dict[str, Delivery] = {}  # unanswered events, oldest first
        self._session: _Session | None = None  # the open connection
        self._active: _Session | None = None  # ... once its boot is accepted
        self._attempt_scope: trio.CancelScope | None = None
        self._stop_reason: StopReason | None = None
        self._stopped = trio.Event()
        self._connected = trio.Event()
        self._changed = trio.lowlevel.ParkingLot()
        self._shared_changed = changed
        self._warned_rejection = False

    # ------------------------------------------------------------------
    # Read-only view

    @property
    def connected(self) -> bool:
        """Connected and booted: events flow."""
        return self._active is not None

    @property
    def stopped(self) -> bool:
        return self._stopped.is_set()

    @property
    def stop_reason(self) -> StopReason | None:
        return self._stop_reason

    @property
    def boot_count(self) -> int:
        """Boot CALLs sent so far (the first part of call ids)."""
        return self._boot_count

    @property
    def pending(self) -> list[Delivery]:
        """Events not answered yet, oldest first."""
        return list(self._outbox.values())

    @property
    def pending_count(self) -> int:
        return len(self._outbox)

    def spot(self, number: int) -> SpotStatus:
        s = self._spot(number)
        return SpotStatus(number, s.vehicle, s.lock, s.battery)

    @property
    def spots(self) -> list[SpotStatus]:
        return [self.spot(number) for number in self._spots]

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is checked after every change."""
        while not predicate():
            await self._changed.park()

    async def wait_connected(self) -> None:
        """Wait until connected and booted (returns at once if so)."""
        await self.wait_until(lambda: self.connected or self.stopped)
        if not self.connected:
            raise RuntimeError(f"station {self.station_id} stopped: {self._stop_reason}")

    async def wait_stopped(self) -> StopReason:
        await self._stopped.wait()
        assert self._stop_reason is not None
        return self._stop_reason

    def _notify(self) -> None:
        self._changed.unpark_all()
        if self._shared_changed is not None:
            self._shared_changed.unpark_all()

    # ------------------------------------------------------------------
    # Things that happen at the station

    async def return_vehicle(
        self, spot: int, vehicle: int, *, battery: int | None = None, cache_accepted: bool = False
    ) -> Delivery:
        """A vehicle is docked at ``spot``: the lock closes and ``locked`` is sent.

        If the RESULT says DENY, the station releases the vehicle again (lock
        open, spot empty) and sends ``unlocked`` with ``unlock`` 0.
        """
        await trio.lowlevel.checkpoint()
        s = self._spot(spot)
        if s.vehicle is not None:
            raise ValueError(f"spot {spot} of station {self.station_id} already holds vehicle {s.vehicle}")
        s.vehicle, s.lock, s.battery = vehicle, st.Lock.CLOSED, self.battery if battery is None else battery
        return self._enqueue(
            st.Action.LOCKED,
            st.LockedPayload(spot=spot, vehicle=vehicle, time=_now_ms(), cache_accepted=cache_accepted),
        )

    async def badge(self, badge_id: str, spot: int | None = None) -> Delivery:
        """A badge is presented: ``badge-rfid``."""
        await trio.lowlevel.checkpoint()
        return self._enqueue(st.Action.BADGE_RFID, st.BadgeRfidPayload(badge_id=badge_id, spot=spot))

    async def alert(
        self, alert: st.Alert | int, status: st.AlertStatus | str = st.AlertStatus.APPEARING, spot: int | None = None
    ) -> Delivery:
        await trio.lowlevel.checkpoint()
        kind = st.Alert(alert)
        payload = st.AlertPayload(alert=kind, alert_name=kind.label, alert_status=st.AlertStatus(status), spot=spot)
        return self._enqueue(st.Action.ALERT, payload)

    async def fault(self, fault: st.Fault | int, status: str, spot: int) -> Delivery:
        await trio.lowlevel.checkpoint()
        kind = st.Fault(fault)
        payload = st.FaultPayload(fault=kind, fault_name=kind.label, fault_status=status, spot=spot)
        return self._enqueue(st.Action.FAULT, payload)

    async def unexpected_unlock(self, spot: int) -> Delivery:
        """The locker of ``spot`` opened without a command (the vehicle stays)."""
        await trio.lowlevel.checkpoint()
        self._spot(spot).lock = st.Lock.OPEN
        return self._enqueue(st.Action.UNEXPECTED_UNLOCK, st.UnexpectedUnlockPayload(spot=spot))

    async def send_state(self) -> Delivery:
        await trio.lowlevel.checkpoint()
        return self._enqueue_state()

    def _spot(self, number: int) -> _Spot:
        try:
            return self._spots[number]
        except KeyError:
            raise ValueError(f"station {self.station_id} has no spot {number}") from None

    def _state_payload(self) -> st.StatePayload:
        spots = [st.SpotState(spot=n, vehicle=s.vehicle, lock=s.lock) for n, s in self._spots.items()]
        vehicles = [
            st.VehicleState(vehicle=s.vehicle, voltage=VEHICLE_VOLTAGE, battery=s.battery)
            for s in self._spots.values()
            if s.vehicle  # 0: the id could not be read
        ]
        return st.StatePayload(mainboard=MAINBOARD_STATE, spots=spots, vehicles=vehicles, connectivity=CONNECTIVITY)

    def _boot_payload(self) -> st.BootPayload:
        spot = st.BoardInfo(firmware_version=SPOT_FIRMWARE, board_revision=SPOT_REVISION)
        return st.BootPayload(
            mainboard=st.BoardInfo(firmware_version=MAINBOARD_FIRMWARE, board_revision=MAINBOARD_REVISION),
            spots=[spot] * len(self._spots),
        )

    def _next_id(self) -> str:
        self._seq += 1
        return f"{self._token}-{self._boot_count}-{self._seq}"

    def _enqueue(self, action: st.Action, payload: st.Payload) -> Delivery:
        delivery = Delivery(self._next_id(), action, payload)
        self._outbox[delivery.id] = delivery
        if self._active is not None:
            self._active.unsent.append(delivery)
            self._active.wake.set()
        self._notify()
        return delivery

    def _enqueue_state(self) -> Delivery:
        return self._enqueue(st.Action.STATE, self._state_payload())

    def _release(self, locked: st.LockedPayload) -> None:
        """The backend denied a docked vehicle: open the lock, the spot is empty."""
        s = self._spots.get(locked.spot)
        if s is None or s.vehicle != locked.vehicle or s.lock is not st.Lock.CLOSED:
            return  # the vehicle has already gone
        s.vehicle, s.lock, s.battery = None, st.Lock.OPEN, None
        self._enqueue(st.Action.UNLOCKED, st.UnlockedPayload(spot=locked.spot, unlock=0, vehicle=locked.vehicle))

    # ------------------------------------------------------------------
    # Life cycle

    def stop(self) -> None:
        """Stop for good: close the connection cleanly (code 1001) and return from :meth:`run`."""
        self._set_stop(StopReason.STOPPED)

    def _set_stop(self, reason: StopReason) -> None:
        if self._stop_reason is None:
            self._stop_reason = reason
        if self._session is not None:
            self._session.end(_End.STOPPED)
        elif self._attempt_scope is not None:
            self._attempt_scope.cancel()
        self._notify()

    def _backoff(self, failures: int) -> float:
        ceiling = min(self.backoff_max, self.backoff_min * 2 ** min(failures, 30))
        return random.uniform(ceiling / 2, ceiling)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect with backoff, until stopped (``stop()``, rejected, replaced)."""
        task_status.started()
        failures = 0
        try:
            while self._stop_reason is None:
                with trio.CancelScope() as self._attempt_scope:
                    end = await self._connect_once()
                if self._stop_reason is not None:
                    break
                if end is _End.REPLACED and self.stop_when_replaced:
                    log.warning("station %s: replaced by another connection (4001), stopping", self.station_id)
                    self._stop_reason = StopReason.REPLACED
                    break
                if end is _End.REJECTED:
                    self._stop_reason = StopReason.REJECTED
                    break
                if end in (_End.CONNECT_FAILED, _End.BOOT_FAILED, _End.TIMEOUT):
                    failures += 1
                else:
                    failures = 0
                delay = self._backoff(failures)
                log.debug("station %s: connection ended (%s), reconnecting in %.2f s", self.station_id, end, delay)
                with trio.CancelScope() as self._attempt_scope:
                    await trio.sleep(delay)
        finally:
            self._attempt_scope = None
            if self._stop_reason is None:
                self._stop_reason = StopReason.STOPPED
            self._stopped.set()
            self._notify()

    async def _connect_once(self) -> _End:
        end = _End.CONNECT_FAILED
        try:
            async with open_websocket_url(
                self.url,
                subprotocols=[st.SUBPROTOCOL],
                extra_headers=[(b"Authorization", self._auth)],
                max_message_size=st.MAX_FRAME_BYTES,
                connect_timeout=self.call_timeout,
                disconnect_timeout=min(self.call_timeout, _CLOSE_TIMEOUT),
            ) as ws:
                self.stats.connects += 1
                if ws.subprotocol != st.SUBPROTOCOL:
                    log.warning("station %s: the backend did not select %s", self.station_id, st.SUBPROTOCOL)
                    end = _End.BOOT_FAILED
                    await ws.aclose(1002, "subprotocol required")
                else:
                    end = await self._run_session(ws)
        except ConnectionRejected as exc:
            if not self._warned_rejection:
                self._warned_rejection = True
                log.warning("station %s: connection rejected with HTTP %s", self.station_id, exc.status_code)
        except (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            log.debug("station %s: connection failed or closed: %r", self.station_id, exc)
        except LocalProtocolError as exc:
            # trio-websocket may answer a late ping on a connection already closing; that connection is over.
            log.debug("station %s: connection ended in a protocol race: %r", self.station_id, exc)
        if end in (_End.CONNECT_FAILED, _End.BOOT_FAILED):
            self.stats.connect_failures += 1
            self._notify()
        return end

    async def _run_session(self, ws: WebSocketConnection) -> _End:
        self._boot_count += 1
        self._seq = 0
        booted = False
        with trio.CancelScope() as scope:
            session = self._session = _Session(ws, scope)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, session)
                    await self._boot(session)
                    booted = True
                    self._active = session
                    session.unsent.extend(self._outbox.values())  # the unanswered ones first, in order
                    self.stats.boots += 1
                    if self.stats.boots > 1:
                        self.stats.reconnects += 1
                    self._enqueue_state()
                    nursery.start_soon(self._sender, session)
                    nursery.start_soon(self._heartbeat, session)
                    nursery.start_soon(self._watchdog, session)
                    nursery.start_soon(self._retrier, session)
                    self._notify()
            finally:
                self._session = self._active = None
                self.last_close_code = session.close_code
                self._notify()
        end = session.end_reason or _End.CLOSED
        if end is _End.CLOSED and not booted:
            end = _End.BOOT_FAILED  # closed before the boot was accepted: back off as for a failure
        if end is _End.STOPPED:
            await ws.aclose(1001, "station stopping")
        elif end in (_End.REBOOT, _End.TIMEOUT, _End.BOOT_FAILED):
            await ws.aclose(1000, str(end))
        return end

    async def _boot(self, session: _Session) -> None:
        session.boot_id = self._next_id()
        await session.send(st.call(session.boot_id, st.Action.BOOT, self._boot_payload()))
        with trio.move_on_after(self.call_timeout):
            await session.boot_done.wait()
        answer = session.boot_answer
        if answer is None:
            self.stats.timeouts += 1
            log.warning("station %s: no answer to boot within %s s", self.station_id, self.call_timeout)
            session.end(_End.BOOT_FAILED)
        elif isinstance(answer, st.Error):
            log.warning("station %s: boot answered %s: %s", self.station_id, answer.code, answer.description)
            session.end(_End.BOOT_FAILED)
        else:
            try:
                result = answer.decode(st.BootResult)
            except st.FrameError as exc:
                log.warning("station %s: bad boot RESULT: %s", self.station_id, exc.description)
                session.end(_End.BOOT_FAILED)
            else:
                if result.status is st.BootStatus.REJECTED:
                    log.warning("station %s: boot rejected (disabled station), stopping", self.station_id)
                    session.end(_End.REJECTED)
                else:
                    self.heartbeat_interval = self.heartbeat or result.heartbeat_interval
                    return
        await trio.lowlevel.checkpoint()  # the session was ended: raises Cancelled

    async def _sender(self, session: _Session) -> None:
        while True:
            if not session.unsent:
                session.wake = trio.Event()
                await session.wake.wait()
                continue
            delivery = session.unsent.popleft()
            if delivery.answered:
                continue
            session.in_flight[delivery.id] = trio.current_time()
            delivery.sends += 1
            self.stats.events_sent += 1
            if delivery.sends > 1:
                self.stats.events_resent += 1
            await session.send(delivery.frame)

    async def _retrier(self, session: _Session) -> None:
        """Send again, when due, the events the backend answered with ``InternalError``."""
        while True:
            if not session.retries:
                session.retry_wake = trio.Event()
                await session.retry_wake.wait()
                continue
            due = min(when for when, _ in session.retries)
            await trio.sleep_until(due)
            now = trio.current_time()
            ready = [delivery for when, delivery in session.retries if when <= now]
            session.retries = [(when, delivery) for when, delivery in session.retries if when > now]
            session.unsent.extendleft(reversed(ready))  # before anything new, in their order
            session.wake.set()

    async def _heartbeat(self, session: _Session) -> None:
        assert self.heartbeat_interval is not None
        while True:  # the first state is sent right after boot
            await trio.sleep(self.heartbeat_interval)
            self._enqueue_state()

    async def _watchdog(self, session: _Session) -> None:
        """End the connection when an event stays unanswered for ``call_timeout``."""
        while True:
            oldest = next(iter(session.in_flight.values()), None)
            if oldest is None:
                await trio.sleep(self.call_timeout)
            elif trio.current_time() >= oldest + self.call_timeout:
                self.stats.timeouts += 1
                log.warning("station %s: an event got no answer within %s s, reconnecting",
                            self.station_id, self.call_timeout)
                session.end(_End.TIMEOUT)
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep_until(oldest + self.call_timeout)

    async def _reader(self, session: _Session) -> None:
        while True:
            try:
                text = await session.ws.get_message()
            except ConnectionClosed as exc:
                code = exc.reason.code if exc.reason else None
                session.end(_End.REPLACED if code == st.REPLACED else _End.CLOSED, code)
                return
            await self._on_frame(session, text)

    # ------------------------------------------------------------------
    # Frames from the backend

    async def _answer(self, session: _Session, frame: str, *, failed: bool = False) -> None:
        await session.send(frame)
        self.stats.commands_answered += 1
        if failed:
            self.stats.commands_failed += 1
        self._notify()

    async def _on_frame(self, session: _Session, text: str | bytes) -> None:
        try:
            frame = st.parse_frame(text, actions=st.BACKEND_ACTIONS)
        except st.FrameError as exc:
            log.warning("station %s: bad frame from the backend: %s", self.station_id, exc)
            await self._answer(session, exc.frame, failed=True)
            return
        if isinstance(frame, st.Call):
            await self._on_call(session, frame)
        elif isinstance(frame, st.Result):
            self._on_answer(session, frame.id, frame, None)
        else:
            self._on_answer(session, frame.id, None, frame)

    async def _on_call(self, session: _Session, call: st.Call) -> None:
        payload = call.payload
        if call.action is st.Action.PING:
            await self._answer(session, st.result(call.id))
            self._enqueue_state()
        elif call.action is st.Action.REBOOT:
            await self._answer(session, st.result(call.id))
            session.end(_End.REBOOT)
        elif isinstance(payload, st.UnlockPayload):
            s = self._spots.get(payload.spot)
            if s is None or s.vehicle is None:
                await self._answer(session, st.result(call.id, st.UnlockResult(status=st.UnlockStatus.REJECTED)))
                return
            await self._answer(session, st.result(call.id, st.UnlockResult(status=st.UnlockStatus.ACCEPTED)))
            vehicle = s.vehicle
            s.vehicle, s.lock, s.battery = None, st.Lock.OPEN, None  # the locker opens, the vehicle leaves
            self._enqueue(st.Action.UNLOCKED, st.UnlockedPayload(spot=payload.spot, unlock=payload.unlock,
                                                                 vehicle=vehicle))
        elif isinstance(payload, st.RefreshPayload):
            await self._answer(session, st.result(call.id))
            for number, s in self._spots.items():
                if s.vehicle is not None and payload.spot in (None, number):
                    self._enqueue(st.Action.LOCKED, st.LockedPayload(
                        spot=number, vehicle=s.vehicle, time=_now_ms(), cache_accepted=False))
        elif isinstance(payload, st.BadgeFeedbackPayload):
            await self._answer(session, st.result(call.id))
            self.badge_feedback.append(payload)
        elif isinstance(payload, st.ConfigPayload):
            await self._answer(session, st.result(call.id))
            self.config[str(payload.config)] = payload.value
            self._enqueue(st.Action.CONFIGURED, st.ConfiguredPayload(type=payload.config, value=payload.value))
        else:  # parse_frame only lets BACKEND_ACTIONS through
            await self._answer(session, st.error(call.id, st.ErrorCode.NOT_IMPLEMENTED,
                                                 f"unknown action {call.action!r}"), failed=True)

    def _on_answer(self, session: _Session, id: str, result: st.Result | None, error: st.Error | None) -> None:
        if id == session.boot_id and session.boot_answer is None:
            session.boot_answer = result or error
            session.boot_done.set()
            return
        delivery = self._outbox.get(id)
        if delivery is None or id not in session.in_flight:
            self.stats.unmatched_answers += 1
            log.debug("station %s: answer to no CALL in flight: %s", self.station_id, id)
            return
        del session.in_flight[id]
        if error is not None and error.code is st.ErrorCode.INTERNAL_ERROR:
            delivery.internal_errors += 1
            self.stats.events_retried += 1
            delay = min(self.backoff_max, self.backoff_min * 2 ** min(delivery.internal_errors - 1, 30))
            log.info("station %s: %s %s answered InternalError; sending it again in %.1f s", self.station_id,
                     delivery.action, id, delay)
            session.retries.append((trio.current_time() + delay, delivery))
            session.retry_wake.set()
            return
        del self._outbox[id]
        if error is not None:
            self.stats.events_failed += 1
            log.warning("station %s: %s %s answered %s: %s", self.station_id, delivery.action, id, error.code,
                        error.description)
            delivery._finish(None, error)
        else:
            assert result is not None
            try:
                decoded = result.decode(st.RESULTS[delivery.action])
            except st.FrameError as exc:
                self.stats.events_failed += 1
                log.warning("station %s: %s %s: %s", self.station_id, delivery.action, id, exc.description)
                delivery._finish(None, exc.error)
            else:
                self.stats.events_acknowledged += 1
                delivery._finish(result.payload, None)
                if isinstance(decoded, st.LockedResult) and decoded.accepted is st.LockAccepted.DENY:
                    assert isinstance(delivery.payload, st.LockedPayload)
                    self._release(delivery.payload)
        self._notify()


# --------------------------------------------------------------------------
# Many stations


@dataclass(frozen=True, slots=True)
class Summary:
    stations: int
    connected: int
    stopped: int
    events_sent: int
    events_acknowledged: int
    events_pending: int
    events_failed: int
    commands_answered: int
    reconnects: int
    connect_failures: int

    def line(self) -> str:
        return (
            f"stations {self.connected}/{self.stations} connected"
            + (f", {self.stopped} stopped" if self.stopped else "")
            + f" | events sent {self.events_sent}, acknowledged {self.events_acknowledged},"
            f" pending {self.events_pending}, failed {self.events_failed}"
            f" | commands answered {self.commands_answered}"
            f" | reconnects {self.reconnects}, connect failures {self.connect_failures}"
        )


class Simulator:
    """Many :class:`SimulatedStation` in one nursery (one task tree each, no threads)."""

    def __init__(
        self,
        url: str | None,
        stations: Iterable[tuple[int, str]],
        *,
        spots: int = DEFAULT_SPOTS,
        vehicles: int | None = None,
        ramp: float = 0.0,
        **options: Any,
    ) -> None:
        """
        ``vehicles``: how many spots of each station hold a vehicle at start
        (spots 1..n, vehicle ids from :func:`default_vehicles`; default: half
        the spots). ``ramp``: seconds over which the stations are started.
        Other keyword options go to every :class:`SimulatedStation`.
        """
        occupied = spots // 2 if vehicles is None else vehicles
        if not 0 <= occupied <= spots:
            raise ValueError(f"vehicles must be 0..{spots}")
        self.url = url or default_url()
        self.ramp = ramp
        self._changed = trio.lowlevel.ParkingLot()
        self.stations: list[SimulatedStation] = []
        self._by_id: dict[int, SimulatedStation] = {}
        for station_id, secret in stations:
            if station_id in self._by_id:
                raise ValueError(f"station {station_id} is given twice")
            station = SimulatedStation(
                station_id, secret, self.url, spots=spots, vehicles=default_vehicles(station_id, occupied),
                changed=self._changed, **options,
            )
            self.stations.append(station)
            self._by_id[station_id] = station
        self._started = False

    def station(self, station_id: int) -> SimulatedStation:
        return self._by_id[station_id]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every station until all have stopped (see :meth:`stop`)."""
        if self._started:
            raise RuntimeError("a Simulator runs once")
        self._started = True
        async with trio.open_nursery() as nursery:
            step = self.ramp / len(self.stations) if self.stations else 0.0
            for station in self.stations:
                nursery.start_soon(station.run)
                if step:
                    await trio.sleep(step)
            task_status.started()

    def stop(self) -> None:
        """Stop every station cleanly; :meth:`run` returns once all have closed."""
        for station in self.stations:
            station.stop()

    def summary(self) -> Summary:
        connected = stopped = sent = acked = pending = failed = answered = reconnects = connect_failures = 0
        for station in self.stations:
            s = station.stats
            connected += station.connected
            stopped += station.stopped
            sent += s.events_sent
            acked += s.events_acknowledged
            pending += station.pending_count
            failed += s.events_failed
            answered += s.commands_answered
            reconnects += s.reconnects
            connect_failures += s.connect_failures
        return Summary(len(self.stations), connected, stopped, sent, acked, pending, failed, answered, reconnects,
                       connect_failures)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; checked after every change of any station."""
        while not predicate():
            await self._changed.park()

    async def wait_connected(self, count: int | None = None) -> None:
        """Wait until ``count`` stations (default: all) are connected and booted."""
        wanted = len(self.stations) if count is None else count
        await self.wait_until(lambda: sum(s.connected for s in self.stations) >= wanted)

    async def print_live(self, stream: TextIO | None = None, interval: float = 1.0) -> None:
        """Print :meth:`summary` every ``interval`` seconds: one refreshed line on a terminal."""
        out = stream or sys.stderr
        tty = out.isatty()
        try:
            while True:
                line = self.summary().line()
                out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
                out.flush()
                await trio.sleep(interval)
        finally:
            if tty:
                out.write("\n")
                out.flush()


# --------------------------------------------------------------------------
# knot-rt simulate


def parse_station(text: str) -> tuple[int, str]:
    """``"ID:SECRET"`` (or a JSON object with ``id``/``station_id`` and ``secret``) -> (id, secret)."""
    text = text.strip()
    if text.startswith("{"):
        data = json.loads(text)
        raw_id, secret = data.get("station_id", data.get("id")), data.get("secret")
    else:
        raw_id, _, secret = text.partition(":")
    try:
        station_id = int(raw_id)
    except (TypeError, ValueError):
        raise ValueError(f"expected ID:SECRET, not {text!r}") from None
    if not isinstance(secret, str) or len(secret) < st.MIN_SECRET_LENGTH:
        raise ValueError(f"station {station_id}: the secret must have at least {st.MIN_SECRET_LENGTH} characters")
    return station_id, secret


def read_stations_file(path: str) -> list[tuple[int, str]]:
    """One station a line (``id:secret`` or JSON); blank lines and ``#`` comments are skipped."""
    stations = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    stations.append(parse_station(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
    return stations


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``knot-rt simulate``."""
    parser.add_argument("--url", help=f"station gateway URL (default: ws://127.0.0.1:$KNOT_STATION_PORT{st.WS_PATH},"
                                      f" port {st.DEFAULT_PORT})")
    parser.add_argument("--station", action="append", default=[], metavar="ID:SECRET",
                        help="a station to simulate (repeatable)")
    parser.add_argument("--stations-file", "--secrets-file", dest="stations_file", metavar="FILE",
                        help="stations, one 'id:secret' a line (as `knot-rt station create` prints them)")
    parser.add_argument("--stations", type=int, metavar="N", help="simulate the first N stations of the file")
    parser.add_argument("--spots", type=int, default=DEFAULT_SPOTS, help=f"spots per station (default {DEFAULT_SPOTS})")
    parser.add_argument("--vehicles", type=int, metavar="K",
                        help="spots 1..K of each station hold vehicle ID*100+spot at start (default: half the spots)")
    parser.add_argument("--heartbeat", type=float, metavar="S",
                        help="seconds between state messages (default: the boot answer's heartbeat_interval)")
    parser.add_argument("--call-timeout", type=float, default=st.DEFAULT_CALL_TIMEOUT, metavar="S",
                        help="seconds to wait for an answer before reconnecting")
    parser.add_argument("--backoff-min", type=float, default=DEFAULT_BACKOFF_MIN, metavar="S")
    parser.add_argument("--backoff-max", type=float, default=DEFAULT_BACKOFF_MAX, metavar="S")
    parser.add_argument("--ramp", type=float, default=0.0, metavar="S", help="start the stations over S seconds")
    parser.add_argument("--on-replaced", choices=("stop", "reconnect"), default="stop",
                        help="what a station does when closed with 4001 (default: stop)")
    parser.add_argument("--quiet", action="store_true", help="no live summary line")


def _collect_stations(args: argparse.Namespace) -> list[tuple[int, str]]:
    stations = [parse_station(text) for text in args.station]
    if args.stations_file:
        from_file = read_stations_file(args.stations_file)
        if args.stations is not None:
            if args.stations > len(from_file):
                raise ValueError(f"--stations {args.stations}, but {args.stations_file} lists {len(from_file)}")
            from_file = from_file[: args.stations]
        stations += from_file
    elif args.stations is not None:
        raise ValueError("--stations N takes the first N stations of --stations-file")
    if not stations:
        raise ValueError("no station: give --station ID:SECRET or --stations-file FILE")
    return stations


def _raise_file_limit(wanted: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def run_from_args(args: argparse.Namespace) -> int:
    """``knot-rt simulate``: run until SIGINT/SIGTERM, then stop cleanly and print the summary."""
    try:
        stations = _collect_stations(args)
        simulator = Simulator(
            args.url, stations, spots=args.spots, vehicles=args.vehicles, ramp=args.ramp,
            heartbeat=args.heartbeat, call_timeout=args.call_timeout, backoff_min=args.backoff_min,
            backoff_max=args.backoff_max, stop_when_replaced=args.on_replaced == "stop",
        )
    except (ValueError, OSError) as exc:
        print(f"knot-rt simulate: {exc}", file=sys.stderr)
        return 2
    _raise_file_limit(len(stations) + 256)
    print(f"simulating {len(stations)} station(s) against {simulator.url}", file=sys.stderr, flush=True)
    trio.run(_simulate, simulator, args.quiet)
    print(simulator.summary().line(), file=sys.stderr, flush=True)
    return 0


async def _simulate(simulator: Simulator, quiet: bool) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, simulator, nursery.cancel_scope)
        if not quiet:
            nursery.start_soon(simulator.print_live)
        await simulator.run()
        nursery.cancel_scope.cancel()


async def _stop_on_signal(simulator: Simulator, scope: trio.CancelScope) -> None:
    """First signal: stop the stations cleanly (at most 10 s); a second one: cancel at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            break
        simulator.stop()
        with trio.move_on_after(10):
            async for _ in signals:
                break
        scope.cancel()


__all__: Sequence[str] = (
    "Delivery",
    "SimulatedStation",
    "Simulator",
    "SpotStatus",
    "StationStats",
    "StopReason",
    "Summary",
    "add_arguments",
    "default_url",
    "default_vehicles",
    "parse_station",
    "read_stations_file",
    "run_from_args",
)
