"""Group commit: many callers' writes of one kind, one statement at a time, each caller answered with its own.

The caller whose item finds no statement running runs one, with its item and
whatever else waits; items arriving meanwhile wait, and when the statement ends
the first of them leads the next. So an idle store adds no delay (no timer), and
under load one round trip carries many items. A caller returns once the
statement holding its item has committed (write first, then answer), with its
own outcome: ``write(batch)`` returns one outcome per item, in order, an
exception standing for that item's failure; an exception out of ``write`` fails
the whole batch (nothing of it was written).

Submitting a write is shielded from cancellation, like a unit of work: an item
handed over is written and its outcome delivered, or it fails, never half done
(each database call is bounded by the pool's timeouts).

``each_alone`` wraps a ``write`` so that an item PostgreSQL refuses fails alone. A read (``shield=False``)
may be cancelled while it waits; the statement it leads is not.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
import trio

I = TypeVar("I")  # noqa: E741
O = TypeVar("O")  # noqa: E741


# What one item can cause: PostgreSQL refusing a value or a row, asyncpg refusing to encode a value.
_REFUSED = (asyncpg.PostgresError, asyncpg.exceptions._base.DataError)


async def each_alone(
    write: Callable[[list[I]], Awaitable[Sequence[O | BaseException]]], batch: list[I],
) -> Sequence[O | BaseException]:
    """``write(batch)``; when the statement fails for what one item holds (a value PostgreSQL refuses, a row
    gone), each item again in a statement of its own: one item never fails the others. A database that is
    away fails them all at once (``DatabaseUnavailable``: nothing was written)."""
    try:
        return await write(batch)
    except _REFUSED:
        if len(batch) == 1:
            raise
    outcomes: list[O | BaseException] = []
    for item in batch:
        try:
            outcomes.extend(await write([item]))
        except _REFUSED as exc:
            outcomes.append(exc)
    return outcomes


class _Waiting(Generic[I, O]):
    __slots__ = ("done", "item", "outcome", "wake")

    def __init__(self, item: I) -> None:
        self.item = item
        self.wake = trio.Event()
        self.done = False
        self.outcome: O | BaseException | None = None


class GroupCommit(Generic[I, O]):
    def __init__(self, write: Callable[[list[I]], Awaitable[Sequence[O | BaseException]]], *,
                 max_batch: int = 500, shield: bool = True) -> None:
        self._write = write
        self._shield = shield
        self._max_batch = max_batch
        self._waiting: list[_Waiting[I, O]] = []
        self._running = False
        self.statements = 0  # how many statements ran (for tests and benches)

    async def submit(self, item: I) -> O:
        waiting: _Waiting[I, O] = _Waiting(item)
        self._waiting.append(waiting)
        with trio.CancelScope(shield=self._shield):
            while not waiting.done:
                if not self._running:
                    with trio.CancelScope(shield=True):  # others wait on it
                        await self._lead()
                    continue
                try:
                    await waiting.wake.wait()
                except BaseException:  # cancelled (reads only): leave the queue, and hand on the lead
                    if waiting in self._waiting:
                        self._waiting.remove(waiting)
                    if not self._running and self._waiting:
                        self._waiting[0].wake.set()
                    raise
                waiting.wake = trio.Event()
        if isinstance(waiting.outcome, BaseException):
            raise waiting.outcome
        return waiting.outcome  # type: ignore[return-value]

    async def _lead(self) -> None:
        self._running = True
        batch, self._waiting = self._waiting[: self._max_batch], self._waiting[self._max_batch:]
        try:
            self.statements += 1
            outcomes = await self._write([w.item for w in batch])
            for waiting, outcome in zip(batch, outcomes, strict=True):
                waiting.outcome = outcome
        except Exception as exc:
            for waiting in batch:
                waiting.outcome = exc
        finally:
            self._running = False
            for waiting in batch:
                waiting.done = True
                waiting.wake.set()
            if self._waiting:  # the next leader
                self._waiting[0].wake.set()
