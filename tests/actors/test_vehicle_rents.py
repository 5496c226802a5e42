"""The vehicle actor as the one writer of its rent, without a server.

``MemoryRentBook`` stands for the database (the ``RentBook`` interface handed to
the actor): the only fake here, as ``MemoryVehicleStore`` is for the vehicle's row.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from actors import ActorRef, ActorSpec, Supervisor
from actors.rent import CommandKind, Rent, RentRefused, RentRequest, RentState, Return, TripRules, Via
from actors.vehicle import RentTick, ReserveRent, Snapshot, Undocked, UnlockFailed, Vehicle, VehicleView
from protocols.errors import ErrorCode
from tests.actors.test_vehicle import DOCKED, MemoryVehicleStore, RecordingListener, VehicleRef
from tests.support import eventually


class MemoryRentBook:
    def __init__(self) -> None:
        self.rents: dict[int, Rent] = {}
        self.ids = itertools.count(1)
        self.unlock_ids = itertools.count(500)
        self.journal: list[str] = []
        self.recorded_unlocked: set[int] = set()  # unlock ids a station reported
        self.recorded_return: Return | None = None
        self.down = False
        self.max_rents = 1
        self.reports: dict[int, Return | bool] = {}
        self.rules = TripRules()

    def _check(self) -> None:
        if self.down:
            raise ConnectionRefusedError("database down")

    async def current(self, vehicle_id: int) -> Rent | None:
        await trio.lowlevel.checkpoint()
        self._check()
        return next((r for r in self.rents.values() if r.vehicle_id == vehicle_id and r.state.current), None)

    async def reserve(self, vehicle_id: int, request: RentRequest) -> Rent | RentRefused:
        await trio.lowlevel.checkpoint()
        self._check()
        mine = [r for r in self.rents.values() if r.user_id == request.user_id and r.state.current]
        if len(mine) >= self.max_rents:
            return RentRefused(ErrorCode.TOO_MANY_RENTS, "too many")
        rent = Rent(next(self.ids), request.user_id, vehicle_id, request.network_id, RentState.UNLOCKING,
                    time.time(), next(self.unlock_ids), request.station_id, request.spot, too_long_after=None,
                    free_floating=request.station_id is None, rules=self.rules)
        self.rents[rent.rent_id] = rent
        self.journal.append(f"reserve {rent.rent_id}")
        return rent

    def _put(self, rent: Rent, what: str) -> Rent:
        self.rents[rent.rent_id] = rent
        self.journal.append(f"{what} {rent.rent_id}")
        return rent

    async def start(self, rent: Rent) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        return self._put(dataclasses.replace(rent, state=RentState.ONGOING, time_start=time.time()), "start")

    async def fail(self, rent: Rent, reason: str) -> None:
        await trio.lowlevel.checkpoint()
        self._check()
        self._put(dataclasses.replace(rent, state=RentState.FAILED), "fail")

    async def end(self, rent: Rent, returned: Return) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        where = returned.station_id if returned.station_id is not None else returned.ended_by.value
        return self._put(dataclasses.replace(rent, state=RentState.ENDED), f"end@{where}")

    async def released(self, rent: Rent) -> bool:
        await trio.lowlevel.checkpoint()
        self._check()
        return rent.unlock_id in self.recorded_unlocked

    async def returned(self, rent: Rent) -> Return | None:
        await trio.lowlevel.checkpoint()
        self._check()
        return self.recorded_return

    async def warn_too_long(self, rent: Rent) -> Rent:
        await trio.lowlevel.checkpoint()
        return self._put(dataclasses.replace(rent, too_long_warned=True), "warn")

    # free-floating: what the vehicle recorded is ``reports`` (command id -> True or a Return) -------------

    async def command(self, rent: Rent, kind: CommandKind) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        return self._put(dataclasses.replace(rent, command=kind, command_id=next(self.unlock_ids),
                                             command_at=time.time()), f"command {kind.value}")

    async def pause(self, rent: Rent, at_ms: int) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        return self._put(dataclasses.replace(rent, state=RentState.PAUSED, paused_at=at_ms / 1000, command=None,
                                             command_id=None), "pause")

    async def resume(self, rent: Rent) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        return self._put(dataclasses.replace(rent, state=RentState.ONGOING, paused_at=None, command=None,
                                             command_id=None), "resume")

    async def moved(self, rent: Rent, at: float) -> Rent:
        await trio.lowlevel.checkpoint()
        self._check()
        self.rents[rent.rent_id] = moved = dataclasses.replace(rent, moved_at=at)
        return moved

    async def reported(self, rent: Rent) -> Return | bool:
        await trio.lowlevel.checkpoint()
        self._check()
        key = rent.unlock_id if rent.state is RentState.UNLOCKING else rent.command_id
        return self.reports.get(key or 0, False)


@asynccontextmanager
async def rentable(book: MemoryRentBook, *listeners: RecordingListener, unlock_timeout: float = 30.0,
                   store: MemoryVehicleStore | None = None) -> AsyncIterator[VehicleRef]:
    store = store or MemoryVehicleStore()

    def factory() -> Vehicle:
        return Vehicle(1042, store, listeners, rents=book, unlock_timeout=unlock_timeout, rent_retry=0.05)

    spec = ActorSpec("vehicle:1042", factory, kind="vehicle")
    async with Supervisor("vehicles", [spec]).running() as sup:
        ref = sup.child(spec.child_id)
        assert isinstance(ref, ActorRef)
        yield ref


def asked(user: int = 1) -> ReserveRent:
    return ReserveRent(RentRequest(user, network_id=3, via=Via.APP, station_id=7, spot=3))


async def view_of(ref: VehicleRef) -> VehicleView:
    view = await ref.ask(Snapshot())
    assert isinstance(view, VehicleView)
    return view


async def test_one_vehicle_one_rent_and_the_second_rider_is_refused() -> None:
    book = MemoryRentBook()
    async with rentable(book) as ref:
        await ref.ask(DOCKED)
        first = await ref.ask(asked(1))
        second = await ref.ask(asked(2))
    assert isinstance(first, Rent) and first.state is RentState.UNLOCKING
    assert second == RentRefused(ErrorCode.VEHICLE_NOT_AVAILABLE, "vehicle 1042 is rented")
    assert book.journal == ["reserve 1"]


async def test_a_vehicle_not_where_the_rider_was_told_is_not_reserved() -> None:
    book = MemoryRentBook()
    async with rentable(book) as ref:
        await ref.ask(dataclasses.replace(DOCKED, spot_number=4))
        refused = await ref.ask(asked())
        await ref.ask(dataclasses.replace(DOCKED, station_online=False))
        offline = await ref.ask(asked())
    assert isinstance(refused, RentRefused) and refused.code is ErrorCode.VEHICLE_NOT_AVAILABLE
    assert isinstance(offline, RentRefused) and offline.code is ErrorCode.VEHICLE_NOT_AVAILABLE
    assert book.journal == []


async def test_the_unlocked_of_its_command_starts_it_and_a_return_ends_it_once() -> None:
    book = MemoryRentBook()
    listener = RecordingListener()
    async with rentable(book, listener) as ref:
        await ref.ask(DOCKED)
        rent = await ref.ask(asked())
        assert isinstance(rent, Rent)
        await ref.ask(Undocked(7, unlock_id=999))  # another command's: not this rent's start
        assert (await view_of(ref)).rent == rent
        await ref.ask(Undocked(7, unlock_id=rent.unlock_id))
        riding = await view_of(ref)
        assert riding.rent is not None and riding.rent.state is RentState.ONGOING and not riding.docked
        back = dataclasses.replace(DOCKED, station_id=8, locked_at_ms=1_700_000_000_000)
        await ref.ask(back)
        await ref.ask(back)  # a second report of the return ends nothing twice
        done = await view_of(ref)
    assert done.rent is None and done.station_id == 8
    assert book.journal == ["reserve 1", "start 1", "end@8 1"]
    assert [v.rent.state if v.rent else None for v in listener.views if v.rent or v.station_id == 8][-1] is None


async def test_a_refused_command_fails_the_rent_and_the_vehicle_is_free_again() -> None:
    book = MemoryRentBook()
    async with rentable(book) as ref:
        await ref.ask(DOCKED)
        rent = await ref.ask(asked())
        assert isinstance(rent, Rent)
        await ref.ask(UnlockFailed(rent.rent_id, "refused"))
        assert (await view_of(ref)).rent is None
        again = await ref.ask(asked(2))
    assert isinstance(again, Rent)
    assert book.journal == ["reserve 1", "fail 1", "reserve 2"]


async def test_an_unlock_never_reported_fails_on_the_clock_unless_a_station_recorded_it() -> None:
    book = MemoryRentBook()
    async with rentable(book, unlock_timeout=0.1) as ref:
        await ref.ask(DOCKED)
        await ref.ask(asked())
        await eventually(lambda: book.journal[-1:] == ["fail 1"])
        assert (await view_of(ref)).rent is None
        # The next one: its `unlocked` was recorded by a station while this actor did not hear of it.
        second = await ref.ask(asked(2))
        assert isinstance(second, Rent) and second.unlock_id is not None
        book.recorded_unlocked.add(second.unlock_id)
        await ref.ask(RentTick())
        view = await view_of(ref)
    assert view.rent is not None and view.rent.state is RentState.ONGOING
    assert book.journal == ["reserve 1", "fail 1", "reserve 2", "start 2"]


async def test_a_book_that_fails_refuses_with_48_and_changes_nothing() -> None:
    book = MemoryRentBook()
    async with rentable(book) as ref:
        await ref.ask(DOCKED)
        book.down = True
        refused = await ref.ask(asked())
        book.down = False
        view = await view_of(ref)
        rent = await ref.ask(asked())
    assert isinstance(refused, RentRefused) and refused.code is ErrorCode.SERVICE_UNAVAILABLE
    assert view.rent is None and isinstance(rent, Rent)


async def test_a_restarted_actor_holds_its_rent_and_finds_the_return_it_missed() -> None:
    book = MemoryRentBook()
    store = MemoryVehicleStore()
    ongoing = Rent(41, 1, 1042, 3, RentState.ONGOING, time.time(), 500, 7, 3, time_start=time.time())
    book.rents[41] = ongoing
    listener = RecordingListener()
    async with rentable(book, listener, store=store) as ref:
        view = await view_of(ref)
        assert view.rent == ongoing and listener.views[0].rent == ongoing  # the read model is told at start
    # A return recorded while no actor was there: the next start ends the rent.
    book.recorded_return = Return(1_700_000_000_000, 8, 2)
    async with rentable(book, store=store) as ref:
        await eventually(lambda: book.journal[-1:] == ["end@8 41"])
        assert (await view_of(ref)).rent is None


async def test_a_book_down_at_the_unlock_deadline_is_asked_again_until_the_rent_fails() -> None:
    book = MemoryRentBook()
    async with rentable(book, unlock_timeout=0.1) as ref:
        await ref.ask(DOCKED)
        rent = await ref.ask(asked())
        assert isinstance(rent, Rent)
        book.down = True  # the deadline passes while the database is away: the rent stays as it was
        await trio.sleep(0.3)
        assert (await view_of(ref)).rent == rent
        book.down = False
        await eventually(lambda: book.journal[-1:] == ["fail 1"])
        assert (await view_of(ref)).rent is None
