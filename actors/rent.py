"""A rent as its vehicle's actor holds it: the value, its states, and the rent book it is written to.

A rent belongs to its vehicle (DESIGN.md, "Rents"): the vehicle's actor is the
one writer of the vehicle's current rent, so two riders can never hold one
vehicle, and every transition of a rent is decided in one place, one message
at a time. The states::

    unlocking --> ongoing <--> paused --> ended
        |
        +-------> failed

- ``unlocking``: reserved for the rider, the unlock command is on its way to the
  station (docked) or the vehicle (free-floating). The rent waits for the
  device's report that the vehicle is out (``unlocked`` with the command's
  ``unlock`` id); without it within the unlock timeout it fails and the
  vehicle is available again.
- ``ongoing`` (``paused`` for free-floating pauses): riding, billed from
  ``time_start``.
- ``ended``: returned (a ``locked`` of the vehicle in a spot of a station of the
  rent's network; free-floating: locked where allowed); priced once.
- ``failed``: the unlock never happened.

Durability is the book's (``RentBook``): each transition is written with its
feed event(s) on the rider's ``user`` topic in one transaction before the
actor adopts it. The actor keeps only the current rent in memory and rebuilds
it from the book when it starts, reconciling what the stations recorded
meanwhile (``released``/``returned``), so a restart of the actor or of the
server in the middle of a rent loses nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from protocols.errors import ErrorCode


class RentState(StrEnum):
    UNLOCKING = "unlocking"
    ONGOING = "ongoing"
    PAUSED = "paused"
    ENDED = "ended"
    FAILED = "failed"

    @property
    def current(self) -> bool:
        """The vehicle is held by this rent (nobody else may rent it)."""
        return self in (RentState.UNLOCKING, RentState.ONGOING, RentState.PAUSED)

    @property
    def riding(self) -> bool:
        """Started and not over: a return ends it."""
        return self in (RentState.ONGOING, RentState.PAUSED)


class Via(StrEnum):
    APP = "app"
    BADGE = "badge"


class CommandKind(StrEnum):
    """What a command sent to a free-floating vehicle for its rent is for.

    ``unlock`` starts the rent (its id is the rent's ``unlock_id``); the others are
    recorded on the rent (``Rent.command``, ``command_id``) until the vehicle's
    report that echoes the id: ``unlocked`` resumes a paused rent, ``locked``
    pauses it (``pause``) or ends it (``end``)."""

    UNLOCK = "unlock"
    RESUME = "resume"
    PAUSE = "pause"
    END = "end"


class EndedBy(StrEnum):
    """Who ended a rent: the rider (a lock, a return at a station), or a trip timer."""

    RIDER = "rider"
    STATION = "station"
    AUTO_LOCK = "auto_lock"
    MAX_PAUSE = "max_pause"


@dataclass(frozen=True, slots=True)
class TripRules:
    """The network's trip timers (spec row 66), seconds; ``None``: never.

    - ``auto_pause``: an ongoing free-floating rent whose vehicle has not moved for that long is paused;
    - ``max_pause``: a pause that lasts that long ends the rent;
    - ``auto_lock``: an ongoing free-floating rent whose vehicle has not moved for that long is ended
      (it matters where pauses are not allowed, or when ``auto_pause`` is longer)."""

    allow_pause: bool = True
    auto_pause: int | None = None
    max_pause: int | None = None
    auto_lock: int | None = None


@dataclass(frozen=True, slots=True)
class Rent:
    """A rent at one moment; an immutable value. Times are Unix epoch seconds (floats)."""

    rent_id: int
    user_id: int
    vehicle_id: int
    network_id: int
    state: RentState
    requested_at: float
    unlock_id: int | None = None  # the unlock command's id, echoed by the device's `unlocked`
    station_id: int | None = None  # where a docked rent started
    spot: int | None = None
    time_start: float | None = None
    too_long_after: int | None = None  # seconds (the network's trip_too_long); None: never warned
    too_long_warned: bool = False
    free_floating: bool = False  # the vehicle's own module unlocks and locks it (vehicle-protocol.md)
    rules: TripRules = TripRules()  # the network's trip timers, read with the rent
    paused_at: float | None = None  # on hold since (state paused)
    moved_at: float | None = None  # last movement seen while riding, as recorded (None: time_start)
    command: CommandKind | None = None  # a resume, pause or end sent to the vehicle, waiting for its report
    command_id: int | None = None
    command_at: float | None = None

    @property
    def too_long_at(self) -> float | None:
        """When the rider is warned that the trip is long (once), if it still has to be."""
        if self.state is not RentState.ONGOING or self.too_long_warned or self.too_long_after is None:
            return None
        assert self.time_start is not None
        return self.time_start + self.too_long_after


@dataclass(frozen=True, slots=True)
class RentRequest:
    """What a rider asks of a vehicle, checked by the rent service before it reaches the actor; the
    network's rules (maximum of rents, guarantee) are read by the book in the reserving transaction."""

    user_id: int
    network_id: int
    via: Via
    station_id: int | None = None  # docked: where the vehicle is expected
    spot: int | None = None


@dataclass(frozen=True, slots=True)
class RentRefused:
    """Why a rent could not be reserved: an API error code (30 not available, 32 too many, 33 guarantee)."""

    code: ErrorCode
    message: str


@dataclass(frozen=True, slots=True)
class Return:
    """A recorded end of the ride: the device's `locked` time (ms) and where (a station's spot, or a
    free-floating vehicle's position), and who ended it."""

    at_ms: int
    station_id: int | None = None
    spot: int | None = None
    latitude: float | None = None
    longitude: float | None = None
    ended_by: EndedBy = EndedBy.RIDER


class RentBook(Protocol):
    """The durable side of rents. Every write is one transaction with its rider's feed events."""

    async def current(self, vehicle_id: int) -> Rent | None:
        """The vehicle's rent in a current state (at most one)."""
        ...

    async def reserve(self, vehicle_id: int, request: RentRequest) -> Rent | RentRefused:
        """A new ``unlocking`` rent with a fresh unlock id, unless the rider is at the network's maximum
        (counted under a lock of the rider) or must hold a guarantee."""
        ...

    async def start(self, rent: Rent) -> Rent:
        """unlocking -> ongoing, from now (``rent.started``, ``vehicle.unlocked``)."""
        ...

    async def fail(self, rent: Rent, reason: str) -> None:
        """unlocking -> failed (``unlock.failed``)."""
        ...

    async def end(self, rent: Rent, returned: Return) -> Rent:
        """ongoing/paused -> ended at the return's time, priced (``vehicle.locked``, ``rent.ended``)."""
        ...

    async def released(self, rent: Rent) -> bool:
        """Has a station recorded the ``unlocked`` of this rent's unlock id? (reconciliation)"""
        ...

    async def returned(self, rent: Rent) -> Return | None:
        """A ``locked`` of the vehicle recorded since the rent started and accepted, if any (reconciliation)."""
        ...

    async def warn_too_long(self, rent: Rent) -> Rent:
        """Mark the rent warned and push ``rent.too_long`` to the rider."""
        ...

    # free-floating -------------------------------------------------------------------------

    async def command(self, rent: Rent, kind: CommandKind) -> Rent:
        """Record a resume, pause or end command with a fresh id on the rent (replacing any earlier one),
        before it is sent: the vehicle's report that echoes the id finishes it, even after a restart."""
        ...

    async def pause(self, rent: Rent, at_ms: int) -> Rent:
        """ongoing -> paused, on hold from ``at_ms`` (``rent.paused``); clears the command."""
        ...

    async def resume(self, rent: Rent) -> Rent:
        """paused -> ongoing from now (``rent.resumed``); clears the command."""
        ...

    async def moved(self, rent: Rent, at: float) -> Rent:
        """Record the last movement of a riding vehicle (the trip timers' input after a restart)."""
        ...

    async def reported(self, rent: Rent) -> Return | bool:
        """Reconciliation of a free-floating rent: what the vehicle recorded for the rent's pending unlock
        or command while no actor heard it. ``True``: its ``unlocked`` (start, resume); a ``Return``:
        its ``locked`` (pause, end; ``at_ms`` and the position); ``False``: nothing yet."""
        ...
