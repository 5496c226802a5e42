"""Counters and gauges of the actor runtime, read by ``/metrics``.

One ``ActorMetrics`` is shared by a supervision tree (a child supervisor without
its own adopts its parent's). Counters are plain integers updated in the Trio
thread; gauges are computed when read, from the live actors.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass
from typing import Protocol


class Gauged(Protocol):
    """What the metrics read from a live actor (an ``ActorRef``)."""

    @property
    def kind(self) -> str: ...

    @property
    def running(self) -> bool: ...

    @property
    def mailbox_depth(self) -> int: ...


@dataclass(frozen=True)
class RestartEvent:
    """One restart, kept for diagnosis (the last ``ActorMetrics.recent`` of them)."""

    supervisor: str
    kind: str
    child_id: str
    cause: BaseException
    at: float  # trio.current_time()


class ActorMetrics:
    def __init__(self, recent: int = 100) -> None:
        self.restarts_total = 0
        self.restarts_by_kind: Counter[str] = Counter()
        self.escalations_total = 0
        self.given_up_total = 0  # children stopped for good past their own restart intensity
        self.recent_restarts: deque[RestartEvent] = deque(maxlen=recent)
        self._live: set[Gauged] = set()

    # Updated by the runtime.

    def record_restart(self, event: RestartEvent) -> None:
        self.restarts_total += 1
        self.restarts_by_kind[event.kind] += 1
        self.recent_restarts.append(event)

    def record_escalation(self) -> None:
        self.escalations_total += 1

    def record_give_up(self) -> None:
        self.given_up_total += 1

    def track(self, actor: Gauged) -> None:
        self._live.add(actor)

    def untrack(self, actor: Gauged) -> None:
        self._live.discard(actor)

    # Read by /metrics.

    def running(self) -> int:
        """Actors with a live incarnation (started, not stopped nor crashed)."""
        return sum(1 for actor in self._live if actor.running)

    def running_by_kind(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        for actor in self._live:
            if actor.running:
                counts[actor.kind] += 1
        return dict(counts)

    def mailbox_depth_by_kind(self) -> dict[str, int]:
        """Messages queued, summed per kind of actor."""
        depths: Counter[str] = Counter()
        for actor in self._live:
            depths[actor.kind] += actor.mailbox_depth
        return dict(depths)

    def max_mailbox_depth(self) -> int:
        return max((actor.mailbox_depth for actor in self._live), default=0)
