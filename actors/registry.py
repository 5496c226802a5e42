"""Find an actor by (kind, id), starting it on first use.

Each kind is registered once with the supervisor its actors run under and a
factory taking the actor's id. ``get`` returns the running actor's ref, or
starts it as a dynamic child of that supervisor (child id ``"kind:id"``);
concurrent first uses of one id start it once and all get the same ref. A ref
is forgotten as soon as its actor stops for good (stopped, removed, or its
supervisor ended), so the next ``get`` starts a fresh one.

A ``gate`` (optional) says whether an actor may start in this process at all: ``admit`` is awaited
before a first start (under the same "starting" mark, so concurrent callers wait for one decision) and may
raise ``RunsElsewhere`` (the actor runs in another process: the callers forward their request there);
``left`` is told when an admitted actor stops for good, or when its start failed. Several server processes
on one database use it for the ownership of devices (``knot_rt/cluster/ownership.py``); one process alone
has no gate.

Cost: ``get`` of a running actor, ``lookup`` and forgetting a stopped actor are
dict operations, O(1) whatever the number of actors; a first ``get`` adds one
dynamic child to the supervisor (O(1) too, see ``actors.supervisor``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from actors.errors import ChildStartFailed, RunsElsewhere
from actors.reply import OneShot
from actors.runtime import DEFAULT_MAILBOX_SIZE, DEFAULT_SHUTDOWN_TIMEOUT, Actor, ActorRef
from actors.supervisor import ActorSpec, Supervisor

M = TypeVar("M")
R = TypeVar("R")


@dataclass(frozen=True)
class ActorKind(Generic[M, R]):
    """A typed name for a kind of actor: ``STATION = ActorKind[StationMessage, StationReply]("station")``."""

    name: str


class ActorGate(Protocol):
    """Whether an actor may run in this process (see the module's docstring)."""

    async def admit(self, kind: str, actor_id: str) -> None: ...

    def left(self, kind: str, actor_id: str) -> None: ...


@dataclass(frozen=True)
class _Registration(Generic[M, R]):
    supervisor: Supervisor
    factory: Callable[[str], Actor[M, R]]
    mailbox_size: int
    shutdown_timeout: float


class Registry:
    def __init__(self, gate: ActorGate | None = None) -> None:
        self.gate = gate
        self._kinds: dict[str, _Registration[Any, Any]] = {}
        self._refs: dict[tuple[str, str], ActorRef[Any, Any]] = {}
        # First starts in progress, awaited by concurrent callers: settled when the
        # start ends, failed with ChildStartFailed when it failed.
        self._starting: dict[tuple[str, str], OneShot[None]] = {}

    def register(
        self,
        kind: ActorKind[M, R],
        supervisor: Supervisor,
        factory: Callable[[str], Actor[M, R]],
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        if kind.name in self._kinds:
            raise ValueError(f"actor kind {kind.name!r} is already registered")
        self._kinds[kind.name] = _Registration(supervisor, factory, mailbox_size, shutdown_timeout)

    async def get(self, kind: ActorKind[M, R], actor_id: str) -> ActorRef[M, R]:
        """The running actor, started under its kind's supervisor if needed.

        Raises ``ChildStartFailed`` when the start failed (for every concurrent
        caller), ``SupervisorNotRunning``, or ``KeyError`` for an unknown kind.
        """
        registration = self._kinds[kind.name]
        key = (kind.name, actor_id)
        while True:
            ref = self._refs.get(key)
            if ref is not None:
                if not ref.stopping:
                    return cast(ActorRef[M, R], ref)
                await ref.wait_stopped()  # let it go, then start a fresh one
                continue
            starting = self._starting.get(key)
            if starting is not None:
                await starting.wait()  # raises ChildStartFailed when the start failed
                continue  # started (or the starter was cancelled: try again)
            return await self._start(cast(_Registration[M, R], registration), kind, actor_id)

    def lookup(self, kind: ActorKind[M, R], actor_id: str) -> ActorRef[M, R] | None:
        """The actor's ref if it is running, without starting it."""
        ref = self._refs.get((kind.name, actor_id))
        if ref is None or ref.stopping:
            return None
        return cast(ActorRef[M, R], ref)

    async def stop(self, kind: ActorKind[M, R], actor_id: str) -> None:
        """Stop the actor in order if it runs; it is forgotten."""
        ref = self._refs.get((kind.name, actor_id))
        if ref is not None:
            await ref.stop()

    def __len__(self) -> int:
        return len(self._refs)

    async def _start(self, registration: _Registration[M, R], kind: ActorKind[M, R], actor_id: str) -> ActorRef[M, R]:
        key = (kind.name, actor_id)
        starting: OneShot[None] = OneShot()
        self._starting[key] = starting
        factory = registration.factory
        spec = ActorSpec(
            f"{kind.name}:{actor_id}",
            lambda: factory(actor_id),
            kind=kind.name,
            mailbox_size=registration.mailbox_size,
            shutdown_timeout=registration.shutdown_timeout,
        )
        admitted = False
        try:
            if self.gate is not None:
                await self.gate.admit(kind.name, actor_id)
                admitted = True
            ref = await registration.supervisor.start_child(spec)
        except BaseException as exc:
            if admitted:
                self._left(kind.name, actor_id)
            if isinstance(exc, Exception):
                # The waiters get their own error, not ``exc`` itself: the starter is raising that one.
                if isinstance(exc, RunsElsewhere):
                    failed: Exception = RunsElsewhere(str(exc), exc.node)
                else:
                    failed = ChildStartFailed(f"{kind.name} {actor_id!r} failed to start")
                failed.__cause__ = exc
                starting.fail(failed)
            raise
        else:
            self._refs[key] = ref
            ref.add_done_callback(lambda stopped: self._forget(key, stopped))
            return ref
        finally:
            del self._starting[key]
            starting.resolve(None)  # started, or the starter was cancelled: the waiters look again

    def _forget(self, key: tuple[str, str], ref: ActorRef[Any, Any]) -> None:
        if self._refs.get(key) is ref:
            del self._refs[key]
            self._left(*key)

    def _left(self, kind: str, actor_id: str) -> None:
        if self.gate is not None:
            self.gate.left(kind, actor_id)
