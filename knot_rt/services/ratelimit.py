"""Rate limits per address and per client, with the `limits` library (moving window)."""

from __future__ import annotations

from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from protocols.errors import ErrorCode

from ..errors import ApiError


class RateLimiter:
    """In-process limits; each process of a deployment counts on its own."""

    def __init__(self) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._items: dict[str, RateLimitItem] = {}

    def _item(self, rate: str) -> RateLimitItem:
        item = self._items.get(rate)
        if item is None:
            item = self._items[rate] = parse(rate)
        return item

    def hit(self, rate: str, namespace: str, key: str) -> bool:
        return self._limiter.hit(self._item(rate), namespace, key.lower())

    def check(self, *limits: tuple[str, str, str]) -> None:
        """Count one hit on each (rate, namespace, key); raise 429 when any is over."""
        over = [namespace for rate, namespace, key in limits if not self.hit(rate, namespace, key)]
        if over:
            raise ApiError(ErrorCode.RATE_LIMITED, "too many attempts, try again later")

    def reset(self) -> None:
        self._limiter.storage.reset()
