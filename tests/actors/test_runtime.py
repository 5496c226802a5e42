"""ActorRef: tell, ask, the bounded mailbox, one message at a time, stop."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from actors import (
    Actor,
    ActorCrashed,
    ActorSpec,
    ActorStopped,
    AskTimeout,
    MailboxFull,
    Supervisor,
)
from tests.actors.support import Add, Boom, Get, Journal, MemoryStore, Note, Sleep, State, StopSelf, Wait, counter_spec


async def test_tell_and_ask_round_trip() -> None:
    store = MemoryStore()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", store))
        ref.tell(Add(2))
        ref.tell(Note("hello"))
        assert await ref.ask(Add(3)) == 5
        assert await ref.ask(Get()) == State(5, ("hello",))
    assert store.totals == {"a": 5}


async def test_messages_are_handled_one_at_a_time_in_order(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), journal))
        # Tells and asks from several tasks: the actor still takes them one by one.
        ref.tell(Sleep(3, "1"))
        ref.tell(Sleep(1, "2"))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ref.ask, Sleep(2, "3"), 30)
            await trio.testing.wait_all_tasks_blocked()
            ref.tell(Sleep(0, "4"))
        assert await ref.ask(Get()) == State(0, ())
    handled = [line for line in journal.lines if line.startswith(("begin", "end"))]
    assert handled == ["begin 1", "end 1", "begin 2", "end 2", "begin 3", "end 3", "begin 4", "end 4"]


async def test_ask_times_out_and_the_actor_goes_on(autojump_clock: trio.testing.MockClock) -> None:
    journal = Journal()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), journal))
        with pytest.raises(AskTimeout):
            await ref.ask(Sleep(10, "slow"), timeout=1)
        # The timed-out message is still handled; later asks are answered.
        assert await ref.ask(Add(1), timeout=30) == 1
        assert journal.lines[-2:] == ["begin slow", "end slow"]


async def test_ask_timeout_covers_waiting_for_room_in_a_full_mailbox(autojump_clock: trio.testing.MockClock) -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), mailbox_size=1))
        gate = trio.Event()
        ref.tell(Wait(gate))
        await trio.testing.wait_all_tasks_blocked()
        ref.tell(Add(1))  # fills the mailbox
        with pytest.raises(AskTimeout):
            await ref.ask(Get(), timeout=2)
        gate.set()
        assert await ref.ask(Get()) == State(1, ())


async def test_full_mailbox_rejects_tell_and_send_waits_for_room() -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), mailbox_size=2))
        gate = trio.Event()
        ref.tell(Wait(gate))
        await trio.testing.wait_all_tasks_blocked()  # the actor holds Wait, the mailbox is empty
        assert ref.mailbox_depth == 0
        ref.tell(Add(1))
        ref.tell(Add(2))
        assert ref.mailbox_depth == 2
        with pytest.raises(MailboxFull):
            ref.tell(Add(100))

        sent = trio.Event()

        async def send_later() -> None:
            await ref.send(Add(3))
            sent.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            await trio.testing.wait_all_tasks_blocked()
            assert not sent.is_set()  # waiting for room
            gate.set()
        assert sent.is_set()
        assert await ref.ask(Get()) == State(6, ())
        assert ref.mailbox_depth == 0


async def test_exception_in_ask_reaches_the_asker_and_restarts_the_actor() -> None:
    store = MemoryStore()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", store))
        assert await ref.ask(Add(4)) == 4
        ref.tell(Note("volatile"))
        with pytest.raises(ActorCrashed) as crashed:
            await ref.ask(Boom())
        assert isinstance(crashed.value.cause, RuntimeError)
        assert crashed.value.__cause__ is crashed.value.cause
        # Same ref, new incarnation: durable state rebuilt, volatile state gone.
        assert await ref.ask(Get()) == State(4, ())
        assert store.loads == ["a", "a"]
        assert root.metrics.restarts_total == 1


async def test_messages_queued_behind_a_crash_are_handled_after_the_restart() -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore()))
        gate = trio.Event()
        ref.tell(Wait(gate))
        ref.tell(Boom())
        ref.tell(Add(1))
        ref.tell(Add(2))
        gate.set()
        assert await ref.ask(Get()) == State(3, ())
        assert root.metrics.restarts_total == 1


async def test_stop_drains_the_mailbox_then_runs_on_stop() -> None:
    journal = Journal()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), journal))
        gate = trio.Event()
        ref.tell(Wait(gate))
        ref.tell(Add(1))
        ref.tell(Add(2))
        answer = None

        async def ask_total() -> None:
            nonlocal answer
            answer = await ref.ask(Get())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_total)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(ref.stop)
            await trio.testing.wait_all_tasks_blocked()
            assert ref.stopping and not ref.stopped
            with pytest.raises(ActorStopped):
                ref.tell(Add(100))
            gate.set()
        assert answer == State(3, ())
        assert ref.stopped
        assert journal.lines[-1] == "stopped a"
        assert root.child_ids() == []  # a stopped child is removed, not restarted
        with pytest.raises(ActorStopped):
            await ref.ask(Get())
    assert root.metrics.restarts_total == 0


async def test_stop_past_the_shutdown_timeout_cancels_and_fails_queued_asks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    journal = Journal()
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore(), journal, shutdown_timeout=2))
        ref.tell(Wait(trio.Event()))  # never released
        outcomes: list[BaseException] = []

        async def ask_and_record() -> None:
            try:
                await ref.ask(Get(), timeout=60)
            except ActorStopped as exc:
                outcomes.append(exc)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask_and_record)
            await trio.testing.wait_all_tasks_blocked()
            await ref.stop()
        assert len(outcomes) == 1
        assert "stopped a" not in journal.lines  # cancelled, not an orderly stop
        assert root.child_ids() == []


async def test_an_actor_can_stop_itself() -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(counter_spec("a", MemoryStore()))
        ref.tell(StopSelf())
        await ref.wait_stopped()
        assert root.child_ids() == []
        assert root.metrics.restarts_total == 0


class Ticker(Actor[str, int]):
    """Counts ticks sent by a background task of its own."""

    def __init__(self, fail_after: int | None = None) -> None:
        self.ticks = 0
        self.fail_after = fail_after

    async def on_start(self) -> None:
        self.background.start_soon(self.tick_every_second)

    async def tick_every_second(self) -> None:
        while True:
            await trio.sleep(1)
            if self.fail_after is not None and self.ticks >= self.fail_after:
                raise RuntimeError("ticker broke")
            self.tell_self("tick")

    async def handle(self, message: str) -> int:
        if message == "tick":
            self.ticks += 1
        return self.ticks


async def test_background_tasks_feed_the_mailbox_and_end_with_the_actor(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(ActorSpec("ticker", Ticker))
        await trio.sleep(3.5)
        assert await ref.ask("count") == 3
        await ref.stop()
        assert root.metrics.restarts_total == 0


async def test_a_crashing_background_task_restarts_the_actor(autojump_clock: trio.testing.MockClock) -> None:
    async with Supervisor("root").running() as root:
        ref = await root.start_child(ActorSpec("ticker", lambda: Ticker(fail_after=2)))
        await trio.sleep(3.5)  # 2 ticks, then the ticker raises at t=3
        assert await ref.ask("count") == 0  # restarted at t=3, no tick since
        assert root.metrics.restarts_total == 1
        assert isinstance(root.metrics.recent_restarts[0].cause, RuntimeError)
