"""The feed bus: durable per-topic events, fanned out to live subscribers.

Every event is written to ``feed_events`` with the next sequence number of its
topic (no gaps), in the transaction of the change it tells of (``uow.Work``), and
reaches subscribers only after that commit. Subscribers are app feed connections; each
has one bounded queue, and one that falls behind is marked too slow instead of
slowing the publisher (its connection is then closed with 4408). A subscriber
that comes back with ``since`` gets the missed events from the table, or a
``resync`` marker when they are gone.

Topics and event names come in typed (``protocols.feed.Topic``, ``EventName``);
the bus keys its state, and the tables their rows, by the topic's name
(``str(topic)``, e.g. ``"station:7"``, or ``"user:42"`` for user 42's own topic).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import trio

from protocols.feed import EventName, Topic
from protocols.feed import ephemeral as wire_ephemeral
from protocols.feed import event as wire_event
from protocols.feed import resync as wire_resync

from .db import Database, repeat

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FeedEvent:
    topic: str
    seq: int
    event: str
    data: dict[str, Any]
    # The frame as sent (client topic, text): encoded once for every subscriber of the topic.
    _frame: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def frame(self, client_topic: str) -> str:
        """The event frame on ``client_topic`` (the bus topic, or ``user`` for a user's own topic), encoded on
        the first call and handed as is to every subscriber after it. Raises ValueError for an event the
        contract does not list on that topic."""
        cached = self._frame
        if cached is not None and cached[0] == client_topic:
            return cached[1]
        text = wire_event(client_topic, self.seq, self.event, self.data)
        object.__setattr__(self, "_frame", (client_topic, text))
        return text


@dataclass(frozen=True, slots=True)
class Ephemeral:
    """An event with no sequence number (``typing``): never stored, never replayed, dropped rather than
    queued behind a full inbox (it is stale by the time it would be read)."""

    topic: str
    event: str
    data: dict[str, Any]
    _frame: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def frame(self, client_topic: str) -> str:
        """Like ``FeedEvent.frame``, without ``seq``."""
        cached = self._frame
        if cached is not None and cached[0] == client_topic:
            return cached[1]
        text = wire_ephemeral(client_topic, self.event, self.data)
        object.__setattr__(self, "_frame", (client_topic, text))
        return text


@dataclass(frozen=True, slots=True)
class Resync:
    """The events after ``since`` are no longer kept: reload the topic over HTTP, then
    resume after ``seq`` (the topic's last sequence number)."""

    topic: str
    seq: int
    _frame: tuple[str, str] | None = field(default=None, init=False, repr=False, compare=False)

    def frame(self, client_topic: str) -> str:
        """The ``resync`` frame on ``client_topic``, encoded once."""
        cached = self._frame
        if cached is not None and cached[0] == client_topic:
            return cached[1]
        text = wire_resync(client_topic, self.seq)
        object.__setattr__(self, "_frame", (client_topic, text))
        return text


_APPEND = """WITH t AS (INSERT INTO feed_topics (topic, last_seq) VALUES ($1, 1)
                    ON CONFLICT (topic) DO UPDATE SET last_seq = feed_topics.last_seq + 1
                    RETURNING last_seq),
              e AS (INSERT INTO feed_events (topic, seq, event, data)
                    SELECT $1::text, t.last_seq, $2::text, $3::jsonb FROM t RETURNING seq)
         SELECT seq FROM e"""


def _announcement(origin: str, seq: str, topic: str) -> str:
    """The SQL that tells the other server processes of an event, at commit: ``knot_feed`` with
    "<origin> <seq> <topic>" (read by ``cluster/remote_feed.py``); the arguments are SQL expressions."""
    return f"pg_notify('knot_feed', {origin} || ' ' || {seq} || ' ' || {topic})"


# The same, also telling the other server processes.
_APPEND_AND_NOTIFY = _APPEND.replace(
    "SELECT seq FROM e", "SELECT e.seq FROM e, " + _announcement("$4::text", "e.seq", "$1::text")
)


def events_of_rows(source: str, where: str = "TRUE") -> str:
    """Two CTE parts, ``topic`` and ``event``, for a statement that writes many feed events at once: one event
    per row of the CTE ``source`` (columns ``topic``, ``event``, ``data``; a NULL topic is no event) that
    matches ``where``, each topic's next sequence number taken as :func:`append_event` takes it. ``event``
    returns ``(topic, seq)``; at most one row per topic in a statement."""
    return f"""topic AS (
    INSERT INTO feed_topics (topic, last_seq) SELECT topic, 1 FROM {source} WHERE topic IS NOT NULL AND {where}
    ON CONFLICT (topic) DO UPDATE SET last_seq = feed_topics.last_seq + 1
    RETURNING topic, last_seq
), event AS (
    INSERT INTO feed_events (topic, seq, event, data)
    SELECT t.topic, t.last_seq, i.event, i.data FROM topic t JOIN {source} i ON i.topic = t.topic
    RETURNING topic, seq
)"""


async def append_event(
    conn: asyncpg.Connection, topic: Topic, event: EventName, data: dict[str, Any], origin: int | None = None
) -> FeedEvent:
    """Write one event with the topic's next sequence number (asyncio side, inside a transaction), in one
    round trip. ``origin``: this process's node when several share the database (the event is announced
    to the others, which fetch it when they have subscribers of the topic)."""
    name, event_name = str(topic), str(event)
    if origin is None:
        seq: int = await conn.fetchval(_APPEND, name, event_name, data)
    else:
        seq = await conn.fetchval(_APPEND_AND_NOTIFY, name, event_name, data, str(origin))
    return FeedEvent(name, seq, event_name, data)


_APPEND_MANY = """WITH input AS (SELECT * FROM unnest($1::text[], $2::text[], $3::jsonb[]) AS t(topic, event, data)),
""" + events_of_rows("input") + """
SELECT topic, seq FROM event"""
_APPEND_MANY_AND_NOTIFY = _APPEND_MANY.replace(
    "SELECT topic, seq FROM event",
    "SELECT e.topic, e.seq FROM event e, " + _announcement("$4::text", "e.seq", "e.topic"),
)


async def append_events(
    conn: asyncpg.Connection, items: list[tuple[Topic, EventName, dict[str, Any]]], origin: int | None = None
) -> list[FeedEvent]:
    """Write several events, at most one per topic, in one statement (one round trip, whatever their number);
    as :func:`append_event` otherwise."""
    names = [str(topic) for topic, _, _ in items]
    if len(set(names)) != len(names):
        raise ValueError("append_events takes at most one event per topic")
    args: list[Any] = [names, [str(event) for _, event, _ in items], [data for _, _, data in items]]
    if origin is None:
        rows = await conn.fetch(_APPEND_MANY, *args)
    else:
        rows = await conn.fetch(_APPEND_MANY_AND_NOTIFY, *args, str(origin))
    seqs = {row["topic"]: row["seq"] for row in rows}
    return [FeedEvent(name, seqs[name], str(event), data) for name, (_, event, data) in zip(names, items, strict=True)]


class Subscriber:
    """One feed connection's inbox: bounded, never blocks the publisher."""

    def __init__(self, capacity: int) -> None:
        self._send, self.inbox = trio.open_memory_channel[FeedEvent | Resync | Ephemeral](capacity)
        self.too_slow = trio.Event()
        self.topics: set[str] = set()
        # By topic, the last sequence number it already got when it caught up with ``since`` (several
        # processes: an event announced late by another process is not handed over twice).
        self.floor: dict[str, int] | None = None

    def offer(self, item: FeedEvent | Resync | Ephemeral) -> None:
        if self.too_slow.is_set():
            return
        if self.floor and isinstance(item, FeedEvent) and item.seq <= self.floor.get(item.topic, 0):
            return
        try:
            self._send.send_nowait(item)
        except trio.WouldBlock:
            if not isinstance(item, Ephemeral):  # a lost typing indicator is no lost event
                self.too_slow.set()
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    def close(self) -> None:
        self._send.close()


@dataclass
class _TopicState:
    lock: trio.Lock = field(default_factory=trio.Lock)
    subscribers: set[Subscriber] = field(default_factory=set)
    # Several processes: the last sequence number handed to this process's subscribers (None: not known,
    # one process alone, where every event of the topic is delivered here in order).
    delivered: int | None = None


class FeedBus:
    def __init__(self, db: Database, *, queue_capacity: int = 256, retention: timedelta = timedelta(days=1)) -> None:
        self._db = db
        self._topics: defaultdict[str, _TopicState] = defaultdict(_TopicState)
        self.queue_capacity = queue_capacity
        self.retention = retention
        self.published = 0
        # Several processes on one database (``knot_rt/cluster``): this process's node, given to
        # ``append_event`` so that the others hear of each event; 0 while the link is down. None: alone.
        self.origin: Callable[[], int] | None = None
        # Several processes: how an ephemeral event reaches the others' subscribers (no row, no sequence).
        self.share_ephemeral: Callable[[Ephemeral], None] | None = None

    def new_subscriber(self) -> Subscriber:
        return Subscriber(self.queue_capacity)

    @property
    def subscriber_count(self) -> int:
        return len({s for state in self._topics.values() for s in state.subscribers})

    def topic_lock(self, topic: Topic) -> trio.Lock:
        """The lock that orders a topic's writes and deliveries with its subscriptions."""
        return self._topics[str(topic)].lock

    @property
    def shared(self) -> bool:
        """Whether other processes write to the same topics."""
        return self.origin is not None

    async def deliver_committed(self, item: FeedEvent) -> None:
        """Hand a committed event of this process to the topic's subscribers (``uow.Work``, under the topic's
        lock). Several processes: an event of another process that came before it and was not announced
        yet is read first, so that subscribers see the topic's order with no gap."""
        state = self._topics.get(item.topic)
        if state is not None and state.delivered is not None and item.seq > state.delivered + 1:
            try:
                await self._catch_up(item.topic, state, item.seq - 1)
            except Exception as exc:  # committed already: deliver it; a gap is seen by ``since`` later
                log.warning("feed: the events of %s before %s could not be read: %r", item.topic, item.seq, exc)
        self.deliver(item)

    async def deliver_announced(self, topic: str, seq: int) -> None:
        """Another process committed event ``seq`` of ``topic``: read it (and any before it not seen yet)
        and hand them over, if this process has subscribers of the topic."""
        state = self._topics.get(topic)
        if state is None or state.delivered is None or seq <= state.delivered:
            return
        async with state.lock:
            if state.delivered is not None and seq > state.delivered:
                await self._catch_up(topic, state, seq)

    async def _catch_up(self, topic: str, state: _TopicState, upto: int) -> None:
        after = state.delivered or 0
        rows = await self._db.fetch(
            "SELECT seq, event, data FROM feed_events WHERE topic = $1 AND seq > $2 AND seq <= $3 ORDER BY seq",
            topic, after, upto,
        )
        for row in rows:
            self.deliver(FeedEvent(topic, row["seq"], row["event"], row["data"]))
        if state.delivered is not None and state.delivered < upto:
            state.delivered = upto  # pruned meanwhile: nothing more to give

    async def announce(self, written: list[FeedEvent]) -> None:
        """Several processes: tell the others of events written by a statement of our own (the batched station
        records, ``stations/store.py``), after its commit. One process: nothing."""
        if self.origin is None or not written:
            return
        await self._db.execute(
            "SELECT " + _announcement("$1::text", "x.seq", "x.topic")
            + " FROM unnest($2::text[], $3::bigint[]) AS x(topic, seq)",
            str(self.origin()), [e.topic for e in written], [e.seq for e in written],
        )

    def deliver(self, item: FeedEvent) -> None:
        """Fan an event out to local subscribers, once it is committed (in sequence order, under the topic's
        lock: ``deliver_committed`` and ``deliver_announced``)."""
        self.published += 1
        state = self._topics.get(item.topic)
        if state is None:
            return
        if state.delivered is not None:
            if item.seq <= state.delivered:
                return  # already handed over (another process's event read with a later one)
            state.delivered = item.seq
        for subscriber in list(state.subscribers):
            subscriber.offer(item)
            if subscriber.too_slow.is_set():
                # Stop feeding it at once; its connection closes with 4408.
                self.drop(subscriber)

    def deliver_ephemeral(self, topic: Topic, event: EventName, data: dict[str, Any]) -> None:
        """Hand an ephemeral event (``typing``) to the topic's live subscribers of this process, now.

        Not written, no sequence number, not under the topic's lock: it may pass a durable event
        being delivered, which is harmless for an indicator that expires on its own."""
        item = Ephemeral(str(topic), str(event), data)
        self.deliver_ephemeral_here(item)
        if self.share_ephemeral is not None:
            self.share_ephemeral(item)

    def deliver_ephemeral_here(self, item: Ephemeral) -> None:
        """An ephemeral event to this process's subscribers only (one told by another process)."""
        state = self._topics.get(item.topic)
        if state is None:
            return
        for subscriber in list(state.subscribers):
            subscriber.offer(item)

    async def subscribe(self, subscriber: Subscriber, topic: Topic, since: int | None = None) -> None:
        """Start delivering ``topic``; with ``since``, first the kept events after it (or a Resync)."""
        name = str(topic)
        state = self._topics[name]
        async with state.lock:  # no event of this topic is published while we catch up
            if since is not None:
                last_seq, missed = await self._db.run(lambda conn: _events_after(conn, name, since))
                # More than the inbox can take is as good as lost: the client reloads over HTTP.
                if missed is None or len(missed) > self.queue_capacity // 2:
                    subscriber.offer(Resync(name, last_seq))
                else:
                    for item in missed:
                        subscriber.offer(item)
                if self.shared:
                    if subscriber.floor is None:
                        subscriber.floor = {}
                    subscriber.floor[name] = last_seq
                    if state.delivered is None:
                        state.delivered = last_seq
            elif self.shared and state.delivered is None:
                state.delivered = await self._db.fetchval(
                    "SELECT COALESCE((SELECT last_seq FROM feed_topics WHERE topic = $1), 0)", name
                )
            state.subscribers.add(subscriber)
            subscriber.topics.add(name)

    def unsubscribe(self, subscriber: Subscriber, topic: Topic | str) -> None:
        """Stop delivering ``topic`` (a Topic, or a name from ``subscriber.topics``)."""
        topic = str(topic)
        state = self._topics.get(topic)
        if state is not None:
            state.subscribers.discard(subscriber)
            if not state.subscribers and not state.lock.locked():
                del self._topics[topic]
        subscriber.topics.discard(topic)

    def drop(self, subscriber: Subscriber) -> None:
        for topic in list(subscriber.topics):
            self.unsubscribe(subscriber, topic)
        subscriber.close()

    async def prune(self) -> int:
        """Forget events older than the retention window."""
        status = await self._db.execute(
            "DELETE FROM feed_events WHERE created_at < now() - $1::interval", self.retention
        )
        return int(status.split()[-1])

    async def run_pruner(self, every: float = 600.0) -> None:
        """Prune every ``every`` seconds; while the database is away, retry with back-off."""

        async def prune_once() -> None:
            removed = await self.prune()
            if removed:
                log.info("feed: pruned %s events older than %s", removed, self.retention)

        await repeat("feed: pruning old events", prune_once, every)


async def _events_after(
    conn: asyncpg.Connection, topic: str, since: int
) -> tuple[int, list[FeedEvent] | None]:
    """The topic's last seq and the kept events after ``since``; None when some are gone
    (or ``since`` is ahead of the topic)."""
    bounds = await conn.fetchrow(
        """SELECT t.last_seq, (SELECT min(seq) FROM feed_events e WHERE e.topic = t.topic) AS first_kept
           FROM feed_topics t WHERE t.topic = $1""",
        topic,
    )
    last_seq = bounds["last_seq"] if bounds else 0
    first_kept = bounds["first_kept"] if bounds else None
    if since > last_seq or since < 0:
        return last_seq, None
    if since == last_seq:
        return last_seq, []
    if first_kept is None or first_kept > since + 1:
        return last_seq, None
    rows = await conn.fetch(
        "SELECT seq, event, data FROM feed_events WHERE topic = $1 AND seq > $2 ORDER BY seq", topic, since
    )
    return last_seq, [FeedEvent(topic, r["seq"], r["event"], r["data"]) for r in rows]


class FeedHub:
    """The live feed connections of this process, by session (to close them at logout) and by user (to tell
    whether a user has a feed socket open: the support chat mails a rider who has none).

    One process serves the feed (the launcher runs one server), so what the hub knows is the whole truth.
    """

    def __init__(self) -> None:
        self._by_session: defaultdict[uuid.UUID, set[trio.Event]] = defaultdict(set)
        self._by_user: defaultdict[int, set[trio.Event]] = defaultdict(set)

    def attach(self, session_id: uuid.UUID, revoked: trio.Event, user_id: int | None = None) -> None:
        self._by_session[session_id].add(revoked)
        if user_id is not None:
            self._by_user[user_id].add(revoked)

    def detach(self, session_id: uuid.UUID, revoked: trio.Event, user_id: int | None = None) -> None:
        events = self._by_session.get(session_id)
        if events is not None:
            events.discard(revoked)
            if not events:
                del self._by_session[session_id]
        if user_id is not None and (mine := self._by_user.get(user_id)) is not None:
            mine.discard(revoked)
            if not mine:
                del self._by_user[user_id]

    def is_online(self, user_id: int) -> bool:
        """Whether ``user_id`` has a feed socket open in this process."""
        return bool(self._by_user.get(user_id))

    def sessions_revoked(self, session_ids: list[uuid.UUID]) -> None:
        for session_id in session_ids:
            for revoked in self._by_session.pop(session_id, set()):
                revoked.set()

    @property
    def connections(self) -> int:
        return sum(len(v) for v in self._by_session.values())
