"""Free-floating rents (issue 10): the rent book on the real database, the routes' refusals over the real
server, and a rider's whole rent over a real vehicle socket.

The book is driven here as the vehicle actors drive it (``PgRentBook``, the server's own instance): reserve,
start, a command recorded before it is sent, pause, resume, end at a position; the rider's feed shows every
transition in order. Reconciliation reads the vehicle's messages as the gateway records them
(``vehicle_messages``: the CALL's action and its payload as JSON).

The routes' refusals that need no vehicle socket are checked in the contract's order; where a check needs the
vehicle's position, the vehicle's actor is told it (``Positioned``, what a ``status`` report does), and a
command that passes every check then meets a vehicle with no socket: 503 code 50.

Over real sockets, the vehicle is the simulator's (``SimulatedVehicle``: it accepts ``unlock`` and ``lock`` and
reports ``unlocked`` / ``locked`` with the command's id and its position) or, where the vehicle must refuse or
stay silent, a raw socket (``tests/vehicle_peer.py``). The trip timers, speed zones, a cut connection and a
restart are ``test_free_floating_trips.py``'s.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio

from actors.rent import CommandKind, EndedBy, Rent, RentRequest, RentState, Return, Via
from actors.vehicle import VEHICLE, Positioned
from knot_rt.config import Settings
from knot_rt.simulator.vehicle import SimulatedVehicle
from protocols import vehicle as wire
from tests.support import Harness, bearer, eventually, open_test_session
from tests.test_rents import failed, names, user_feed
from tests.vehicle_peer import RawVehicle, booted_vehicle


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, vehicle_call_timeout=1.0)

API = "/api/application"
# The network's area (a box around Strasbourg's centre) and its one parking; shapes are [[lng, lat], ...].
AREA = [[7.70, 48.56], [7.76, 48.56], [7.76, 48.60], [7.70, 48.60]]
PARKING = [[7.730, 48.580], [7.732, 48.580], [7.732, 48.582], [7.730, 48.582]]
IN_PARKING = (48.581, 7.731)
IN_AREA_ONLY = (48.59, 7.72)
OUTSIDE = (48.70, 7.90)
FREE_FLOATING = range(201, 206)
DOCKED = 101


@dataclass
class Town:
    network: int
    label: int
    secrets: dict[int, str]  # of the free-floating vehicles' modules

    async def rider(self, harness: Harness, email: str) -> tuple[int, str]:
        user = await harness.create_user(email, app_label=self.label)
        return user, await open_test_session(harness, user)


async def make_town(harness: Harness, name: str = "Free", **rules: object) -> Town:
    """A network shown by the ``knot`` app, with an area and one parking; free-floating vehicles 201..205
    (serials SN201..) and a docked one, 101."""
    make = harness.make
    label = await make.app_label_once("knot")
    network = await make.network(name, labels=[label], shape=AREA, center=(48.58, 7.73), rules={
        "unlock_fee": Decimal("1.00"), "price_per_minute": Decimal("0.25"), **rules,
    })
    await make.parking(network, None, PARKING)
    secrets = {}
    for vehicle_id in FREE_FLOATING:
        made, secrets[vehicle_id] = await make.free_floating_vehicle(network, f"SN{vehicle_id}", vehicle_id=vehicle_id)
        assert made == vehicle_id
    await make.vehicle(network, DOCKED)
    await harness.svc.catalog.reload()
    return Town(network, label, secrets)


def now_ms() -> int:
    return int(time.time() * 1000)


async def riding(harness: Harness, town: Town, user: int, vehicle: int) -> Rent:
    """An ongoing free-floating rent of ``user`` on ``vehicle``, reserved and started through the book."""
    book = harness.svc.rents.book
    reserved = await book.reserve(vehicle, RentRequest(user, town.network, Via.APP))
    assert isinstance(reserved, Rent), reserved
    return await book.start(reserved)


async def record_message(harness: Harness, vehicle: int, message_id: str, action: str, payload: dict[str, Any]) -> None:
    """A CALL of the vehicle as the gateway records it (``VehicleStore.record``)."""
    await harness.db.execute(
        "INSERT INTO vehicle_messages (vehicle_id, message_id, action, payload, result) VALUES ($1, $2, $3, $4, $5)",
        vehicle, message_id, action, payload, {},
    )


async def position(harness: Harness, vehicle: int, lat: float, lng: float) -> None:
    """Tell the vehicle's actor where it is (what its module's ``status`` does) and wait for the live view."""
    actor = await harness.svc.stations.registry.get(VEHICLE, str(vehicle))
    await actor.ask(Positioned(lat, lng))
    await eventually(lambda: harness.svc.vehicles.state(vehicle).latitude == lat)


async def lock(harness: Harness, token: str, vehicle: Any, *, temporary: bool = False) -> httpx.Response:
    path = f"{API}/vehicles/freefloat/lock" + ("/temporary" if temporary else "")
    return await harness.client.post(path, json={"vehicle_id": vehicle}, headers=bearer(token))


async def resume(harness: Harness, token: str, trip: int | str) -> httpx.Response:
    return await harness.client.put(f"{API}/trips/{trip}/resume", headers=bearer(token))


async def unlock(harness: Harness, token: str, serial: str, lat: float, lng: float) -> httpx.Response:
    return await harness.client.post(f"{API}/vehicles/unlock", json={"serial_number": serial, "lat": lat, "lng": lng},
                                     headers=bearer(token))


# --------------------------------------------------------------------------
# The book


async def test_a_free_floating_rent_through_the_book_with_its_events_in_order(harness: Harness) -> None:
    town = await make_town(harness, trip_auto_pause=600, trip_max_pause=0, trip_auto_lock=1200)
    rider, token = await town.rider(harness, "rider@example.com")
    book = harness.svc.rents.book
    async with user_feed(harness, token) as feed:
        reserved = await book.reserve(201, RentRequest(rider, town.network, Via.APP))
        assert isinstance(reserved, Rent)
        assert (reserved.state, reserved.free_floating, reserved.station_id) == (RentState.UNLOCKING, True, None)
        # The network's trip timers come with the rent (0: never).
        assert (reserved.rules.allow_pause, reserved.rules.auto_pause, reserved.rules.max_pause,
                reserved.rules.auto_lock) == (True, 600, None, 1200)
        assert await book.current(201) == reserved

        started = await book.start(reserved)
        assert started.state is RentState.ONGOING and started.time_start is not None
        moved = await book.moved(started, time.time())
        assert moved.moved_at is not None

        pausing = await book.command(moved, CommandKind.PAUSE)
        assert pausing.command is CommandKind.PAUSE and pausing.command_id is not None
        assert pausing.command_id != pausing.unlock_id
        again = await book.command(pausing, CommandKind.PAUSE)  # a new try replaces the earlier command
        assert again.command_id != pausing.command_id
        assert await book.current(201) == again

        at = now_ms()
        paused = await book.pause(again, at)
        assert paused.state is RentState.PAUSED and paused.command is None and paused.command_id is None
        assert paused.paused_at is not None and abs(paused.paused_at * 1000 - at) < 5
        assert await book.pause(paused, now_ms()) == paused  # a resent report: nothing twice

        # The map shows the pause.
        [on_map] = await map_rents(harness, token)
        assert (on_map["trip_id"], on_map["free_floating"], on_map["being_rented"], on_map["on_hold_activated"]) == (
            reserved.rent_id, True, False, True)
        assert on_map["on_hold_since"] is not None

        resuming = await book.command(paused, CommandKind.RESUME)
        resumed = await book.resume(resuming)
        assert (resumed.state, resumed.paused_at, resumed.command) == (RentState.ONGOING, None, None)
        [on_map] = await map_rents(harness, token)
        assert (on_map["being_rented"], on_map["on_hold_activated"], on_map["on_hold_since"]) == (True, False, None)

        ending = await book.command(resumed, CommandKind.END)
        await book.end(ending, Return(now_ms(), latitude=IN_PARKING[0], longitude=IN_PARKING[1]))
        assert await book.current(201) is None

        events = await feed.events(6)
        assert names(events) == ["vehicle.unlocked", "rent.started", "rent.paused", "rent.resumed",
                                 "vehicle.locked", "rent.ended"]
        assert [e["seq"] for e in events] == sorted(e["seq"] for e in events)
        assert all(e["data"]["trip_id"] == reserved.rent_id and e["data"]["free_floating"] for e in events)
        assert events[2]["data"]["on_hold_since"] == int(paused.paused_at * 1000)
        for ended in events[4:]:
            assert (ended["data"]["latitude"], ended["data"]["longitude"], ended["data"]["ended_by"]) == (
                *IN_PARKING, "rider")
            assert ended["data"]["end_station_id"] is None
        # Paused time is billed like riding time: a ride of under a minute, unlock fee plus one minute.
        assert (events[5]["data"]["price"], events[5]["data"]["currency"]) == (1.25, "EUR")

    row = await harness.db.fetchrow("SELECT * FROM rents WHERE id = $1", reserved.rent_id)
    assert row is not None
    assert (row["state"], row["free_floating"], row["end_latitude"], row["end_longitude"], row["ended_by"]) == (
        "ended", True, *IN_PARKING, "rider")
    assert (row["command"], row["command_id"]) == (None, None)
    assert await harness.db.fetchval("SELECT state FROM vehicles WHERE id = 201") == "available"
    [past] = await history(harness, token)
    assert (past["trip_id"], past["state"], past["free_floating"], past["end_latitude"], past["end_longitude"],
            past["ended_by"]) == (reserved.rent_id, "ended", True, *IN_PARKING, "rider")
    assert (past["on_hold_since"], past["being_rented"]) == (None, False)


async def test_a_timer_ends_a_paused_rent_where_the_vehicle_is_and_says_who(harness: Harness) -> None:
    town = await make_town(harness)
    rider, token = await town.rider(harness, "rider@example.com")
    book = harness.svc.rents.book
    rent = await riding(harness, town, rider, 202)
    paused = await book.pause(rent, now_ms())
    await book.end(paused, Return(now_ms(), latitude=IN_AREA_ONLY[0], longitude=IN_AREA_ONLY[1],
                                  ended_by=EndedBy.MAX_PAUSE))
    [past] = await history(harness, token)
    assert (past["state"], past["end_latitude"], past["end_longitude"], past["ended_by"]) == (
        "ended", *IN_AREA_ONLY, "max_pause")


async def test_reported_finds_what_the_vehicle_recorded_for_the_pending_unlock_or_command(harness: Harness) -> None:
    town = await make_town(harness)
    rider, _ = await town.rider(harness, "rider@example.com")
    book = harness.svc.rents.book
    reserved = await book.reserve(203, RentRequest(rider, town.network, Via.APP))
    assert isinstance(reserved, Rent) and reserved.unlock_id is not None
    assert await book.reported(reserved) is False
    # Another vehicle's `unlocked` of that id is not this one's.
    await record_message(harness, 204, "u-0", "unlocked", {"unlock": reserved.unlock_id, "time": now_ms()})
    assert await book.reported(reserved) is False
    await record_message(harness, 203, "u-1", "unlocked", {"unlock": reserved.unlock_id, "time": now_ms()})
    assert await book.reported(reserved) is True

    started = await book.start(reserved)
    assert await book.reported(started) is False  # no command pending
    pausing = await book.command(started, CommandKind.PAUSE)
    assert await book.reported(pausing) is False
    assert pausing.command_id is not None
    # A `locked` without that command's id (the rider's hand on the lock, id 0) is no answer to it.
    await record_message(harness, 203, "l-0", "locked", {"lat": 48.5, "lng": 7.7, "time": now_ms(), "lock": 0})
    assert await book.reported(pausing) is False
    locked_at = now_ms()
    await record_message(harness, 203, "l-1", "locked",
                         {"lat": IN_PARKING[0], "lng": IN_PARKING[1], "time": locked_at, "lock": pausing.command_id})
    assert await book.reported(pausing) == Return(locked_at, latitude=IN_PARKING[0], longitude=IN_PARKING[1])

    paused = await book.pause(pausing, locked_at)
    # A trip timer pauses in the book first, then records a pause to send the `lock`: once the vehicle's
    # `locked` of it is there, nothing is pending (the clock goes on to the rent's timers).
    locking = await book.command(paused, CommandKind.PAUSE)
    await record_message(harness, 203, "l-9", "locked",
                         {"lat": IN_PARKING[0], "lng": IN_PARKING[1], "time": locked_at, "lock": locking.command_id})
    assert await book.reported(locking) is False
    resuming = await book.command(locking, CommandKind.RESUME)
    assert resuming.command_id is not None
    assert await book.reported(resuming) is False  # the start's `unlocked` is not the resume's
    await record_message(harness, 203, "u-2", "unlocked", {"unlock": resuming.command_id, "time": now_ms()})
    assert await book.reported(resuming) is True

    resumed = await book.resume(resuming)
    ending = await book.command(resumed, CommandKind.END)
    assert await book.reported(ending) is False
    await record_message(harness, 203, "l-2", "locked",
                         {"lat": 48.59, "lng": 7.72, "time": locked_at + 1000, "lock": ending.command_id})
    assert await book.reported(ending) == Return(locked_at + 1000, latitude=48.59, longitude=7.72)


async def test_a_command_for_a_rent_that_is_not_riding_is_refused(harness: Harness) -> None:
    town = await make_town(harness)
    rider, _ = await town.rider(harness, "rider@example.com")
    book = harness.svc.rents.book
    reserved = await book.reserve(205, RentRequest(rider, town.network, Via.APP))
    assert isinstance(reserved, Rent)
    with pytest.raises(RuntimeError):
        await book.command(reserved, CommandKind.END)  # still unlocking
    with pytest.raises(ValueError):
        await book.command(await book.start(reserved), CommandKind.UNLOCK)  # a start's id is its unlock_id


# --------------------------------------------------------------------------
# The routes' refusals (no vehicle socket)


async def test_the_refusals_of_lock_pause_and_resume(harness: Harness) -> None:
    town = await make_town(harness)
    rider, token = await town.rider(harness, "rider@example.com")
    _, other_token = await town.rider(harness, "other@example.com")
    rent = await riding(harness, town, rider, 201)

    assert failed(await lock(harness, token, 999_999)) == (404, 4)
    assert failed(await lock(harness, token, 999_999, temporary=True)) == (404, 4)
    assert failed(await lock(harness, token, DOCKED)) == (409, 36)
    assert failed(await lock(harness, token, DOCKED, temporary=True)) == (409, 36)
    # Another rider's vehicle answers as an unknown one; so does a vehicle the caller does not ride.
    assert failed(await lock(harness, other_token, 201)) == (404, 4)
    assert failed(await lock(harness, other_token, 201, temporary=True)) == (404, 4)
    assert failed(await lock(harness, token, 202)) == (404, 4)
    # Resume: another rider's trip and an unknown one alike; a running rent is not paused.
    assert failed(await resume(harness, other_token, rent.rent_id)) == (404, 4)
    assert failed(await resume(harness, token, 99_999_999)) == (404, 4)
    assert failed(await resume(harness, token, rent.rent_id)) == (409, 35)

    # Where the vehicle is decides whether the trip may end there.
    await position(harness, 201, *OUTSIDE)
    assert failed(await lock(harness, token, 201)) == (403, 39)
    await position(harness, 201, *IN_AREA_ONLY)  # inside the area, outside its one parking
    assert failed(await lock(harness, token, 201)) == (403, 39)
    await position(harness, 201, *IN_PARKING)
    # Every check passed: the vehicle's actor takes the command, and the vehicle has no socket.
    assert failed(await lock(harness, token, 201)) == (503, 50)
    assert failed(await lock(harness, token, 201, temporary=True)) == (503, 50)
    assert [r["state"] for r in await history(harness, token)] == ["ongoing"]
    assert await history(harness, other_token) == []


async def test_a_paused_rent_refuses_another_pause_and_a_docked_one_refuses_a_resume(harness: Harness) -> None:
    town = await make_town(harness)
    rider, token = await town.rider(harness, "rider@example.com")
    book = harness.svc.rents.book
    paused = await book.pause(await riding(harness, town, rider, 202), now_ms())
    assert failed(await lock(harness, token, 202, temporary=True)) == (409, 35)
    await book.command(await book.resume(paused), CommandKind.PAUSE)
    assert failed(await lock(harness, token, 202, temporary=True)) == (409, 35)  # a pause on its way

    # A docked rent (paused as the database has it) is not the vehicle's own to resume.
    docked = await harness.db.fetchval(
        """INSERT INTO rents (user_id, vehicle_id, network_id, state, on_hold_since)
           VALUES ($1, $2, $3, 'paused', now()) RETURNING id""", rider, DOCKED, town.network)
    assert failed(await resume(harness, token, docked)) == (409, 36)


async def test_a_network_without_holds_refuses_a_pause(harness: Harness) -> None:
    town = await make_town(harness, "No holds", allow_trip_on_hold=False)
    rider, token = await town.rider(harness, "rider@example.com")
    rent = await riding(harness, town, rider, 203)
    assert rent.rules.allow_pause is False
    assert failed(await lock(harness, token, 203, temporary=True)) == (403, 34)


async def test_the_refusals_of_a_free_floating_unlock_without_a_socket(harness: Harness) -> None:
    town = await make_town(harness)
    rider, token = await town.rider(harness, "rider@example.com")
    _, other_token = await town.rider(harness, "other@example.com")
    hidden = await harness.make.network("Hidden")  # shown by no app of the rider
    await harness.make.free_floating_vehicle(hidden, "SN300", vehicle_id=300)
    await harness.svc.catalog.reload()
    assert failed(await unlock(harness, token, "NO-SUCH", *IN_PARKING)) == (404, 4)
    assert failed(await unlock(harness, token, "SN300", *IN_PARKING)) == (403, 13)
    assert failed(await unlock(harness, token, "SN204", *IN_PARKING)) == (409, 30)  # its module is not connected
    await riding(harness, town, rider, 205)
    await position(harness, 205, *IN_PARKING)
    assert failed(await unlock(harness, other_token, "SN205", *IN_PARKING)) == (409, 30)  # rented by someone else
    assert failed(await unlock(harness, token, "SN205", *IN_PARKING)) == (409, 30)  # the caller's, not paused


async def test_hostile_bodies_of_lock_and_pause_get_400(harness: Harness) -> None:
    town = await make_town(harness)
    _, token = await town.rider(harness, "rider@example.com")
    for path in ("/vehicles/freefloat/lock", "/vehicles/freefloat/lock/temporary"):
        for body in (
            b"{}",
            b'{"vehicle": 201}',
            b'{"vehicle_id": "201"}',
            b'{"vehicle_id": true}',
            b'{"vehicle_id": 201.5}',
            b'{"vehicle_id": 0}',
            b'{"vehicle_id": -1}',
            b'{"vehicle_id": null}',
            b'{"vehicle_id": 9223372036854775808}',
            b'{"vehicle_id": 1' + b"0" * 40 + b"}",
            b'{"vehicle_id": "\\u0000"}',
            b'{"vehicle_id": [201]}',
            b'{"vehicle_id": NaN}',
            b"\xff\xfe",
            b"[]",
            b"",
        ):
            response = await harness.client.post(
                API + path, content=body, headers={**bearer(token), "Content-Type": "application/json"},
            )
            assert failed(response) == (400, 2), (path, body, response.text)
            assert json.loads(response.text)["code"] == 2
        no_token = await harness.client.post(API + path, json={"vehicle_id": 201})
        assert failed(no_token) == (401, 3)
    for trip in ("abc", "1.5", "-1", "99999999999999999999", "%00"):
        response = await resume(harness, token, trip)
        assert failed(response) == (404, 4), (trip, response.text)


# --------------------------------------------------------------------------
# Over a real vehicle socket


@asynccontextmanager
async def on_the_street(harness: Harness, town: Town, vehicle: int, lat: float, lng: float) -> AsyncIterator[
        SimulatedVehicle]:
    """The town's vehicle, simulated (standing still), connected and seen where it stands."""
    sim = SimulatedVehicle(f"SN{vehicle}", town.secrets[vehicle], harness.vehicle_url, lat=lat, lng=lng,
                           heartbeat=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await eventually(lambda: harness.svc.vehicles.state(vehicle).connected
                         and harness.svc.vehicles.state(vehicle).latitude == lat)
        yield sim
        sim.stop()


async def moved(harness: Harness, sim: SimulatedVehicle, vehicle: int, lat: float, lng: float) -> None:
    await (await sim.move_to(lat, lng)).wait()
    await eventually(lambda: harness.svc.vehicles.state(vehicle).latitude == lat)


async def test_a_rider_unlocks_pauses_resumes_and_ends_a_free_floating_rent_in_a_parking(harness: Harness) -> None:
    town = await make_town(harness)
    _, token = await town.rider(harness, "rider@example.com")
    _, other_token = await town.rider(harness, "other@example.com")
    async with on_the_street(harness, town, 201, *IN_PARKING) as sim, user_feed(harness, token) as feed:
        assert failed(await unlock(harness, token, "SN201", *OUTSIDE)) == (403, 31)  # kilometres away
        assert failed(await unlock(harness, token, "SN201", 48.5820, 7.7310)) == (403, 31)  # 111 m north
        response = await unlock(harness, token, "SN201", 48.5815, 7.7310)  # 55 m away
        assert response.status_code == 200, response.text
        trip = response.json()["data"]["trip_id"]
        assert response.json() == {"code": 0, "data": {"external_locks": [], "trip_id": trip}}
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        assert not sim.locked
        assert failed(await unlock(harness, other_token, "SN201", *IN_PARKING)) == (409, 30)
        assert failed(await lock(harness, other_token, 201)) == (404, 4)
        await eventually(lambda: harness.svc.vehicles.state(201).locked is False)
        [on_map] = await map_rents(harness, token)
        assert (on_map["trip_id"], on_map["free_floating"], on_map["being_rented"], on_map["lock_status"]) == (
            trip, True, True, 0)

        # A pause: the vehicle locks; the rider resumes it from the trip.
        assert (await lock(harness, token, 201, temporary=True)).json() == {"code": 0}
        [paused] = await feed.events(1)
        assert paused["event"] == "rent.paused" and paused["data"]["trip_id"] == trip
        assert sim.locked
        assert failed(await lock(harness, token, 201, temporary=True)) == (409, 35)
        await eventually(lambda: harness.svc.vehicles.state(201).locked is True)
        [on_map] = await map_rents(harness, token)
        assert (on_map["being_rented"], on_map["on_hold_activated"], on_map["lock_status"]) == (False, True, 1)
        assert (await resume(harness, token, trip)).json() == {"code": 0}
        assert names(await feed.events(1)) == ["rent.resumed"]
        assert not sim.locked
        assert failed(await resume(harness, token, trip)) == (409, 35)

        # Another pause, resumed by unlocking the vehicle again: the same trip goes on.
        assert (await lock(harness, token, 201, temporary=True)).status_code == 200
        assert names(await feed.events(1)) == ["rent.paused"]
        again = await unlock(harness, token, "SN201", *IN_PARKING)
        assert again.status_code == 200 and again.json()["data"]["trip_id"] == trip
        assert names(await feed.events(1)) == ["rent.resumed"]

        # It may not end outside the parking; in it, it does, where the vehicle says it is.
        await moved(harness, sim, 201, *IN_AREA_ONLY)
        assert failed(await lock(harness, token, 201)) == (403, 39)
        await moved(harness, sim, 201, *OUTSIDE)
        assert failed(await lock(harness, token, 201)) == (403, 39)
        assert not sim.locked
        await moved(harness, sim, 201, *IN_PARKING)
        assert (await lock(harness, token, 201)).json() == {"code": 0}
        ended = await feed.events(2)
        assert names(ended) == ["vehicle.locked", "rent.ended"]
        end = ended[1]["data"]
        assert (end["trip_id"], end["latitude"], end["longitude"], end["ended_by"], end["end_station_id"]) == (
            trip, *IN_PARKING, "rider", None)
        assert (end["price"], end["currency"]) == (1.25, "EUR")  # under a minute, pauses included
        assert sim.locked
        assert failed(await lock(harness, token, 201)) == (404, 4)  # over: no rent of the caller on it
        await eventually(lambda: harness.svc.vehicles.state(201).rent is None)
    [past] = await history(harness, token)
    assert (past["trip_id"], past["state"], past["end_latitude"], past["end_longitude"], past["ended_by"]) == (
        trip, "ended", *IN_PARKING, "rider")
    assert await history(harness, other_token) == []


async def next_command(raw: RawVehicle, action: wire.Action) -> list[Any]:
    """The backend's next CALL of ``action`` (status RESULTs and other frames skipped)."""
    while True:
        frame = await raw.receive()
        if frame[0] == wire.MessageType.CALL and frame[2] == action:
            return frame


@asynccontextmanager
async def raw_on_the_street(harness: Harness, town: Town, vehicle: int) -> AsyncIterator[RawVehicle]:
    async with booted_vehicle(harness.vehicle_url, f"SN{vehicle}", town.secrets[vehicle]) as raw:
        await raw.status(*IN_PARKING, locked=True)
        await eventually(lambda: harness.svc.vehicles.state(vehicle).latitude == IN_PARKING[0])
        yield raw


async def while_answering(
    raw: RawVehicle, request: Any, action: wire.Action, answer: dict[str, Any] | None
) -> tuple[httpx.Response, list[Any]]:
    """The rider's ``request()`` while the raw vehicle answers its next ``action`` CALL with ``answer`` (None:
    silence): (the HTTP answer, the CALL)."""
    answers: list[httpx.Response] = []

    async def rider() -> None:
        answers.append(await request())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rider)
        command = await next_command(raw, action)
        if answer is not None:
            await raw.answer(command, answer)
    return answers[0], command


async def test_a_refused_unlock_fails_the_rent_and_a_silent_one_waits_for_the_vehicles_report(
        harness: Harness) -> None:
    town = await make_town(harness)
    _, token = await town.rider(harness, "rider@example.com")
    async with raw_on_the_street(harness, town, 202) as raw, user_feed(harness, token) as feed:
        def rider() -> Any:
            return unlock(harness, token, "SN202", *IN_PARKING)

        refused, _ = await while_answering(raw, rider, wire.Action.UNLOCK, {"status": "rejected"})
        assert failed(refused) == (409, 41)
        [failure] = await feed.events(1)
        assert failure["event"] == "unlock.failed"
        await eventually(lambda: harness.svc.vehicles.state(202).rent is None)  # available again

        silent, command = await while_answering(raw, rider, wire.Action.UNLOCK, None)
        assert failed(silent) == (504, 40)
        assert [r["state"] for r in await history(harness, token)] == ["unlocking"]
        # The lock opens after all: the rent starts.
        assert (await raw.unlocked(unlock=command[3]["unlock"], time=now_ms()))[0] == wire.MessageType.RESULT
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        assert [r["state"] for r in await history(harness, token)] == ["ongoing"]

        # A lock the vehicle refuses leaves the rent riding.
        refused_lock, _ = await while_answering(raw, lambda: lock(harness, token, 202), wire.Action.LOCK,
                                                {"status": "rejected"})
        assert failed(refused_lock) == (409, 41)
        assert [r["state"] for r in await history(harness, token)] == ["ongoing"]
        # An accepted one ends it only with the vehicle's `locked` of that command.
        accepted, command = await while_answering(raw, lambda: lock(harness, token, 202), wire.Action.LOCK,
                                                  {"status": "accepted"})
        assert accepted.status_code == 200
        await raw.locked(*IN_PARKING, lock=0, time=now_ms())  # the rider's hand on the lock: no end
        assert [r["state"] for r in await history(harness, token)] == ["ongoing"]
        await raw.locked(*IN_PARKING, lock=command[3]["lock"], time=now_ms())
        assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]


# --------------------------------------------------------------------------
# helpers


async def map_rents(harness: Harness, token: str) -> list[dict[str, Any]]:
    response = await harness.client.get(f"{API}/map", params={"lat": 48.58, "lng": 7.73, "latdeg": 0.1,
                                                             "lngdeg": 0.1}, headers=bearer(token))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["rents"]
    return found


async def history(harness: Harness, token: str) -> list[dict[str, Any]]:
    response = await harness.client.get(f"{API}/users/rents", headers=bearer(token))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found
