"""One unit of work: writes, feed events and effects commit together or not at all, on a real database.

The changes below write raw SQL on purpose: what is under test is the unit of work itself, not a service."""

from __future__ import annotations

import logging

import asyncpg
import pytest
import trio

from knot_rt.bus import FeedEvent, Resync, Subscriber
from knot_rt.uow import UndeclaredTopic, UnitOfWork
from protocols.feed import EventName, Topic
from tests.support import Harness

TOPIC = Topic.cluster(1)
USER = Topic.user(7)


async def listening(harness: Harness, *topics: str) -> Subscriber:
    subscriber = harness.svc.bus.new_subscriber()
    for topic in topics:
        await harness.svc.bus.subscribe(subscriber, topic)
    return subscriber


def received(subscriber: Subscriber) -> list[tuple[str, int, str]]:
    """(topic, seq, event) of what the subscriber got so far."""
    found: list[tuple[str, int, str]] = []
    while True:
        try:
            item = subscriber.inbox.receive_nowait()
        except trio.WouldBlock:
            return found
        assert not isinstance(item, Resync)
        found.append((str(item.topic), item.seq, str(item.event)))


async def kept_events(harness: Harness) -> list[tuple[str, int, str]]:
    rows = await harness.db.fetch("SELECT topic, seq, event FROM feed_events ORDER BY topic, seq")
    return [(r["topic"], r["seq"], r["event"]) for r in rows]


async def test_a_commit_delivers_its_events_in_order_then_runs_its_effects(harness: Harness) -> None:
    subscriber = await listening(harness, TOPIC, USER)
    seen_at_effect: list[list[tuple[str, int, str]]] = []
    calls: list[str] = []

    async def change(uow: UnitOfWork) -> int:
        await uow.conn.execute("INSERT INTO consent_types (key, names) VALUES ('newsletter', '{}')")
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {"n": 1})
        uow.after(lambda: calls.append("first"))
        await uow.publish(USER, EventName.RENT_STARTED, {"trip_id": 1})
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {"n": 2})

        async def later() -> None:
            await trio.lowlevel.checkpoint()
            seen_at_effect.append(received(subscriber))
            calls.append("second")

        uow.after(later)
        return 42

    assert await harness.svc.work.run(change, topics=[TOPIC, USER]) == 42
    assert calls == ["first", "second"]
    # The events were delivered before the effects ran, each topic in sequence order.
    assert seen_at_effect == [[(str(TOPIC), 1, EventName.CLUSTER_UPDATED), (str(USER), 1, EventName.RENT_STARTED),
                               (str(TOPIC), 2, EventName.CLUSTER_UPDATED)]]
    assert await kept_events(harness) == [(str(TOPIC), 1, EventName.CLUSTER_UPDATED), (str(TOPIC), 2, EventName.CLUSTER_UPDATED),
                                          (str(USER), 1, EventName.RENT_STARTED)]
    assert await harness.db.fetchval("SELECT count(*) FROM consent_types WHERE key = 'newsletter'") == 1


async def test_a_rollback_drops_the_writes_the_events_and_the_effects(harness: Harness) -> None:
    subscriber = await listening(harness, TOPIC)
    calls: list[str] = []

    async def change(uow: UnitOfWork) -> None:
        await uow.conn.execute("INSERT INTO consent_types (key, names) VALUES ('newsletter', '{}')")
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {"n": 1})
        uow.after(lambda: calls.append("effect"))
        raise LookupError("no such thing")

    with pytest.raises(LookupError):
        await harness.svc.work.run(change, topics=[TOPIC])
    assert calls == [] and received(subscriber) == [] and await kept_events(harness) == []
    assert await harness.db.fetchval("SELECT count(*) FROM consent_types") == 0
    # The topic's sequence was not spent: the next event is number 1.
    written = await harness.svc.work.publish(TOPIC, EventName.CLUSTER_UPDATED, {"n": 2})
    assert written.seq == 1 and received(subscriber) == [(str(TOPIC), 1, EventName.CLUSTER_UPDATED)]


async def test_publishing_on_a_topic_not_named_rolls_back(harness: Harness) -> None:
    async def change(uow: UnitOfWork) -> None:
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {})
        await uow.publish(Topic.user(1), EventName.RENT_STARTED, {})

    with pytest.raises(UndeclaredTopic):
        await harness.svc.work.run(change, topics=[TOPIC])
    assert await kept_events(harness) == []


async def test_a_caller_that_goes_away_mid_transaction_still_gets_its_commit_delivered(harness: Harness) -> None:
    subscriber = await listening(harness, TOPIC)
    calls: list[str] = []
    began = trio.Event()

    async def change(uow: UnitOfWork) -> None:
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {})
        began.set()  # asyncio side: the Trio caller is cancelled while the transaction is open
        await uow.conn.execute("SELECT pg_sleep(0.2)")
        uow.after(lambda: calls.append("effect"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: harness.svc.work.run(change, topics=[TOPIC]))
        await began.wait()
        nursery.cancel_scope.cancel()
    assert calls == ["effect"]
    assert received(subscriber) == [(str(TOPIC), 1, EventName.CLUSTER_UPDATED)]
    assert await kept_events(harness) == [(str(TOPIC), 1, EventName.CLUSTER_UPDATED)]


async def test_a_failing_effect_is_logged_and_the_commit_stands(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("cache unreachable")

    async def change(uow: UnitOfWork) -> str:
        await uow.conn.execute("INSERT INTO consent_types (key, names) VALUES ('newsletter', '{}')")
        uow.after(broken)
        uow.after(lambda: calls.append("next"))
        return "done"

    with caplog.at_level(logging.ERROR, logger="knot_rt.uow"):
        assert await harness.svc.work.run(change) == "done"
    assert calls == ["next"]
    assert "cache unreachable" in caplog.text
    assert await harness.db.fetchval("SELECT count(*) FROM consent_types") == 1


async def test_concurrent_units_on_one_topic_deliver_in_sequence_order(harness: Harness) -> None:
    subscriber = await listening(harness, TOPIC)
    late = harness.svc.bus.new_subscriber()  # catches up with ``since`` while the units run

    async def one(n: int) -> FeedEvent:
        async def change(uow: UnitOfWork) -> FeedEvent:
            written = await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {"n": n})
            await uow.conn.execute("SELECT pg_sleep(0.01)")
            return written

        return await harness.svc.work.run(change, topics=[TOPIC])

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(one, n)
            if n == 10:
                nursery.start_soon(lambda: harness.svc.bus.subscribe(late, TOPIC, since=0))
    assert [seq for _, seq, _ in received(subscriber)] == list(range(1, 21))
    # Replayed from the table, then live: every event once, in order, none missed at the switch.
    assert [seq for _, seq, _ in received(late)] == list(range(1, 21))


async def test_a_unique_violation_rolls_back_and_passes_on(harness: Harness) -> None:
    async def change(uow: UnitOfWork) -> None:
        await uow.conn.execute("INSERT INTO consent_types (key, names) VALUES ('twice', '{}')")
        await uow.publish(TOPIC, EventName.CLUSTER_UPDATED, {})
        await uow.conn.execute("INSERT INTO consent_types (key, names) VALUES ('twice', '{}')")

    with pytest.raises(asyncpg.UniqueViolationError):
        await harness.svc.work.run(change, topics=[TOPIC])
    assert await kept_events(harness) == []


async def test_events_of_many_topics_in_one_statement_keep_each_topics_order(harness: Harness) -> None:
    """``Work.publish_each`` (the coalesced ``cluster.updated`` of every cluster that changed): one statement,
    each topic's next sequence number, delivered after it; interleaved with single publishes, no gap and no
    duplicate."""
    clusters = [Topic.cluster(n) for n in (1, 2, 3)]
    subscriber = await listening(harness, *clusters)
    work = harness.svc.work
    await work.publish(clusters[0], EventName.CLUSTER_UPDATED, {"n": 0})
    written = await work.publish_each([(t, EventName.CLUSTER_UPDATED, {"n": 1}) for t in clusters])
    assert [(e.topic, e.seq) for e in written] == [("cluster:1", 2), ("cluster:2", 1), ("cluster:3", 1)]
    await work.publish_each([(clusters[2], EventName.CLUSTER_UPDATED, {"n": 2})])
    assert await work.publish_each([]) == []
    expected = [("cluster:1", 1, "cluster.updated"), ("cluster:1", 2, "cluster.updated"),
                ("cluster:2", 1, "cluster.updated"), ("cluster:3", 1, "cluster.updated"),
                ("cluster:3", 2, "cluster.updated")]
    got = received(subscriber)
    assert sorted(got) == expected
    assert {t: [seq for topic, seq, _ in got if topic == t] for t in ("cluster:1", "cluster:3")} == {
        "cluster:1": [1, 2], "cluster:3": [1, 2]}  # in each topic's order as they arrived
    assert await kept_events(harness) == expected
    with pytest.raises(ValueError):  # one event per topic a statement: the order within a topic is the caller's
        await work.publish_each([(clusters[0], EventName.CLUSTER_UPDATED, {}), (clusters[0], EventName.CLUSTER_UPDATED, {})])
    assert await kept_events(harness) == expected
