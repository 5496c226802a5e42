"""The station gateway: one persistent WebSocket per station (``station-protocol.md``).

A trio-websocket server on its own port. It authenticates the upgrade (HTTP
Basic: station id and secret), requires the ``knot-station.v1`` subprotocol,
keeps one live connection per station (the newest wins; the older one is
closed with 4001), pings every connection and drops one that misses two pongs.
Frames are parsed by ``protocols.station``: CALLs go to the station's actor (in
order, one at a time), RESULTs and ERRORs settle the backend's own CALLs, and a
malformed frame is answered with an ERROR without touching the actor.

Hardening (one peer never hurts another):

- Caps: at most ``max_connections`` open sockets and ``max_handshakes`` sockets
  not yet authenticated; a socket past either cap is closed at once, before a
  byte is read (cheapest for us under a flood; the station retries). A
  handshake has ``handshake_timeout`` seconds to send its upgrade request, and
  as long again to be authenticated (else 503).
- Auth failures are counted per address (a ``limits`` moving window): past
  ``auth_failures``, that address gets 429 without a database lookup, even
  with a right secret, until the window moves. Stations behind one NAT share
  the count, so the default is generous; a right secret never counts.
- A Basic-auth user that is not 1..19 ASCII digits within bigint (``"²"`` is a
  digit to Python, 5,000 digits do not fit) is a plain 401, like a wrong secret.
- A rotated secret closes the sockets that authenticated with the old one
  (close code 4003): every ``secret_check_interval`` seconds one query reads the
  secret hashes of the connected stations and compares them with the hash each
  socket used. Chosen over LISTEN/NOTIFY because it needs no listening
  connection to keep alive and cannot miss a rotation made while the database
  or this process was away; it costs one indexed query per interval for all
  connected stations, and an old socket lives up to one interval longer.
- The station's actor not starting (the database is down) or being stopped for
  good (it kept crashing) closes that station's socket with 1013 ("try again
  later"); nothing else is touched, and the station reconnects later.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import trio
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from actors import ActorError, ActorRef, ActorStopped
from actors.reply import OneShot
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
from protocols.credentials import parse_basic_authorization

from ..db import repeat
from .admin import station_secret_matches

log = logging.getLogger(__name__)

# Frames over the contract's 64 KiB up to this size are answered with an ERROR;
# larger ones close the connection (1009, message too big).
TRANSPORT_MAX_MESSAGE = 4 * wire.MAX_FRAME_BYTES

StationRef = ActorRef[StationMessage, StationReply]


class StationConnection:
    """One live connection of a station: the ``StationLink`` its actor talks through."""

    _serial = itertools.count(1)

    def __init__(self, ws: WebSocketConnection, station_id: int, secret_hash: str = "") -> None:
        self.ws = ws
        self.station_id = station_id
        self.secret_hash = secret_hash  # the stored hash this socket authenticated against
        self.serial = next(self._serial)
        self.booted = False
        self._send_lock = trio.Lock()
        self._waiting: dict[str, OneShot[dict[str, Any]]] = {}  # our CALLs by id: the RESULT payload, or the failure
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
        answer: OneShot[dict[str, Any]] = OneShot()
        self._waiting[call_id] = answer
        try:
            await self.send(wire.call(call_id, action, payload))
            return await answer.wait_within(timeout)
        except trio.TooSlowError:
            raise CallTimeout(f"{action} to station {self.station_id}") from None
        finally:
            self._waiting.pop(call_id, None)

    def settle(self, frame: wire.Result | wire.Error) -> None:
        answer = self._waiting.get(frame.id)
        if answer is None:
            log.info("station %s answered an unknown call id %r", self.station_id, frame.id)
        elif isinstance(frame, wire.Result):
            answer.resolve(frame.payload)
        else:
            answer.fail(CallRefused(f"{frame.code}: {frame.description}"))

    def fail_call(self, call_id: str, reason: str) -> None:
        answer = self._waiting.get(call_id)
        if answer is not None:
            answer.fail(CallRefused(reason))

    def lost(self) -> None:
        """The socket is gone: every CALL still waiting fails at once."""
        self._closed = True
        for answer in self._waiting.values():
            answer.fail(LinkClosed(repr(self)))

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

    def connections(self) -> Iterable[StationConnection]:
        return list(self._links.values())


def parse_basic_auth(header: str | None) -> tuple[int, str] | None:
    """``(station id, secret)`` from a Basic ``Authorization`` header; None for anything else.

    The id is 1 to 19 ASCII digits within bigint: ``str.isdigit`` alone also takes
    ``"²"`` (which ``int`` refuses) and 5,000 digits (which ``int`` refuses too).
    """
    credentials = parse_basic_authorization(header, max_length=4 * wire.MAX_FRAME_BYTES)
    if credentials is None:
        return None
    user, secret = credentials
    if len(secret) < wire.MIN_SECRET_LENGTH:
        return None
    if not (0 < len(user) <= wire.MAX_STATION_ID_DIGITS and user.isascii() and user.isdigit()):
        return None
    station_id = int(user)
    if not 0 < station_id <= wire.INT64_MAX:
        return None
    return station_id, secret


@dataclass
class GatewayCounters:
    accepted: int = 0
    refused: int = 0
    replaced: int = 0
    frames_in: int = 0
    malformed: int = 0
    busy: int = 0  # sockets closed at once: too many connections or handshakes
    throttled: int = 0  # upgrades answered 429: too many auth failures from the address
    rotated: int = 0  # sockets closed because their secret was rotated
    unavailable: int = 0  # sockets closed because the station's actor could not run


class _Handshake:
    """One socket not yet authenticated, counted against the gateway's cap until ``finish``."""

    __slots__ = ("_gateway", "_open")

    def __init__(self, gateway: StationGateway) -> None:
        self._gateway = gateway
        self._open = True
        gateway.handshakes += 1

    def finish(self) -> None:
        if self._open:
            self._open = False
            self._gateway.handshakes -= 1


# The handshake of the socket the current task serves (trio-websocket calls the handler in that task).
_HANDSHAKE: ContextVar[_Handshake | None] = ContextVar("station_handshake", default=None)


class _CappedServer(WebSocketServer):
    """trio-websocket's server, counting sockets and handshakes before it reads a byte."""

    def __init__(self, gateway: StationGateway, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._gateway = gateway

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        gateway = self._gateway
        if gateway.sockets >= gateway.max_connections or gateway.handshakes >= gateway.max_handshakes:
            gateway.counters.busy += 1
            await trio.aclose_forcefully(stream)
            return
        gateway.sockets += 1
        handshake = _Handshake(gateway)
        token = _HANDSHAKE.set(handshake)
        try:
            await super()._handle_connection(stream)
        finally:
            handshake.finish()
            gateway.sockets -= 1
            _HANDSHAKE.reset(token)


SecretHashes = Callable[[list[int]], Awaitable[dict[int, str]]]


class StationGateway:
    def __init__(
        self,
        secret_hash: Callable[[int], Awaitable[str | None]],
        actor_for: Callable[[int], Awaitable[StationRef]],
        *,
        ping_interval: float = wire.DEFAULT_PING_INTERVAL,
        secret_hashes: SecretHashes | None = None,
        max_connections: int = 20_000,
        max_handshakes: int = 512,
        handshake_timeout: float = 10.0,
        auth_failures: str = "20/minute",
        secret_check_interval: float = 15.0,
    ) -> None:
        self._secret_hash = secret_hash
        self._secret_hashes = secret_hashes
        self._actor_for = actor_for
        self.ping_interval = ping_interval
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.handshake_timeout = handshake_timeout
        self.secret_check_interval = secret_check_interval
        self._failures = MovingWindowRateLimiter(MemoryStorage())
        self._failure_limit = parse(auth_failures)
        self.links = LinkTable()
        self.counters = GatewayCounters()
        self.sockets = 0  # open sockets, handshakes included
        self.handshakes = 0  # sockets not yet authenticated

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as handlers:
            listeners = await trio.open_tcp_listeners(port, host=host)
            server = _CappedServer(
                self, self._guarded, listeners, handler_nursery=handlers, max_message_size=TRANSPORT_MAX_MESSAGE,
                connect_timeout=self.handshake_timeout,
            )
            await handlers.start(server.run)
            bound: int = server.port
            if self._secret_hashes is not None:
                handlers.start_soon(self._close_rotated)
            log.info("station gateway on ws://%s:%s%s", host, bound, wire.WS_PATH)
            task_status.started(bound)

    async def _authenticate(self, request: WebSocketRequest) -> tuple[int, str] | None:
        """``(station id, stored hash)`` when the credentials are right, else None."""
        headers = {name.decode("latin-1").lower(): value.decode(errors="replace") for name, value in request.headers}
        credentials = parse_basic_auth(headers.get("authorization"))
        if credentials is None:
            return None
        station_id, secret = credentials
        stored = await self._secret_hash(station_id)
        if stored is None or not station_secret_matches(secret, stored):
            return None
        return station_id, stored

    @staticmethod
    def _address(request: WebSocketRequest) -> str:
        remote = request.remote
        return str(getattr(remote, "address", remote))

    async def _close_rotated(self) -> None:
        """Close the sockets whose station secret changed since they authenticated (checked periodically;
        while the database is away, retried with back-off)."""
        assert self._secret_hashes is not None
        secret_hashes = self._secret_hashes

        async def check() -> None:
            connections = [c for c in self.links.connections() if c.secret_hash]
            if not connections:
                return
            current = await secret_hashes([c.station_id for c in connections])
            for connection in connections:
                if current.get(connection.station_id) != connection.secret_hash:
                    self.counters.rotated += 1
                    log.info("station %s: secret rotated, closing its socket", connection.station_id)
                    await connection.close(wire.SECRET_ROTATED, "secret rotated")

        await repeat("stations: checking rotated secrets", check, self.secret_check_interval, wait_first=True)

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
        address = self._address(request)
        if not self._failures.test(self._failure_limit, "station-auth", address):
            self.counters.throttled += 1
            await request.reject(429, extra_headers=[(b"Retry-After", b"60")],
                                 body=b"too many failed logins from this address, try again later")
            return
        try:
            with trio.fail_after(self.handshake_timeout):
                authenticated = await self._authenticate(request)
        except Exception as exc:  # the station directory (the database) is unavailable or too slow
            log.warning("station gateway: authentication unavailable: %r", exc)
            self.counters.refused += 1
            await request.reject(503, extra_headers=[(b"Retry-After", b"10")], body=b"try again later")
            return
        if authenticated is None:
            self.counters.refused += 1
            self._failures.hit(self._failure_limit, "station-auth", address)
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", b'Basic realm="knot-station"')],
                                 body=b"wrong station id or secret")
            return
        station_id, secret_hash = authenticated
        if wire.SUBPROTOCOL not in request.proposed_subprotocols:
            self.counters.refused += 1
            await request.reject(400, body=f"subprotocol {wire.SUBPROTOCOL} required".encode())
            return
        ws = await request.accept(subprotocol=wire.SUBPROTOCOL)
        handshake = _HANDSHAKE.get()
        if handshake is not None:
            handshake.finish()
        self.counters.accepted += 1
        connection = StationConnection(ws, station_id, secret_hash)
        previous = self.links.replace(connection)
        try:
            if previous is not None:
                self.counters.replaced += 1
                await previous.close(wire.REPLACED, "replaced")
            await self._serve_connection(connection)
        finally:
            connection.lost()
            self.links.remove(connection)

    async def _serve_connection(self, connection: StationConnection) -> None:
        station_id = connection.station_id
        try:
            actor = await self._actor_for(station_id)
        except ActorError as exc:  # e.g. the database is down, or the stations subtree is restarting
            log.warning("station %s: its actor could not start: %r; closing its socket", station_id, exc)
            self.counters.unavailable += 1
            await connection.close(wire.TRY_AGAIN_LATER, "station unavailable, try again later")
            return
        with trio.CancelScope() as serving:

            def actor_gone(_: StationRef) -> None:
                serving.cancel()

            actor.add_done_callback(actor_gone)
            try:
                await actor.send(Attached(connection))
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._keep_alive, connection)
                    await self._read(connection, actor)
                    nursery.cancel_scope.cancel()
            except* (ConnectionClosed, ActorStopped):
                pass  # the station went away, or its actor did
            finally:
                actor.remove_done_callback(actor_gone)
                # However the connection ended (closed, cancelled, failed), its actor hears of it once.
                connection.lost()
                self.links.remove(connection)
                with trio.CancelScope(shield=True):
                    if actor.stopped:  # given up after repeated crashes, or the service is stopping
                        log.warning("station %s: its actor stopped; closing its socket", station_id)
                        self.counters.unavailable += 1
                        await connection.close(wire.TRY_AGAIN_LATER, "station unavailable, try again later")
                    else:
                        with trio.move_on_after(5), contextlib.suppress(ActorStopped):
                            await actor.send(Detached(connection))

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
