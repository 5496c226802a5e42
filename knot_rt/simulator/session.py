"""One connection of a simulated device: what is in flight on it and what is left to send.

A :class:`Session` lives from a WebSocket handshake to its close; the device
(``device.py``) opens one per connection and runs its tasks in the connection's
nursery. It is the send side of the delivery guarantee on that connection:

- ``unsent``: events to write, in order. After the boot it holds every event
  still in the outbox (resent first, same ids), then whatever happens next.
- ``in_flight``: events written and not answered yet, with the time they were
  written. The watchdog ends the connection when the oldest one has waited
  ``call_timeout`` (the device then reconnects and resends it).
- retries: events the backend answered ``InternalError`` (it could not record
  them now, e.g. its database is down). Each goes back to the front of
  ``unsent`` once its back-off has passed, on this same connection.

Choices:

- One sender task writes every event frame, so events leave in outbox order;
  it also releases due retries (it sleeps until the next one is due or until
  woken), one task per connection less than a separate retrier.
- Ending is idempotent and keeps the first reason: ``end()`` records why and
  cancels the connection's scope; a later ``end()`` only cancels again.
- A write on a closed connection ends the session (reason ``closed``, with the
  peer's close code) instead of raising into the task that wrote.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from protocols import station as st

from .outbox import Delivery
from .stats import DeviceStats

log = logging.getLogger(__name__)


class End(StrEnum):
    """How one connection ended."""

    CONNECT_FAILED = "connect-failed"
    CLOSED = "closed"
    REPLACED = "replaced"
    REBOOT = "reboot"
    TIMEOUT = "timeout"
    BOOT_FAILED = "boot-failed"
    REJECTED = "rejected"
    STOPPED = "stopped"


def _code_of(exc: ConnectionClosed) -> int | None:
    return exc.reason.code if exc.reason else None


@dataclass(eq=False, slots=True)
class Session:
    """One connection: its cancel scope, what is in flight, what is left to send."""

    ws: WebSocketConnection
    scope: trio.CancelScope
    stats: DeviceStats
    label: str
    call_timeout: float
    end_reason: End | None = None
    close_code: int | None = None
    boot_id: str = ""
    boot_done: trio.Event = field(default_factory=trio.Event)
    boot_answer: st.Result | st.Error | None = None
    in_flight: dict[str, float] = field(default_factory=dict)  # event id -> time sent, in send order
    unsent: deque[Delivery] = field(default_factory=deque)
    retries: list[tuple[float, Delivery]] = field(default_factory=list)  # (when, event) to send again
    wake: trio.Event = field(default_factory=trio.Event)

    def end(self, reason: End, code: int | None = None) -> None:
        if self.end_reason is None:
            self.end_reason, self.close_code = reason, code
        self.scope.cancel()

    async def send(self, text: str) -> None:
        """Write one frame; a closed connection ends the session (and this task)."""
        try:
            await self.ws.send_message(text)
        except ConnectionClosed as exc:
            self.end(End.CLOSED, _code_of(exc))
            await trio.lowlevel.checkpoint()  # raises Cancelled: the session is over

    async def receive(self) -> str | bytes | None:
        """The next frame; None once the connection is closed (the session is ended then)."""
        try:
            return await self.ws.get_message()
        except ConnectionClosed as exc:
            code = _code_of(exc)
            self.end(End.REPLACED if code == st.REPLACED else End.CLOSED, code)
            return None

    def queue(self, deliveries: Iterable[Delivery]) -> None:
        """Send these events after those already queued, in their order."""
        self.unsent.extend(deliveries)
        self.wake.set()

    def take_in_flight(self, id: str) -> bool:
        """An answer arrived for ``id``: True if that event was in flight on this connection."""
        return self.in_flight.pop(id, None) is not None

    def retry_later(self, delivery: Delivery, delay: float) -> None:
        """Send ``delivery`` again on this connection in ``delay`` seconds, before anything new."""
        self.retries.append((trio.current_time() + delay, delivery))
        self.wake.set()

    def _release_due_retries(self) -> float:
        """Move the retries that are due to the front of ``unsent``; the time the next one is due."""
        if not self.retries:
            return math.inf
        now = trio.current_time()
        ready = [delivery for when, delivery in self.retries if when <= now]
        if ready:
            self.retries = [(when, delivery) for when, delivery in self.retries if when > now]
            self.unsent.extendleft(reversed(ready))  # before anything new, in their order
        return min((when for when, _ in self.retries), default=math.inf)

    async def send_events(self) -> None:
        """The sender task: write queued events one by one, each recorded in flight."""
        while True:
            next_retry = self._release_due_retries()
            if not self.unsent:
                self.wake = trio.Event()
                with trio.move_on_at(next_retry):
                    await self.wake.wait()
                continue
            delivery = self.unsent.popleft()
            if delivery.answered:
                continue
            self.in_flight[delivery.id] = trio.current_time()
            delivery.sends += 1
            self.stats.events_sent += 1
            if delivery.sends > 1:
                self.stats.events_resent += 1
            await self.send(delivery.frame)

    async def watch_answers(self) -> None:
        """The watchdog task: end the connection when an event stays unanswered for ``call_timeout``."""
        while True:
            oldest = next(iter(self.in_flight.values()), None)
            if oldest is None:
                await trio.sleep(self.call_timeout)
            elif trio.current_time() >= oldest + self.call_timeout:
                self.stats.timeouts += 1
                log.warning("%s: an event got no answer within %s s, reconnecting", self.label, self.call_timeout)
                self.end(End.TIMEOUT)
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep_until(oldest + self.call_timeout)
