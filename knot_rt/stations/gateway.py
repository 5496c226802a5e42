"""The station gateway: one persistent WebSocket per station (``station-protocol.md``).

A trio-websocket server on its own port. It authenticates the upgrade (HTTP
Basic: station id and secret), requires the ``knot-station.v1`` subprotocol,
keeps one live connection per station (the newest wins; the older one is
closed with 4001), pings every connection and drops one that misses two pongs.
Frames are parsed by ``protocols.station``: CALLs go to the station's actor (in
order, one at a time), RESULTs and ERRORs settle the backend's own CALLs, and a
malformed frame is answered with an ERROR without touching the actor.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from actors import ActorRef, ActorStopped
from actors.station import (
    Attached,
    CallRefused,
    CallTimeout,
    Detached,
    Incoming,
    LinkClosed,
    StationMessage,
    StationReply,
)
from protocols import station as wire

from .admin import station_secret_matches

log = logging.getLogger(__name__)

# Frames over the contract's 64 KiB up to this size are answered with an ERROR;
# larger ones close the connection (1009, message too big).
TRANSPORT_MAX_MESSAGE = 4 * wire.MAX_FRAME_BYTES

StationRef = ActorRef[StationMessage, StationReply]


@dataclass
class _Waiter:
    done: trio.Event = field(default_factory=trio.Event)
    payload: dict[str, Any] | None = None
    failure: Exception | None = None


class StationConnection:
    """One live connection of a station: the ``StationLink`` its actor talks through."""

    _serial = itertools.count(1)

    def __init__(self, ws: WebSocketConnection, station_id: int) -> None:
        self.ws = ws
        self.station_id = station_id
        self.serial = next(self._serial)
        self.booted = False
        self._send_lock = trio.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._ids = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        return f"<StationConnection station={self.station_id} #{self.serial}>"

    async def send(self, text: str) -> None:
        if self._closed:
            raise LinkClosed(repr(self))
        try:
            async with self._send_lock:
                await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise LinkClosed(repr(self)) from exc

    async def call(self, action: str, payload: wire.Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        call_id = f"b{self.serial}-{next(self._ids)}"
        waiter = _Waiter()
        self._waiting[call_id] = waiter
        try:
            await self.send(wire.call(call_id, action, payload))
            with trio.move_on_after(timeout):
                await waiter.done.wait()
            if not waiter.done.is_set():
                raise CallTimeout(f"{action} to station {self.station_id}")
        finally:
            self._waiting.pop(call_id, None)
        if waiter.failure is not None:
            raise waiter.failure
        assert waiter.payload is not None
        return waiter.payload

    def settle(self, frame: wire.Result | wire.Error) -> None:
        waiter = self._waiting.get(frame.id)
        if waiter is None:
            log.info("station %s answered an unknown call id %r", self.station_id, frame.id)
            return
        if isinstance(frame, wire.Result):
            waiter.payload = frame.payload
        else:
            waiter.failure = CallRefused(f"{frame.code}: {frame.description}")
        waiter.done.set()

    def fail_call(self, call_id: str, reason: str) -> None:
        waiter = self._waiting.get(call_id)
        if waiter is not None:
            waiter.failure = CallRefused(reason)
            waiter.done.set()

    def lost(self) -> None:
        """The socket is gone: every CALL still waiting fails at once."""
        self._closed = True
        for waiter in self._waiting.values():
            waiter.failure = LinkClosed(repr(self))
            waiter.done.set()

    async def close(self, code: int, reason: str) -> None:
        with trio.move_on_after(2):
            await self.ws.aclose(code, reason)


class LinkTable:
    """The current connection of each station (``StationLinks`` of the actors)."""

    def __init__(self) -> None:
        self._links: dict[int, StationConnection] = {}

    def current(self, station_id: int) -> StationConnection | None:
        return self._links.get(station_id)

    def replace(self, connection: StationConnection) -> StationConnection | None:
        previous = self._links.get(connection.station_id)
        self._links[connection.station_id] = connection
        return previous

    def remove(self, connection: StationConnection) -> bool:
        if self._links.get(connection.station_id) is connection:
            del self._links[connection.station_id]
            return True
        return False

    def __len__(self) -> int:
        return len(self._links)


def parse_basic_auth(header: str | None) -> tuple[int, str] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, secret = decoded.partition(":")
    if not sep or not user.isdigit() or len(secret) < wire.MIN_SECRET_LENGTH:
        return None
    return int(user), secret


@dataclass
class GatewayCounters:
    accepted: int = 0
    refused: int = 0
    replaced: int = 0
    frames_in: int = 0
    malformed: int = 0


class StationGateway:
    def __init__(
        self,
        secret_hash: Callable[[int], Awaitable[str | None]],
        actor_for: Callable[[int], Awaitable[StationRef]],
        *,
        ping_interval: float = wire.DEFAULT_PING_INTERVAL,
    ) -> None:
        self._secret_hash = secret_hash
        self._actor_for = actor_for
        self.ping_interval = ping_interval
        self.links = LinkTable()
        self.counters = GatewayCounters()

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as handlers:
            server = await handlers.start(partial(
                serve_websocket, self._guarded, host, port, None, handler_nursery=handlers,
                max_message_size=TRANSPORT_MAX_MESSAGE,
            ))
            bound: int = server.port
            log.info("station gateway on ws://%s:%s%s", host, bound, wire.WS_PATH)
            task_status.started(bound)

    async def _authenticate(self, request: WebSocketRequest) -> int | None:
        headers = {name.decode().lower(): value.decode(errors="replace") for name, value in request.headers}
        credentials = parse_basic_auth(headers.get("authorization"))
        if credentials is None:
            return None
        station_id, secret = credentials
        stored = await self._secret_hash(station_id)
        if stored is None or not station_secret_matches(secret, stored):
            return None
        return station_id

    async def _guarded(self, request: WebSocketRequest) -> None:
        """One connection's failure is logged and ends that connection only."""
        try:
            await self._handle(request)
        except Exception:
            log.exception("station connection failed")

    async def _handle(self, request: WebSocketRequest) -> None:
        if request.path.split("?")[0] != wire.WS_PATH:
            await request.reject(404, extra_headers=[], body=b"unknown path")
            return
        station_id = await self._authenticate(request)
        if station_id is None:
            self.counters.refused += 1
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="knot-station"')],
                                 body=b"wrong station id or secret")
            return
        if wire.SUBPROTOCOL not in request.proposed_subprotocols:
            self.counters.refused += 1
            await request.reject(400, body=f"subprotocol {wire.SUBPROTOCOL} required".encode())
            return
        ws = await request.accept(subprotocol=wire.SUBPROTOCOL)
        self.counters.accepted += 1
        connection = StationConnection(ws, station_id)
        previous = self.links.replace(connection)
        if previous is not None:
            self.counters.replaced += 1
            await previous.close(wire.REPLACED, "replaced")
        actor = await self._actor_for(station_id)
        try:
            await actor.send(Attached(connection))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._keep_alive, connection)
                await self._read(connection, actor)
                nursery.cancel_scope.cancel()
        except* (ConnectionClosed, ActorStopped):
            pass  # the station went away, or the service is stopping
        finally:
            connection.lost()
            self.links.remove(connection)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                try:
                    await actor.send(Detached(connection))
                except ActorStopped:
                    pass

    async def _read(self, connection: StationConnection, actor: StationRef) -> None:
        while True:
            text = await connection.ws.get_message()
            self.counters.frames_in += 1
            try:
                frame = wire.parse_frame(text)
            except wire.FrameError as bad:
                self.counters.malformed += 1
                if bad.message_type in (wire.MessageType.RESULT, wire.MessageType.ERROR):
                    connection.fail_call(bad.id, bad.description)  # a broken answer to our own CALL
                else:
                    await connection.send(bad.frame)
                continue
            if isinstance(frame, wire.Call):
                await actor.send(Incoming(connection, frame))  # waits for room: backpressure on the socket
            else:
                connection.settle(frame)

    async def _keep_alive(self, connection: StationConnection) -> None:
        """Ping every interval; a connection that misses two pongs is dropped."""
        while True:
            await trio.sleep(self.ping_interval)
            with trio.move_on_after(self.ping_interval * wire.MISSED_PONGS_LIMIT):
                await connection.ws.ping()
                continue
            log.warning("station %s missed %s pongs: dropping it", connection.station_id, wire.MISSED_PONGS_LIMIT)
            await connection.close(1011, "pong timeout")
            return
