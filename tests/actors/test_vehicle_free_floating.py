"""The vehicle actor of a free-floating vehicle, fed by its own socket, without a server.

``MemoryLink`` stands for the gateway's connection (the ``DeviceLink`` handed to
the actor): it keeps what the actor answered and the CALLs it sent, and answers
those CALLs as a vehicle's module would. The book and the store are the memory
ones of the other actor tests. The socket and the database over real sockets are
in tests/test_free_floating_rents.py and tests/test_vehicle_gateway.py.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

from actors import ActorRef, ActorSpec, Supervisor
from actors.link import Attached, CommandFailed, Detached, Incoming, PendingCommand
from actors.rent import CommandKind, EndedBy, Rent, RentRefused, RentRequest, RentState, Return, TripRules, Via
from actors.vehicle import (
    RentCommand,
    RentTick,
    ReserveRent,
    SendUnlock,
    Snapshot,
    Vehicle,
    VehicleRecord,
    VehicleView,
)
from protocols import vehicle as wire
from protocols.errors import ErrorCode
from tests.actors.test_vehicle import MemoryVehicleStore, VehicleRef
from tests.actors.test_vehicle_rents import MemoryRentBook
from tests.support import eventually

VEHICLE_ID = 77
HOME = (48.5734, 7.7521)


class MemoryLink:
    """A vehicle's connection: answers (RESULT/ERROR) in ``answers``; the backend's CALLs in ``calls``."""

    def __init__(self) -> None:
        self.booted = False
        self.answers: list[list[Any]] = []
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.reply: dict[str, Any] = {"status": "accepted"}
        self.closed = False

    async def send(self, text: str) -> None:
        await trio.lowlevel.checkpoint()
        self.answers.append(json.loads(text))

    async def call(self, action: str, payload: wire.Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        await trio.lowlevel.checkpoint()
        self.calls.append((action, payload.model_dump(mode="json")))
        return self.reply if action in ("unlock", "lock") else {}

    async def close(self, code: int, reason: str) -> None:
        self.closed = True

    def sent(self, action: str) -> list[dict[str, Any]]:
        return [payload for name, payload in self.calls if name == action]


class Links:
    def __init__(self) -> None:
        self.links: dict[int, MemoryLink] = {}

    def current(self, device_id: int) -> MemoryLink | None:
        return self.links.get(device_id)


class Zones:
    """One speed zone of 10 km/h: a box north of ``HOME``."""

    def limit_at(self, network_id: int, latitude: float, longitude: float) -> int:
        return 10 if latitude > HOME[0] + 0.001 else 0


_ids = itertools.count(1)


def frame(action: str, **payload: Any) -> wire.Call:
    text = json.dumps([2, f"m{next(_ids)}", action, payload])
    parsed = wire.parse_frame(text)
    assert isinstance(parsed, wire.Call)
    return parsed


def status(lat: float = HOME[0], lng: float = HOME[1], *, speed: float = 0.0, locked: bool = True) -> wire.Call:
    return frame("status", lat=lat, lng=lng, battery=80, voltage=41000, speed=speed, locked=locked,
                 time=int(time.time() * 1000))


class World:
    def __init__(self, rules: TripRules | None = None) -> None:
        self.store = MemoryVehicleStore({VEHICLE_ID: VehicleRecord(has_module=True, avg_max_range=30)})
        self.book = MemoryRentBook()
        self.book.rules = rules or TripRules()
        self.links = Links()
        self.link = MemoryLink()
        self.links.links[VEHICLE_ID] = self.link

    def factory(self) -> Vehicle:
        return Vehicle(VEHICLE_ID, self.store, rents=self.book, links=self.links, zones=Zones(),
                       unlock_timeout=2.0, rent_retry=0.05, call_timeout=1.0)


@asynccontextmanager
async def running(world: World) -> AsyncIterator[VehicleRef]:
    spec = ActorSpec(f"vehicle:{VEHICLE_ID}", world.factory, kind="vehicle")
    async with Supervisor("vehicles", [spec]).running() as sup:
        ref = sup.child(spec.child_id)
        assert isinstance(ref, ActorRef)
        yield ref


async def view_of(ref: VehicleRef) -> VehicleView:
    view = await ref.ask(Snapshot())
    assert isinstance(view, VehicleView)
    return view


async def say(ref: VehicleRef, link: MemoryLink, call: wire.Call) -> list[Any]:
    """The vehicle sends ``call``; the actor's answer to it."""
    await ref.ask(Incoming(link, call))
    answer = link.answers[-1]
    assert answer[1] == call.id
    return answer


async def booted(ref: VehicleRef, world: World) -> None:
    await ref.ask(Attached(world.link))
    answer = await say(ref, world.link, frame("boot", firmware_version="1.2", model="G30"))
    assert answer[0] == 3 and answer[2]["status"] == "accepted"
    await say(ref, world.link, status())


async def riding(ref: VehicleRef, world: World, user: int = 5) -> Rent:
    """A started free-floating rent of ``user``: reserved, unlocked, and the vehicle's `unlocked`."""
    rent = await ref.ask(ReserveRent(RentRequest(user, network_id=3, via=Via.APP)))
    assert isinstance(rent, Rent) and rent.free_floating
    pending = await ref.ask(SendUnlock(rent.rent_id))
    assert isinstance(pending, PendingCommand)
    assert await pending.wait() == {"status": "accepted"}
    assert world.link.sent("unlock") == [{"unlock": rent.unlock_id}]
    await say(ref, world.link, frame("unlocked", unlock=rent.unlock_id, time=int(time.time() * 1000)))
    current = (await view_of(ref)).rent
    assert current is not None and current.state is RentState.ONGOING
    return current


async def command(ref: VehicleRef, kind: CommandKind, user: int = 5, trip_id: int | None = None) -> int:
    """A rider's command, accepted by the vehicle: the id it was sent with."""
    pending = await ref.ask(RentCommand(user, kind, trip_id))
    assert isinstance(pending, PendingCommand), pending
    assert await pending.wait() == {"status": "accepted"}
    assert pending.unlock_id is not None
    return pending.unlock_id


# the socket ------------------------------------------------------------------------------------------


async def test_nothing_before_boot_then_status_moves_the_vehicle_recorded_once() -> None:
    world = World()
    async with running(world) as ref:
        await ref.ask(Attached(world.link))
        early = await say(ref, world.link, status())
        assert early[0] == 4 and early[2] == "ProtocolError"
        assert world.store.messages == {}
        await say(ref, world.link, frame("boot", firmware_version="1.2", model="G30"))
        assert world.link.booted
        view = await view_of(ref)
        assert (view.connected, view.online, view.latitude) == (True, True, None)

        moved = status(48.58, 7.75, speed=12.5, locked=False)
        assert await say(ref, world.link, moved) == [3, moved.id, {}]
        view = await view_of(ref)
        assert (view.latitude, view.longitude, view.speed, view.locked, view.battery_level) == (
            48.58, 7.75, 12.5, False, 80)
        assert view.free_floating

        # The same id again (the vehicle missed the RESULT): the stored RESULT, nothing applied twice.
        saves = len(world.store.saved)
        assert await say(ref, world.link, moved) == [3, moved.id, {}]
        assert len(world.store.saved) == saves
        assert sum(1 for key in world.store.messages if key[1] == moved.id) == 1


async def test_a_store_that_fails_answers_internal_error_and_the_event_is_taken_later() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        world.store.fail_next_save = True
        moved = status(48.59, 7.76)
        answer = await say(ref, world.link, moved)
        assert answer[0] == 4 and answer[2] == "InternalError"
        assert (await view_of(ref)).latitude == HOME[0]
        assert await say(ref, world.link, moved) == [3, moved.id, {}]
        assert (await view_of(ref)).latitude == 48.59


async def test_an_old_socket_is_ignored_and_a_detached_one_makes_the_vehicle_offline() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        old = world.link
        new = MemoryLink()
        world.links.links[VEHICLE_ID] = new
        await ref.ask(Attached(new))
        assert not (await view_of(ref)).connected  # until the new socket boots
        await ref.ask(Incoming(old, status(48.6, 7.7)))
        assert old.answers[-1][0] == 3 and (await view_of(ref)).latitude == HOME[0]  # from before: unanswered
        await ref.ask(Detached(old))  # the replaced socket's end changes nothing
        await say(ref, new, frame("boot", firmware_version="1", model="m"))
        assert (await view_of(ref)).connected
        await ref.ask(Detached(new))
        view = await view_of(ref)
        assert (view.connected, view.online) == (False, False)
        refused = await ref.ask(ReserveRent(RentRequest(5, network_id=3, via=Via.APP)))
        assert isinstance(refused, RentRefused) and refused.code is ErrorCode.VEHICLE_NOT_AVAILABLE


# rents ------------------------------------------------------------------------------------------------


async def test_unlock_ride_and_lock_end_the_rent_at_the_vehicles_position() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        assert world.book.journal == [f"reserve {rent.rent_id}", f"start {rent.rent_id}"]

        refused = await ref.ask(RentCommand(6, CommandKind.END))  # another rider
        assert isinstance(refused, RentRefused) and refused.code is ErrorCode.NOT_FOUND
        lock_id = await command(ref, CommandKind.END)
        assert world.link.sent("lock") == [{"lock": lock_id}]
        assert (await view_of(ref)).rent is not None  # ends on the vehicle's `locked`, not on its RESULT

        locked = frame("locked", lat=48.575, lng=7.753, time=int(time.time() * 1000), lock=lock_id)
        await say(ref, world.link, locked)
        assert (await view_of(ref)).rent is None
        assert world.book.journal[-1] == f"end@rider {rent.rent_id}"
        await say(ref, world.link, locked)  # resent: applied once
        assert world.book.journal[-1] == f"end@rider {rent.rent_id}"
        assert sum(1 for line in world.book.journal if line.startswith("end")) == 1


async def test_pause_then_resume_by_the_vehicles_reports() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        lock_id = await command(ref, CommandKind.PAUSE)
        again = await ref.ask(RentCommand(5, CommandKind.PAUSE))  # a pause on its way: not twice
        assert isinstance(again, RentRefused) and again.code is ErrorCode.RENT_STATE
        await say(ref, world.link, frame("locked", lat=HOME[0], lng=HOME[1], time=int(time.time() * 1000),
                                         lock=lock_id))
        paused = (await view_of(ref)).rent
        assert paused is not None and paused.state is RentState.PAUSED

        unlock_id = await command(ref, CommandKind.UNLOCK, trip_id=rent.rent_id)
        assert world.link.sent("unlock")[-1] == {"unlock": unlock_id}
        await say(ref, world.link, frame("unlocked", unlock=unlock_id, time=int(time.time() * 1000)))
        resumed = (await view_of(ref)).rent
        assert resumed is not None and resumed.state is RentState.ONGOING
        not_paused = await ref.ask(RentCommand(5, CommandKind.UNLOCK, rent.rent_id))
        assert isinstance(not_paused, RentRefused) and not_paused.code is ErrorCode.RENT_STATE


async def test_a_network_without_holds_refuses_a_pause() -> None:
    world = World(TripRules(allow_pause=False))
    async with running(world) as ref:
        await booted(ref, world)
        await riding(ref, world)
        refused = await ref.ask(RentCommand(5, CommandKind.PAUSE))
        assert isinstance(refused, RentRefused) and refused.code is ErrorCode.PAUSE_NOT_ALLOWED


async def test_an_offline_vehicle_refuses_commands_and_a_rejected_unlock_is_a_failure() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        world.link.reply = {"status": "rejected"}
        rent = await ref.ask(ReserveRent(RentRequest(5, network_id=3, via=Via.APP)))
        assert isinstance(rent, Rent)
        pending = await ref.ask(SendUnlock(rent.rent_id))
        assert isinstance(pending, PendingCommand)
        outcome = await pending.wait()
        assert isinstance(outcome, CommandFailed) and outcome.failure.value == "rejected"
        await ref.ask(Detached(world.link))
        offline = await ref.ask(SendUnlock(rent.rent_id))
        assert isinstance(offline, CommandFailed) and offline.failure.value == "offline"


async def test_an_unlock_without_unlocked_fails_after_the_timeout() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        rent = await ref.ask(ReserveRent(RentRequest(5, network_id=3, via=Via.APP)))
        assert isinstance(rent, Rent)
        await eventually(lambda: world.book.journal[-1] == f"fail {rent.rent_id}", timeout=10)
        assert (await view_of(ref)).rent is None


async def test_a_report_recorded_while_no_actor_held_the_rent_is_reconciled() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        lock_id = await command(ref, CommandKind.END)
        # The vehicle's `locked` was recorded, but the end failed (the book was away) ...
        world.book.reports[lock_id] = Return(int(time.time() * 1000), latitude=48.5, longitude=7.7)
        # ... the clock reconciles it on its next tick (here: a restart-like tick).
        await ref.ask(RentTick())
        assert (await view_of(ref)).rent is None
        assert world.book.journal[-1] == f"end@rider {rent.rent_id}"


# trip timers and speed zones ---------------------------------------------------------------------------


async def test_auto_pause_then_max_pause_ends_the_rent() -> None:
    world = World(TripRules(auto_pause=1, max_pause=1))
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        await eventually(lambda: f"pause {rent.rent_id}" in world.book.journal, timeout=10)
        assert world.link.sent("lock")  # the vehicle is told to lock, best effort
        await eventually(lambda: world.book.journal[-1] == f"end@{EndedBy.MAX_PAUSE.value} {rent.rent_id}",
                         timeout=10)
        assert (await view_of(ref)).rent is None


async def test_moving_keeps_auto_pause_away_and_auto_lock_ends_an_idle_rent() -> None:
    world = World(TripRules(allow_pause=False, auto_lock=2))
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        lat = HOME[0]
        for _ in range(6):  # riding for 3 s: 30 m every half second
            lat += 0.0003
            await say(ref, world.link, status(lat, HOME[1], speed=15, locked=False))
            await trio.sleep(0.5)
            assert not any(line.startswith("end") for line in world.book.journal)
        await eventually(lambda: world.book.journal[-1] == f"end@{EndedBy.AUTO_LOCK.value} {rent.rent_id}",
                         timeout=10)


async def test_a_rented_vehicle_is_told_the_speed_limit_entering_and_leaving_a_zone() -> None:
    world = World()
    async with running(world) as ref:
        await booted(ref, world)
        await say(ref, world.link, status(HOME[0] + 0.002, HOME[1]))
        assert world.link.sent("speed-limit") == []  # not rented: no limit
        await riding(ref, world)
        await eventually(lambda: world.link.sent("speed-limit") == [{"kmh": 10}])
        await say(ref, world.link, status(HOME[0] + 0.003, HOME[1], speed=9, locked=False))
        assert world.link.sent("speed-limit") == [{"kmh": 10}]  # still inside: not again
        await say(ref, world.link, status(HOME[0], HOME[1], speed=9, locked=False))
        await eventually(lambda: world.link.sent("speed-limit") == [{"kmh": 10}, {"kmh": 0}])


async def test_a_restarted_actor_keeps_the_paused_rent_and_its_timer() -> None:
    world = World(TripRules(max_pause=2))
    async with running(world) as ref:
        await booted(ref, world)
        rent = await riding(ref, world)
        lock_id = await command(ref, CommandKind.PAUSE)
        await say(ref, world.link, frame("locked", lat=HOME[0], lng=HOME[1], time=int(time.time() * 1000),
                                         lock=lock_id))
    # The actor (the server) is gone; the socket too. A new actor rebuilds the paused rent from the book.
    world.link = MemoryLink()
    world.links.links.clear()
    async with running(world) as ref:
        view = await view_of(ref)
        assert view.rent is not None and view.rent.state is RentState.PAUSED and not view.connected
        await eventually(lambda: world.book.journal[-1] == f"end@{EndedBy.MAX_PAUSE.value} {rent.rent_id}",
                         timeout=10)
