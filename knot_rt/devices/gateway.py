"""The device gateway: one WebSocket server, a door per device protocol (``station-protocol.md``,
``vehicle-protocol.md``).

A trio-websocket server on its own port (the station port, 8001 by default).
The request path picks the door: ``/api/stations/ws`` the stations',
``/api/vehicles/ws`` the free-floating vehicles'; any other path is a 404. A
door knows its protocol (subprotocol, frame parser, CALL writer), how to read
its devices' credentials and where their actors are; everything else is this
module's, the same for every door:

- Auth: HTTP Basic, user = the device's id in its protocol (a station id, a
  vehicle's serial number), password = its secret (at least
  ``MIN_SECRET_LENGTH`` characters), compared with the stored hash in constant
  time (``credentials.py``). Wrong, unknown or unreadable: 401, no socket. The
  protocol's subprotocol is required (400 otherwise, checked after auth so an
  unauthenticated peer learns nothing).
- One live connection per device (the newest wins; the older one is closed
  with 4001). Every connection is pinged every ``ping_interval`` and dropped
  when it misses two pongs (one task pings them all: ``_keep_alive``).
- The device's actor hears ``Attached`` when its socket is accepted,
  ``Incoming`` for each CALL and ``Detached`` once when the socket ends
  (``actors/link.py``: the same messages for every kind of device).
- Frames are parsed by the door's protocol: CALLs go to the device's actor (in
  order, one at a time, ``actor.send`` waiting for room: backpressure on the
  socket), RESULTs and ERRORs settle the backend's own CALLs, a malformed
  CALL is answered with its ERROR without touching the actor, and a broken
  RESULT or ERROR to one of our CALLs fails that CALL.

Hardening (one peer never hurts another):

- Caps: at most ``max_connections`` open sockets and ``max_handshakes`` sockets
  not yet authenticated, over all doors. A socket past the first cap is closed
  at once, before a byte is read (cheapest for us under a flood; the device
  retries). A socket past the second waits, unread, up to ``handshake_wait``
  seconds for a handshake to end (first come, first served), then is closed:
  a fleet reconnecting at once after a restart gets in within seconds, instead
  of half of it retrying after its back-off; a flood of silent sockets still
  holds no more than the cap in handshakes. A handshake has
  ``handshake_timeout`` seconds to send its upgrade request, and as long again
  to be authenticated (else 503).
- Auth failures are counted per door and address (a ``limits`` moving
  window): past ``auth_failures``, that address gets 429 at that door without
  a database lookup, even with a right secret, until the window moves.
  Devices behind one NAT share the count, so the default is generous; a right
  secret never counts. Per door rather than per address alone: a fleet of
  vehicles failing behind a carrier's NAT never locks the stations out; the
  cost, a guesser's budget doubled by trying both paths, is nothing against
  192-bit secrets.
- The database away (the lookup fails or is too slow): 503 with Retry-After.
- A rotated secret closes the sockets that authenticated with the old one
  (close code 4003): every ``secret_check_interval`` seconds one query per
  door reads the secret hashes of its connected devices and compares them
  with the hash each socket used. Chosen over LISTEN/NOTIFY because it needs
  no listening connection to keep alive and cannot miss a rotation made while
  the database or this process was away; it costs one indexed query per
  interval and door for all connected devices, and an old socket lives up to
  one interval longer.
- The device's actor not starting (the database is down) or being stopped for
  good (it kept crashing) closes that device's socket with 1013 ("try again
  later"); nothing else is touched, and the device reconnects later.

Counters: each door has its own (``Door.counters``: the metrics of its
devices); the gateway's ``counters`` are the totals over its doors plus what
happens before a door is known (``busy``).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import socket
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, fields
from typing import Any, Generic, TypeVar

import trio
from limits import parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, WebSocketServer

from actors import ActorError, ActorRef, ActorStopped
from actors.link import Attached, CallRefused, CallTimeout, Detached, Incoming, LinkClosed
from actors.reply import OneShot
from protocols import station as framing
from protocols.credentials import parse_basic_authorization

from ..db import repeat
from .credentials import device_secret_matches

log = logging.getLogger(__name__)

# Frames over a protocol's limit up to this size are answered with an ERROR; larger ones close the
# connection (1009, message too big). One server, so one bound for every door: the largest protocol's.
TRANSPORT_MAX_MESSAGE = 4 * framing.MAX_FRAME_BYTES

DeviceRef = ActorRef[Any, Any]
#: The user half of a device's credentials once its protocol's rules accepted it: a station id, a serial number.
UserT = TypeVar("UserT")


class DeviceConnection:
    """One live connection of a device through a door: the ``DeviceLink`` its actor talks through."""

    __slots__ = (
        "_closed", "_ids", "_send_lock", "_waiting", "booted", "device_id", "door", "next_ping", "secret_hash",
        "serial", "ws",
    )
    _serial = itertools.count(1)

    def __init__(self, ws: WebSocketConnection, door: Door[Any], device_id: int, secret_hash: str = "") -> None:
        self.ws = ws
        self.door = door
        self.device_id = device_id
        self.secret_hash = secret_hash  # the stored hash this socket authenticated against
        self.serial = next(self._serial)
        self.booted = False
        self.next_ping: float | None = None  # when the gateway pings it next (None: not yet served, or waiting)
        self._send_lock = trio.Lock()
        self._waiting: dict[str, OneShot[dict[str, Any]]] = {}  # our CALLs by id: the RESULT payload, or the failure
        self._ids = itertools.count(1)
        self._closed = False

    def __repr__(self) -> str:
        return f"<DeviceConnection {self.door.kind}={self.device_id} #{self.serial}>"

    async def send(self, text: str) -> None:
        if self._closed:
            raise LinkClosed(repr(self))
        try:
            async with self._send_lock:
                await self.ws.send_message(text)
        except ConnectionClosed as exc:
            raise LinkClosed(repr(self)) from exc

    async def call(self, action: str, payload: framing.Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        call_id = f"b{self.serial}-{next(self._ids)}"
        answer: OneShot[dict[str, Any]] = OneShot()
        self._waiting[call_id] = answer
        try:
            await self.send(self.door.write_call(call_id, action, payload))
            return await answer.wait_within(timeout)
        except trio.TooSlowError:
            raise CallTimeout(f"{action} to {self.door.kind} {self.device_id}") from None
        finally:
            self._waiting.pop(call_id, None)

    def settle(self, frame: framing.Result | framing.Error) -> None:
        answer = self._waiting.get(frame.id)
        if answer is None:
            log.info("%s %s answered an unknown call id %r", self.door.kind, self.device_id, frame.id)
        elif isinstance(frame, framing.Result):
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
    """The current connection of each device of one door (the ``DeviceLinks`` of its actors)."""

    def __init__(self) -> None:
        self._links: dict[int, DeviceConnection] = {}

    def current(self, device_id: int) -> DeviceConnection | None:
        return self._links.get(device_id)

    def replace(self, connection: DeviceConnection) -> DeviceConnection | None:
        previous = self._links.get(connection.device_id)
        self._links[connection.device_id] = connection
        return previous

    def remove(self, connection: DeviceConnection) -> bool:
        if self._links.get(connection.device_id) is connection:
            del self._links[connection.device_id]
            return True
        return False

    def __len__(self) -> int:
        return len(self._links)

    def connections(self) -> Iterable[DeviceConnection]:
        return list(self._links.values())


@dataclass
class GatewayCounters:
    accepted: int = 0
    refused: int = 0
    replaced: int = 0
    frames_in: int = 0
    malformed: int = 0
    busy: int = 0  # sockets closed at once: too many connections or handshakes (the gateway's only)
    throttled: int = 0  # upgrades answered 429: too many auth failures from the address
    rotated: int = 0  # sockets closed because their secret was rotated
    unavailable: int = 0  # sockets closed because the device's actor could not run


_COUNTERS = frozenset(f.name for f in fields(GatewayCounters))


Lookup = Callable[[UserT], Awaitable["tuple[int, str] | None"]]
SecretHashes = Callable[[list[int]], Awaitable[dict[int, str]]]
ActorFor = Callable[[int], Awaitable[DeviceRef]]


class Door(ABC, Generic[UserT]):
    """One device protocol's way in: what the gateway needs to know of it (a subclass per protocol says
    how its devices are named and which frames it speaks; the actor messages are the same for all).

    I/O is handed in: ``lookup`` the device a Basic-auth user names, as ``(device id, stored secret
    hash)`` if it may connect here (None: a 401); ``secret_hashes`` the stored hash of each of the given
    devices that still may (the rotated-secret check); ``actor_for`` the device's actor, started on first
    use (``ActorError`` when it cannot run). ``links`` is the table of the door's live connections, handed
    to its actors as their ``DeviceLinks`` (made here unless given, so a domain can build its actors'
    factory before the door)."""

    kind: str  # "station", "vehicle": logs, the Basic realm
    user_name: str  # what the Basic-auth user is: "id", "serial number"
    path: str
    subprotocol: str
    max_frame_bytes: int
    min_secret_length: int = framing.MIN_SECRET_LENGTH

    def __init__(
        self, lookup: Lookup[UserT], secret_hashes: SecretHashes, actor_for: ActorFor, *, links: LinkTable | None = None,
    ) -> None:
        self.lookup = lookup
        self.secret_hashes = secret_hashes
        self.actor_for = actor_for
        self.links = links if links is not None else LinkTable()
        self.counters = GatewayCounters()
        self.gateway: DeviceGateway | None = None  # set when a gateway takes the door

    def count(self, name: str) -> None:
        """One more ``name`` event at this door, and in the gateway's totals."""
        assert name in _COUNTERS, name
        setattr(self.counters, name, getattr(self.counters, name) + 1)
        if self.gateway is not None:
            setattr(self.gateway.counters, name, getattr(self.gateway.counters, name) + 1)

    @abstractmethod
    def user(self, user: str) -> UserT | None:
        """The Basic-auth user as this protocol names a device; None when it cannot be one (a plain 401)."""

    @abstractmethod
    def parse_frame(self, text: str | bytes) -> framing.Frame:
        """One frame of this protocol (the backend's view); raises ``FrameError`` with the ERROR to answer."""

    @abstractmethod
    def write_call(self, call_id: str, action: str, payload: framing.Payload) -> str:
        """A CALL of the backend in this protocol."""

    # shared -----------------------------------------------------------------------

    async def authenticate(self, header: str | None) -> tuple[int, str] | None:
        """``(device id, stored hash)`` when the ``Authorization`` header holds right credentials, else None.

        The encoded header is bounded before it is decoded (four frames' worth: far more than any id and
        secret), the secret must be long enough, the user must fit the protocol: anything else is None
        without a lookup."""
        credentials = parse_basic_authorization(header, max_length=4 * self.max_frame_bytes)
        if credentials is None:
            return None
        raw_user, secret = credentials
        if len(secret) < self.min_secret_length:
            return None
        user = self.user(raw_user)
        if user is None:
            return None
        found = await self.lookup(user)
        if found is None or not device_secret_matches(secret, found[1]):
            return None
        return found


class _Handshake:
    """One socket not yet authenticated, counted against the gateway's cap until ``finish``."""

    __slots__ = ("_gateway", "_open")

    def __init__(self, gateway: DeviceGateway) -> None:
        self._gateway = gateway
        self._open = True
        gateway.handshakes += 1

    def finish(self) -> None:
        if self._open:
            self._open = False
            self._gateway.handshakes -= 1
            self._gateway.handshake_slots.unpark()  # the first socket waiting for a slot, if any


# The handshake of the socket the current task serves (trio-websocket calls the handler in that task).
_HANDSHAKE: ContextVar[_Handshake | None] = ContextVar("device_handshake", default=None)


class _CappedServer(WebSocketServer):
    """trio-websocket's server, counting sockets and handshakes before it reads a byte."""

    def __init__(self, gateway: DeviceGateway, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        self._gateway = gateway

    async def _handle_connection(self, stream: trio.abc.Stream) -> None:
        gateway = self._gateway
        if gateway.sockets >= gateway.max_connections:
            gateway.counters.busy += 1
            await trio.aclose_forcefully(stream)
            return
        gateway.sockets += 1
        try:
            if gateway.handshakes >= gateway.max_handshakes:
                with trio.move_on_after(gateway.handshake_wait):
                    while gateway.handshakes >= gateway.max_handshakes:
                        await gateway.handshake_slots.park()
                if gateway.handshakes >= gateway.max_handshakes:
                    gateway.counters.busy += 1
                    await trio.aclose_forcefully(stream)
                    return
            handshake = _Handshake(gateway)
            token = _HANDSHAKE.set(handshake)
            try:
                await super()._handle_connection(stream)
            finally:
                handshake.finish()
                _HANDSHAKE.reset(token)
        finally:
            gateway.sockets -= 1


class DeviceGateway:
    """The one server of the device sockets; ``doors`` route by path (one door per path)."""

    def __init__(
        self,
        doors: Sequence[Door[Any]],
        *,
        ping_interval: float = framing.DEFAULT_PING_INTERVAL,
        max_connections: int = 20_000,
        max_handshakes: int = 512,
        handshake_wait: float = 5.0,
        handshake_timeout: float = 10.0,
        auth_failures: str = "20/minute",
        secret_check_interval: float = 15.0,
    ) -> None:
        self.doors: dict[str, Door[Any]] = {}
        for door in doors:
            if door.path in self.doors or door.gateway is not None:
                raise ValueError(f"a door for {door.path} is given twice")
            door.gateway = self
            self.doors[door.path] = door
        self.ping_interval = ping_interval
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.handshake_wait = handshake_wait
        self.handshake_slots = trio.lowlevel.ParkingLot()  # sockets waiting for a handshake to end
        self.handshake_timeout = handshake_timeout
        self.secret_check_interval = secret_check_interval
        self._failures = MovingWindowRateLimiter(MemoryStorage())
        self._failure_limit = parse(auth_failures)
        self.counters = GatewayCounters()  # totals over the doors, and ``busy``
        self.sockets = 0  # open sockets, handshakes included
        self.handshakes = 0  # sockets not yet authenticated

    async def serve(
        self, host: str, port: int, *, fd: int | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve on ``host:port``, or on the listening socket ``fd`` (inherited: several processes share it)."""
        async with trio.open_nursery() as handlers:
            if fd is not None:
                listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))]
            else:
                listeners = await trio.open_tcp_listeners(port, host=host)
            server = _CappedServer(
                self, self._guarded, listeners, handler_nursery=handlers, max_message_size=TRANSPORT_MAX_MESSAGE,
                connect_timeout=self.handshake_timeout,
            )
            await handlers.start(server.run)
            handlers.start_soon(self._keep_alive, handlers)
            bound: int = server.port
            for door in self.doors.values():
                handlers.start_soon(self._close_rotated, door)
                log.info("%s gateway on ws://%s:%s%s", door.kind, host, bound, door.path)
            task_status.started(bound)

    @staticmethod
    def _address(request: WebSocketRequest) -> str:
        remote = request.remote
        return str(getattr(remote, "address", remote))

    async def _close_rotated(self, door: Door[Any]) -> None:
        """Close the door's sockets whose secret changed since they authenticated (checked periodically;
        while the database is away, retried with back-off)."""

        async def check() -> None:
            connections = [c for c in door.links.connections() if c.secret_hash]
            if not connections:
                return
            current = await door.secret_hashes([c.device_id for c in connections])
            for connection in connections:
                if current.get(connection.device_id) != connection.secret_hash:
                    door.count("rotated")
                    log.info("%s %s: secret rotated, closing its socket", door.kind, connection.device_id)
                    await connection.close(framing.SECRET_ROTATED, "secret rotated")

        await repeat(f"{door.kind}s: checking rotated secrets", check, self.secret_check_interval, wait_first=True)

    async def _guarded(self, request: WebSocketRequest) -> None:
        """One connection's failure is logged and ends that connection only."""
        try:
            await self._handle(request)
        except Exception:
            log.exception("device connection failed")

    async def _handle(self, request: WebSocketRequest) -> None:
        door = self.doors.get(request.path.split("?")[0])
        if door is None:
            await request.reject(404, extra_headers=[], body=b"unknown path")
            return
        address = self._address(request)
        if not self._failures.test(self._failure_limit, door.kind, address):
            door.count("throttled")
            await request.reject(429, extra_headers=[(b"Retry-After", b"60")],
                                 body=b"too many failed logins from this address, try again later")
            return
        headers = {name.decode("latin-1").lower(): value.decode(errors="replace") for name, value in request.headers}
        try:
            with trio.fail_after(self.handshake_timeout):
                authenticated = await door.authenticate(headers.get("authorization"))
        except Exception as exc:  # the device directory (the database) is unavailable or too slow
            log.warning("%s gateway: authentication unavailable: %r", door.kind, exc)
            door.count("refused")
            await request.reject(503, extra_headers=[(b"Retry-After", b"10")], body=b"try again later")
            return
        if authenticated is None:
            door.count("refused")
            self._failures.hit(self._failure_limit, door.kind, address)
            realm = f'Basic realm="knot-{door.kind}"'.encode()
            await request.reject(401, extra_headers=[(b"WWW-Authenticate", realm)],
                                 body=f"wrong {door.kind} {door.user_name} or secret".encode())
            return
        device_id, secret_hash = authenticated
        if door.subprotocol not in request.proposed_subprotocols:
            door.count("refused")
            await request.reject(400, body=f"subprotocol {door.subprotocol} required".encode())
            return
        ws = await request.accept(subprotocol=door.subprotocol)
        handshake = _HANDSHAKE.get()
        if handshake is not None:
            handshake.finish()
        door.count("accepted")
        connection = DeviceConnection(ws, door, device_id, secret_hash)
        previous = door.links.replace(connection)
        try:
            if previous is not None:
                door.count("replaced")
                await previous.close(framing.REPLACED, "replaced")
            await self._serve_connection(door, connection)
        finally:
            connection.lost()
            door.links.remove(connection)

    async def _serve_connection(self, door: Door[Any], connection: DeviceConnection) -> None:
        device_id = connection.device_id
        unavailable = f"{door.kind} unavailable, try again later"
        try:
            actor = await door.actor_for(device_id)
        except ActorError as exc:  # e.g. the database is down, or the actors' subtree is restarting
            log.warning("%s %s: its actor could not start: %r; closing its socket", door.kind, device_id, exc)
            door.count("unavailable")
            await connection.close(framing.TRY_AGAIN_LATER, unavailable)
            return
        with trio.CancelScope() as serving:

            def actor_gone(_: DeviceRef) -> None:
                serving.cancel()

            actor.add_done_callback(actor_gone)
            try:
                await actor.send(Attached(connection))
                connection.next_ping = trio.current_time() + self.ping_interval  # pinged by ``_keep_alive``
                await self._read(door, connection, actor)
            except* (ConnectionClosed, ActorStopped):
                pass  # the device went away, or its actor did
            finally:
                actor.remove_done_callback(actor_gone)
                # However the connection ended (closed, cancelled, failed), its actor hears of it once.
                connection.lost()
                door.links.remove(connection)
                with trio.CancelScope(shield=True):
                    if actor.stopped:  # given up after repeated crashes, or the service is stopping
                        log.warning("%s %s: its actor stopped; closing its socket", door.kind, device_id)
                        door.count("unavailable")
                        await connection.close(framing.TRY_AGAIN_LATER, unavailable)
                    else:
                        with trio.move_on_after(5), contextlib.suppress(ActorStopped):
                            await actor.send(Detached(connection))

    async def _read(self, door: Door[Any], connection: DeviceConnection, actor: DeviceRef) -> None:
        while True:
            # Handled in a call of its own: the frame is not kept alive while the next one is awaited.
            await self._take(door, connection, actor, await connection.ws.get_message())

    async def _take(self, door: Door[Any], connection: DeviceConnection, actor: DeviceRef, text: str | bytes) -> None:
        door.count("frames_in")
        try:
            frame = door.parse_frame(text)
        except framing.FrameError as bad:
            door.count("malformed")
            if bad.message_type in (framing.MessageType.RESULT, framing.MessageType.ERROR):
                connection.fail_call(bad.id, bad.description)  # a broken answer to our own CALL
            else:
                await connection.send(bad.frame)
            return
        if isinstance(frame, framing.Call):
            await actor.send(Incoming(connection, frame))  # waits for room: backpressure on the socket
        else:
            connection.settle(frame)

    async def _keep_alive(self, nursery: trio.Nursery) -> None:
        """Ping every connection every interval; one that misses two pongs is dropped.

        One task for all connections (not one sleeping per connection, which cost each connection a task
        and a cancel scope for its whole life): it wakes a few times per interval and starts a short task
        for each connection whose ping is due, that lives until the pong (or the drop)."""
        while True:
            await trio.sleep(min(1.0, self.ping_interval / 8))
            now = trio.current_time()
            for door in self.doors.values():
                for connection in door.links.connections():
                    if connection.next_ping is not None and connection.next_ping <= now:
                        connection.next_ping = None  # until this ping is answered
                        nursery.start_soon(self._ping, door, connection)

    async def _ping(self, door: Door[Any], connection: DeviceConnection) -> None:
        with trio.move_on_after(self.ping_interval * framing.MISSED_PONGS_LIMIT):
            try:
                await connection.ws.ping()
            except (ConnectionClosed, ValueError):  # gone meanwhile: its reader ends it
                return
            connection.next_ping = trio.current_time() + self.ping_interval
            return
        log.warning("%s %s missed %s pongs: dropping it", door.kind, connection.device_id,
                    framing.MISSED_PONGS_LIMIT)
        await connection.close(1011, "pong timeout")

