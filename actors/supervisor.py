"""Supervisors after Erlang/OTP: one_for_one restarts, a restart intensity window
escalating to the parent, ordered start and reverse-order stop.

A ``Supervisor`` runs children: actors (``ActorSpec``: a factory called for the
first start and for every restart) and other supervisors (``SupervisorSpec``).

- Start: static children (given to the constructor) are started in order, each
  one's ``on_start`` finished before the next begins; ``run`` reports ready
  after the last. A first start that fails is not retried: ``start_child``
  raises ``ChildStartFailed``, and for a static child the whole supervisor
  fails to start.
- one_for_one: a crashed child (an exception out of its ``on_start``,
  ``handle``, background tasks or ``on_stop``) is restarted alone, at once or
  after its back-off (below), behind the same ``ActorRef``; its siblings never
  notice. Each restart is
  logged with its cause and counted in ``metrics``.
- Intensity: more than ``intensity.max_restarts`` restarts within
  ``intensity.period`` seconds and the supervisor stops its children in
  reverse order and raises ``RestartIntensityExceeded`` from ``run``: its
  parent supervisor counts that as a crash of this child and restarts it
  (running it again with fresh children), or, at the root, the failure
  reaches whoever runs it. ``intensity.scope`` says what is counted:
  ``"supervisor"`` (the default, Erlang's rule) counts the restarts of all
  children together, for a small set of children that depend on each other;
  ``"child"`` counts each child's restarts on its own, for a large set of
  independent peers (the station actors): one child crashing past its own
  window escalates, many different children crashing once each do not. A
  child's history lives and dies with the child: a removed child that is
  started again begins with an empty window.
- Back-off: ``intensity.backoff`` > 0 delays each restart, doubling with each
  crash in a row (a run shorter than ``period``), capped at ``max_backoff``:
  a child that crashes at once on every start (a poison message resent, a
  database that is down) costs a few restarts per minute, not a busy loop.
  While it waits the child counts as down (``down()``, read by ``/health``);
  its mailbox keeps what arrives, up to its size. The cost is latency: a
  child that crashed for a passing reason comes back ``backoff`` later.
- What happens past the intensity (``intensity.exceeded``): ``"escalate"``
  (Erlang's rule, above); ``"stop_child"`` (with ``scope="child"``): that
  child alone is stopped for good and removed, its ref fails what is queued,
  and whoever holds the ref hears of it through ``add_done_callback`` (the
  station gateway then closes that station's socket; it may reconnect and
  gets a fresh actor); the siblings never notice. ``max_total_restarts``
  still escalates when all children together restart that often within
  ``period`` (a storm means something they share is broken).
  ``"back_off"``: never give up, keep restarting at the capped back-off (the
  root of the tree: a subtree that keeps failing must never stop HTTP or the
  other subtrees; it stays down, reported by ``down()``, and comes back by
  itself when the cause goes away).
- Stop: ``stop()``, or a cancellation of ``run``, stops the children in
  reverse order of start (dynamic children last started, first stopped); each
  actor gets its ``shutdown_timeout`` to drain its mailbox and run ``on_stop``.
  The children run shielded from outside cancellation so that this order
  holds even on SIGTERM; the supervisor alone cancels them, on their deadline.
- Dynamic children: ``start_child`` / ``remove_child`` while running. A child
  that stops by itself (``ref.stop()``) is removed, not restarted.

Cost with many children (thousands of station actors under one supervisor):
starting, restarting and removing a child is O(1) (dict and set updates, one
Trio task per child); a message never touches the supervisor. O(n) in the
number of children: the final stop (once for all of them), ``child_ids()``,
and the gauges of ``ActorMetrics`` (computed when ``/metrics`` is read).

A ``Supervisor`` object is reusable: each ``run`` starts from its static specs
with an empty restart history, so a parent restarts a child supervisor by
running the same object again (handles to it stay valid; the refs of its
previous children are stopped).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeAlias, TypeVar, get_args, overload

import trio

from actors.errors import ChildStartFailed, DuplicateChild, RestartIntensityExceeded, SupervisorNotRunning
from actors.metrics import ActorMetrics, RestartEvent
from actors.runtime import DEFAULT_MAILBOX_SIZE, DEFAULT_SHUTDOWN_TIMEOUT, Actor, ActorRef, run_incarnation

logger = logging.getLogger(__name__)

M = TypeVar("M")
R = TypeVar("R")


RestartScope: TypeAlias = Literal["supervisor", "child"]
Exceeded: TypeAlias = Literal["escalate", "stop_child", "back_off"]


@dataclass(frozen=True)
class RestartIntensity:
    """At most ``max_restarts`` restarts within ``period`` seconds, counted over all
    children together (``scope="supervisor"``, Erlang's rule) or for each child on
    its own (``scope="child"``); one more and ``exceeded`` applies: the supervisor
    fails (``"escalate"``), the child alone is stopped (``"stop_child"``, per-child
    scope only) or restarts go on at the capped back-off (``"back_off"``).

    Each restart waits ``backoff * 2**(n-1)`` seconds (at most ``max_backoff``),
    ``n`` the crashes in a row; 0 restarts at once. ``max_total_restarts`` (per-child
    scope) escalates when all children together restart that often in ``period``."""

    max_restarts: int = 3
    period: float = 5.0
    scope: RestartScope = "supervisor"
    backoff: float = 0.0
    max_backoff: float = 30.0
    exceeded: Exceeded = "escalate"
    max_total_restarts: int | None = None

    def __post_init__(self) -> None:
        if self.max_restarts < 0 or self.period <= 0:
            raise ValueError("max_restarts must be >= 0 and period > 0")
        if self.scope not in get_args(RestartScope):
            raise ValueError(f"scope must be one of {get_args(RestartScope)}, not {self.scope!r}")
        if self.exceeded not in get_args(Exceeded):
            raise ValueError(f"exceeded must be one of {get_args(Exceeded)}, not {self.exceeded!r}")
        if self.exceeded == "stop_child" and self.scope != "child":
            raise ValueError('exceeded="stop_child" needs scope="child"')
        if self.backoff < 0 or self.max_backoff < self.backoff:
            raise ValueError("backoff must be >= 0 and max_backoff >= backoff")
        if self.max_total_restarts is not None and self.max_total_restarts < 0:
            raise ValueError("max_total_restarts must be >= 0")

    def delay(self, crashes_in_a_row: int) -> float:
        """Seconds to wait before the restart that follows ``crashes_in_a_row`` crashes (>= 1)."""
        if self.backoff == 0:
            return 0.0
        return float(min(self.max_backoff, self.backoff * 2 ** min(crashes_in_a_row - 1, 62)))


@dataclass(frozen=True)
class ActorSpec(Generic[M, R]):
    child_id: str
    factory: Callable[[], Actor[M, R]]
    kind: str = "actor"
    mailbox_size: int = DEFAULT_MAILBOX_SIZE
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT


@dataclass(frozen=True)
class SupervisorSpec:
    child_id: str
    supervisor: Supervisor
    shutdown_timeout: float = math.inf


ChildSpec: TypeAlias = "ActorSpec[Any, Any] | SupervisorSpec"


class _Child(ABC):
    child_id: str
    kind: str
    scope: trio.CancelScope
    # Times of this child's recent restarts, for a per-child intensity; created
    # on the first restart (most children never crash).
    restart_times: deque[float] | None = None
    # Crashes in a row (each after a run shorter than the intensity's period): the back-off's exponent.
    crashes_in_a_row: int = 0

    @property
    @abstractmethod
    def stopping(self) -> bool: ...

    @abstractmethod
    async def run_once(self, on_ready: Callable[[], None]) -> None: ...

    @abstractmethod
    def request_stop(self) -> None: ...

    @abstractmethod
    async def wait_done(self) -> None: ...

    @abstractmethod
    def finish(self) -> None: ...

    @abstractmethod
    async def pause(self, delay: float) -> None:
        """Wait ``delay`` seconds before a restart; a stop request ends the wait at once."""

    async def stop(self) -> None:
        self.request_stop()
        await self.wait_done()

    def __str__(self) -> str:
        return f"{self.kind} {self.child_id!r}"


class _ActorChild(_Child, Generic[M, R]):
    def __init__(self, spec: ActorSpec[M, R], metrics: ActorMetrics) -> None:
        self.child_id = spec.child_id
        self.kind = spec.kind
        self.factory = spec.factory
        self.ref: ActorRef[M, R] = ActorRef(
            spec.kind, spec.child_id, mailbox_size=spec.mailbox_size, shutdown_timeout=spec.shutdown_timeout
        )
        self.scope = self.ref._scope
        self.metrics = metrics
        metrics.track(self.ref)

    @property
    def stopping(self) -> bool:
        return self.ref.stopping

    async def run_once(self, on_ready: Callable[[], None]) -> None:
        await run_incarnation(self.ref, self.factory(), on_ready)

    def request_stop(self) -> None:
        self.ref.stop_nowait()

    async def wait_done(self) -> None:
        await self.ref.wait_stopped()

    def finish(self) -> None:
        self.metrics.untrack(self.ref)
        self.ref._finish()

    async def pause(self, delay: float) -> None:
        # The ref's stop cancels its background scope: between incarnations, that is this wait.
        with trio.CancelScope() as waiting:
            self.ref._background = waiting
            try:
                if not self.ref.stopping:
                    await trio.sleep(delay)
            finally:
                self.ref._background = None


class _SupervisorChild(_Child):
    kind = "supervisor"

    def __init__(self, spec: SupervisorSpec) -> None:
        self.child_id = spec.child_id
        self.supervisor = spec.supervisor
        self.shutdown_timeout = spec.shutdown_timeout
        self.scope = trio.CancelScope()
        self.done = trio.Event()
        self._stopping = False
        self._pause = trio.CancelScope()

    @property
    def stopping(self) -> bool:
        return self._stopping or self.supervisor.stopping

    async def run_once(self, on_ready: Callable[[], None]) -> None:
        await self.supervisor._run(on_ready)

    def request_stop(self) -> None:
        self._stopping = True
        self._pause.cancel()
        self.supervisor._request_stop()
        self.scope.deadline = min(self.scope.deadline, trio.current_time() + self.shutdown_timeout)

    async def wait_done(self) -> None:
        await self.done.wait()

    def finish(self) -> None:
        self.done.set()

    async def pause(self, delay: float) -> None:
        with self._pause:
            if not self._stopping:
                await trio.sleep(delay)
        if not self._pause.cancel_called:
            self._pause = trio.CancelScope()


class Supervisor:
    def __init__(
        self,
        name: str,
        children: Sequence[ChildSpec] = (),
        *,
        intensity: RestartIntensity = RestartIntensity(),  # frozen, shared safely
        metrics: ActorMetrics | None = None,
    ) -> None:
        ids = [spec.child_id for spec in children]
        if len(set(ids)) != len(ids):
            raise DuplicateChild(f"{name}: duplicate child ids in {ids}")
        self.name = name
        self.intensity = intensity
        self.metrics = metrics if metrics is not None else ActorMetrics()
        self._adopts_metrics = metrics is None
        self._specs = list(children)
        # State of the current run.
        self._active = False
        self._nursery: trio.Nursery | None = None
        self._children: dict[str, _Child] = {}
        self._stop_requested = trio.Event()  # wakes the run: stop wanted, or failing
        self._stop_wanted = False
        self._run_done = trio.Event()
        self._failure: BaseException | None = None
        self._restart_times: deque[float] = deque()
        self._total_times: deque[float] = deque()
        self._down: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"<Supervisor {self.name!r}>"

    # Running.

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start the static children in order, report ready, supervise until stopped.

        Returns after ``stop()``; raises ``RestartIntensityExceeded`` when it gave
        up, ``ChildStartFailed`` when a static child failed its first start.
        """
        await self._run(task_status.started)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Supervisor]:
        """Run in a nursery of its own for the ``async with`` body, then stop in order.

        A failure of the supervisor cancels the body and is re-raised (not wrapped
        in an exception group when it is the only error).
        """
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.run)
                try:
                    yield self
                finally:
                    self._request_stop()
        except BaseExceptionGroup as group:
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from group.exceptions[0].__cause__
            raise

    async def stop(self) -> None:
        """Stop the children in reverse order, then end ``run``; wait for it."""
        if not self._active:
            return
        done = self._run_done
        self._request_stop()
        await done.wait()

    @property
    def stopping(self) -> bool:
        """A stop was asked for (not set when the supervisor is failing)."""
        return self._stop_wanted

    def down(self) -> dict[str, str]:
        """Children waiting to be restarted after a crash: child id -> why (empty when all run)."""
        return dict(self._down)

    async def _run(self, on_ready: Callable[[], None]) -> None:
        if self._active:
            raise RuntimeError(f"{self!r} is already running")
        self._active = True
        self._children = {}
        self._stop_requested = trio.Event()
        self._stop_wanted = False
        self._run_done = trio.Event()
        self._failure = None
        self._restart_times = deque()
        self._total_times = deque()
        self._down = {}
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    await self._start_static_children()
                    if self._failure is None and not self._stop_requested.is_set():
                        on_ready()
                        await self._stop_requested.wait()
                finally:
                    self._stop_requested.set()
                    with trio.CancelScope(shield=True):
                        await self._stop_children()
        finally:
            self._active = False
            self._nursery = None
            self._run_done.set()
        if self._failure is not None:
            raise self._failure

    async def _start_static_children(self) -> None:
        for spec in self._specs:
            if self._stop_requested.is_set():
                return
            try:
                await self._start(spec)
            except ChildStartFailed as exc:  # logged by _guard
                self._fail(exc)
                return

    async def _stop_children(self) -> None:
        # Reverse order of start. No child is added once a stop is requested; one
        # snapshot per pass keeps this O(n) (taking the last item of a dict again
        # after each deletion is O(n) each time, as deleted slots are skipped).
        while self._children:
            for child in reversed(list(self._children.values())):
                if self._children.get(child.child_id) is child:  # not gone meanwhile
                    await child.stop()

    def _request_stop(self) -> None:
        self._stop_wanted = True
        self._stop_requested.set()

    def _fail(self, failure: BaseException) -> None:
        if self._failure is None:
            self._failure = failure
            self.metrics.record_escalation()
        self._stop_requested.set()

    # Children.

    @overload
    async def start_child(self, spec: ActorSpec[M, R]) -> ActorRef[M, R]: ...

    @overload
    async def start_child(self, spec: SupervisorSpec) -> Supervisor: ...

    async def start_child(self, spec: ActorSpec[Any, Any] | SupervisorSpec) -> ActorRef[Any, Any] | Supervisor:
        """Add and start a child; returns once it is running (its ``on_start`` done).

        Raises ``SupervisorNotRunning``, ``DuplicateChild`` or ``ChildStartFailed``.
        """
        if self._nursery is None or self._stop_requested.is_set():
            raise SupervisorNotRunning(f"{self!r} is not running")
        child = await self._start(spec)
        if isinstance(child, _ActorChild):
            return child.ref
        assert isinstance(child, _SupervisorChild)
        return child.supervisor

    async def remove_child(self, child_id: str) -> None:
        """Stop a child in order (it is not restarted) and forget it; no-op if absent."""
        child = self._children.get(child_id)
        if child is not None:
            await child.stop()

    def child(self, child_id: str) -> ActorRef[Any, Any] | Supervisor:
        """The handle of a running child. Raises ``KeyError``."""
        child = self._children[child_id]
        if isinstance(child, _ActorChild):
            return child.ref
        assert isinstance(child, _SupervisorChild)
        return child.supervisor

    def child_ids(self) -> list[str]:
        """Children in start order."""
        return list(self._children)

    async def _start(self, spec: ActorSpec[Any, Any] | SupervisorSpec) -> _Child:
        nursery = self._nursery
        if nursery is None:
            raise SupervisorNotRunning(f"{self!r} is not running")
        if spec.child_id in self._children:
            raise DuplicateChild(f"{self!r} already has a child {spec.child_id!r}")
        child: _Child
        if isinstance(spec, ActorSpec):
            child = _ActorChild(spec, self.metrics)
        else:
            if spec.supervisor._adopts_metrics:
                spec.supervisor.metrics = self.metrics
            child = _SupervisorChild(spec)
        self._children[child.child_id] = child
        try:
            await nursery.start(self._guard, child)
        except BaseException:
            self._forget(child)
            raise
        return child

    def _forget(self, child: _Child) -> None:
        child.finish()
        if self._children.get(child.child_id) is child:
            del self._children[child.child_id]

    async def _guard(self, child: _Child, *, task_status: trio.TaskStatus[None]) -> None:
        """Run one child for its whole life, restarting it after crashes."""
        started = False

        def on_ready() -> None:
            nonlocal started
            if not started:
                started = True
                # From now on only this supervisor cancels the child (see module doc).
                child.scope.shield = True
                task_status.started()

        try:
            with child.scope:
                while True:
                    began = trio.current_time()
                    try:
                        await child.run_once(on_ready)
                        break
                    except Exception as exc:
                        if not started:
                            raise
                        cause = _unwrap(exc)
                    if trio.current_time() - began >= self.intensity.period:
                        child.crashes_in_a_row = 0  # it ran well for a while: start the back-off over
                    child.crashes_in_a_row += 1
                    if not self._restart_allowed(child, cause):
                        break
                    delay = self.intensity.delay(child.crashes_in_a_row)
                    if delay > 0:
                        self._down[child.child_id] = f"{child} crashed ({cause!r}); restarting in {delay:g}s"
                        try:
                            await child.pause(delay)
                        finally:
                            self._down.pop(child.child_id, None)
                    if child.stopping or self._stop_requested.is_set():
                        break
        except Exception as exc:
            cause = _unwrap(exc)
            if not started:
                logger.warning("%s: %s failed to start", self.name, child, exc_info=cause)
                raise ChildStartFailed(f"{self.name}: {child} failed to start: {cause!r}") from cause
            logger.warning("%s: %s crashed while being stopped", self.name, child, exc_info=cause)
        finally:
            self._forget(child)
        if not started:
            raise ChildStartFailed(f"{self.name}: {child} was stopped before it started")

    def _restart_allowed(self, child: _Child, cause: BaseException) -> bool:
        """Log and count a crash; decide whether the child is restarted."""
        if child.stopping or self._stop_requested.is_set():
            logger.warning("%s: %s crashed while stopping; not restarted", self.name, child, exc_info=cause)
            return False
        now = trio.current_time()
        intensity = self.intensity
        times = self._restart_window(child)
        while times and times[0] <= now - intensity.period:
            times.popleft()
        limit = intensity.max_restarts
        counted = "restarts of this child" if intensity.scope == "child" else "restarts"
        total = intensity.max_total_restarts
        if intensity.scope == "child" and total is not None:
            storm = self._total_times
            while storm and storm[0] <= now - intensity.period:
                storm.popleft()
            if len(storm) >= total:
                return self._escalate(child, cause, f"more than {total} restarts of all children in {intensity.period}s")
            storm.append(now)
        if len(times) >= limit and intensity.exceeded == "stop_child":
            self.metrics.record_give_up()
            logger.error(
                "%s: %s crashed; more than %d %s in %ss: stopping it for good (its siblings keep running)",
                self.name, child, limit, counted, intensity.period, exc_info=cause,
                extra={"supervisor": self.name, "actor_kind": child.kind, "child_id": child.child_id},
            )
            return False
        if len(times) >= limit and intensity.exceeded == "escalate":
            return self._escalate(child, cause, f"more than {limit} {counted} in {intensity.period}s")
        times.append(now)
        self.metrics.record_restart(RestartEvent(self.name, child.kind, child.child_id, cause, now))
        logger.error(
            "%s: %s crashed (%r); restarting (%d of %d %s in %ss)",
            self.name,
            child,
            cause,
            len(times),
            limit,
            counted,
            intensity.period,
            exc_info=cause,
            extra={"supervisor": self.name, "actor_kind": child.kind, "child_id": child.child_id},
        )
        return True

    def _escalate(self, child: _Child, cause: BaseException, why: str) -> bool:
        failure = RestartIntensityExceeded(f"{self.name}: {why}; last: {child} crashed: {cause!r}")
        failure.__cause__ = cause
        logger.error(
            "%s: %s crashed; restart intensity exceeded (%s), stopping and escalating",
            self.name, child, why, exc_info=cause,
            extra={"supervisor": self.name, "actor_kind": child.kind, "child_id": child.child_id},
        )
        self._fail(failure)
        return False

    def _restart_window(self, child: _Child) -> deque[float]:
        """The restart times counted against ``child``'s next restart."""
        if self.intensity.scope == "supervisor":
            return self._restart_times
        if child.restart_times is None:
            child.restart_times = deque()
        return child.restart_times


def _unwrap(exc: BaseException) -> BaseException:
    """The single error inside (nested) one-error exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc
