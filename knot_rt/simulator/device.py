"""A simulated device: a firmware-like client of a device protocol over a real WebSocket.

:class:`SimulatedDevice` is what a simulated station (``station.py``) and a
simulated free-floating vehicle (``vehicle.py``) share: ``vehicle-protocol.md`` is the
station protocol with other actions (same gateway, framing, Basic auth, boot,
delivery guarantee, close codes). A device:

- connects to its gateway URL with HTTP Basic auth (device id : secret) and
  its protocol's subprotocol;
- sends ``boot`` first and waits for its RESULT (``accepted``: go on,
  ``rejected``: stop for good), then its heartbeat event (a station's
  ``state``) at once and every heartbeat (the boot RESULT's
  ``heartbeat_interval`` unless ``heartbeat`` overrides it);
- answers every backend CALL (several may be in flight) through
  :meth:`~SimulatedDevice.on_call`; an unknown action gets ``NotImplemented``,
  a malformed frame ``FormatViolation``;
- keeps each event in its outbox (``outbox.py``) until answered; after a
  reconnect (once the new boot is accepted) every unanswered event is sent
  again, in order and with the same id, before anything new. An
  ``InternalError`` answer keeps the event and sends it again on the same
  connection after a back-off (``backoff_min`` doubling per such answer, capped
  at ``backoff_max``); any other ERROR answer (or a RESULT whose payload does
  not fit) ends that event: it is logged and counted, never retried. An event
  left unanswered for ``call_timeout`` makes the device drop the connection and
  reconnect, so that it is resent (``session.py``);
- reconnects with bounded exponential back-off and jitter (``backoff.py``);
- stops for good on a close with code 4001 ("replaced": another connection of
  this device won) by default (``stop_when_replaced``): two live instances of
  one device would otherwise keep replacing each other.

A subclass gives its :class:`DeviceProtocol` (``protocol``), its
:meth:`~SimulatedDevice.boot_payload`, its
:meth:`~SimulatedDevice.heartbeat_event`, its answers
(:meth:`~SimulatedDevice.on_call`) and, if it cares, what an acknowledged
event does (:meth:`~SimulatedDevice.on_acknowledged`). It raises its own
events with ``_enqueue(action, payload)`` and calls ``_notify()`` after any
change of its own state.

Choices:

- Inheritance with hooks, as ``actors.runtime.Actor``: the connection logic is
  written once and a device only says what it sends and how it answers.
- Framing is ``protocols.station``'s (``Call``/``Result``/``Error``,
  ``parse_frame``, ``call``/``result``/``error``): the vehicle protocol's
  frames are "exactly as" the station protocol's, so that framing serves both;
  a device protocol brings its own action names, action and RESULT tables
  and frame limit (:class:`DeviceProtocol`, whose ``parse`` and ``call`` apply
  them; the outbox writes its events' frames with that ``call``). The boot
  RESULT is the same for both (``status``, ``heartbeat_interval``,
  ``server_time``).
- Waiting is by predicate: every change wakes the device's waiters (and its
  fleet's), which check their condition again. Simple for tests and the fleet,
  at the cost of waking every waiter per change (there are few).
- Only ``protocols``, the standard library, Trio and trio-websocket are used,
  never ``knot_rt/stations``: the simulator is the server's peer, and shares
  with it only the contract (``protocols/``).
"""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar, Final, TypedDict

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, WebSocketConnection, open_websocket_url
from wsproto.utilities import LocalProtocolError

from protocols import station as st
from protocols.credentials import basic_authorization

from .backoff import DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN, Backoff
from .outbox import Delivery, Outbox
from .session import End, Session
from .stats import DeviceStats

log = logging.getLogger(__name__)

_CLOSE_TIMEOUT: Final = 5.0


def gateway_url(path: str) -> str:
    """``ws://127.0.0.1:<KNOT_STATION_PORT or 8001><path>``: the device gateway of a local server."""
    port = os.environ.get("KNOT_STATION_PORT") or str(st.DEFAULT_PORT)
    return f"ws://127.0.0.1:{port}{path}"


@dataclass(frozen=True, slots=True)
class DeviceProtocol:
    """What the shared connection logic needs to know of one device protocol (its framing is the station's)."""

    name: str  # names the device in logs: "station 12"
    subprotocol: str
    max_frame_bytes: int
    actions: Mapping[str, type[st.Payload]]  # every action of the protocol, with its payload (to write CALLs)
    action_type: type[StrEnum]  # the protocol's action names
    backend_actions: Mapping[str, type[st.Payload]]  # the CALLs the backend may send, with their payloads
    results: Mapping[str, type[st.Payload]]  # the RESULT payload of each event the device sends

    def parse(self, text: str | bytes) -> st.Frame:
        """A frame from the backend; raises ``FrameError`` with the ERROR to answer."""
        return st.parse_frame(
            text, actions=self.backend_actions, action_type=self.action_type, max_bytes=self.max_frame_bytes)

    def call(self, id: str, action: str, payload: st.Payload) -> str:
        """A CALL frame of this protocol (``payload`` must be the model of ``action``)."""
        return st.call(id, action, payload, actions=self.actions)


class DeviceOptions(TypedDict, total=False):
    """The keyword options every device takes (see :meth:`SimulatedDevice.__init__`)."""

    heartbeat: float | None
    backoff_min: float
    backoff_max: float
    call_timeout: float
    stop_when_replaced: bool


class StopReason(StrEnum):
    STOPPED = "stopped"  # stop() was called
    REJECTED = "rejected"  # the backend answered boot with "rejected"
    REPLACED = "replaced"  # closed with 4001 and stop_when_replaced


class Changes:
    """A change signal: :meth:`notify` wakes every :meth:`wait_until` to check its predicate again."""

    __slots__ = ("_lot",)

    def __init__(self) -> None:
        self._lot = trio.lowlevel.ParkingLot()

    def notify(self) -> None:
        self._lot.unpark_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is checked after every change."""
        while not predicate():
            await self._lot.park()


class Reply:
    """The answer to one backend CALL, written on the connection the CALL came in on."""

    __slots__ = ("_device", "_session", "call")

    def __init__(self, device: SimulatedDevice, session: Session, call: st.Call) -> None:
        self._device = device
        self._session = session
        self.call = call

    async def result(self, payload: st.Payload | None = None) -> None:
        await self._device._answer(self._session, st.result(self.call.id, payload))

    async def error(self, code: st.ErrorCode, description: str) -> None:
        await self._device._answer(self._session, st.error(self.call.id, code, description), failed=True)

    def reboot(self) -> None:
        """Close this connection (after the answer); the device connects again with a new boot."""
        self._session.end(End.REBOOT)


class SimulatedDevice(ABC):
    """One simulated device; ``await run()`` until it stops."""

    protocol: ClassVar[DeviceProtocol]

    def __init__(
        self,
        user: str | int,
        secret: str,
        url: str,
        *,
        heartbeat: float | None = None,
        backoff_min: float = DEFAULT_BACKOFF_MIN,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        call_timeout: float = st.DEFAULT_CALL_TIMEOUT,
        stop_when_replaced: bool = True,
        changed: Changes | None = None,
    ) -> None:
        """
        ``user`` and ``secret`` are the Basic-auth credentials (a station's id).
        ``heartbeat`` (seconds) overrides the boot RESULT's ``heartbeat_interval``.
        ``changed`` is notified on every change, besides the device's own waiters
        (a fleet shares one across its devices).
        """
        self.label = f"{self.protocol.name} {user}"
        self.url = url
        self.backoff = Backoff(backoff_min, backoff_max)
        self.call_timeout = call_timeout
        self.stop_when_replaced = stop_when_replaced
        self.heartbeat = heartbeat
        #: The heartbeat in use: the override, else the last boot RESULT's interval.
        self.heartbeat_interval: float | None = heartbeat
        self.stats = DeviceStats()
        self.last_close_code: int | None = None
        self._auth = basic_authorization(user, secret).encode()
        self._outbox = Outbox(self.protocol.call)
        self._session: Session | None = None  # the open connection
        self._active: Session | None = None  # ... once its boot is accepted
        self._attempt_scope: trio.CancelScope | None = None
        self._stop_reason: StopReason | None = None
        self._stopped = trio.Event()
        self._changes = Changes()
        self._shared_changes = changed
        self._warned_rejection = False

    # ------------------------------------------------------------------
    # What a device is made of (the subclass)

    @abstractmethod
    def boot_payload(self) -> st.Payload:
        """The payload of ``boot``."""

    @abstractmethod
    def heartbeat_event(self) -> tuple[str, st.Payload]:
        """The event sent right after each boot and every heartbeat: ``(action, payload)``."""

    @abstractmethod
    async def on_call(self, call: st.Call, reply: Reply) -> None:
        """Answer one backend CALL (``reply.result(...)`` or ``reply.error(...)``), then act on it."""

    def on_acknowledged(self, delivery: Delivery, result: st.Payload) -> None:  # noqa: B027 - optional hook
        """An event got its RESULT (decoded with the protocol's RESULT model)."""

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
        """Boot CALLs sent so far (the second part of call ids)."""
        return self._outbox.boots

    @property
    def pending(self) -> list[Delivery]:
        """Events not answered yet, oldest first."""
        return list(self._outbox)

    @property
    def pending_count(self) -> int:
        return len(self._outbox)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; it is checked after every change."""
        await self._changes.wait_until(predicate)

    async def wait_connected(self) -> None:
        """Wait until connected and booted (returns at once if so)."""
        await self.wait_until(lambda: self.connected or self.stopped)
        if not self.connected:
            raise RuntimeError(f"{self.label} stopped: {self._stop_reason}")

    async def wait_stopped(self) -> StopReason:
        await self._stopped.wait()
        assert self._stop_reason is not None
        return self._stop_reason

    def _notify(self) -> None:
        self._changes.notify()
        if self._shared_changes is not None:
            self._shared_changes.notify()

    def _enqueue(self, action: str, payload: st.Payload) -> Delivery:
        """An event happened at the device: into the outbox, and onto the connection if booted."""
        delivery = self._outbox.add(action, payload)
        if self._active is not None:
            self._active.queue((delivery,))
        self._notify()
        return delivery

    # ------------------------------------------------------------------
    # Life cycle

    def stop(self) -> None:
        """Stop for good: close the connection cleanly (code 1001) and return from :meth:`run`."""
        if self._stop_reason is None:
            self._stop_reason = StopReason.STOPPED
        if self._session is not None:
            self._session.end(End.STOPPED)
        elif self._attempt_scope is not None:
            self._attempt_scope.cancel()
        self._notify()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect, and reconnect with back-off, until stopped (``stop()``, rejected, replaced)."""
        task_status.started()
        failures = 0
        try:
            while self._stop_reason is None:
                with trio.CancelScope() as self._attempt_scope:
                    end = await self._connect_once()
                if self._stop_reason is not None:
                    break
                if end is End.REPLACED and self.stop_when_replaced:
                    log.warning("%s: replaced by another connection (4001), stopping", self.label)
                    self._stop_reason = StopReason.REPLACED
                    break
                if end is End.REJECTED:
                    self._stop_reason = StopReason.REJECTED
                    break
                failures = failures + 1 if end in (End.CONNECT_FAILED, End.BOOT_FAILED, End.TIMEOUT) else 0
                delay = self.backoff.jittered(failures)
                log.debug("%s: connection ended (%s), reconnecting in %.2f s", self.label, end, delay)
                with trio.CancelScope() as self._attempt_scope:
                    await trio.sleep(delay)
        finally:
            self._attempt_scope = None
            if self._stop_reason is None:
                self._stop_reason = StopReason.STOPPED
            self._stopped.set()
            self._notify()

    async def _connect_once(self) -> End:
        end = End.CONNECT_FAILED
        subprotocol = self.protocol.subprotocol
        try:
            async with open_websocket_url(
                self.url,
                subprotocols=[subprotocol],
                extra_headers=[(b"Authorization", self._auth)],
                max_message_size=self.protocol.max_frame_bytes,
                connect_timeout=self.call_timeout,
                disconnect_timeout=min(self.call_timeout, _CLOSE_TIMEOUT),
            ) as ws:
                self.stats.connects += 1
                if ws.subprotocol != subprotocol:
                    log.warning("%s: the backend did not select %s", self.label, subprotocol)
                    end = End.BOOT_FAILED
                    await ws.aclose(1002, "subprotocol required")
                else:
                    end = await self._run_session(ws)
        except ConnectionRejected as exc:
            if not self._warned_rejection:
                self._warned_rejection = True
                log.warning("%s: connection rejected with HTTP %s", self.label, exc.status_code)
        except (HandshakeError, ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            log.debug("%s: connection failed or closed: %r", self.label, exc)
        except LocalProtocolError as exc:
            # trio-websocket may answer a late ping on a connection already closing; that connection is over.
            log.debug("%s: connection ended in a protocol race: %r", self.label, exc)
        if end in (End.CONNECT_FAILED, End.BOOT_FAILED):
            self.stats.connect_failures += 1
            self._notify()
        return end

    async def _run_session(self, ws: WebSocketConnection) -> End:
        self._outbox.next_boot()
        booted = False
        with trio.CancelScope() as scope:
            session = self._session = Session(ws, scope, self.stats, self.label, self.call_timeout)
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader, session)
                    await self._boot(session)
                    booted = True
                    self._active = session
                    session.queue(self._outbox)  # the unanswered ones first, in order
                    self.stats.boots += 1
                    if self.stats.boots > 1:
                        self.stats.reconnects += 1
                    self._enqueue(*self.heartbeat_event())
                    nursery.start_soon(session.send_events)
                    nursery.start_soon(self._heartbeat)
                    nursery.start_soon(session.watch_answers)
                    self._notify()
            finally:
                self._session = self._active = None
                self.last_close_code = session.close_code
                self._notify()
        end = session.end_reason or End.CLOSED
        if end is End.CLOSED and not booted:
            end = End.BOOT_FAILED  # closed before the boot was accepted: back off as for a failure
        if end is End.STOPPED:
            await ws.aclose(1001, f"{self.protocol.name} stopping")
        elif end in (End.REBOOT, End.TIMEOUT, End.BOOT_FAILED):
            await ws.aclose(1000, str(end))
        return end

    async def _boot(self, session: Session) -> None:
        session.boot_id = self._outbox.next_id()
        await session.send(self.protocol.call(session.boot_id, st.Action.BOOT, self.boot_payload()))
        with trio.move_on_after(self.call_timeout):
            await session.boot_done.wait()
        answer = session.boot_answer
        if answer is None:
            self.stats.timeouts += 1
            log.warning("%s: no answer to boot within %s s", self.label, self.call_timeout)
            session.end(End.BOOT_FAILED)
        elif isinstance(answer, st.Error):
            log.warning("%s: boot answered %s: %s", self.label, answer.code, answer.description)
            session.end(End.BOOT_FAILED)
        else:
            try:
                result = answer.decode(st.BootResult)
            except st.FrameError as exc:
                log.warning("%s: bad boot RESULT: %s", self.label, exc.description)
                session.end(End.BOOT_FAILED)
            else:
                if result.status is st.BootStatus.REJECTED:
                    log.warning("%s: boot rejected (disabled %s), stopping", self.label, self.protocol.name)
                    session.end(End.REJECTED)
                else:
                    self.heartbeat_interval = self.heartbeat or result.heartbeat_interval
                    return
        await trio.lowlevel.checkpoint()  # the session was ended: raises Cancelled

    async def _heartbeat(self) -> None:
        assert self.heartbeat_interval is not None
        while True:  # the first one is sent right after boot
            await trio.sleep(self.heartbeat_interval)
            self._enqueue(*self.heartbeat_event())

    # ------------------------------------------------------------------
    # Frames from the backend

    async def _reader(self, session: Session) -> None:
        while (text := await session.receive()) is not None:
            await self._on_frame(session, text)

    async def _answer(self, session: Session, frame: str, *, failed: bool = False) -> None:
        await session.send(frame)
        self.stats.commands_answered += 1
        if failed:
            self.stats.commands_failed += 1
        self._notify()

    async def _on_frame(self, session: Session, text: str | bytes) -> None:
        try:
            frame = self.protocol.parse(text)
        except st.FrameError as exc:
            log.warning("%s: bad frame from the backend: %s", self.label, exc)
            await self._answer(session, exc.frame, failed=True)
            return
        if isinstance(frame, st.Call):
            await self.on_call(frame, Reply(self, session, frame))
        elif isinstance(frame, st.Result):
            self._on_answer(session, frame.id, frame, None)
        else:
            self._on_answer(session, frame.id, None, frame)

    def _on_answer(self, session: Session, id: str, result: st.Result | None, error: st.Error | None) -> None:
        if id == session.boot_id and session.boot_answer is None:
            session.boot_answer = result or error
            session.boot_done.set()
            return
        delivery = self._outbox.get(id)
        if delivery is None or not session.take_in_flight(id):
            self.stats.unmatched_answers += 1
            log.debug("%s: answer to no CALL in flight: %s", self.label, id)
            return
        if error is not None and error.code is st.ErrorCode.INTERNAL_ERROR:
            delivery.internal_errors += 1
            self.stats.events_retried += 1
            delay = self.backoff.delay(delivery.internal_errors - 1)
            log.info("%s: %s %s answered InternalError; sending it again in %.1f s", self.label, delivery.action, id,
                     delay)
            session.retry_later(delivery, delay)
            return
        if error is not None:
            self.stats.events_failed += 1
            log.warning("%s: %s %s answered %s: %s", self.label, delivery.action, id, error.code, error.description)
            self._outbox.settle(delivery, error=error)
        else:
            assert result is not None
            self._settle_result(delivery, result)
        self._notify()

    def _settle_result(self, delivery: Delivery, result: st.Result) -> None:
        try:
            decoded = result.decode(self.protocol.results[delivery.action])
        except st.FrameError as exc:
            self.stats.events_failed += 1
            log.warning("%s: %s %s: %s", self.label, delivery.action, delivery.id, exc.description)
            self._outbox.settle(delivery, error=exc.error)
        else:
            self.stats.events_acknowledged += 1
            self._outbox.settle(delivery, result=result.payload)
            self.on_acknowledged(delivery, decoded)

