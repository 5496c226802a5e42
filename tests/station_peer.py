"""A small but strict backend side of the device protocols (stations, vehicles), for tests.

A trio-websocket server on 127.0.0.1 that checks what ``station-protocol.md``
(:class:`StationPeer`) or ``vehicle-protocol.md`` (:class:`VehiclePeer`: the
same framing and delivery rules, other actions) asks of a device, answers its
CALLs with RESULTs built with ``protocols`` and can send CALLs of its own.
Anything a device does wrong is recorded in :attr:`DevicePeer.violations`
(tests assert it stays empty):

- the path, HTTP Basic auth (a wrong or unknown device gets HTTP 401) and the
  protocol's subprotocol;
- every frame parses (the protocol's ``parse_frame`` with the device's actions);
- ``boot`` is the first CALL of a connection and nothing else is sent before
  its RESULT;
- a call id is never reused for a different frame (a resend repeats the frame
  byte for byte); a repeated id gets the same RESULT again, as the backend's
  deduplication does;
- every answer to a CALL of the peer matches one in flight.

Knobs: ``withhold`` (actions left unanswered), ``error_for`` (actions answered
with an ERROR), ``unavailable_for`` (actions answered ``InternalError`` without
being recorded, as the backend does while its database is down), ``locked_answer``, ``boot_status``, ``heartbeat_interval``.
Like the real gateway, the newest connection of a device wins: the older one
is closed with 4001. Devices are known by their Basic-auth user: a station by
its id (an int), a vehicle by its serial number.
"""

from __future__ import annotations

import base64
import binascii
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, Final, TypeVar

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from protocols import station as st
from protocols import vehicle as vh

if TYPE_CHECKING:
    from knot_rt.simulator.device import SimulatedDevice

TIMEOUT = 10.0  # seconds a wait may take before the test fails (a hang guard, not a timing assertion)
T = TypeVar("T")
D = TypeVar("D", bound="SimulatedDevice")


async def within(awaitable: Awaitable[T]) -> T:
    """Await with a hang guard (never a timing assertion)."""
    with trio.fail_after(TIMEOUT):
        return await awaitable


async def started(nursery: trio.Nursery, device: D) -> D:
    """Run a simulated device in ``nursery`` until it is connected and booted."""
    nursery.start_soon(device.run)
    await within(device.wait_connected())
    return device


@asynccontextmanager
async def simulating(*argv: str) -> AsyncIterator[trio.Process]:
    """``knot-rt simulate ARGV`` as a subprocess, its stderr piped; killed at the end if it still runs."""
    command = [sys.executable, "-m", "knot_rt.cli", "simulate", *argv]
    process = await trio.lowlevel.open_process(command, stderr=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def stderr_of(process: trio.Process) -> str:
    """Everything the process wrote on its stderr (read to its end)."""
    assert process.stderr is not None
    output = b""
    while chunk := await process.stderr.receive_some():
        output += chunk
    return output.decode()


@dataclass(frozen=True)
class PeerProtocol:
    """What the peer needs to know of one device protocol."""

    ws_path: str
    subprotocol: str
    parse: Callable[[str], st.Frame]  # a frame from the device
    call: Callable[[str, str, st.Payload], str]  # a CALL frame to the device
    backend_actions: Mapping[str, type[st.Payload]]
    results: Mapping[str, type[st.Payload]]
    device: Callable[[str], Hashable]  # the Basic-auth user -> the device's key; ValueError if it is none


STATION: Final = PeerProtocol(st.WS_PATH, st.SUBPROTOCOL, st.parse_frame, st.call, st.BACKEND_ACTIONS, st.RESULTS, int)


def _serial(user: str) -> str:
    if not vh.valid_serial(user):
        raise ValueError(user)
    return user


VEHICLE: Final = PeerProtocol(vh.WS_PATH, vh.SUBPROTOCOL, vh.parse_frame, vh.call, vh.BACKEND_ACTIONS, vh.RESULTS,
                              _serial)


@dataclass(frozen=True)
class Received:
    """A CALL from a device, as it arrived."""

    device: Any  # a station id, a vehicle serial
    connection: int  # the peer-wide number of the connection it arrived on
    call: st.Call
    text: str

    @property
    def station_id(self) -> int:
        assert isinstance(self.device, int)
        return self.device

    @property
    def id(self) -> str:
        return self.call.id

    @property
    def action(self) -> str:
        return str(self.call.action)

    @property
    def data(self) -> Any:
        return json.loads(self.text)


@dataclass(eq=False)
class PeerConnection:
    peer: DevicePeer
    device: Any
    number: int
    ws: WebSocketConnection
    booted: bool = False
    boot_sent: bool = False
    answers: dict[str, st.Result | st.Error] = field(default_factory=dict)
    closed: trio.Event = field(default_factory=trio.Event)
    _sent: set[str] = field(default_factory=set)

    async def call(self, action: str, payload: st.Payload | None = None) -> st.Result | st.Error:
        """Send a CALL and return the station's answer."""
        self.peer._ids += 1
        id = f"peer-{self.peer._ids}"
        model = self.peer.protocol.backend_actions[action]
        text = self.peer.protocol.call(id, action, payload if payload is not None else model())
        return await self.send_raw(text, id)

    async def send_raw(self, text: str, answer_id: str) -> st.Result | st.Error:
        """Send any text frame and wait for the answer with ``answer_id``."""
        self._sent.add(answer_id)
        await self.ws.send_message(text)
        await self.peer.wait_until(lambda: answer_id in self.answers)
        return self.answers[answer_id]

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        await self.ws.aclose(code, reason)
        await self.closed.wait()


class DevicePeer:
    protocol: ClassVar[PeerProtocol]

    def __init__(
        self,
        credentials: Mapping[Any, str],
        *,
        heartbeat_interval: int = 1800,
        boot_status: st.BootStatus = st.BootStatus.ACCEPTED,
    ) -> None:
        self.credentials = dict(credentials)
        self.heartbeat_interval = heartbeat_interval
        self.boot_status = boot_status
        self.withhold: set[str] = set()
        self.error_for: set[str] = set()
        self.unavailable_for: set[str] = set()
        self.locked_answer = st.LockAccepted.ACCEPT
        self.received: list[Received] = []
        self.violations: list[str] = []
        self.connections: list[PeerConnection] = []
        self.current: dict[Any, PeerConnection] = {}
        self.unauthorized = 0
        self.duplicates = 0  # repeated ids answered from the cache
        self.port = 0
        self._ids = 0
        self._frames: dict[Any, dict[str, str]] = {}  # device -> id -> first frame text
        self._answered: dict[Any, dict[str, str]] = {}  # device -> id -> RESULT text
        self._changed = trio.lowlevel.ParkingLot()
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self.protocol.ws_path}"

    # -- serving ---------------------------------------------------------

    async def serve(self, port: int = 0, *, task_status: trio.TaskStatus[DevicePeer] = trio.TASK_STATUS_IGNORED
                    ) -> None:
        """Serve until :meth:`go_away`; ``await nursery.start(peer.serve)``."""
        self._done = trio.Event()
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    server = await nursery.start(
                        partial(serve_websocket, self._handle, "127.0.0.1", port, None, handler_nursery=nursery)
                    )
                    self.port = server.port
                    task_status.started(self)
        finally:
            self._done.set()

    async def go_away(self) -> None:
        """Stop listening and drop every connection (no closing handshake)."""
        assert self._scope is not None
        self._scope.cancel()
        await self._done.wait()

    async def _handle(self, request: WebSocketRequest) -> None:
        if request.path != self.protocol.ws_path:
            self.violations.append(f"path {request.path!r}")
            await request.reject(404)
            return
        device = self._authenticate(request.headers)
        if device is None:
            self.unauthorized += 1
            self._notify()
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="devices"')])
            return
        if self.protocol.subprotocol not in request.proposed_subprotocols:
            self.violations.append(f"{device}: subprotocols {request.proposed_subprotocols}")
            await request.reject(400)
            return
        ws = await request.accept(subprotocol=self.protocol.subprotocol)
        conn = PeerConnection(self, device, len(self.connections) + 1, ws)
        self.connections.append(conn)
        older = self.current.get(device)
        self.current[device] = conn
        self._notify()
        try:
            if older is not None:
                await older.ws.aclose(st.REPLACED, "replaced")
            while True:
                try:
                    text = await ws.get_message()
                except ConnectionClosed:
                    return
                await self._on_frame(conn, text)
        finally:
            conn.closed.set()
            if self.current.get(device) is conn:
                del self.current[device]
            self._notify()

    def _authenticate(self, headers: list[tuple[bytes, bytes]]) -> Hashable | None:
        for name, value in headers:
            if name.lower() != b"authorization":
                continue
            scheme, _, token = value.partition(b" ")
            if scheme.lower() != b"basic":
                return None
            try:
                user, _, secret = base64.b64decode(token, validate=True).decode().partition(":")
                device = self.protocol.device(user)
            except (binascii.Error, UnicodeDecodeError, ValueError):
                return None
            return device if self.credentials.get(device) == secret else None
        return None

    # -- frames ----------------------------------------------------------

    async def _on_frame(self, conn: PeerConnection, text: str | bytes) -> None:
        where = f"{conn.device}, connection {conn.number}"
        if isinstance(text, bytes):
            self.violations.append(f"{where}: binary frame")
            return
        try:
            frame = self.protocol.parse(text)
        except st.FrameError as exc:
            self.violations.append(f"{where}: {exc}: {text}")
            await conn.ws.send_message(exc.frame)
            return
        if not isinstance(frame, st.Call):
            if frame.id not in conn._sent:
                self.violations.append(f"{where}: answer to no CALL in flight: {text}")
            conn.answers[frame.id] = frame
            self._notify()
            return

        self.received.append(Received(conn.device, conn.number, frame, text))
        self._notify()
        frames = self._frames.setdefault(conn.device, {})
        first = frames.setdefault(frame.id, text)
        if first != text:
            self.violations.append(f"{where}: id {frame.id} reused for another frame: {text}")
        boot = frame.action == "boot"
        if boot:
            if conn.boot_sent:
                self.violations.append(f"{where}: second boot")
            if first is not text:
                self.violations.append(f"{where}: boot id {frame.id} reused")
            conn.boot_sent = True
        elif not conn.booted:
            self.violations.append(f"{where}: {frame.action} before the boot was answered")
            await conn.ws.send_message(st.error(frame.id, st.ErrorCode.PROTOCOL_ERROR, "boot first"))
            return

        answered = self._answered.setdefault(conn.device, {})
        if frame.id in answered:
            self.duplicates += 1
            await conn.ws.send_message(answered[frame.id])
            return
        if frame.action in self.withhold:
            return
        if frame.action in self.error_for:
            await conn.ws.send_message(st.error(frame.id, st.ErrorCode.GENERIC_ERROR, "refused by the test peer"))
            return
        if frame.action in self.unavailable_for:  # not recorded: the device is expected to send it again
            await conn.ws.send_message(st.error(frame.id, st.ErrorCode.INTERNAL_ERROR, "not recorded, send it later"))
            return
        payload: st.Payload
        model = self.protocol.results[frame.action]
        if boot:
            payload = st.BootResult(status=self.boot_status, heartbeat_interval=self.heartbeat_interval,
                                    server_time=int(time.time() * 1000))
        elif model is st.LockedResult:
            payload = st.LockedResult(accepted=self.locked_answer)
        else:
            payload = model()
        answer = st.result(frame.id, payload)
        answered[frame.id] = answer
        if boot:
            conn.booted = self.boot_status is st.BootStatus.ACCEPTED
        await conn.ws.send_message(answer)
        if boot and not conn.booted:
            await conn.ws.aclose(1008, "device disabled")

    # -- waiting and looking -----------------------------------------------

    def _notify(self) -> None:
        self._changed.unpark_all()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        with trio.fail_after(TIMEOUT):
            while not predicate():
                await self._changed.park()

    def calls(self, action: str | None = None, device: Hashable | None = None) -> list[Received]:
        return [
            r for r in self.received
            if (action is None or r.action == action) and (device is None or r.device == device)
        ]

    async def wait_calls(self, action: str, count: int = 1, device: Hashable | None = None) -> list[Received]:
        """Wait until ``count`` CALLs of ``action`` have arrived; return them all."""
        await self.wait_until(lambda: len(self.calls(action, device)) >= count)
        return self.calls(action, device)

    async def wait_connection(self, device: Hashable, number: int = 1) -> PeerConnection:
        """The ``number``-th booted connection of the device (1: the first)."""

        def booted() -> list[PeerConnection]:
            return [c for c in self.connections if c.device == device and c.booted]

        await self.wait_until(lambda: len(booted()) >= number)
        return booted()[number - 1]


class StationPeer(DevicePeer):
    """The backend side of ``station-protocol.md``; credentials by station id."""

    protocol = STATION


class VehiclePeer(DevicePeer):
    """The backend side of ``vehicle-protocol.md``; credentials by serial number."""

    protocol = VEHICLE
