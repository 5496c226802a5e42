"""One unit of work: a transaction, the feed events it writes, and what must happen once it commits.

A service opens a unit of work for every write::

    answer = await work.run(change, topics=[topic])

``change(uow)`` runs inside one transaction on the asyncio side (see ``db.py``)
and writes through ``uow.conn``. It may queue:

- ``await uow.publish(topic, event, data)``: the feed event is written in the
  same transaction (with its topic's next sequence number), and handed to the
  topic's live subscribers after the commit, in order;
- ``uow.after(effect)``: a call made after the commit (wake the mail sender,
  close the revoked sessions' feed sockets, update a cache). It may be a plain
  function or return an awaitable.

After the commit the events are delivered, then the effects run, in the order
they were queued. On a rollback (an exception out of ``change``) nothing of the
queue runs and the exception passes on.

Choices:

- Topics are named up front (``topics=``). Their locks (the bus's, the ones a
  subscription catching up with ``since`` takes) are held from before the
  transaction until its events are delivered, so a subscriber never misses nor
  repeats an event and every topic's events arrive in sequence order. Locks are
  taken in sorted order (no deadlock between two units of work); publishing to a
  topic not named is a programming error (``UndeclaredTopic``). The cost: a
  unit of work on a topic waits for the one before it on that topic, as a
  station's events already did. Units of work do not nest.
- From the start of the transaction to the last effect the work is shielded
  from cancellation: a caller that goes away (a client that hangs up) cannot
  leave a commit without its delivery or its effects. Each database call is
  bounded by the pool's timeouts, so the shield never waits forever.
- An effect that fails is logged and does not fail the unit of work: its change
  is committed, and the caller is told so. Effects are the kind that a later
  run repairs (a cache refreshed by its own loop, mail sent by the outbox).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import trio

from protocols.feed import EventName, Topic

from .bus import FeedBus, FeedEvent, append_event, append_events
from .db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")
Effect = Callable[[], object]


class UndeclaredTopic(RuntimeError):
    """``publish`` on a topic the unit of work did not name in ``topics``."""


@dataclass
class UnitOfWork:
    """What ``change`` gets: the transaction's connection and the after-commit queue."""

    conn: asyncpg.Connection
    topics: frozenset[Topic]
    origin: int | None = None  # this process's node when several share the database (``bus.append_event``)
    events: list[FeedEvent] = field(default_factory=list)
    effects: list[Effect] = field(default_factory=list)

    async def publish(self, topic: Topic, event: EventName, data: dict[str, Any]) -> FeedEvent:
        """Write a feed event in this transaction; subscribers get it after the commit."""
        if topic not in self.topics:
            named = sorted(str(t) for t in self.topics)
            raise UndeclaredTopic(f"publish on {str(topic)!r}: the unit of work named only {named}")
        written = await append_event(self.conn, topic, event, data, self.origin)
        self.events.append(written)
        return written

    def after(self, effect: Effect) -> None:
        """Call ``effect()`` once the transaction has committed (never after a rollback)."""
        self.effects.append(effect)


class Work:
    """Runs units of work on the database, delivering their events through the bus."""

    def __init__(self, db: Database, bus: FeedBus) -> None:
        self.db = db
        self.bus = bus

    async def run(self, change: Callable[[UnitOfWork], Awaitable[T]], *, topics: Iterable[Topic] = ()) -> T:
        """Run ``change`` in one transaction; after the commit, deliver its events and run its effects."""
        named = frozenset(topics)
        origin = None if self.bus.origin is None else self.bus.origin()
        async with AsyncExitStack() as locks:
            for topic in sorted(named, key=str):
                await locks.enter_async_context(self.bus.topic_lock(topic))
            with trio.CancelScope(shield=True):
                uow_box: list[UnitOfWork] = []

                async def transaction(conn: asyncpg.Connection) -> T:
                    uow = UnitOfWork(conn, named, origin)
                    uow_box.append(uow)
                    return await change(uow)

                result = await self.db.transaction(transaction)
                uow = uow_box[-1]
                for event in uow.events:
                    await self.bus.deliver_committed(event)
        # The topics' locks are released: effects may publish again.
        with trio.CancelScope(shield=True):
            for effect in uow.effects:
                await _call(effect)
        return result

    async def publish(self, topic: Topic, event: EventName, data: dict[str, Any]) -> FeedEvent:
        """A unit of work of one feed event."""
        return await self.run(lambda uow: uow.publish(topic, event, data), topics=[topic])

    async def publish_each(self, items: list[tuple[Topic, EventName, dict[str, Any]]]) -> list[FeedEvent]:
        """Feed events of many topics (at most one each) in one statement, one round trip for them all (the
        coalesced ``cluster.updated`` of every cluster that changed); delivered after it, in each topic's
        order."""
        if not items:
            return []
        origin = None if self.bus.origin is None else self.bus.origin()
        async with AsyncExitStack() as locks:
            for topic in sorted({topic for topic, _, _ in items}, key=str):
                await locks.enter_async_context(self.bus.topic_lock(topic))
            with trio.CancelScope(shield=True):
                written = await self.db.run(lambda conn: append_events(conn, items, origin))
                for event in written:
                    await self.bus.deliver_committed(event)
        return written


async def _call(effect: Effect) -> None:
    try:
        outcome = effect()
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        log.exception("an effect after a commit failed: %r", effect)
