"""Supervisors: one_for_one, restart intensity and escalation, ordered start/stop."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    ActorStopped,
    ChildStartFailed,
    DuplicateChild,
    RestartIntensity,
    RestartIntensityExceeded,
    Supervisor,
    SupervisorNotRunning,
    SupervisorSpec,
)
from tests.actors.support import (
    Add,
    CounterRef,
    Get,
    Journal,
    MemoryStore,
    Note,
    State,
    Wait,
    actor_child,
    counter_spec,
    crash,
    three_counters,
)


async def test_a_crash_restarts_only_that_actor_which_rebuilds_from_the_store() -> None:
    store = MemoryStore()
    async with Supervisor("root", [counter_spec("a", store), counter_spec("b", store)]).running() as root:
        a, b = actor_child(root, "a"), actor_child(root, "b")
        for ref in (a, b):
            await ref.ask(Add(10))
            await ref.ask(Note("in memory only"))
        await crash(a)
        # The sibling kept its live state and keeps answering.
        assert await b.ask(Get()) == State(10, ("in memory only",))
        assert await b.ask(Add(1)) == 11
        # The crashed one came back through its on_start: durable state only.
        assert await a.ask(Get()) == State(10, ())
        assert store.loads == ["a", "b", "a"]
        assert root.child_ids() == ["a", "b"]


async def test_restarts_are_logged_with_their_cause_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    caplog.set_level(logging.ERROR, logger="actors")
    async with Supervisor("root", [counter_spec("a", store)]).running() as root:
        a = actor_child(root, "a")
        await crash(a)
        assert root.metrics.restarts_total == 1
        assert root.metrics.restarts_by_kind == {"counter": 1}
        event = root.metrics.recent_restarts[-1]
        assert (event.supervisor, event.kind, event.child_id) == ("root", "counter", "a")
        assert isinstance(event.cause, RuntimeError)
    [record] = [r for r in caplog.records if r.name == "actors.supervisor"]
    assert "restarting" in record.getMessage()
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)
    assert record.child_id == "a"  # type: ignore[attr-defined]


async def test_metrics_show_running_actors_and_mailbox_depths() -> None:
    store = MemoryStore()
    async with Supervisor("root", [counter_spec("a", store), counter_spec("b", store)]).running() as root:
        a = actor_child(root, "a")
        assert root.metrics.running() == 2
        assert root.metrics.running_by_kind() == {"counter": 2}
        gate = trio.Event()
        a.tell(Wait(gate))
        await trio.testing.wait_all_tasks_blocked()
        a.tell(Add(1))
        a.tell(Add(2))
        assert root.metrics.mailbox_depth_by_kind() == {"counter": 2}
        assert root.metrics.max_mailbox_depth() == 2
        gate.set()
        await a.ask(Get())
        assert root.metrics.max_mailbox_depth() == 0
    assert root.metrics.running() == 0


async def test_restart_intensity_exceeded_escalates_to_the_parent(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    journal = Journal()
    inner = Supervisor(
        "counters",
        [counter_spec("a", store, journal), counter_spec("b", store, journal)],
        intensity=RestartIntensity(max_restarts=2, period=5),
    )
    async with Supervisor("root", [SupervisorSpec("counters", inner)]).running() as root:
        a, b = actor_child(inner, "a"), actor_child(inner, "b")
        await a.ask(Add(7))
        await crash(a)
        await crash(a)  # two restarts: the limit
        journal.lines.clear()
        await crash(a)  # the third within 5 s: the inner supervisor gives up

        # It stopped its children in reverse order, and the root restarted it.
        assert journal.lines == ["stopped b", "starting a", "started a", "starting b", "started b"]
        assert root.metrics.restarts_by_kind == {"counter": 2, "supervisor": 1}
        assert root.metrics.escalations_total == 1
        assert root.child_ids() == ["counters"]
        assert a.stopped and b.stopped  # refs of the previous run
        with pytest.raises(ActorStopped):
            a.tell(Get())
        new_a = actor_child(inner, "a")
        assert new_a is not a
        assert await new_a.ask(Get()) == State(7, ())
        assert isinstance(root.metrics.recent_restarts[-1].cause, RestartIntensityExceeded)


async def test_restarts_older_than_the_period_leave_the_window(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    sup = Supervisor("root", [counter_spec("a", store)], intensity=RestartIntensity(max_restarts=1, period=5))
    async with sup.running():
        a = actor_child(sup, "a")
        for _ in range(4):
            await crash(a)
            await trio.sleep(6)
        assert await a.ask(Get()) == State(0, ())
        assert sup.metrics.restarts_total == 4
        assert sup.metrics.escalations_total == 0


async def test_the_root_supervisor_failure_reaches_its_runner() -> None:
    store = MemoryStore()
    journal = Journal()
    root = Supervisor(
        "root",
        [counter_spec("a", store, journal), counter_spec("b", store, journal)],
        intensity=RestartIntensity(max_restarts=0),
    )
    with pytest.raises(RestartIntensityExceeded) as failure:
        async with root.running():
            a = actor_child(root, "a")
            await crash(a)
            await trio.sleep_forever()  # cancelled by the failure
    assert isinstance(failure.value.__cause__, RuntimeError)
    assert journal.lines[-1] == "stopped b"


async def test_nested_supervisors_start_in_order_and_stop_in_reverse(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    journal = Journal()
    # Longer on_start first: were starts concurrent, "b" would be ready before "a".
    inner = Supervisor(
        "inner", [counter_spec("b", store, journal, start_delay=3), counter_spec("c", store, journal, start_delay=1)]
    )
    root = Supervisor(
        "root",
        [
            counter_spec("a", store, journal, start_delay=5),
            SupervisorSpec("inner", inner),
            counter_spec("d", store, journal, start_delay=1),
        ],
    )
    async with root.running():
        assert journal.lines == [
            "starting a", "started a",
            "starting b", "started b",
            "starting c", "started c",
            "starting d", "started d",
        ]  # fmt: skip
        journal.lines.clear()
        await root.start_child(counter_spec("e", store, journal))
        assert root.child_ids() == ["a", "inner", "d", "e"]
        journal.lines.clear()
    assert journal.lines == ["stopped e", "stopped d", "stopped c", "stopped b", "stopped a"]


async def test_cancelling_the_runner_still_stops_children_in_reverse_order() -> None:
    store = MemoryStore()
    journal = Journal()
    root = Supervisor("root", [counter_spec(name, store, journal) for name in "abc"])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        a = actor_child(root, "a")
        a.tell(Add(1))  # queued work is still done before on_stop
        journal.lines.clear()
        nursery.cancel_scope.cancel()
    assert journal.lines == ["stopped c", "stopped b", "stopped a"]
    assert store.totals == {"a": 1}


async def test_dynamic_children_are_added_and_removed() -> None:
    store = MemoryStore()
    journal = Journal()
    async with Supervisor("stations").running() as sup:
        refs = {name: await sup.start_child(counter_spec(name, store, journal)) for name in ("s1", "s2", "s3")}
        with pytest.raises(DuplicateChild):
            await sup.start_child(counter_spec("s2", store))
        await sup.remove_child("s2")
        assert refs["s2"].stopped
        assert journal.lines[-1] == "stopped s2"
        assert sup.child_ids() == ["s1", "s3"]
        await sup.remove_child("absent")
        assert await refs["s3"].ask(Add(1)) == 1
    with pytest.raises(SupervisorNotRunning):
        await sup.start_child(counter_spec("s4", store))


async def test_a_first_start_failure_is_reported_not_retried() -> None:
    class BrokenStore(MemoryStore):
        async def load(self, name: str) -> int:
            raise ConnectionError("database down")

    async with Supervisor("root").running() as root:
        with pytest.raises(ChildStartFailed) as failure:
            await root.start_child(counter_spec("a", BrokenStore()))
        assert isinstance(failure.value.__cause__, ConnectionError)
        assert root.child_ids() == []
        assert root.metrics.restarts_total == 0
        # The supervisor itself is unaffected.
        ref = await root.start_child(counter_spec("a", MemoryStore()))
        assert await ref.ask(Add(1)) == 1


async def test_a_static_child_failing_to_start_fails_the_supervisor_start() -> None:
    class BrokenStore(MemoryStore):
        async def load(self, name: str) -> int:
            if name == "b":
                raise ConnectionError("database down")
            return await super().load(name)

    journal = Journal()
    store = BrokenStore()
    root = Supervisor("root", [counter_spec(name, store, journal) for name in "abc"])
    with pytest.raises(ChildStartFailed):
        async with root.running():
            pytest.fail("must not start")
    assert journal.lines == ["starting a", "started a", "starting b", "stopped a"]


async def test_a_thousand_actors_start_and_stop_cleanly() -> None:
    store = MemoryStore()
    journal = Journal()
    async with Supervisor("stations").running() as sup:
        refs: list[CounterRef] = []

        async def start(name: str) -> None:
            refs.append(await sup.start_child(counter_spec(name, store, journal)))

        async with trio.open_nursery() as nursery:
            for i in range(1000):
                nursery.start_soon(start, f"s{i}")
        assert len(sup.child_ids()) == 1000
        assert sup.metrics.running() == 1000

        async def add(ref: CounterRef) -> None:
            assert await ref.ask(Add(1)) == 1

        async with trio.open_nursery() as nursery:
            for ref in refs:
                nursery.start_soon(add, ref)
    assert sum(line.startswith("stopped") for line in journal.lines) == 1000
    assert all(ref.stopped for ref in refs)
    assert sup.metrics.running() == 0
    assert sup.child_ids() == []
    assert len(store.totals) == 1000


# Restart intensity counted per child (scope="child"): for many independent peers.


@pytest.mark.parametrize(("scope", "escalates"), [("supervisor", True), ("child", False)])
async def test_different_children_crashing_once_each(
    scope: Any, escalates: bool, autojump_clock: trio.testing.MockClock
) -> None:
    store = MemoryStore()
    names = [f"s{i}" for i in range(4)]
    sup = Supervisor(
        "stations",
        [counter_spec(name, store) for name in names],
        intensity=RestartIntensity(max_restarts=3, period=5, scope=scope),
    )

    async def crash_each_once() -> None:
        for name in names:
            ref = actor_child(sup, name)
            await crash(ref)

    if escalates:  # Erlang's rule: four restarts of the supervisor's children in 5 s
        with pytest.raises(RestartIntensityExceeded):
            async with sup.running():
                await crash_each_once()
                await trio.sleep_forever()  # cancelled by the failure
        assert sup.metrics.restarts_total == 3
        assert sup.metrics.escalations_total == 1
    else:  # one restart per child, well within each child's own window
        async with sup.running():
            await crash_each_once()
            await crash_each_once()
            await crash_each_once()  # three each: still each child's limit
            for name in names:
                ref = actor_child(sup, name)
                assert await ref.ask(Add(1)) == 1
            assert sup.child_ids() == names
        assert sup.metrics.restarts_total == 12
        assert sup.metrics.escalations_total == 0


async def test_per_child_intensity_one_child_past_its_window_escalates(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    counters = three_counters(RestartIntensity(max_restarts=2, period=5, scope="child"))
    stations, journal = counters.stations, counters.journal
    async with Supervisor("root", [SupervisorSpec("stations", stations)]).running() as root:
        a, b, c = (actor_child(stations, name) for name in "abc")
        await crash(b)
        await crash(b)  # b at its limit; a's window is its own
        await crash(a)
        await crash(a)
        await trio.sleep(6)  # a's and b's restarts leave their windows
        await crash(a)
        await crash(a)
        assert stations.metrics.escalations_total == 0
        await c.ask(Add(3))
        journal.lines.clear()
        await crash(a)  # a's third restart within 5 s: the supervisor gives up

        assert journal.lines == ["stopped c", "stopped b", "starting a", "started a", "starting b", "started b", "starting c", "started c"]  # fmt: skip
        assert root.metrics.escalations_total == 1
        assert root.metrics.restarts_by_kind == {"counter": 6, "supervisor": 1}
        failure = root.metrics.recent_restarts[-1].cause
        assert isinstance(failure, RestartIntensityExceeded)
        assert "restarts of this child" in str(failure) and "'a'" in str(failure)
        assert isinstance(failure.__cause__, RuntimeError)
        new_c = actor_child(stations, "c")
        assert new_c is not c
        assert await new_c.ask(Get()) == State(3, ())
    assert any("restart intensity exceeded" in r.getMessage() for r in caplog.records)


async def test_per_child_history_goes_with_a_removed_child(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    async with Supervisor("stations", intensity=RestartIntensity(max_restarts=1, scope="child")).running() as sup:
        first = await sup.start_child(counter_spec("s1", store))
        await crash(first)  # at its limit
        await sup.remove_child("s1")
        again = await sup.start_child(counter_spec("s1", store))
        await crash(again)  # a fresh child, a fresh window
        assert await again.ask(Add(1)) == 1
        assert sup.metrics.escalations_total == 0


def test_restart_intensity_rejects_an_unknown_scope() -> None:
    scope: Any = "cluster"
    with pytest.raises(ValueError, match="scope"):
        RestartIntensity(scope=scope)
    assert RestartIntensity().scope == "supervisor"  # Erlang's rule stays the default
