"""Actors: a Trio task with a bounded mailbox that handles one message at a time.

An ``Actor`` subclass holds live state and defines three hooks:

- ``on_start()`` rebuilds the state (from the database, through an injected
  persistence interface). It runs on the first start and after every restart.
- ``handle(message)`` handles one message; its return value is the reply to an
  ``ask`` (ignored for a ``tell``). Messages are handled strictly one at a time
  and in mailbox order, so the state needs no locks.
- ``on_stop()`` runs after an orderly stop (never after a crash).

Callers hold an ``ActorRef``. It outlives restarts: the mailbox belongs to the
ref, so messages queued behind the one that crashed the actor are handled by
the restarted incarnation. The ref dies with its supervisor's child: after
``stop()``, a removal, or its supervisor's end, ``tell``/``ask`` raise
``ActorStopped``.

Choices:

- ``tell`` never waits: a full mailbox raises ``MailboxFull`` (the sender sees
  the overload at once; a station socket never stalls behind a slow actor).
  ``send`` is the waiting variant, for producers that want backpressure.
- ``ask`` waits for room in the mailbox and for the reply, both within its
  timeout, else ``AskTimeout`` (outcome unknown: the message may still be
  handled later). The reply travels in an ``actors.reply.OneShot``.
- An exception escaping ``handle`` is a crash: the asker gets ``ActorCrashed``
  (the exception as its cause) and the actor is restarted by its supervisor,
  rebuilding its state in ``on_start``, since state after an unexpected
  exception cannot be trusted. Expected refusals ("spot occupied") are replies,
  returned as values, not raised.
- A stop is orderly: the mailbox closes to new messages, the actor handles what
  is already queued, then ``on_stop`` runs; past the ref's ``shutdown_timeout``
  it is cancelled and still-queued asks get ``ActorStopped``.
- An actor may run helper tasks (timers, watchdogs) in ``self.background``, a
  nursery cancelled when the incarnation stops or crashes; an exception there
  crashes the actor. They talk to the actor's state only through its mailbox
  (``tell_self``), never directly.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

from actors.errors import ActorCrashed, ActorStopped, AskTimeout, MailboxFull
from actors.reply import OneShot

M = TypeVar("M")
R = TypeVar("R")

DEFAULT_MAILBOX_SIZE = 64
DEFAULT_SHUTDOWN_TIMEOUT = 5.0
DEFAULT_ASK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class _Envelope(Generic[M, R]):
    message: M
    reply: OneShot[R] | None


class ActorRef(Generic[M, R]):
    """The handle to one supervised actor: its mailbox and its lifecycle.

    Created by a supervisor when it adds the child; stays the same across the
    actor's restarts.
    """

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        mailbox_size: int = DEFAULT_MAILBOX_SIZE,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
    ) -> None:
        if mailbox_size < 1:
            raise ValueError("mailbox_size must be at least 1")
        self._kind = kind
        self._name = name
        self._mailbox_size = mailbox_size
        self._shutdown_timeout = shutdown_timeout
        self._send, self._receive = trio.open_memory_channel[_Envelope[M, R]](mailbox_size)
        # The scope of the task that runs (and restarts) this actor; a stop sets
        # its deadline. Entered once, by the supervisor.
        self._scope = trio.CancelScope()
        self._background: trio.CancelScope | None = None
        self._stopping = False
        self._running = False
        self._done = trio.Event()
        self._done_callbacks: list[Callable[[ActorRef[M, R]], None]] = []

    def __repr__(self) -> str:
        return f"<ActorRef {self._kind} {self._name!r}>"

    @property
    def kind(self) -> str:
        return self._kind

    @property
    def name(self) -> str:
        return self._name

    @property
    def mailbox_size(self) -> int:
        return self._mailbox_size

    @property
    def mailbox_depth(self) -> int:
        """Messages queued, not yet taken by the actor."""
        return self._send.statistics().current_buffer_used if not self._done.is_set() else 0

    @property
    def running(self) -> bool:
        """An incarnation has finished ``on_start`` and has not ended."""
        return self._running

    @property
    def stopping(self) -> bool:
        """The mailbox is closed to new messages (stopping or stopped)."""
        return self._stopping

    @property
    def stopped(self) -> bool:
        return self._done.is_set()

    def tell(self, message: M) -> None:
        """Queue ``message`` without waiting. Raises ``MailboxFull`` or ``ActorStopped``."""
        try:
            self._send.send_nowait(_Envelope(message, None))
        except trio.WouldBlock:
            raise MailboxFull(f"{self!r}: mailbox full ({self._mailbox_size} messages)") from None
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"{self!r} is stopped") from None

    async def send(self, message: M) -> None:
        """Queue ``message``, waiting for room in the mailbox. Raises ``ActorStopped``."""
        try:
            await self._send.send(_Envelope(message, None))
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorStopped(f"{self!r} is stopped") from None

    async def ask(self, message: M, timeout: float = DEFAULT_ASK_TIMEOUT) -> R:  # noqa: ASYNC109  # the design: every ask is bounded
        """Send ``message`` and wait for the actor's reply (what ``handle`` returned).

        Raises ``AskTimeout`` (no room or no reply within ``timeout`` seconds),
        ``ActorCrashed`` (``handle`` raised) or ``ActorStopped``.
        """
        reply: OneShot[R] = OneShot()
        with trio.move_on_after(timeout):
            try:
                await self._send.send(_Envelope(message, reply))
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise ActorStopped(f"{self!r} is stopped") from None
            return await reply.wait()
        raise AskTimeout(f"{self!r}: no reply to {type(message).__name__} within {timeout}s")

    def stop_nowait(self) -> None:
        """Begin an orderly stop and return at once (an actor may call it on itself)."""
        if self._stopping:
            return
        self._stopping = True
        self._send.close()
        self._scope.deadline = min(self._scope.deadline, trio.current_time() + self._shutdown_timeout)
        if self._background is not None:
            self._background.cancel()

    async def stop(self) -> None:
        """Stop the actor in order and wait until it has stopped; it is not restarted."""
        self.stop_nowait()
        await self._done.wait()

    async def wait_stopped(self) -> None:
        await self._done.wait()

    def add_done_callback(self, callback: Callable[[ActorRef[M, R]], None]) -> None:
        """Call ``callback(ref)`` once the actor has stopped for good."""
        if self._done.is_set():
            callback(self)
        else:
            self._done_callbacks.append(callback)

    def remove_done_callback(self, callback: Callable[[ActorRef[M, R]], None]) -> None:
        """Forget a callback given to ``add_done_callback`` (no-op if absent or already called)."""
        try:
            self._done_callbacks.remove(callback)
        except ValueError:
            pass

    def _finish(self) -> None:
        """The actor is gone for good: fail what is still queued and notify (once)."""
        if self._done.is_set():
            return
        self._stopping = True
        self._running = False
        self._send.close()
        while True:
            try:
                envelope = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                break
            if envelope.reply is not None:
                envelope.reply.fail(ActorStopped(f"{self!r} stopped before handling {type(envelope.message).__name__}"))
        self._receive.close()
        self._done.set()
        callbacks, self._done_callbacks = self._done_callbacks, []
        for callback in callbacks:
            callback(self)


class Actor(ABC, Generic[M, R]):
    """Base class of live actors. Subclasses take their I/O interfaces in ``__init__``."""

    _ref: ActorRef[M, R] | None = None
    _background: trio.Nursery | None = None

    @property
    def ref(self) -> ActorRef[M, R]:
        """This actor's own ref (from ``on_start`` on)."""
        if self._ref is None:
            raise RuntimeError("the actor has not been started")
        return self._ref

    @property
    def background(self) -> trio.Nursery:
        """Nursery for this incarnation's helper tasks (from ``on_start`` on)."""
        if self._background is None:
            raise RuntimeError("the actor has not been started")
        return self._background

    def tell_self(self, message: M) -> None:
        """``tell`` this actor, ignoring a stop in progress (for background tasks)."""
        try:
            self.ref.tell(message)
        except ActorStopped:
            pass

    async def on_start(self) -> None:
        """Rebuild state; runs before the first message, after every (re)start."""

    @abstractmethod
    async def handle(self, message: M) -> R:
        """Handle one message; the return value is the reply to an ask."""

    async def on_stop(self) -> None:
        """Release what the actor holds, after an orderly stop (not after a crash)."""

    def _attach(self, ref: ActorRef[M, R], background: trio.Nursery) -> None:
        self._ref = ref
        self._background = background


async def run_incarnation(ref: ActorRef[M, R], actor: Actor[M, R], on_ready: Callable[[], None]) -> None:
    """Run one incarnation of ``actor`` behind ``ref``: start, serve, stop.

    Returns after an orderly stop; raises if the actor crashed. Used by the
    supervisor, which restarts it with a new actor instance.
    """
    background_scope = trio.CancelScope()

    async def host_background(*, task_status: trio.TaskStatus[trio.Nursery]) -> None:
        with background_scope:
            async with trio.open_nursery() as background:
                task_status.started(background)
                await trio.sleep_forever()

    try:
        async with trio.open_nursery() as nursery:
            background = await nursery.start(host_background)
            ref._background = background_scope
            if ref.stopping:
                background_scope.cancel()
            actor._attach(ref, background)
            await actor.on_start()
            ref._running = True
            on_ready()
            await _serve(ref, actor)
            background_scope.cancel()
        await actor.on_stop()
    finally:
        ref._running = False
        ref._background = None


async def _serve(ref: ActorRef[M, R], actor: Actor[M, R]) -> None:
    receive = ref._receive
    while True:
        try:
            envelope = await receive.receive()
        except trio.EndOfChannel:
            return
        reply = envelope.reply
        try:
            result = await actor.handle(envelope.message)
        except BaseException as exc:
            if reply is not None:
                reply.fail(_ask_failure(ref, envelope.message, exc))
            raise
        if reply is not None:
            reply.resolve(result)
        del envelope, reply, result  # not kept alive (with the message) while the next one is awaited


def _ask_failure(ref: ActorRef[M, R], message: object, exc: BaseException) -> Exception:
    what = type(message).__name__
    if isinstance(exc, Exception):
        return ActorCrashed(f"{ref!r} crashed handling {what}: {exc!r}", exc)
    if ref.stopping:
        return ActorStopped(f"{ref!r} was stopped while handling {what}")
    return ActorCrashed(f"{ref!r} was interrupted by a crash while handling {what}")
