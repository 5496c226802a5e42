"""A simulated free-floating vehicle (``vehicle-protocol.md``) and a fleet of them.

What is a vehicle's own lives here; the connection, the outbox, the resends
and the reconnects are the shared device's (``device.py``), as for a station.
A :class:`SimulatedVehicle` is the IoT module of a scooter left on the street:

- it authenticates with its serial number and secret, boots with its firmware
  and model, and sends ``status`` (position, battery, voltage, speed, lock) at
  once and every heartbeat (the boot RESULT's ``heartbeat_interval``, or the
  ``heartbeat`` option: ``knot-rt simulate --status-interval``);
- ``unlock``: ``accepted`` (``rejected`` with a flat battery), the lock opens
  and ``unlocked`` follows with that command's id; ``lock``: ``accepted``, the
  lock closes and ``locked`` follows with the position and that command's id;
  ``locate``: RESULT, then a ``status``; ``ring``: RESULT (counted in
  :attr:`~SimulatedVehicle.rings`); ``speed-limit``: RESULT, and its speed is
  capped at ``kmh`` from then on (0: no cap);
- unlocked, it rides along its path at its cruising speed (capped by the
  speed limit) and its battery drains with the distance; locked, it stands
  still. Things a rider does without the backend: :meth:`lock_here` (a
  ``locked`` with ``lock`` 0), :meth:`move_to`, :meth:`alert`.

The path: the vehicle starts at its position; its route is that position then
the points of ``path``, ridden in a loop (back to the start after the last
point) or bouncing (back along the same points), ``mode``. The position is the
point at the distance ridden so far along the route, advanced every ``tick``
seconds while unlocked; locking and unlocking again goes on from there. A
vehicle without a path stands still even when unlocked (speed 0).

Choices:

- Distances on a local flat projection (equirectangular): the routes are
  a few kilometres long, where its error is well under a metre per
  hundred metres; no geodesy library.
- Movement is a task beside the connection (as a station's rides): it runs
  whether the vehicle is connected or not, as a scooter keeps rolling under a
  tunnel; what it sends waits in the outbox.
- The battery is a float internally (it drains by hundredths of a percent
  per tick) and reported as an integer; the voltage follows it linearly over
  a 36 V pack (33.0 V empty, 42.0 V full).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise
from typing import Final, Unpack

import trio

from protocols import station as st
from protocols import vehicle as vh

from .device import Changes, DeviceOptions, DeviceProtocol, Reply, SimulatedDevice, gateway_url
from .fleet import Fleet
from .outbox import Delivery

FIRMWARE: Final = "knot-vehicle-sim 1.0"
MODEL: Final = "Max G30"
DEFAULT_BATTERY: Final = 80.0
DEFAULT_SPEED: Final = 18.0  # km/h, cruising
DEFAULT_DRAIN: Final = 1.5  # battery percent per km
DEFAULT_TICK: Final = 1.0  # seconds between two moves
EMPTY_MV: Final = 33000
FULL_MV: Final = 42000
_KM_PER_DEGREE_LAT: Final = 110.574
_KM_PER_DEGREE_LNG_AT_EQUATOR: Final = 111.320

VEHICLE_PROTOCOL: Final = DeviceProtocol(
    name="vehicle",
    subprotocol=vh.SUBPROTOCOL,
    max_frame_bytes=vh.MAX_FRAME_BYTES,
    actions=vh.ACTIONS,
    action_type=vh.Action,
    backend_actions=vh.BACKEND_ACTIONS,
    results=vh.RESULTS,
)

Point = tuple[float, float]  # latitude, longitude


class PathMode(StrEnum):
    LOOP = "loop"  # start, path..., start, path...
    BOUNCE = "bounce"  # start, path..., back to start, path...


def default_url() -> str:
    """``ws://127.0.0.1:<KNOT_STATION_PORT or 8001>/api/vehicles/ws``."""
    return gateway_url(vh.WS_PATH)


def _now_ms() -> int:
    return int(time.time() * 1000)


def distance_km(a: Point, b: Point) -> float:
    """Distance on the local flat projection (fine at city scale)."""
    mean_lat = math.radians((a[0] + b[0]) / 2)
    dy = (b[0] - a[0]) * _KM_PER_DEGREE_LAT
    dx = (b[1] - a[1]) * _KM_PER_DEGREE_LNG_AT_EQUATOR * math.cos(mean_lat)
    return math.hypot(dx, dy)


class Route:
    """A closed polyline ridden over and over: the point at any distance along it."""

    __slots__ = ("_legs", "length", "start")

    def __init__(self, start: Point, path: Iterable[Point], mode: PathMode = PathMode.LOOP) -> None:
        points = [start]
        for point in path:
            if point != points[-1]:
                points.append(point)
        if len(points) > 1:
            points += points[-2::-1] if mode is PathMode.BOUNCE else [start]
        self.start = start
        self._legs = [(a, b, km) for a, b in pairwise(points) if (km := distance_km(a, b)) > 0]
        self.length = sum(km for _, _, km in self._legs)

    def at(self, km: float) -> Point:
        """The point ``km`` along the route (modulo its length); the start for a route of no length."""
        if not self._legs:
            return self.start
        left = km % self.length
        for a, b, length in self._legs:
            if left <= length:
                f = left / length
                return round(a[0] + (b[0] - a[0]) * f, 7), round(a[1] + (b[1] - a[1]) * f, 7)
            left -= length
        return self._legs[-1][1]


class VehicleOptions(DeviceOptions, total=False):
    """The keyword options a fleet passes to each of its vehicles."""

    speed: float
    mode: PathMode
    battery: float
    drain: float
    tick: float


@dataclass(frozen=True, slots=True)
class VehicleSpec:
    """One vehicle of a vehicles file: who it is, where it stands, where it rides."""

    serial: str
    secret: str
    lat: float
    lng: float
    path: list[Point] = field(default_factory=list)


class SimulatedVehicle(SimulatedDevice):
    """One simulated free-floating vehicle; ``await run()`` until it stops."""

    protocol = VEHICLE_PROTOCOL

    def __init__(
        self,
        serial: str,
        secret: str,
        url: str | None = None,
        *,
        lat: float,
        lng: float,
        path: Iterable[Point] = (),
        mode: PathMode = PathMode.LOOP,
        speed: float = DEFAULT_SPEED,
        battery: float = DEFAULT_BATTERY,
        drain: float = DEFAULT_DRAIN,
        tick: float = DEFAULT_TICK,
        model: str = MODEL,
        changed: Changes | None = None,
        **options: Unpack[DeviceOptions],
    ) -> None:
        """
        ``lat``/``lng``: where it stands at start (locked); ``path``: the points it
        rides through when unlocked (see the module), ``mode`` how it goes round;
        ``speed``: its cruising speed in km/h; ``battery``: its charge at start (%),
        draining ``drain`` percent per km ridden; ``tick``: seconds between two moves.
        Other options (``heartbeat``: seconds between ``status``, ``backoff_min``,
        ``backoff_max``, ``call_timeout``, ``stop_when_replaced``) are the device's.
        """
        if not vh.valid_serial(serial):
            raise ValueError(f"{serial!r} is not a serial number (1 to {vh.MAX_SERIAL_LENGTH} printable"
                             " characters, no colon)")
        if not (-90 <= lat <= 90 and -180 <= lng <= 180):
            raise ValueError(f"vehicle {serial}: no position at {lat}, {lng}")
        if speed < 0 or drain < 0 or tick <= 0 or not 0 <= battery <= 100:
            raise ValueError("need speed >= 0, drain >= 0, tick > 0 and battery 0..100")
        super().__init__(serial, secret, url or default_url(), changed=changed, **options)
        self.serial = serial
        self.model = model
        self.cruise = speed
        self.drain = drain
        self.tick = tick
        self.battery = battery
        self.locked = True
        #: The backend's speed limit in km/h (0: none), from its last ``speed-limit``.
        self.speed_limit = 0
        #: ``ring`` commands received.
        self.rings = 0
        self.route = Route((lat, lng), path, mode)
        self._ridden = 0.0  # km along the route
        self._position: Point = (lat, lng)

    # ------------------------------------------------------------------
    # Read-only view

    @property
    def position(self) -> Point:
        return self._position

    @property
    def speed(self) -> float:
        """Its speed now, km/h: the cruising speed capped by the speed limit while riding, else 0."""
        if self.locked or not self.route.length or self.battery <= 0:
            return 0.0
        return min(self.cruise, self.speed_limit) if self.speed_limit else self.cruise

    @property
    def voltage(self) -> int:
        return round(EMPTY_MV + (FULL_MV - EMPTY_MV) * self.battery / 100)

    def status(self) -> vh.StatusPayload:
        lat, lng = self._position
        return vh.StatusPayload(lat=lat, lng=lng, battery=math.ceil(self.battery), voltage=self.voltage,
                                speed=self.speed, locked=self.locked, time=_now_ms())

    # ------------------------------------------------------------------
    # Life cycle: the connection and the ride beside it

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """As the device's, with the vehicle's movement beside it until it stops."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._ride)
            await super().run(task_status=task_status)
            nursery.cancel_scope.cancel()

    async def _ride(self) -> None:
        while True:
            await trio.sleep(self.tick)
            self.advance(self.tick)

    def advance(self, seconds: float) -> None:
        """Ride ``seconds`` at the current speed (nothing while locked)."""
        km = self.speed * seconds / 3600
        if km <= 0:
            return
        self._ridden += km
        self._position = self.route.at(self._ridden)
        self.battery = max(0.0, self.battery - km * self.drain)
        self._notify()

    # ------------------------------------------------------------------
    # Things that happen at the vehicle

    async def lock_here(self) -> Delivery:
        """The rider locks it without a command: the lock closes and ``locked`` (``lock`` 0) is sent."""
        await trio.lowlevel.checkpoint()
        return self._lock(0)

    async def move_to(self, lat: float, lng: float) -> Delivery:
        """It is carried (or teleported, for tests) to ``lat``/``lng``; a ``status`` tells it at once.
        Its route is not changed: riding on goes on from the route's point."""
        await trio.lowlevel.checkpoint()
        self._position = (lat, lng)
        return self._enqueue(vh.Action.STATUS, self.status())

    async def send_status(self) -> Delivery:
        await trio.lowlevel.checkpoint()
        return self._enqueue(vh.Action.STATUS, self.status())

    async def alert(self, kind: vh.AlertKind | str, status: vh.AlertStatus | str = vh.AlertStatus.APPEARING
                    ) -> Delivery:
        await trio.lowlevel.checkpoint()
        lat, lng = self._position
        return self._enqueue(vh.Action.ALERT, vh.AlertPayload(
            alert=vh.AlertKind(kind), alert_status=vh.AlertStatus(status), lat=lat, lng=lng, time=_now_ms()))

    def _lock(self, command: int) -> Delivery:
        self.locked = True
        lat, lng = self._position
        return self._enqueue(vh.Action.LOCKED, vh.LockedPayload(lat=lat, lng=lng, time=_now_ms(), lock=command))

    # ------------------------------------------------------------------
    # The device hooks

    def boot_payload(self) -> vh.BootPayload:
        return vh.BootPayload(firmware_version=FIRMWARE, model=self.model)

    def heartbeat_event(self) -> tuple[str, vh.StatusPayload]:
        return vh.Action.STATUS, self.status()

    async def on_call(self, call: st.Call, reply: Reply) -> None:
        payload = call.payload
        if isinstance(payload, vh.UnlockPayload):
            if self.battery <= 0:
                await reply.result(vh.CommandResult(status=vh.CommandStatus.REJECTED))
                return
            await reply.result(vh.CommandResult(status=vh.CommandStatus.ACCEPTED))
            self.locked = False
            self._enqueue(vh.Action.UNLOCKED, vh.UnlockedPayload(unlock=payload.unlock, time=_now_ms()))
        elif isinstance(payload, vh.LockPayload):
            await reply.result(vh.CommandResult(status=vh.CommandStatus.ACCEPTED))
            self._lock(payload.lock)
        elif isinstance(payload, vh.LocatePayload):
            await reply.result()
            self._enqueue(vh.Action.STATUS, self.status())
        elif isinstance(payload, vh.RingPayload):
            await reply.result()
            self.rings += 1
            self._notify()
        elif isinstance(payload, vh.SpeedLimitPayload):
            await reply.result()
            self.speed_limit = payload.kmh
            self._notify()
        else:  # parse_frame only lets the protocol's backend actions through
            await reply.error(st.ErrorCode.NOT_IMPLEMENTED, f"unknown action {call.action!r}")


class VehicleFleet(Fleet[SimulatedVehicle]):
    """Many :class:`SimulatedVehicle` in one nursery, one per :class:`VehicleSpec`."""

    def __init__(
        self, url: str | None, vehicles: Iterable[VehicleSpec], *, ramp: float = 0.0,
        **options: Unpack[VehicleOptions],
    ) -> None:
        super().__init__(ramp=ramp, noun="vehicles")
        self.url = url or default_url()
        self._by_serial: dict[str, SimulatedVehicle] = {}
        for spec in vehicles:
            if spec.serial in self._by_serial:
                raise ValueError(f"vehicle {spec.serial} is given twice")
            vehicle = SimulatedVehicle(spec.serial, spec.secret, self.url, lat=spec.lat, lng=spec.lng,
                                       path=spec.path, changed=self.changes, **options)
            self.add(vehicle)
            self._by_serial[spec.serial] = vehicle

    @property
    def vehicles(self) -> list[SimulatedVehicle]:
        return self.devices

    def vehicle(self, serial: str) -> SimulatedVehicle:
        return self._by_serial[serial]
