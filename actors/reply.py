"""``OneShot[T]``: a value or an error that arrives once, awaited by whoever needs it.

The one primitive behind every "answer later" of the runtime and its users: the
reply to an ``ask``, a first start other callers wait for (``Registry``), a
command sent to a station (``PendingCommand``), a CALL waiting for the
station's RESULT (the gateway).

A producer settles it once, with ``resolve(value)`` or ``fail(error)``; any
number of tasks ``await wait()`` (the value, or the error raised) or
``wait_within(seconds)``.

Choices:

- The first settle wins; later ones are ignored and return False. A late
  answer after a timeout, a second RESULT with the same id, a link lost just
  after its answer came: the first outcome stands and nobody sees it change.
- ``None`` is a value like any other (an ask whose ``handle`` returns None):
  "settled" is the event, not a sentinel in the value slot.
- ``fail`` takes an ``Exception``, never a ``BaseException``: a
  ``trio.Cancelled`` or ``KeyboardInterrupt`` belongs to the task it was raised
  in, and raising it in a waiter would cancel the wrong task. A producer that
  is cancelled settles with what that means for its waiters (an
  ``ActorStopped``, a "try again" value), or leaves them to their timeouts.
- Waiting is cancellable and a cancelled wait settles nothing: the producer
  may still settle it later, and the outcome is then simply not read. This is
  the "outcome unknown" of ``AskTimeout``.
- Every waiter sees the same outcome: the same value object, or the same error
  instance raised (its traceback grows with each raise; a waiter among many
  wraps it, ``raise X from error``, when that matters). Waiting again after the
  outcome returns it again at once.
- ``wait_within`` raises ``trio.TooSlowError``, as ``trio.fail_after`` does;
  the caller turns it into its own timeout (``CallTimeout``, a failed command).
- No done-callbacks: a producer never runs a consumer's code in its own task,
  so one consumer's failure stays in the consumer.

Not ``asyncio.Future`` (bound to an asyncio loop) nor ``outcome.Outcome``
(Trio's own value-or-error box, which may be unwrapped only once, so it cannot
serve several waiters or one waiter asking twice); this is an ``Outcome``-like
pair of slots plus a ``trio.Event``.

Cost: one object with three slots and one ``trio.Event`` per one-shot, no
task, no lock. ``resolve``/``fail`` are O(1) plus waking the waiters; a settled
one-shot answers ``wait`` without blocking (one checkpoint, as every Trio
``await`` has).
"""

from __future__ import annotations

from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class OneShot(Generic[T]):
    """A value or an error, settled once; ``await wait()`` gives the value or raises the error."""

    __slots__ = ("_error", "_event", "_value")

    def __init__(self) -> None:
        self._event = trio.Event()
        self._value: T | None = None
        self._error: Exception | None = None

    def __repr__(self) -> str:
        if not self._event.is_set():
            state = "pending"
        elif self._error is not None:
            state = f"failed {self._error!r}"
        else:
            state = f"resolved {self._value!r}"
        return f"<{type(self).__name__} {state}>"

    @property
    def settled(self) -> bool:
        """Resolved or failed (``wait`` returns at once)."""
        return self._event.is_set()

    def resolve(self, value: T) -> bool:
        """Settle with ``value``; False (and nothing changes) if it was settled already."""
        return self._settle(value, None)

    def fail(self, error: Exception) -> bool:
        """Settle with ``error``, raised to every waiter; False if it was settled already."""
        return self._settle(None, error)

    def _settle(self, value: T | None, error: Exception | None) -> bool:
        if self._event.is_set():
            return False
        self._value, self._error = value, error
        self._event.set()
        return True

    async def wait(self) -> T:
        """The value, or the error raised, once settled."""
        await self._event.wait()
        return self._outcome()

    async def wait_within(self, seconds: float) -> T:
        """``wait``, bounded: ``trio.TooSlowError`` if not settled within ``seconds``.

        A one-shot settled already gives its outcome whatever ``seconds`` is (0 included).
        """
        if self._event.is_set():
            return await self.wait()
        with trio.fail_after(seconds):
            await self._event.wait()
        return self._outcome()

    def _outcome(self) -> T:
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # set by resolve(), possibly to None
