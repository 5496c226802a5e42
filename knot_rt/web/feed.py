"""The app feed: ``GET /api/application/ws`` as ``feed-protocol.md`` says.

Socket -> topic subscription -> bus. A connection authenticates (header or first
frame), subscribes to topics it may see, and receives their events through one
bounded inbox; a reader too slow to drain it is closed with 4408.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import trio
from quart import Blueprint, websocket

from protocols import feed as wire
from protocols.errors import ErrorCode

from ..bus import Ephemeral, FeedEvent, Resync, Subscriber
from ..context import Services, services
from ..db import DatabaseUnavailable
from ..errors import ApiError
from ..services.access import maintenance_networks, seen_cluster, support_networks, unknown_cluster
from ..services.permissions import STATION_READERS
from ..support.store import load_report
from .auth import Caller, access_of, authenticate

log = logging.getLogger(__name__)

bp = Blueprint("feed", __name__)

PRE_AUTH_FRAME_BYTES = 4096


def bus_topic(topic: wire.Topic, caller: Caller) -> wire.Topic:
    """The bus's topic of a client topic (``user`` is per user)."""
    return topic.for_user(caller.user_id)


async def authorize(svc: Services, caller: Caller, topic: wire.Topic) -> None:
    """Raise ApiError unless the caller may see the topic."""
    if topic.kind is wire.TopicKind.USER:
        return
    if topic.kind is wire.TopicKind.CLUSTER and topic.id is not None:
        # Whoever sees the cluster over HTTP; an unseen one answers like an unknown one.
        if seen_cluster(await access_of(caller.user_id), svc.catalog, topic.id) is None:
            raise ApiError(ErrorCode.NOT_FOUND, unknown_cluster(topic.id))
        return
    if topic.kind is wire.TopicKind.STATION and topic.id is not None:
        station_id = topic.id
        scope = await svc.stations.scope(station_id)
        if scope is not None:
            permissions = await svc.access.permissions(svc.db, caller.user_id)
            if permissions.allows_any(STATION_READERS, scope, write=False):
                return
    if topic.kind is wire.TopicKind.SUPPORT and topic.id is not None:
        # The network's support agents (services/access.py); any other caller is refused like for a station.
        permissions = await svc.access.permissions(svc.db, caller.user_id)
        if topic.id in support_networks(permissions, svc.catalog):
            return
    if topic.kind is wire.TopicKind.MAINTENANCE and topic.id is not None:
        # The network's maintenance operators (services/access.py); anyone else is refused (code 13).
        permissions = await svc.access.permissions(svc.db, caller.user_id)
        if topic.id in maintenance_networks(permissions, svc.catalog):
            return
    if topic.kind is wire.TopicKind.REPORT and topic.id is not None:
        # The author and the support agents of its network; an unknown report answers like a forbidden one.
        report_id = topic.id
        report = await svc.db.run(lambda conn: load_report(conn, report_id))
        if report is not None and await svc.support.side_of(caller.user_id, report, write=False) is not None:
            return
    raise ApiError(ErrorCode.NOT_ALLOWED, f"you may not subscribe to {topic}")


@dataclass
class FeedConnection:
    svc: Services
    caller: Caller
    subscriber: Subscriber
    revoked: trio.Event = field(default_factory=trio.Event)
    client_topics: dict[str, str] = field(default_factory=dict)  # bus topic -> client topic
    send_lock: trio.Lock = field(default_factory=trio.Lock)

    async def send(self, text: str) -> None:
        async with self.send_lock:
            await websocket.send(text)

    async def pump_events(self) -> None:
        async for item in self.subscriber.inbox:
            client_topic = self.client_topics.get(item.topic)
            if client_topic is None:
                continue  # unsubscribed meanwhile
            text = encode_item(client_topic, item)
            if text is not None:
                await self.send(text)

    async def handle(self, text: str | bytes) -> None:
        try:
            frame = wire.parse_client_frame(text)
        except wire.FeedFrameError as error:
            await self.send(error.reply)
            return
        if isinstance(frame, wire.PingFrame):
            await self.send(wire.pong(frame.ref))
        elif isinstance(frame, wire.AuthFrame | wire.SubscribeFrame):
            try:
                if isinstance(frame, wire.AuthFrame):
                    await self.reauthenticate(frame)
                else:
                    await self.subscribe(frame)
            except DatabaseUnavailable:  # the socket stays open; the client retries the frame
                await self.send(wire.reply(frame.ref, ErrorCode.SERVICE_UNAVAILABLE))
        elif isinstance(frame, wire.UnsubscribeFrame):
            topic = bus_topic(frame.topic, self.caller)
            self.client_topics.pop(str(topic), None)
            self.svc.bus.unsubscribe(self.subscriber, topic)
            await self.send(wire.reply(frame.ref))
        else:
            await self.chat(frame)

    async def chat(self, frame: wire.TypingFrame | wire.ReadFrame) -> None:
        """``typing`` and ``read`` on a report's topic, through its chat actor (as ``POST .../read``).

        Who may subscribe to the topic may send them (13 otherwise, as for a subscription)."""
        assert frame.topic.id is not None
        report_id = frame.topic.id
        try:
            try:
                report, side = await self.svc.support.access(self.caller.user_id, report_id)
            except ApiError:
                raise ApiError(ErrorCode.NOT_ALLOWED, f"you may not write to {frame.topic}") from None
            if isinstance(frame, wire.TypingFrame):
                await self.svc.support.typing(report, side)
            else:
                await self.svc.support.mark_read(report, side, frame.message_id)
        except ApiError as error:
            await self.send(wire.reply(frame.ref, error.code, error.message))
        except DatabaseUnavailable:
            await self.send(wire.reply(frame.ref, ErrorCode.SERVICE_UNAVAILABLE))
        else:
            await self.send(wire.reply(frame.ref))

    async def reauthenticate(self, frame: wire.AuthFrame) -> None:
        try:
            caller = await authenticate(frame.token)
        except ApiError:
            caller = None
        if caller is None or caller.user_id != self.caller.user_id:
            self.revoked.set()
            return
        self.svc.hub.detach(self.caller.session_id, self.revoked, self.caller.user_id)
        self.caller = caller
        self.svc.hub.attach(caller.session_id, self.revoked, caller.user_id)
        await self.send(wire.reply(frame.ref))

    async def subscribe(self, frame: wire.SubscribeFrame) -> None:
        try:
            await authorize(self.svc, self.caller, frame.topic)
        except ApiError as error:
            await self.send(wire.reply(frame.ref, error.code, error.message))
            return
        topic = bus_topic(frame.topic, self.caller)
        self.client_topics[str(topic)] = str(frame.topic)
        # Subscribed before the reply, so that nothing published after the reply is missed;
        # the reply still goes out first: events wait for the send lock.
        async with self.send_lock:
            await self.svc.bus.subscribe(self.subscriber, topic, frame.since)
            await websocket.send(wire.reply(frame.ref))


def encode_item(client_topic: str, item: FeedEvent | Resync | Ephemeral) -> str | None:
    """The frame of ``item`` on ``client_topic``: encoded once per item, whatever the number of subscribers."""
    try:
        return item.frame(client_topic)
    except ValueError:
        kind = "ephemeral event" if isinstance(item, Ephemeral) else "event"
        name = wire.EventName.RESYNC.value if isinstance(item, Resync) else item.event
        log.error("feed: %s %r is not one of topic %s; not sent", kind, name, client_topic)
        return None


async def first_frame_caller() -> Caller | None:
    """Authentication by a first ``auth`` frame, within the contract's delay.

    Before auth only one frame is read, and at most ``PRE_AUTH_FRAME_BYTES`` of it
    count: a larger one is no ``auth`` frame (an access token is a few hundred
    bytes), so it closes the socket like a bad token. (Hypercorn itself buffers a
    message only up to ``websocket_max_message_size``, set in ``server``.)
    """
    with trio.move_on_after(wire.AUTH_TIMEOUT):
        text = await websocket.receive()
        size = len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass"))
        if size > PRE_AUTH_FRAME_BYTES:
            return None
        try:
            frame = wire.parse_client_frame(text)
        except wire.FeedFrameError:
            return None
        if not isinstance(frame, wire.AuthFrame):
            return None
        try:
            caller = await authenticate(frame.token)
        except ApiError:
            return None
        await websocket.send(wire.reply(frame.ref))
        return caller
    return None


async def header_caller() -> Caller | bool | None:
    """The caller from the upgrade's Authorization header; False when there is none."""
    header = websocket.headers.get("Authorization")
    if not header:
        return False
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    try:
        return await authenticate(token.strip())
    except ApiError:
        return None


@bp.websocket(wire.WS_PATH)
async def feed_socket() -> None:
    svc = services()
    await websocket.accept()
    try:
        found = await header_caller()
        caller = await first_frame_caller() if found is False else found
    except DatabaseUnavailable:  # the token cannot be checked now, which is no bad token (4401)
        await websocket.close(wire.TRY_AGAIN_LATER, "the service is temporarily unavailable")
        return
    if not isinstance(caller, Caller):
        await websocket.close(wire.AUTH_FAILED, "authentication failed")
        return
    connection = FeedConnection(svc, caller, svc.bus.new_subscriber())
    svc.hub.attach(caller.session_id, connection.revoked, caller.user_id)
    close_code: int | None = None
    try:
        async with trio.open_nursery() as nursery:

            async def watch(event: trio.Event, code: int) -> None:
                nonlocal close_code
                await event.wait()
                close_code = code
                nursery.cancel_scope.cancel()

            nursery.start_soon(watch, connection.revoked, wire.AUTH_FAILED)
            nursery.start_soon(watch, connection.subscriber.too_slow, wire.TOO_SLOW)
            nursery.start_soon(connection.pump_events)
            while True:
                await connection.handle(await websocket.receive())
    finally:
        svc.hub.detach(connection.caller.session_id, connection.revoked, connection.caller.user_id)
        svc.bus.drop(connection.subscriber)
        if close_code is not None:
            with trio.move_on_after(2) as scope:
                scope.shield = True
                await websocket.close(close_code)
