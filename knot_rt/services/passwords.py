"""Password hashing with argon2id, off the event loop and under a limiter sized to the cores.

One argon2id hash with the defaults below costs about 0.1 s of CPU on this
machine and runs ``parallelism`` OS threads of its own (libargon2 computes the
lanes in parallel). Trio's default thread limiter would let 40 of them run at
once: on 2 cores that is 160 busy threads beside the one event loop thread, and
the server stopped answering anything for more than 10 s under a login flood.

Choices:

- At most ``slots`` hashes run at once: as many as fit in all cores but one
  (``(cores - 1) // threads per hash``), and never fewer than one. The core left
  over serves the event loop and PostgreSQL; a flood of logins queues behind the
  limiter while every other request keeps being served.
- The queue is bounded (``max_waiting``). A hash asked for while the queue is
  full is refused at once with 503 + code 48 and ``Retry-After``: the service
  is busy, not broken, and a client that waited longer would likely have given up
  anyway. 503 rather than 429: no one client is at fault (per-client limits, which
  answer 429, are checked before a login reaches here).
- An unknown account still costs one verification (of a dummy hash), through the
  same limiter, so neither the answer nor its delay tells whether it exists.
"""

from __future__ import annotations

import os

import trio
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from protocols.errors import ErrorCode

from ..errors import ApiError

BUSY_RETRY_SECONDS = 1


class Busy(ApiError):
    """503 + code 48 with ``Retry-After``: too much CPU-heavy work is already waiting."""

    def __init__(self, message: str, retry_after: int = BUSY_RETRY_SECONDS) -> None:
        super().__init__(ErrorCode.SERVICE_UNAVAILABLE, message)
        self.retry_after = retry_after


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def hashing_slots(cores: int, threads_per_hash: int) -> int:
    """How many hashes may run at once: all cores but one, at least one hash."""
    return max(1, (cores - 1) // max(1, min(threads_per_hash, cores)))


class Passwords:
    def __init__(
        self, *, time_cost: int = 3, memory_cost: int = 65536, parallelism: int = 4,
        slots: int | None = None, max_waiting: int = 32,
    ) -> None:
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
        self.limiter = trio.CapacityLimiter(slots or hashing_slots(usable_cores(), parallelism))
        self.max_waiting = max_waiting
        # Verified when the account does not exist, so that timing does not tell.
        self._dummy = self._hasher.hash("knot-rt dummy password")

    def _admit(self) -> None:
        if self.limiter.statistics().tasks_waiting >= self.max_waiting:
            raise Busy("busy: too many password checks waiting, retry in a moment")

    async def hash(self, password: str) -> str:
        self._admit()
        return await trio.to_thread.run_sync(self._hasher.hash, password, limiter=self.limiter)

    async def verify(self, stored: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored or self._dummy, password) and stored is not None
            except (VerificationError, InvalidHashError):
                return False

        self._admit()
        return await trio.to_thread.run_sync(check, limiter=self.limiter)
