"""A small counter actor and its fake persistence, shared by the actor tests.

``MemoryStore`` stands for the database (an external I/O interface handed to
actors), not for our code: it is the only fake here. The actor keeps a durable
total (saved before it answers) and volatile notes (lost on restart).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from actors import Actor, ActorCrashed, ActorRef, ActorSpec, RestartIntensity, Supervisor


class CounterStore(Protocol):
    async def load(self, name: str) -> int: ...

    async def save(self, name: str, total: int) -> None: ...


class MemoryStore:
    def __init__(self) -> None:
        self.totals: dict[str, int] = {}
        self.loads: list[str] = []

    async def load(self, name: str) -> int:
        await trio.lowlevel.checkpoint()
        self.loads.append(name)
        return self.totals.get(name, 0)

    async def save(self, name: str, total: int) -> None:
        await trio.lowlevel.checkpoint()
        self.totals[name] = total


@dataclass(frozen=True)
class Add:
    amount: int


@dataclass(frozen=True)
class Note:
    text: str


@dataclass(frozen=True)
class Get:
    pass


@dataclass(frozen=True)
class Boom:
    pass


@dataclass(frozen=True)
class Wait:
    """Handled by waiting for ``gate``: holds the actor busy."""

    gate: trio.Event


@dataclass(frozen=True)
class Sleep:
    seconds: float
    label: str = ""


@dataclass(frozen=True)
class StopSelf:
    pass


Message = Add | Note | Get | Boom | Wait | Sleep | StopSelf


@dataclass(frozen=True)
class State:
    total: int
    notes: tuple[str, ...]


Reply = State | int | None


@dataclass
class Journal:
    """What the actors did, in order, across all of them."""

    lines: list[str] = field(default_factory=list)

    def write(self, line: str) -> None:
        self.lines.append(line)


class Counter(Actor[Message, Reply]):
    def __init__(self, name: str, store: CounterStore, journal: Journal | None = None, start_delay: float = 0) -> None:
        self.name = name
        self.store = store
        self.journal = journal or Journal()
        self.start_delay = start_delay
        self.total = 0
        self.notes: list[str] = []
        self.busy = False

    async def on_start(self) -> None:
        self.journal.write(f"starting {self.name}")
        if self.start_delay:
            await trio.sleep(self.start_delay)
        self.total = await self.store.load(self.name)
        self.journal.write(f"started {self.name}")

    async def handle(self, message: Message) -> Reply:
        assert not self.busy, "two messages handled at once"
        self.busy = True
        try:
            return await self._handle(message)
        finally:
            self.busy = False

    async def _handle(self, message: Message) -> Reply:
        match message:
            case Add(amount):
                self.total += amount
                await self.store.save(self.name, self.total)
                return self.total
            case Note(text):
                self.notes.append(text)
                return None
            case Get():
                return State(self.total, tuple(self.notes))
            case Boom():
                raise RuntimeError(f"boom in {self.name}")
            case Wait(gate):
                await gate.wait()
                return None
            case Sleep(seconds, label):
                self.journal.write(f"begin {label}")
                await trio.sleep(seconds)
                self.journal.write(f"end {label}")
                return None
            case StopSelf():
                self.ref.stop_nowait()
                return None

    async def on_stop(self) -> None:
        self.journal.write(f"stopped {self.name}")


CounterRef = ActorRef[Message, Reply]


def counter_spec(
    name: str,
    store: CounterStore,
    journal: Journal | None = None,
    *,
    start_delay: float = 0,
    mailbox_size: int = 64,
    shutdown_timeout: float = 5.0,
) -> ActorSpec[Message, Reply]:
    return ActorSpec(
        name,
        lambda: Counter(name, store, journal, start_delay),
        kind="counter",
        mailbox_size=mailbox_size,
        shutdown_timeout=shutdown_timeout,
    )


@dataclass
class Counters:
    """A ``stations`` supervisor of the counters a, b and c, sharing one store and one journal."""

    stations: Supervisor
    store: MemoryStore
    journal: Journal


def three_counters(intensity: RestartIntensity) -> Counters:
    store, journal = MemoryStore(), Journal()
    stations = Supervisor("stations", [counter_spec(name, store, journal) for name in "abc"], intensity=intensity)
    return Counters(stations, store, journal)


def actor_child(supervisor: Supervisor, child_id: str) -> ActorRef[Any, Any]:
    """The running actor ``child_id`` of ``supervisor``; fails the test when that child is a supervisor."""
    ref = supervisor.child(child_id)
    assert isinstance(ref, ActorRef)
    return ref


async def crash(ref: ActorRef[Any, Any]) -> None:
    """Make the actor crash (it answers ``Boom`` by raising) and let its supervisor handle the crash."""
    with pytest.raises(ActorCrashed):
        await ref.ask(Boom())
    # The asker hears of the crash first; wait until the supervisor has acted on it.
    await trio.testing.wait_all_tasks_blocked()
