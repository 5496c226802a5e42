"""Restart back-off, a child given up alone, and a root that never gives up (no server)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors import (
    ActorRef,
    ActorStopped,
    RestartIntensity,
    RestartIntensityExceeded,
    Supervisor,
    SupervisorSpec,
)
from tests.actors.support import (
    Add,
    Get,
    Journal,
    MemoryStore,
    State,
    actor_child,
    counter_spec,
    crash,
    three_counters,
)


class FlakyStore(MemoryStore):
    """A database that can be down: ``load`` raises while ``down`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.load_times: list[float] = []

    async def load(self, name: str) -> int:
        self.load_times.append(trio.current_time())
        if self.down:
            await trio.lowlevel.checkpoint()
            raise ConnectionError("database down")
        return await super().load(name)



def test_the_delay_doubles_and_is_capped() -> None:
    intensity = RestartIntensity(backoff=0.5, max_backoff=4)
    assert [intensity.delay(n) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert intensity.delay(10_000) == 4  # no overflow however long it failed
    assert RestartIntensity().delay(5) == 0  # default: restart at once, as before


@pytest.mark.parametrize(
    "options",
    [{"exceeded": "stop_child"}, {"backoff": -1}, {"backoff": 5, "max_backoff": 1}, {"exceeded": "explode"},
     {"max_total_restarts": -1}],
)
def test_inconsistent_intensities_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RestartIntensity(**options)


async def test_restarts_of_a_child_failing_at_every_start_back_off(autojump_clock: trio.testing.MockClock) -> None:
    store = FlakyStore()
    sup = Supervisor(
        "s", [counter_spec("a", store)],
        intensity=RestartIntensity(max_restarts=100, period=60, backoff=1, max_backoff=8, exceeded="back_off"),
    )
    async with sup.running():
        a = actor_child(sup, "a")
        store.down = True
        store.load_times.clear()
        await crash(a)  # each restart now fails in on_start: a crash loop
        await trio.sleep(40)
        gaps = [round(b - a, 3) for a, b in zip(store.load_times, store.load_times[1:], strict=False)]
        assert gaps[:5] == [2, 4, 8, 8, 8]  # the first restart came after 1 s, then doubling, capped
        assert "a" in sup.down() and "restarting in 8s" in sup.down()["a"]
        store.down = False
        await trio.sleep(9)
        assert sup.down() == {}
        assert await a.ask(Add(2)) == 2  # the same ref, served again
        # Having run a full period since, the next crash starts the back-off over.
        await trio.sleep(61)
        store.load_times.clear()
        await crash(a)
        await trio.sleep(1.5)
        assert len(store.load_times) == 1


async def test_a_stop_during_a_back_off_is_not_delayed(autojump_clock: trio.testing.MockClock) -> None:
    store = FlakyStore()
    sup = Supervisor("s", [counter_spec("a", store)], intensity=RestartIntensity(backoff=1000, max_backoff=1000))
    async with sup.running():
        a = actor_child(sup, "a")
        await crash(a)
        assert sup.down()
        began = trio.current_time()
        await a.stop()
        assert trio.current_time() - began < 1
        assert sup.child_ids() == []


async def test_a_child_past_its_own_intensity_is_stopped_alone(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    counters = three_counters(
        RestartIntensity(max_restarts=2, period=5, scope="child", backoff=0.1, exceeded="stop_child")
    )
    stations, store, journal = counters.stations, counters.store, counters.journal
    async with Supervisor("root", [SupervisorSpec("stations", stations)]).running() as root:
        a, _, c = (actor_child(stations, name) for name in "abc")
        await c.ask(Add(3))
        heard: list[ActorRef[Any, Any]] = []
        a.add_done_callback(heard.append)
        await crash(a)
        await trio.sleep(0.2)
        await crash(a)
        await trio.sleep(0.3)
        journal.lines.clear()
        await crash(a)  # a third crash within 5 s: a is given up, nobody else notices
        assert heard == [a] and a.stopped
        with pytest.raises(ActorStopped):
            await a.ask(Get())
        assert journal.lines == []  # no sibling stopped or restarted
        assert stations.child_ids() == ["b", "c"]
        assert await c.ask(Get()) == State(3, ())
        assert root.metrics.escalations_total == 0 and root.metrics.given_up_total == 1
        # It may be started again later, with a fresh history.
        again = await stations.start_child(counter_spec("a", store, journal))
        assert await again.ask(Add(1)) == 1
    assert any("stopping it for good" in r.getMessage() for r in caplog.records)


async def test_many_children_restarting_together_still_escalate(autojump_clock: trio.testing.MockClock) -> None:
    store = MemoryStore()
    names = [f"s{i}" for i in range(5)]
    stations = Supervisor(
        "stations", [counter_spec(name, store) for name in names],
        intensity=RestartIntensity(max_restarts=3, scope="child", exceeded="stop_child", max_total_restarts=3),
    )
    with pytest.raises(RestartIntensityExceeded, match="restarts of all children"):
        async with stations.running():
            for name in names[:4]:
                ref = actor_child(stations, name)
                await crash(ref)
            await trio.sleep_forever()  # cancelled by the failure


async def test_a_root_that_backs_off_never_gives_up_and_reports_the_subtree_down(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The subtree escalates; the root restarts it after a back-off; its sibling never notices."""
    store = FlakyStore()
    journal = Journal()
    stations = Supervisor("stations", [counter_spec("a", store)], intensity=RestartIntensity(max_restarts=0))
    others = Supervisor("others", [counter_spec("o", MemoryStore(), journal)])
    root = Supervisor(
        "root", [SupervisorSpec("others", others), SupervisorSpec("stations", stations)],
        intensity=RestartIntensity(max_restarts=0, period=5, backoff=2, max_backoff=16, exceeded="back_off"),
    )
    async with root.running():
        o = actor_child(others, "o")
        await o.ask(Add(5))
        a = actor_child(stations, "a")
        store.down = True  # the restarted subtree fails to start its child for a while
        await crash(a)
        await trio.sleep(0.5)
        assert list(root.down()) == ["stations"]
        assert "RestartIntensityExceeded" in root.down()["stations"]
        await trio.sleep(30)  # several failed restarts of the subtree, spaced out
        assert root.down()
        store.down = False
        await trio.sleep(17)
        assert root.down() == {}
        new_a = actor_child(stations, "a")
        assert await new_a.ask(Get()) == State(0, ())
        assert await o.ask(Get()) == State(5, ())  # the sibling subtree ran throughout
        assert "stopped o" not in journal.lines
        assert root.metrics.restarts_by_kind["supervisor"] >= 3
