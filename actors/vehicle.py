"""The vehicle actor: one per vehicle, fed by station state, the one writer of its rent.

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

Rents (``actors/rent.py``): the actor holds the vehicle's current rent and is
its one writer, so two riders racing for one vehicle get one rent and one
refusal. ``ReserveRent`` checks that the vehicle is free and where the rider
was told it is, then has the ``RentBook`` write an ``unlocking`` rent (the
book refuses a rider at the network's maximum). The device's report finishes
it: an ``Undocked`` carrying the rent's ``unlock_id`` starts it (``ongoing``),
a ``Docked`` with ``locked_at_ms`` (the station's ``locked``) ends it,
``UnlockFailed`` (the command was refused) fails it. A clock in the actor's
background wakes it (``RentTick``) when an unlock has waited too long (it then
asks the book whether a station recorded the ``unlocked`` after all, else
fails the rent), when the trip becomes too long (one warning), and, while a
riding vehicle is seen docked, to ask the book for a ``locked`` it missed.
A book that fails (the database is away) leaves the rent as it was; the
clock tries again ``rent_retry`` seconds later, and a refused reservation is
a value (code 48), never a crash.

Free-floating vehicles (``vehicle-protocol.md``) carry a module with a socket of
their own; the gateway hands the actor its connection (``Attached`` /
``Detached``, ``actors/link.py``) and every CALL (``Incoming``), and the actor answers them
as the station actor answers its station: ``boot`` first (else
``ProtocolError``); each event is recorded once with the state it leads to
(``VehicleStore.record``) before its RESULT, a repeated id gets the stored
RESULT and changes nothing, a store that fails answers ``InternalError``. Such a
vehicle is ``connected`` (and ``online``) while its socket is booted; ``status``
moves it, and the live map follows.

Its rent is driven by the module's reports, never by a RESULT: ``SendUnlock``
sends the reserved rent's ``unlock`` and the ``unlocked`` echoing that id starts
it; a rider's ``RentCommand`` records a resume, pause or end with a fresh id on
the rent (the book) and sends ``unlock`` or ``lock`` with it, and the
``unlocked`` / ``locked`` echoing the id resumes, pauses or ends it (ended at the
vehicle's position). A report recorded while no actor held the rent is found
by the clock (``RentBook.reported``). The trip timers (``TripRules``) run on the
same clock from recorded times, so they survive a restart: ``auto_pause`` and
``auto_lock`` count from the last movement (kept here at once, written to the
book at most every 30 s), ``max_pause`` from the pause; they act in the book
(an offline vehicle's rent still pauses or ends on time) and then send the
vehicle a ``lock``, best effort. A rented vehicle is told its speed zone's
limit (``speed-limit``) when it changes, and 0 when the rent is over.

I/O is handed in: a ``VehicleStore`` (the database) and ``VehicleListener`` s
(the live map), and for free-floating vehicles ``DeviceLinks`` (the gateway's
connections) and ``SpeedZones`` (the catalog). A change is saved before the answer and before listeners
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
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeAlias, assert_never

import trio

from actors.geo import distance_m
from actors.link import (
    Attached,
    CommandFailed,
    Detached,
    DeviceLink,
    DeviceLinks,
    Failure,
    Incoming,
    PendingCommand,
    answer,
    send_command,
)
from actors.registry import ActorKind
from actors.rent import CommandKind, EndedBy, Rent, RentBook, RentRefused, RentRequest, RentState, Return
from actors.runtime import Actor
from protocols import vehicle as wire
from protocols.errors import ErrorCode

logger = logging.getLogger(__name__)

#: A riding vehicle has moved once it is this far from where it last moved, or reports this speed.
_MOVED_METRES = 15.0
_MOVING_KMH = 3.0
#: The last movement is written to the book at most this often (the trip timers' input after a restart).
_MOVED_EVERY = 30.0


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
    locked_at_ms: int | None = None  # the station's `locked` of the vehicle, at this time: a return

    def __post_init__(self) -> None:
        if self.battery is not None and not 0 <= self.battery <= 100:
            raise ValueError(f"battery must be 0..100 or None, not {self.battery}")


@dataclass(frozen=True, slots=True)
class Undocked:
    """The vehicle left ``station_id``; ignored if it is docked elsewhere by then.

    ``unlock_id``: the station's ``unlocked`` named the command that opened it (starts that rent)."""

    station_id: int
    unlock_id: int | None = None


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


@dataclass(frozen=True, slots=True)
class ReserveRent:
    """A rider asks for the vehicle: answered with the new ``unlocking`` ``Rent`` or a ``RentRefused``."""

    request: RentRequest


@dataclass(frozen=True, slots=True)
class UnlockFailed:
    """The unlock command of rent ``rent_id`` did not go through (refused, offline): the rent fails."""

    rent_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class RentTick:
    """The rent's clock (or a start) asks the actor to look at its rent's deadlines and reconcile."""


@dataclass(frozen=True, slots=True)
class RentCommand:
    """A rider's command on the free-floating rent of this vehicle: ``UNLOCK`` resumes a paused rent (the
    start of a rent is ``ReserveRent``), ``PAUSE`` locks it for a while, ``END`` locks it for good.
    ``trip_id``: the trip the rider named (resume), else the rider's current rent of this vehicle.

    Answered with a ``PendingCommand`` (await it: the vehicle's RESULT, or a ``CommandFailed``) or a
    ``RentRefused`` (404/4 not the rider's rent, 409/35 not in a state for it, 409/36 docked)."""

    user_id: int
    kind: CommandKind
    trip_id: int | None = None


@dataclass(frozen=True, slots=True)
class SendUnlock:
    """Send the ``unlock`` of the rent just reserved (free-floating): answered with a ``PendingCommand``
    or a ``CommandFailed`` (offline); a refusal or no answer leaves it to the unlock timeout."""

    rent_id: int


VehicleMessage: TypeAlias = (
    Docked | Undocked | StationOnline | Positioned | Snapshot | ReserveRent | UnlockFailed | RentTick
    | Attached | Detached | Incoming | RentCommand | SendUnlock
)
VehicleReply: TypeAlias = "VehicleView | Rent | RentRefused | PendingCommand | CommandFailed"


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
    rent: Rent | None = None  # the current rent (unlocking, ongoing or paused), the actor's to write
    has_module: bool = False  # a free-floating vehicle: its own IoT module and socket
    connected: bool = False  # its module's socket is booted (``online`` of such a vehicle)
    speed: float | None = None  # km/h, last reported by its module
    locked: bool | None = None  # its module's lock, last reported
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
            has_module=record.has_module,
            speed=record.speed,
            locked=record.locked,
        )

    @property
    def docked(self) -> bool:
        return self.station_id is not None

    @property
    def rented(self) -> bool:
        return self.rent is not None

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
    has_module: bool = False
    speed: float | None = None
    locked: bool | None = None


# I/O interfaces.


class VehicleStore(Protocol):
    async def load(self, vehicle_id: int) -> VehicleRecord | None:
        """The vehicle's saved state; ``None`` for a vehicle the store does not know."""
        ...

    async def save(self, view: VehicleView) -> None:
        """Make ``view`` durable (its live fields; ``avg_max_range`` belongs to the store)."""
        ...

    async def record(
        self, vehicle_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        view: VehicleView | None,
    ) -> dict[str, Any] | None:
        """Record a CALL of the vehicle's module once, with the live state it leads to (``view``, None:
        unchanged), in one transaction; return the earlier RESULT if the id was seen already (then
        nothing is written)."""
        ...


class SpeedZones(Protocol):
    def limit_at(self, network_id: int, latitude: float, longitude: float) -> int:
        """The speed limit (km/h) of the network's zones at a position; 0: none (the lowest zone wins)."""
        ...


class VehicleListener(Protocol):
    async def vehicle_changed(self, view: VehicleView) -> None:
        """Called inline by the actor after a saved change, in order: keep it quick."""
        ...


# The actor.


class Vehicle(Actor[VehicleMessage, VehicleReply]):
    def __init__(
        self, vehicle_id: int, store: VehicleStore, listeners: Sequence[VehicleListener] = (),
        *, idle_after: float = math.inf, rents: RentBook | None = None, unlock_timeout: float = 30.0,
        rent_retry: float = 5.0, links: DeviceLinks | None = None, zones: SpeedZones | None = None,
        heartbeat_interval: int = wire.DEFAULT_HEARTBEAT_INTERVAL, call_timeout: float = wire.DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self.vehicle_id = vehicle_id
        self.links = links
        self.zones = zones
        self.heartbeat_interval = heartbeat_interval
        self.call_timeout = call_timeout
        self._link: DeviceLink | None = None
        self.store = store
        self.listeners = tuple(listeners)
        self.view = VehicleView.unknown(vehicle_id)
        self.idle_after = idle_after
        self.rents = rents
        self.unlock_timeout = unlock_timeout
        self.rent_retry = rent_retry
        self._last_used = 0.0
        self._rent_wake = trio.Event()
        self._retry_at: float | None = None  # a rent transition failed: not before then again
        self._sent_limit = 0  # the speed limit the module was last told (km/h, 0 none; -1 unknown)
        self._moved_at: float | None = None  # a riding free-floating vehicle's last movement seen here
        self._moved_from: tuple[float, float] | None = None  # where it was then

    async def on_start(self) -> None:
        record = await self.store.load(self.vehicle_id)
        self.view = (
            VehicleView.unknown(self.vehicle_id) if record is None else VehicleView.of_record(self.vehicle_id, record)
        )
        link = self.links.current(self.vehicle_id) if self.links is not None else None
        self._link = link
        if self.view.has_module:  # after a restart: a booted socket is still connected, else it is not
            connected = link is not None and link.booted
            self.view = dataclasses.replace(
                self.view, connected=connected, online=connected if not self.view.docked else self.view.online
            )
        if self.rents is not None:
            rent = await self.rents.current(self.vehicle_id)
            if rent is not None:
                self.view = dataclasses.replace(self.view, rent=rent)
                self._moved_at = rent.moved_at or rent.time_start or time.time()
                await self._announce(self.view)  # the read models learn of the rent from its actor only
                self.tell_self(RentTick())  # what the devices recorded while no actor held the rent
            self.background.start_soon(self._rent_clock)
        elif self.view.connected:
            await self._announce(self.view)
        self._last_used = trio.current_time()
        if self.idle_after < math.inf:
            self.background.start_soon(self._stop_when_idle)

    async def _stop_when_idle(self) -> None:
        while True:
            await trio.sleep_until(self._last_used + self.idle_after)
            if trio.current_time() >= self._last_used + self.idle_after:
                if self.view.rented or self._link is not None:  # its rent's clock or its socket: stay
                    self._last_used = trio.current_time()
                    continue
                logger.debug("vehicle %d: idle, stopping", self.vehicle_id)
                self.ref.stop_nowait()
                return

    async def handle(self, message: VehicleMessage) -> VehicleReply:
        self._last_used = trio.current_time()
        view = self.view
        match message:
            case Snapshot():
                return view
            case ReserveRent(request):
                return await self._reserve(request)
            case UnlockFailed(rent_id, reason):
                rent = view.rent
                if rent is not None and rent.rent_id == rent_id and rent.state is RentState.UNLOCKING:
                    await self._rent_step(self._fail(rent, reason))
                return self.view
            case RentTick():
                await self._rent_step(self._tick())
                return self.view
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
                rent = view.rent
                if rent is not None and rent.state.riding and message.locked_at_ms is not None:
                    returned = Return(message.locked_at_ms, message.station_id, message.spot_number)
                    await self._rent_step(self._end(rent, returned))
                    new = dataclasses.replace(new, rent=self.view.rent)
                elif rent is not None and rent.state.riding:
                    self._rent_wake.set()  # seen docked while riding: the clock looks for a missed `locked`
            case Undocked():
                rent = view.rent
                if (
                    message.unlock_id is not None and rent is not None and rent.state is RentState.UNLOCKING
                    and rent.unlock_id == message.unlock_id
                ):
                    await self._rent_step(self._start(rent))
                    view = self.view
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
            case Attached(link):
                self._link = link
                if not view.connected:
                    return view
                new = self._with_connection(view, False)  # the older socket is gone; this one must boot
            case Detached(link):
                if link is not self._link:
                    return view
                self._link = None
                if not view.connected:
                    return view
                try:
                    await self._change(self._with_connection(view, False))
                except Exception:  # the socket is gone either way; the next start reconciles
                    logger.warning("vehicle %d: recording the disconnection failed", self.vehicle_id, exc_info=True)
                    self.view = self._with_connection(view, False)
                    await self._announce(self.view)
                return self.view
            case Incoming(link, call):
                if link is self._link:
                    await self._device_call(link, call)
                return self.view
            case RentCommand():
                return await self._rent_command(message)
            case SendUnlock(rent_id):
                return self._send_unlock(rent_id)
            case _:
                assert_never(message)
        await self._change(new)
        return self.view

    async def _change(self, new: VehicleView) -> None:
        """Save (its live fields, when they changed), adopt and announce ``new``, unless nothing changed."""
        if new == self.view:
            return
        if dataclasses.replace(new, rent=None) != dataclasses.replace(self.view, rent=None):
            await self.store.save(new)
        self.view = new
        await self._announce(new)

    async def _announce(self, new: VehicleView) -> None:
        for listener in self.listeners:
            try:
                await listener.vehicle_changed(new)
            except Exception:
                logger.exception(
                    "vehicle %d: listener %r failed", self.vehicle_id, listener, extra={"vehicle_id": self.vehicle_id}
                )


    # the vehicle's own socket (free-floating) --------------------------------------------------

    @staticmethod
    def _with_connection(view: VehicleView, connected: bool) -> VehicleView:
        """Connected or not; a module vehicle's ``online`` follows its socket, unless a station holds it."""
        return dataclasses.replace(view, connected=connected, online=view.online if view.docked else connected)

    def _usable_link(self) -> DeviceLink | CommandFailed:
        if self._link is None or not self._link.booted:
            return CommandFailed(Failure.OFFLINE, f"vehicle {self.vehicle_id} is offline")
        return self._link

    async def _device_call(self, link: DeviceLink, call: wire.Call) -> None:
        """A CALL of the module: ``boot`` first; every event recorded once (with the state it leads to)
        before its RESULT; a repeated id answered with the stored RESULT and applied nothing twice; a
        store that fails answers ``InternalError`` (nothing recorded: the vehicle sends it again)."""
        if call.action is wire.Action.BOOT:
            await self._boot(link, call)
            return
        if not link.booted:
            await answer(link, wire.error(call.id, wire.ErrorCode.PROTOCOL_ERROR, "the first CALL must be boot"))
            return
        before = self.view
        new = self._decide(call.payload)
        changed = dataclasses.replace(new, rent=None) != dataclasses.replace(before, rent=None)
        try:
            earlier = await self.store.record(
                self.vehicle_id, call.id, call.action.value, call.payload.model_dump(mode="json"), {},
                new if changed else None,
            )
        except Exception as exc:
            logger.warning("vehicle %d: recording %s %r failed: %r; answered InternalError", self.vehicle_id,
                           call.action.value, call.id, exc, extra={"vehicle_id": self.vehicle_id})
            await answer(link, wire.error(
                call.id, wire.ErrorCode.INTERNAL_ERROR, "the event could not be recorded now; send it again later"
            ))
            return
        if earlier is not None:  # a resend: same answer, nothing applied twice
            await answer(link, wire.result(call.id, earlier))
            return
        if changed:
            self.view = new
            await self._announce(new)
        await self._apply_event(call.payload)
        await answer(link, wire.result(call.id, {}))

    async def _boot(self, link: DeviceLink, call: wire.Call) -> None:
        view = self.view
        try:
            await self._change(self._with_connection(dataclasses.replace(view, has_module=True), True))
        except Exception as exc:
            logger.warning("vehicle %d: boot failed: %r; answered InternalError", self.vehicle_id, exc)
            await answer(link, wire.error(call.id, wire.ErrorCode.INTERNAL_ERROR, "try again later"))
            return
        link.booted = True
        self._sent_limit = 0  # a module that booted has no limit until told
        accepted = wire.BootResult(status=wire.BootStatus.ACCEPTED, heartbeat_interval=self.heartbeat_interval,
                                   server_time=int(time.time() * 1000))
        await answer(link, wire.result(call.id, accepted))
        if self.view.rent is not None:
            self.tell_self(RentTick())  # what it did while away (its resent events follow anyway)
            self._follow_speed_zone()

    def _decide(self, payload: wire.Payload) -> VehicleView:
        """The live state an event of the module leads to (a docked vehicle keeps the station's place)."""
        view = self.view
        position: dict[str, Any] = {}
        if isinstance(payload, (wire.StatusPayload, wire.LockedPayload, wire.AlertPayload)) and not view.docked:
            position = {"latitude": payload.lat, "longitude": payload.lng}
        match payload:
            case wire.StatusPayload():
                return dataclasses.replace(view, battery_level=payload.battery, voltage=payload.voltage,
                                           speed=payload.speed, locked=payload.locked, **position)
            case wire.LockedPayload():
                return dataclasses.replace(view, locked=True, speed=0.0, **position)
            case wire.UnlockedPayload():
                return dataclasses.replace(view, locked=False)
            case _:
                return dataclasses.replace(view, **position)

    async def _apply_event(self, payload: wire.Payload) -> None:
        """What a recorded event does to the rent: an ``unlocked`` echoing the rent's unlock starts it (its
        resume command resumes it); a ``locked`` echoing its pause or end command pauses or ends it; a
        ``status`` while riding moves it (trip timers) and follows the speed zones."""
        rent = self.view.rent
        if rent is None or not rent.free_floating or self.rents is None:
            return
        match payload:
            case wire.UnlockedPayload(unlock=unlock_id) if unlock_id:
                if rent.state is RentState.UNLOCKING and rent.unlock_id == unlock_id:
                    await self._rent_step(self._start(rent))
                elif rent.state is RentState.PAUSED and rent.command is CommandKind.RESUME \
                        and rent.command_id == unlock_id:
                    await self._rent_step(self._resume(rent))
            case wire.LockedPayload(lock=lock_id) if lock_id:
                if rent.state.riding and rent.command_id == lock_id:
                    returned = Return(payload.time, latitude=payload.lat, longitude=payload.lng)
                    await self._rent_step(self._locked(rent, returned))
            case wire.StatusPayload():
                if rent.state is RentState.ONGOING:
                    await self._moving(rent, payload)
                    self._follow_speed_zone()

    async def _moving(self, rent: Rent, status: wire.StatusPayload) -> None:
        """Track the last movement of a riding vehicle: in memory at once, in the book at most every
        ``_MOVED_EVERY`` seconds (the timers' input after a restart; a restart may pause a little early)."""
        here = (status.lat, status.lng)
        last = self._moved_from
        if last is not None and distance_m(*last, *here) < _MOVED_METRES and status.speed < _MOVING_KMH:
            return
        now = time.time()
        self._moved_from = here
        self._moved_at = now
        self._rent_wake.set()
        if self.rents is not None and (rent.moved_at is None or now - rent.moved_at >= _MOVED_EVERY):
            await self._rent_step(self.rents.moved(rent, now))

    def _follow_speed_zone(self) -> None:
        """Tell a rented vehicle the speed limit of where it is, when it changed (0 once the rent is over)."""
        view = self.view
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return
        limit = 0
        rent = view.rent
        if rent is not None and rent.state is RentState.ONGOING and self.zones is not None \
                and view.latitude is not None and view.longitude is not None:
            limit = self.zones.limit_at(rent.network_id, view.latitude, view.longitude)
        if limit != self._sent_limit:
            self._sent_limit = limit
            self.background.start_soon(self._tell_speed_limit, link, limit)

    async def _tell_speed_limit(self, link: DeviceLink, kmh: int) -> None:
        try:
            await link.call(wire.Action.SPEED_LIMIT.value, wire.SpeedLimitPayload(kmh=kmh), self.call_timeout)
        except Exception as exc:  # sent again at the next change or boot
            logger.info("vehicle %d: speed-limit %s not delivered: %r", self.vehicle_id, kmh, exc)
            if self._sent_limit == kmh:
                self._sent_limit = -1

    def _send_unlock(self, rent_id: int) -> PendingCommand | CommandFailed:
        rent = self.view.rent
        if rent is None or rent.rent_id != rent_id or rent.state is not RentState.UNLOCKING or rent.unlock_id is None:
            return CommandFailed(Failure.INVALID, f"rent {rent_id} is not waiting for its unlock")
        return self._command(wire.Action.UNLOCK, wire.UnlockPayload(unlock=rent.unlock_id), rent.unlock_id)

    def _command(self, action: wire.Action, payload: wire.Payload, command_id: int) -> PendingCommand | CommandFailed:
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return link
        pending = PendingCommand(action.value, command_id)
        self.background.start_soon(self._send_command, link, pending, payload)
        return pending

    async def _send_command(self, link: DeviceLink, pending: PendingCommand, payload: wire.Payload) -> None:
        await send_command(link, pending, payload, self.call_timeout, f"vehicle {self.vehicle_id}")

    async def _rent_command(self, command: RentCommand) -> PendingCommand | CommandFailed | RentRefused:
        """A rider's resume, pause or end of the free-floating rent: checked against the rent the actor
        holds, recorded on it (the vehicle's report that echoes the id finishes it), then sent."""
        view = self.view
        rent = view.rent
        if rent is None or rent.user_id != command.user_id or (
            command.trip_id is not None and rent.rent_id != command.trip_id
        ):
            return RentRefused(ErrorCode.NOT_FOUND, f"no trip of yours on vehicle {self.vehicle_id}")
        if not rent.free_floating or view.docked:
            return RentRefused(ErrorCode.WRONG_VEHICLE_KIND, f"vehicle {self.vehicle_id} is docked in a station")
        match command.kind:
            case CommandKind.UNLOCK | CommandKind.RESUME:
                kind, ok = CommandKind.RESUME, rent.state is RentState.PAUSED
            case CommandKind.PAUSE:
                if not rent.rules.allow_pause:
                    return RentRefused(ErrorCode.PAUSE_NOT_ALLOWED, "pausing a trip is not allowed on this network")
                kind, ok = CommandKind.PAUSE, rent.state is RentState.ONGOING and rent.command is not CommandKind.PAUSE
            case CommandKind.END:
                kind, ok = CommandKind.END, rent.state.riding
        if not ok:
            return RentRefused(ErrorCode.RENT_STATE, f"trip {rent.rent_id} is {rent.state.value}")
        link = self._usable_link()
        if isinstance(link, CommandFailed):
            return link
        assert self.rents is not None
        try:
            recorded = await self.rents.command(rent, kind)
        except Exception as exc:
            logger.warning("vehicle %d: recording a %s failed: %r", self.vehicle_id, kind.value, exc)
            return RentRefused(ErrorCode.SERVICE_UNAVAILABLE, "the command could not be recorded; try again shortly")
        await self._adopt(recorded)
        assert recorded.command_id is not None
        if kind is CommandKind.RESUME:
            return self._command(wire.Action.UNLOCK, wire.UnlockPayload(unlock=recorded.command_id),
                                 recorded.command_id)
        return self._command(wire.Action.LOCK, wire.LockPayload(lock=recorded.command_id), recorded.command_id)

    # rents -----------------------------------------------------------------

    async def _reserve(self, request: RentRequest) -> Rent | RentRefused:
        view = self.view
        if self.rents is None:
            return RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {self.vehicle_id} cannot be rented here")
        if view.rent is not None:
            return RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {self.vehicle_id} is rented")
        if request.station_id is not None and (
            view.station_id != request.station_id or view.spot_number != request.spot or not view.online
        ):
            return RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {self.vehicle_id} is not docked there")
        if request.station_id is None and (view.docked or not view.connected):
            return RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {self.vehicle_id} is not connected")
        try:
            outcome = await self.rents.reserve(self.vehicle_id, request)
        except Exception as exc:  # nothing was written: the rider may try again
            logger.warning("vehicle %d: reserving a rent failed: %r", self.vehicle_id, exc)
            return RentRefused(ErrorCode.SERVICE_UNAVAILABLE, "the rent could not be recorded; try again shortly")
        if isinstance(outcome, Rent):
            await self._adopt(outcome)
        return outcome

    async def _rent_step(self, step: Awaitable[Rent | None]) -> None:
        """Run one transition of the book and adopt its outcome; a failing book leaves the rent as it was
        (the clock tries again)."""
        try:
            rent = await step
        except Exception as exc:
            logger.warning("vehicle %d: a rent transition failed: %r; retried", self.vehicle_id, exc)
            self._retry_at = time.time() + self.rent_retry
            self._rent_wake.set()
            return
        self._retry_at = None
        await self._adopt(rent)

    async def _start(self, rent: Rent) -> Rent:
        assert self.rents is not None
        started = await self.rents.start(rent)
        self._moved_at, self._moved_from = time.time(), self._position()
        return started

    async def _resume(self, rent: Rent) -> Rent:
        assert self.rents is not None
        resumed = await self.rents.resume(rent)
        now = time.time()
        self._moved_at, self._moved_from = now, self._position()
        return await self.rents.moved(resumed, now)  # the idle timers count from the resume

    async def _locked(self, rent: Rent, returned: Return) -> Rent | None:
        """The vehicle's ``locked`` of the rent's command: a pause pauses, an end ends."""
        assert self.rents is not None
        if rent.command is CommandKind.PAUSE:
            if rent.state is RentState.PAUSED:
                return rent
            return await self.rents.pause(rent, returned.at_ms)
        await self.rents.end(rent, returned)
        return None

    async def _fail(self, rent: Rent, reason: str) -> None:
        assert self.rents is not None
        await self.rents.fail(rent, reason)

    async def _end(self, rent: Rent, returned: Return) -> None:
        assert self.rents is not None
        await self.rents.end(rent, returned)

    def _position(self) -> tuple[float, float] | None:
        view = self.view
        if view.latitude is None or view.longitude is None:
            return None
        return view.latitude, view.longitude

    async def _tick(self) -> Rent | None:
        """Reconcile the rent with what the devices recorded, and act on its deadlines."""
        rent = self.view.rent
        if rent is None or self.rents is None:
            return None
        if rent.free_floating:
            return await self._free_floating_tick(rent)
        if rent.state is RentState.UNLOCKING:
            if await self.rents.released(rent):
                return await self.rents.start(rent)
            if time.time() >= rent.requested_at + self.unlock_timeout:
                await self.rents.fail(rent, "the vehicle was not released in time")
                return None
            return rent
        if rent.state.riding:
            returned = await self.rents.returned(rent)
            if returned is not None:
                await self.rents.end(rent, returned)
                return None
            too_long_at = rent.too_long_at
            if too_long_at is not None and time.time() >= too_long_at:
                return await self.rents.warn_too_long(rent)
        return rent

    async def _free_floating_tick(self, rent: Rent) -> Rent | None:
        """A free-floating rent: what the module recorded while no actor heard it (its ``unlocked`` or its
        ``locked`` of the rent's command), then the trip timers (``TripRules``) and the too-long warning.

        The timers act in the book, not through the vehicle: a vehicle that is offline still has its rent
        paused or ended on time. A paused or ended rent's vehicle is then sent a ``lock`` (best effort)."""
        assert self.rents is not None
        now = time.time()
        if rent.state is RentState.UNLOCKING or rent.command is not None:
            reported = await self.rents.reported(rent)
            if reported is True:
                return await (self._start(rent) if rent.state is RentState.UNLOCKING else self._resume(rent))
            if isinstance(reported, Return):
                return await self._locked(rent, reported)
        if rent.state is RentState.UNLOCKING:
            if now >= rent.requested_at + self.unlock_timeout:
                await self.rents.fail(rent, "the vehicle was not unlocked in time")
                return None
            return rent
        rules = rent.rules
        here = self._position()
        if rent.state is RentState.PAUSED:
            if rules.max_pause is not None and rent.paused_at is not None and now >= rent.paused_at + rules.max_pause:
                await self.rents.end(rent, self._timer_return(now, EndedBy.MAX_PAUSE, here))
                return None
            return rent
        idle_since = self._idle_since(rent)
        if rules.auto_lock is not None and now >= idle_since + rules.auto_lock and not (
            rules.allow_pause and rules.auto_pause is not None and rules.auto_pause < rules.auto_lock
        ):
            locking = await self.rents.command(rent, CommandKind.END)
            await self.rents.end(locking, self._timer_return(now, EndedBy.AUTO_LOCK, here))
            self._lock_best_effort(locking)
            return None
        if rules.allow_pause and rules.auto_pause is not None and now >= idle_since + rules.auto_pause:
            paused = await self.rents.pause(rent, int(now * 1000))
            locking = await self.rents.command(paused, CommandKind.PAUSE)
            self._lock_best_effort(locking)
            return locking
        too_long_at = rent.too_long_at
        if too_long_at is not None and now >= too_long_at:
            return await self.rents.warn_too_long(rent)
        return rent

    def _idle_since(self, rent: Rent) -> float:
        """When the riding vehicle last moved (as this actor saw it, else as recorded, else the start)."""
        candidates = [t for t in (self._moved_at, rent.moved_at, rent.time_start) if t is not None]
        return max(candidates, default=rent.requested_at)

    @staticmethod
    def _timer_return(now: float, ended_by: EndedBy, here: tuple[float, float] | None) -> Return:
        latitude, longitude = here if here is not None else (None, None)
        return Return(int(now * 1000), latitude=latitude, longitude=longitude, ended_by=ended_by)

    def _lock_best_effort(self, rent: Rent) -> None:
        """Send the rent's recorded ``lock`` to the vehicle if it is connected; its ``locked`` then matches."""
        if rent.command_id is not None:
            self._command(wire.Action.LOCK, wire.LockPayload(lock=rent.command_id), rent.command_id)

    async def _adopt(self, rent: Rent | None) -> None:
        if rent is not None and not rent.state.current:
            rent = None
        if rent != self.view.rent:
            await self._change(dataclasses.replace(self.view, rent=rent))
            if self.view.has_module:
                self._follow_speed_zone()
        self._rent_wake.set()

    def _next_deadline(self) -> float | None:
        rent = self.view.rent
        if rent is None:
            return None
        deadline: float | None
        if rent.state is RentState.UNLOCKING:
            deadline = rent.requested_at + self.unlock_timeout
        else:
            deadlines = [d for d in (rent.too_long_at,) if d is not None]
            if rent.state.riding and self.view.docked and not rent.free_floating:
                deadlines.append(time.time() + self.rent_retry)  # back without a `locked` this actor heard of
            if rent.free_floating:
                deadlines.extend(self._timer_deadlines(rent))
            deadline = min(deadlines, default=None)
        if deadline is not None and self._retry_at is not None:  # the book failed: give it a moment
            deadline = max(deadline, self._retry_at)
        return deadline

    def _timer_deadlines(self, rent: Rent) -> list[float]:
        rules = rent.rules
        if rent.state is RentState.PAUSED:
            if rules.max_pause is not None and rent.paused_at is not None:
                return [rent.paused_at + rules.max_pause]
            return []
        idle_since = self._idle_since(rent)
        found = [idle_since + seconds for seconds in (rules.auto_lock,) if seconds is not None]
        if rules.allow_pause and rules.auto_pause is not None:
            found.append(idle_since + rules.auto_pause)
        return found

    async def _rent_clock(self) -> None:
        """Wakes the actor (``RentTick``) at its rent's next deadline; runs in the background."""
        while True:
            wake = self._rent_wake = trio.Event()
            deadline = self._next_deadline()
            if deadline is None:
                await wake.wait()
                continue
            with trio.move_on_after(max(0.0, deadline - time.time())):
                await wake.wait()
                continue
            self.tell_self(RentTick())
            with trio.move_on_after(self.rent_retry):  # what the tick did wakes the clock; else once more later
                await wake.wait()


VEHICLE = ActorKind[VehicleMessage, VehicleReply]("vehicle")


def vehicle_factory(
    store: VehicleStore, listeners: Sequence[VehicleListener] = (), *, idle_after: float = math.inf,
    rents: RentBook | None = None, unlock_timeout: float = 30.0, links: DeviceLinks | None = None,
    zones: SpeedZones | None = None, heartbeat_interval: int = wire.DEFAULT_HEARTBEAT_INTERVAL,
    call_timeout: float = wire.DEFAULT_CALL_TIMEOUT,
) -> Callable[[str], Vehicle]:
    """The factory to register ``VEHICLE`` with a ``Registry`` (actor ids are vehicle ids).

    ``links``: the vehicle gateway's table of connections (free-floating vehicles); ``zones``: the
    catalog's speed zones."""
    listeners = tuple(listeners)
    return lambda actor_id: Vehicle(
        int(actor_id), store, listeners, idle_after=idle_after, rents=rents, unlock_timeout=unlock_timeout,
        links=links, zones=zones, heartbeat_interval=heartbeat_interval, call_timeout=call_timeout,
    )
