"""The vehicle actor: one per vehicle, fed by station state.

It holds what the live map and the rider apps show of a vehicle: its battery
(level and voltage) and the range that follows, whether it is online, and
where it is: in a spot of a station, or at a position when free-floating.

Messages come from the station actors (``Docked``, ``Undocked``,
``StationOnline``) and from free-floating position reports (``Positioned``);
``Snapshot`` reads the state. Every message is answered with the current
``VehicleView``, an immutable value, so an ``ask`` of a change returns the
state after it (already saved).

Rules:

- Docked: the station's report replaces what it tells (spot, battery level,
  voltage, the station's connectivity); ``None`` is "unknown now", not "keep
  the last one". A docked vehicle has no position of its own: the station is
  where it is.
- Undocked from the station it is docked at: no station, no spot, offline
  (a dock-based vehicle talks through its station), position unknown until
  reported; battery and voltage keep their last known values. An
  ``Undocked`` from another station is stale (the vehicle has docked
  elsewhere since) and ignored.
- StationOnline of its station sets ``online``; of another station, ignored.
- Positioned sets the position of a free-floating vehicle; while docked it is
  ignored (the station is the authority: a vehicle leaves a station through
  an ``Undocked``).
- Online means docked in an online station. ``estimated_range`` is
  ``avg_max_range * battery_level / 100`` rounded half up, in the unit of
  ``avg_max_range`` (0 when that is unknown); ``None`` when the battery level
  is unknown.

I/O is handed in: a ``VehicleStore`` (the database) and ``VehicleListener`` s
(the live map). A change is saved before the answer and before listeners
hear of it; a message that changes nothing saves nothing and notifies
nobody. ``on_start`` rebuilds the state from the store (an unknown vehicle
starts empty), so a restarted actor is where the last saved change left it.
A failed save crashes the actor: the asker gets ``ActorCrashed`` and the
restarted actor knows nothing of the change.

Idle: with ``idle_after`` set, an actor that handled no message for that many
seconds stops itself in order (its state is all saved); the registry forgets
it and the next message starts a fresh one from the store. Thousands of
vehicles seen once (or a station reporting many) do not stay in memory; the
cost is one load from the store when a stopped vehicle is used again. A failing listener is logged
and does not undo the change nor keep the other listeners from hearing of it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, assert_never

import trio

from actors.registry import ActorKind
from actors.runtime import Actor

logger = logging.getLogger(__name__)


# Messages.


@dataclass(frozen=True, slots=True)
class Docked:
    """The vehicle is in spot ``spot_id`` (number ``spot_number``) of ``station_id``,
    with the battery the station reads (``None``: unknown)."""

    station_id: int
    spot_id: int
    spot_number: int
    battery: int | None
    voltage: int | None  # millivolts
    station_online: bool

    def __post_init__(self) -> None:
        if self.battery is not None and not 0 <= self.battery <= 100:
            raise ValueError(f"battery must be 0..100 or None, not {self.battery}")


@dataclass(frozen=True, slots=True)
class Undocked:
    """The vehicle left ``station_id``; ignored if it is docked elsewhere by then."""

    station_id: int


@dataclass(frozen=True, slots=True)
class StationOnline:
    """``station_id`` went online or offline; matters only to vehicles docked there."""

    station_id: int
    online: bool


@dataclass(frozen=True, slots=True)
class Positioned:
    """A free-floating vehicle's reported position."""

    latitude: float
    longitude: float

    def __post_init__(self) -> None:
        if not (-90 <= self.latitude <= 90 and -180 <= self.longitude <= 180):
            raise ValueError(f"no such position: {self.latitude}, {self.longitude}")


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Read the vehicle's state."""


VehicleMessage: TypeAlias = Docked | Undocked | StationOnline | Positioned | Snapshot


# State.


def estimated_range(avg_max_range: int, battery_level: int | None) -> int | None:
    """``avg_max_range * battery_level / 100``, rounded half up; ``None`` if the level is unknown."""
    if battery_level is None:
        return None
    return (avg_max_range * battery_level + 50) // 100


@dataclass(frozen=True, slots=True)
class VehicleView:
    """What is known of a vehicle at one moment; an immutable value."""

    vehicle_id: int
    battery_level: int | None = None
    voltage: int | None = None  # millivolts
    avg_max_range: int = 0  # 0: unknown
    online: bool = False
    station_id: int | None = None
    spot_id: int | None = None
    spot_number: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    estimated_range: int | None = field(init=False)  # derived, see ``estimated_range()``

    def __post_init__(self) -> None:
        object.__setattr__(self, "estimated_range", estimated_range(self.avg_max_range, self.battery_level))

    @classmethod
    def unknown(cls, vehicle_id: int) -> VehicleView:
        """A vehicle nothing was ever saved of: battery, voltage and range unknown, offline, nowhere.

        The one definition of "unknown": the actor starts from it for a vehicle its store does not
        know, and the live read model answers it for a vehicle it has no state of.
        """
        return cls(vehicle_id)

    @classmethod
    def of_record(cls, vehicle_id: int, record: VehicleRecord) -> VehicleView:
        """The state a saved record stands for (online only through a station; docked: no position)."""
        docked = record.station_id is not None
        return cls(
            vehicle_id,
            battery_level=record.battery_level,
            voltage=record.voltage,
            avg_max_range=record.avg_max_range,
            online=record.online and docked,
            station_id=record.station_id,
            spot_id=record.spot_id,
            spot_number=record.spot_number,
            latitude=None if docked else record.latitude,
            longitude=None if docked else record.longitude,
        )

    @property
    def docked(self) -> bool:
        return self.station_id is not None

    @property
    def free_floating(self) -> bool:
        """In no spot, at a known position: shown on the map on its own."""
        return self.station_id is None and self.latitude is not None and self.longitude is not None


@dataclass(frozen=True, slots=True)
class VehicleRecord:
    """A vehicle as the store last saved it (``avg_max_range`` from its model)."""

    battery_level: int | None = None
    voltage: int | None = None
    avg_max_range: int = 0
    station_id: int | None = None
    spot_id: int | None = None
    spot_number: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    online: bool = False


# I/O interfaces.


class VehicleStore(Protocol):
    async def load(self, vehicle_id: int) -> VehicleRecord | None:
        """The vehicle's saved state; ``None`` for a vehicle the store does not know."""
        ...

    async def save(self, view: VehicleView) -> None:
        """Make ``view`` durable (its live fields; ``avg_max_range`` belongs to the store)."""
        ...


class VehicleListener(Protocol):
    async def vehicle_changed(self, view: VehicleView) -> None:
        """Called inline by the actor after a saved change, in order: keep it quick."""
        ...


# The actor.


class Vehicle(Actor[VehicleMessage, VehicleView]):
    def __init__(
        self, vehicle_id: int, store: VehicleStore, listeners: Sequence[VehicleListener] = (),
        *, idle_after: float = math.inf,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.store = store
        self.listeners = tuple(listeners)
        self.view = VehicleView.unknown(vehicle_id)
        self.idle_after = idle_after
        self._last_used = 0.0

    async def on_start(self) -> None:
        record = await self.store.load(self.vehicle_id)
        self.view = (
            VehicleView.unknown(self.vehicle_id) if record is None else VehicleView.of_record(self.vehicle_id, record)
        )
        self._last_used = trio.current_time()
        if self.idle_after < math.inf:
            self.background.start_soon(self._stop_when_idle)

    async def _stop_when_idle(self) -> None:
        while True:
            await trio.sleep_until(self._last_used + self.idle_after)
            if trio.current_time() >= self._last_used + self.idle_after:
                logger.debug("vehicle %d: idle, stopping", self.vehicle_id)
                self.ref.stop_nowait()
                return

    async def handle(self, message: VehicleMessage) -> VehicleView:
        self._last_used = trio.current_time()
        view = self.view
        match message:
            case Snapshot():
                return view
            case Docked():
                new = dataclasses.replace(
                    view,
                    station_id=message.station_id,
                    spot_id=message.spot_id,
                    spot_number=message.spot_number,
                    battery_level=message.battery,
                    voltage=message.voltage,
                    online=message.station_online,
                    latitude=None,
                    longitude=None,
                )
            case Undocked():
                if view.station_id != message.station_id:
                    return view  # stale: not docked there (any more)
                new = dataclasses.replace(view, station_id=None, spot_id=None, spot_number=None, online=False)
            case StationOnline():
                if view.station_id != message.station_id:
                    return view
                new = dataclasses.replace(view, online=message.online)
            case Positioned():
                if view.docked:
                    return view
                new = dataclasses.replace(view, latitude=message.latitude, longitude=message.longitude)
            case _:
                assert_never(message)
        await self._change(new)
        return self.view

    async def _change(self, new: VehicleView) -> None:
        """Save, adopt and announce ``new``, unless nothing changed."""
        if new == self.view:
            return
        await self.store.save(new)
        self.view = new
        for listener in self.listeners:
            try:
                await listener.vehicle_changed(new)
            except Exception:
                logger.exception(
                    "vehicle %d: listener %r failed", self.vehicle_id, listener, extra={"vehicle_id": self.vehicle_id}
                )


VEHICLE = ActorKind[VehicleMessage, VehicleView]("vehicle")


def vehicle_factory(
    store: VehicleStore, listeners: Sequence[VehicleListener] = (), *, idle_after: float = math.inf
) -> Callable[[str], Vehicle]:
    """The factory to register ``VEHICLE`` with a ``Registry`` (actor ids are vehicle ids)."""
    listeners = tuple(listeners)
    return lambda actor_id: Vehicle(int(actor_id), store, listeners, idle_after=idle_after)
