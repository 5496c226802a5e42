"""Simulated devices over real WebSockets: stations now, free-floating vehicles next.

The simulator is the backend's peer: it speaks the device protocols
(``station-protocol.md``, later ``vehicle-protocol.md``) exactly as firmware
would, over real sockets, for tests, benchmarks and ``knot-rt simulate``. It
shares only the contract with the server (``protocols/``), never
``knot_rt/stations``. One concern per module:

- ``device.py``: what every device does: connect with Basic auth, boot, send
  its heartbeat event, answer backend CALLs through hooks, reconnect with
  back-off, stop (:class:`SimulatedDevice`, :class:`DeviceProtocol`);
- ``session.py``: one connection: events in flight, left to send, retried
  after ``InternalError``, and the unanswered-event watchdog;
- ``outbox.py``: the events kept until answered, and call ids that stay
  unique across reboots (:class:`Delivery`);
- ``backoff.py``: the doubling, capped delay of reconnects and retries;
- ``stats.py``: a device's counters, their sum (:class:`Summary`) and the live
  summary line;
- ``fleet.py``: many devices in one nursery, started over a ramp;
- ``station.py``: the docking station (spots, vehicles, its events and
  answers) and the station fleet (:class:`Simulator`);
- ``cli.py``: ``knot-rt simulate`` (:func:`add_arguments`, :func:`run_from_args`).

Free-floating vehicles will be a sibling ``vehicle.py``: a
``SimulatedVehicle(SimulatedDevice)`` with its own :class:`DeviceProtocol`
(``knot-vehicle.v1``, 16 KiB frames, the vehicle actions), boot payload,
``status`` heartbeat event and answers, and a ``Fleet`` of them; nothing of
the station modules changes.

The names below are re-exported for ``from knot_rt.simulator import ...``;
code in this repository imports from the module that defines a name.
"""

from __future__ import annotations

from .cli import add_arguments, parse_station, read_stations_file, run_from_args
from .device import Changes, DeviceProtocol, SimulatedDevice, StopReason
from .fleet import Fleet
from .outbox import Delivery
from .station import SimulatedStation, Simulator, SpotStatus, default_url, default_vehicles
from .stats import DeviceStats, Summary

__all__ = [
    "Changes",
    "Delivery",
    "DeviceProtocol",
    "DeviceStats",
    "Fleet",
    "SimulatedDevice",
    "SimulatedStation",
    "Simulator",
    "SpotStatus",
    "StopReason",
    "Summary",
    "add_arguments",
    "default_url",
    "default_vehicles",
    "parse_station",
    "read_stations_file",
    "run_from_args",
]
