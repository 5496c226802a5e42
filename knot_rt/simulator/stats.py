"""What a simulated device counts, the sum over a fleet, and the live summary line.

Counters are plain integers owned by the device that updates them (one Trio
thread: no locks); everyone else only reads them. A :class:`Summary` is a
snapshot summed on demand, so a fleet of 10,000 devices costs nothing until
someone asks (the live line asks once a second).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

import trio

if TYPE_CHECKING:  # device.py imports DeviceStats from here
    from .device import SimulatedDevice


@dataclass(slots=True)
class DeviceStats:
    """Counters of one device; owned and updated by the device, read them only."""

    events_sent: int = 0  # event CALL frames written, resends included
    events_resent: int = 0  # of which resends after a reconnect
    events_acknowledged: int = 0  # events answered with a RESULT
    events_failed: int = 0  # events answered with an ERROR or an unusable RESULT
    events_retried: int = 0  # InternalError answers: the event is sent again later
    commands_answered: int = 0  # RESULT or ERROR frames sent to the backend
    commands_failed: int = 0  # of which ERRORs (unknown action, malformed frame)
    connects: int = 0  # WebSocket handshakes that succeeded
    connect_failures: int = 0  # attempts that failed before a session (refused, 401, no boot)
    boots: int = 0  # boots accepted
    reconnects: int = 0  # boots accepted after the first
    timeouts: int = 0  # CALLs left unanswered for call_timeout
    unmatched_answers: int = 0  # RESULT/ERROR frames for no CALL of ours in flight


@dataclass(frozen=True, slots=True)
class Summary:
    devices: int
    connected: int
    stopped: int
    events_sent: int
    events_acknowledged: int
    events_pending: int
    events_failed: int
    commands_answered: int
    reconnects: int
    connect_failures: int
    noun: str = "devices"  # what the devices are called in the line ("stations")

    @classmethod
    def of(cls, devices: Iterable[SimulatedDevice], noun: str = "devices") -> Summary:
        count = connected = stopped = sent = acked = pending = failed = answered = reconnects = connect_failures = 0
        for device in devices:
            s = device.stats
            count += 1
            connected += device.connected
            stopped += device.stopped
            sent += s.events_sent
            acked += s.events_acknowledged
            pending += device.pending_count
            failed += s.events_failed
            answered += s.commands_answered
            reconnects += s.reconnects
            connect_failures += s.connect_failures
        return cls(count, connected, stopped, sent, acked, pending, failed, answered, reconnects, connect_failures,
                   noun)

    def line(self) -> str:
        return (
            f"{self.noun} {self.connected}/{self.devices} connected"
            + (f", {self.stopped} stopped" if self.stopped else "")
            + f" | events sent {self.events_sent}, acknowledged {self.events_acknowledged},"
            f" pending {self.events_pending}, failed {self.events_failed}"
            f" | commands answered {self.commands_answered}"
            f" | reconnects {self.reconnects}, connect failures {self.connect_failures}"
        )


async def print_live(line_now: Callable[[], str], stream: TextIO | None = None, interval: float = 1.0) -> None:
    """Print ``line_now()`` (a summary line) every ``interval`` seconds: one refreshed line on a terminal."""
    out = stream or sys.stderr
    tty = out.isatty()
    try:
        while True:
            line = line_now()
            out.write(f"\r{line}\x1b[K" if tty else f"{line}\n")
            out.flush()
            await trio.sleep(interval)
    finally:
        if tty:
            out.write("\n")
            out.flush()
