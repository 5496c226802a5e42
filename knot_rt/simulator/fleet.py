"""A fleet: many simulated devices in one nursery, started over a ramp.

The fleet owns no connection logic: each device connects, boots and
reconnects with its own back-off (``device.py``); the fleet starts them,
spread evenly over ``ramp`` seconds (a real fleet coming back after an outage
does not arrive in one instant, and neither should a benchmark's), stops them
together, and answers for all of them: how many are connected, a summed
:class:`~knot_rt.simulator.stats.Summary`, and waits on a condition over the
whole fleet.

Choices: one Trio task tree per device in one nursery, no threads (10,000
stations run in one process); the devices share one change signal
(:class:`~knot_rt.simulator.device.Changes`) given to them at construction, so
a fleet-wide wait wakes on any device's change without polling. A fleet of
stations is :class:`~knot_rt.simulator.station.Simulator`, a fleet of
free-floating vehicles :class:`~knot_rt.simulator.vehicle.VehicleFleet`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

import trio

from .device import Changes, SimulatedDevice
from .stats import Summary

D = TypeVar("D", bound=SimulatedDevice)


class Fleet(Generic[D]):
    """Many devices in one nursery; a subclass builds them with ``changed=self.changes`` and :meth:`add`."""

    url: str  # where its devices connect (the subclass sets it)

    def __init__(self, *, ramp: float = 0.0, noun: str = "devices") -> None:
        """``ramp``: seconds over which the devices are started; ``noun`` names them in the summary line."""
        self.ramp = ramp
        self.noun = noun
        self.changes = Changes()
        self.devices: list[D] = []
        self._started = False

    def add(self, device: D) -> None:
        if self._started:
            raise RuntimeError("add devices before the fleet runs")
        self.devices.append(device)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run every device until all have stopped (see :meth:`stop`)."""
        if self._started:
            raise RuntimeError("a fleet runs once")
        self._started = True
        async with trio.open_nursery() as nursery:
            step = self.ramp / len(self.devices) if self.devices else 0.0
            for device in self.devices:
                nursery.start_soon(device.run)
                if step:
                    await trio.sleep(step)
            task_status.started()

    def stop(self) -> None:
        """Stop every device cleanly; :meth:`run` returns once all have closed."""
        for device in self.devices:
            device.stop()

    def summary(self) -> Summary:
        return Summary.of(self.devices, self.noun)

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once ``predicate()`` is true; checked after every change of any device."""
        await self.changes.wait_until(predicate)

    async def wait_connected(self, count: int | None = None) -> None:
        """Wait until ``count`` devices (default: all) are connected and booted."""
        wanted = len(self.devices) if count is None else count
        await self.wait_until(lambda: sum(d.connected for d in self.devices) >= wanted)
