"""Simulated devices over real WebSockets: docking stations and free-floating vehicles.

The simulator is the backend's peer: it speaks the device protocols
(``station-protocol.md``, ``vehicle-protocol.md``) exactly as firmware
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
- ``vehicle.py``: the free-floating vehicle (its lock, position, path,
  battery and speed limit, its events and answers) and the vehicle fleet
  (:class:`VehicleFleet`);
- ``cli.py``: ``knot-rt simulate`` (:func:`add_arguments`, :func:`run_from_args`)
  and the vehicles file (:func:`read_vehicles_file`, :func:`write_vehicles_file`).

Both devices are the same :class:`SimulatedDevice` with their own
:class:`DeviceProtocol` (subprotocol, frame limit, actions): the vehicle
protocol has the station protocol's framing and delivery guarantee.

The names below are re-exported for ``from knot_rt.simulator import ...``;
code in this repository imports from the module that defines a name.
"""

from __future__ import annotations

from .cli import (
    add_arguments,
    parse_station,
    read_stations_file,
    read_vehicles_file,
    run_from_args,
    write_vehicles_file,
)
from .device import Changes, DeviceProtocol, SimulatedDevice, StopReason
from .fleet import Fleet
from .outbox import Delivery
from .station import SimulatedStation, Simulator, SpotStatus, default_url, default_vehicles
from .stats import DeviceStats, Summary
from .vehicle import PathMode, SimulatedVehicle, VehicleFleet, VehicleSpec

__all__ = [
    "Changes",
    "Delivery",
    "DeviceProtocol",
    "DeviceStats",
    "Fleet",
    "PathMode",
    "SimulatedDevice",
    "SimulatedStation",
    "SimulatedVehicle",
    "Simulator",
    "SpotStatus",
    "StopReason",
    "Summary",
    "VehicleFleet",
    "VehicleSpec",
    "add_arguments",
    "default_url",
    "default_vehicles",
    "parse_station",
    "read_stations_file",
    "read_vehicles_file",
    "run_from_args",
    "write_vehicles_file",
]
