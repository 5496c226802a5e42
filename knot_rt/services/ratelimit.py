"""Rate limits per address, per client and per user.

One process: the `limits` library's moving window, in memory. Several processes on one database
(``Settings.cluster``): ``SharedRateLimiter`` counts in PostgreSQL, so that a guesser spread over the
processes by the load balancer meets one limit, not one per process. It counts with a sliding window
counter: hits per key in fixed windows (one upsert for all the limits of a check, one round trip, one row
per key and window instead of one per hit), and a hit is over the limit when the current window's hits plus
the previous window's, weighted by how much of it the sliding window still covers, exceed the rate. So a
burst across a window's edge meets the limit as it would inside a window (fixed windows alone let twice the
rate through there); the price is an estimate that assumes the previous window's hits were evenly spread.
"""

from __future__ import annotations

import time

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from protocols.errors import ErrorCode

from ..db import Database, repeat
from ..errors import ApiError

Limit = tuple[str, str, str]  # (rate, namespace, key)


class RateLimiter:
    """In-process limits (one process serves)."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = parse(rate)
        return item

    async def over(self, limits: tuple[Limit, ...]) -> list[str]:
        """Count one hit on each limit; the namespaces over their rate."""
        return [namespace for rate, namespace, key in limits
                if not self._limiter.hit(self._item(rate), namespace, key.lower())]

    async def check(self, *limits: Limit) -> None:
        """Count one hit on each (rate, namespace, key); raise 429 when any is over."""
        if await self.over(limits):
            raise ApiError(ErrorCode.RATE_LIMITED, "too many attempts, try again later")

    def reset(self) -> None:
        self._limiter.storage.reset()

    async def run(self) -> None:
        """Background upkeep (none in memory)."""


class SharedRateLimiter(RateLimiter):
    """Limits counted in PostgreSQL (``rate_counts``), shared by every process of the database."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self._db = db

    async def over(self, limits: tuple[Limit, ...]) -> list[str]:
        now = time.time()
        namespaces, keys, windows, periods, amounts = [], [], [], [], {}
        for rate, namespace, key in limits:
            item = self._item(rate)
            period = item.get_expiry()
            namespaces.append(namespace)
            keys.append(key.lower())
            windows.append(int(now) - int(now) % period)
            periods.append(period)
            amounts[namespace] = (item.amount, period)
        # Rows are kept for two periods: the previous window is read while the next one counts.
        rows = await self._db.fetch(
            """WITH x AS (SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS x(n, k, w, p)),
               hit AS (
                   INSERT INTO rate_counts (namespace, key, window_start, hits, expires_at)
                   SELECT n, k, w, 1, to_timestamp(w + 2 * p) FROM x
                   ON CONFLICT (namespace, key, window_start) DO UPDATE SET hits = rate_counts.hits + 1
                   RETURNING namespace, key, window_start, hits)
               SELECT hit.namespace, hit.window_start, hit.hits, coalesce(previous.hits, 0) AS previous
               FROM hit JOIN x ON x.n = hit.namespace AND x.k = hit.key
               LEFT JOIN rate_counts previous ON previous.namespace = hit.namespace AND previous.key = hit.key
                                             AND previous.window_start = hit.window_start - x.p""",
            namespaces, keys, windows, periods,
        )
        over = []
        for row in rows:
            amount, period = amounts[row["namespace"]]
            covered = max(0.0, 1.0 - (now - row["window_start"]) / period)  # of the previous window
            if row["hits"] + row["previous"] * covered > amount:
                over.append(row["namespace"])
        return over

    def reset(self) -> None:  # pragma: no cover - the tests' in-memory limiter only
        raise NotImplementedError("reset the shared counters with DELETE FROM rate_counts")

    async def run(self, every: float = 60.0) -> None:
        async def prune() -> None:
            await self._db.execute("DELETE FROM rate_counts WHERE expires_at < now()")

        await repeat("rate limits: pruning past windows", prune, every, wait_first=True)
