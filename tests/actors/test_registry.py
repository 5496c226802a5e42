"""Registry: find an actor by (kind, id), start it once on first use, forget it when stopped."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import ActorKind, ChildStartFailed, Registry, RestartIntensity, Supervisor, SupervisorSpec
from tests.actors.support import (
    Add,
    Boom,
    Counter,
    CounterRef,
    Get,
    Journal,
    MemoryStore,
    Message,
    Reply,
    State,
    StopSelf,
)

COUNTER = ActorKind[Message, Reply]("counter")


def counter_registry(supervisor: Supervisor, store: MemoryStore, journal: Journal | None = None) -> Registry:
    registry = Registry()
    registry.register(COUNTER, supervisor, lambda name: Counter(name, store, journal, start_delay=1))
    return registry


async def test_concurrent_first_uses_start_the_actor_once(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    journal = Journal()
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, store, journal)
        refs: list[CounterRef] = []

        async def use() -> None:
            ref = await registry.get(COUNTER, "c1")
            refs.append(ref)
            await ref.ask(Add(1))

        async with trio.open_nursery() as nursery:
            for _ in range(50):
                nursery.start_soon(use)
        assert len(refs) == 50 and all(ref is refs[0] for ref in refs)
        assert journal.lines.count("starting c1") == 1
        assert await refs[0].ask(Get()) == State(50, ())
        assert sup.child_ids() == ["counter:c1"]
        assert registry.lookup(COUNTER, "c1") is refs[0]
        assert registry.lookup(COUNTER, "c2") is None
        assert len(registry) == 1


async def test_a_stopped_actor_is_forgotten_and_the_next_use_starts_it_afresh(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryStore()
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, store)
        first = await registry.get(COUNTER, "c1")
        await first.ask(Add(5))
        await registry.stop(COUNTER, "c1")
        assert registry.lookup(COUNTER, "c1") is None and len(registry) == 0

        second = await registry.get(COUNTER, "c1")
        assert second is not first
        assert await second.ask(Get()) == State(5, ())  # rebuilt from the store

        second.tell(StopSelf())  # an actor that stops by itself is forgotten too
        await second.wait_stopped()
        assert len(registry) == 0 and sup.child_ids() == []


async def test_a_crash_keeps_the_same_ref(autojump_clock: trio.testing.MockClock) -> None:
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, MemoryStore())
        ref = await registry.get(COUNTER, "c1")
        ref.tell(Boom())
        assert await ref.ask(Add(1)) == 1
        assert await registry.get(COUNTER, "c1") is ref
        assert sup.metrics.restarts_by_kind == {"counter": 1}


async def test_a_failed_start_reaches_every_concurrent_caller(autojump_clock: trio.testing.MockClock) -> None:
    class FlakyStore(MemoryStore):
        down = True

        async def load(self, name: str) -> int:
            await trio.sleep(1)
            if self.down:
                raise ConnectionError("database down")
            return await super().load(name)

    store = FlakyStore()
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, store)
        failures: list[BaseException] = []

        async def use() -> None:
            try:
                await registry.get(COUNTER, "c1")
            except ChildStartFailed as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(use)
        assert len(failures) == 5
        assert all(isinstance(exc.__cause__, ConnectionError | ChildStartFailed) for exc in failures)
        assert len(registry) == 0 and sup.child_ids() == []

        store.down = False
        ref = await registry.get(COUNTER, "c1")
        assert await ref.ask(Get()) == State(0, ())


async def test_a_cancelled_first_start_lets_the_waiting_caller_start_it(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, MemoryStore(), journal)
        refs: list[CounterRef] = []

        async def wait_for_it() -> None:
            refs.append(await registry.get(COUNTER, "c1"))

        async with trio.open_nursery() as nursery:
            with trio.move_on_after(0.5):  # the start takes 1 s: the first caller gives up
                nursery.start_soon(wait_for_it)
                await registry.get(COUNTER, "c1")
        assert len(refs) == 1 and await refs[0].ask(Add(1)) == 1
        assert registry.lookup(COUNTER, "c1") is refs[0] and sup.child_ids() == ["counter:c1"]
        assert journal.lines.count("starting c1") == 2  # the waiter started it again


async def test_refs_of_a_restarted_supervisor_are_forgotten(autojump_clock: trio.testing.MockClock) -> None:
    counters = Supervisor("counters", intensity=RestartIntensity(max_restarts=0))
    async with Supervisor("root", [SupervisorSpec("counters", counters)]).running():
        registry = counter_registry(counters, MemoryStore())
        ref = await registry.get(COUNTER, "c1")
        await registry.get(COUNTER, "c2")
        ref.tell(Boom())  # no restart allowed: "counters" fails, the root restarts it
        await ref.wait_stopped()
        await trio.testing.wait_all_tasks_blocked()
        assert len(registry) == 0
        fresh = await registry.get(COUNTER, "c1")
        assert fresh is not ref
        assert counters.child_ids() == ["counter:c1"]


async def test_unknown_kinds_and_double_registration_are_errors() -> None:
    async with Supervisor("counters").running() as sup:
        registry = counter_registry(sup, MemoryStore())
        with pytest.raises(ValueError):
            registry.register(COUNTER, sup, lambda name: Counter(name, MemoryStore()))
        with pytest.raises(KeyError):
            await registry.get(ActorKind[Message, Reply]("vehicle"), "v1")


async def test_five_thousand_actors_started_on_first_use_answer_and_stop() -> None:
    """The station supervisor's shape: thousands of independent dynamic children.

    Each actor starts on its first use, answers, a hundred of them crash once
    (per-child intensity: no escalation), half are stopped one by one through
    the registry and the rest with their supervisor, in reverse order.
    """
    count = 5000
    store = MemoryStore()
    journal = Journal()
    stations = Supervisor("stations", intensity=RestartIntensity(max_restarts=1, scope="child"))
    async with stations.running():
        registry = Registry()
        registry.register(COUNTER, stations, lambda name: Counter(name, store, journal))
        names = [f"s{i}" for i in range(count)]

        async def use(name: str) -> None:
            ref = await registry.get(COUNTER, name)
            assert await ref.ask(Add(1)) == 1

        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(use, name)
        assert len(registry) == count
        assert len(stations.child_ids()) == count
        assert stations.metrics.running_by_kind() == {"counter": count}
        refs = {name: registry.lookup(COUNTER, name) for name in names}
        assert all(ref is not None for ref in refs.values())
        assert journal.lines.count("starting s0") == 1

        crashing = names[::50]
        for name in crashing:
            ref = await registry.get(COUNTER, name)
            assert ref is refs[name]  # already running: the same ref, nothing started
            ref.tell(Boom())
        for name in crashing:
            assert await (await registry.get(COUNTER, name)).ask(Get()) == State(1, ())  # rebuilt
        assert stations.metrics.restarts_total == len(crashing)
        assert stations.metrics.escalations_total == 0

        removed, kept = names[::2], names[1::2]
        for name in removed:
            await registry.stop(COUNTER, name)
        assert len(registry) == len(kept)
        started = [child_id.removeprefix("counter:") for child_id in stations.child_ids()]  # in start order
        assert sorted(started) == sorted(kept)
        journal.lines.clear()
    assert journal.lines == [f"stopped {name}" for name in reversed(started)]
    assert all(ref is not None and ref.stopped for ref in refs.values())
    assert len(registry) == 0 and stations.child_ids() == []
    assert stations.metrics.running() == 0
    assert store.totals == dict.fromkeys(names, 1)
