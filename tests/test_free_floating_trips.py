"""Free-floating trips over real sockets: the trip timers, speed zones, a cut connection, a restart.

The vehicles are the simulator's (``SimulatedVehicle``: it answers ``unlock`` and
``lock`` and reports ``unlocked``/``locked`` with the command's id, rides its
path while unlocked, obeys ``speed-limit``) or, where a test needs a vehicle that
misbehaves at one precise moment, a raw vehicle socket (``tests/vehicle_peer.py``).
The trip timers run with short network settings (seconds); the rider sees
everything on the ``user`` topic of the feed. Unlock, lock, pause and resume as
a rider does them, with their refusals, are in ``test_free_floating_rents.py``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from knot_rt.config import Settings
from knot_rt.simulator.vehicle import SimulatedVehicle
from protocols import vehicle as wire
from tests.feed_client import FeedClient
from tests.support import Harness, bearer, eventually, open_test_session, serving
from tests.test_rents import names, rents_of, user_feed
from tests.vehicle_peer import booted_vehicle, now_ms

HOME = (48.5800, 7.7300)  # where the vehicle stands: inside the parking
AREA = [[7.70, 48.56], [7.76, 48.56], [7.76, 48.60], [7.70, 48.60], [7.70, 48.56]]  # [lng, lat]
PARKING = [[7.7290, 48.5790], [7.7310, 48.5790], [7.7310, 48.5810], [7.7290, 48.5810], [7.7290, 48.5790]]
ZONE = [[7.7280, 48.5830], [7.7320, 48.5830], [7.7320, 48.5870], [7.7280, 48.5870], [7.7280, 48.5830]]
ZONE_KMH = 100  # high enough that a capped vehicle leaves the zone within seconds


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, rent_unlock_seconds=3.0)


@dataclass
class Trip:
    network: int
    vehicle_id: int
    serial: str
    secret: str
    token: str


async def make_trip(harness: Harness, **rules: object) -> Trip:
    """A network (its area, one parking, one speed zone north of the parking) with ``rules``, one
    free-floating vehicle and a rider, made through the services."""
    make = harness.make
    label = await make.app_label_once("knot")
    network = await make.network(labels=[label], shape=AREA, center=HOME, rules={
        "unlock_fee": Decimal("1.00"), "price_per_minute": Decimal("0.20"), **rules,
    })
    cluster = await make.cluster(network)
    await make.parking(network, cluster, PARKING)
    await make.speed_zone(network, ZONE, ZONE_KMH)
    vehicle_id, secret = await make.free_floating_vehicle(network, "FF-0001")
    await harness.svc.catalog.reload()
    user = await harness.create_user("rider@example.com", app_label=label)
    return Trip(network, vehicle_id, "FF-0001", secret, await open_test_session(harness, user))


@asynccontextmanager
async def on_the_street(harness: Harness, trip: Trip, *, at: tuple[float, float] = HOME,
                        path: Sequence[tuple[float, float]] = (), speed: float = 20.0) -> AsyncIterator[SimulatedVehicle]:
    """The trip's vehicle standing ``at``, simulated, connected (status every half second, so the backend sees
    it move)."""
    sim = SimulatedVehicle(trip.serial, trip.secret, harness.vehicle_url, lat=at[0], lng=at[1], path=path,
                           speed=speed, tick=0.1, heartbeat=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await eventually(lambda: harness.svc.vehicles.state(trip.vehicle_id).connected)
        yield sim
        sim.stop()


async def unlock(harness: Harness, trip: Trip, where: tuple[float, float] = HOME) -> httpx.Response:
    return await harness.client.post("/api/application/vehicles/unlock", headers=bearer(trip.token),
                                     json={"serial_number": trip.serial, "lat": where[0], "lng": where[1]})


async def lock(harness: Harness, trip: Trip, *, temporary: bool = False) -> httpx.Response:
    path = "/api/application/vehicles/freefloat/lock" + ("/temporary" if temporary else "")
    return await harness.client.post(path, headers=bearer(trip.token), json={"vehicle_id": trip.vehicle_id})


async def resume(harness: Harness, trip: Trip, trip_id: int) -> httpx.Response:
    return await harness.client.put(f"/api/application/trips/{trip_id}/resume", headers=bearer(trip.token))


async def nothing_more(feed: FeedClient, seconds: float) -> None:
    """No event reaches the feed for ``seconds`` (an absence, not a measurement)."""
    with trio.move_on_after(seconds):
        extra = await feed.events(1, timeout=seconds + 5)
        raise AssertionError(f"unexpected events: {extra}")


def ok(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert body["code"] == 0
    return body


# --------------------------------------------------------------------------
# Trip timers


async def test_a_rent_that_stands_still_is_paused_then_ended_when_the_pause_lasts(harness: Harness) -> None:
    trip = await make_trip(harness, trip_auto_pause=1, trip_max_pause=2)
    async with on_the_street(harness, trip) as sim, user_feed(harness, trip.token) as feed:
        ok(await unlock(harness, trip))
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        assert names(await feed.events(1, timeout=15)) == ["rent.paused"]
        await eventually(lambda: sim.locked)  # told to lock when paused
        ended = await feed.events(2, timeout=15)
        assert names(ended) == ["vehicle.locked", "rent.ended"]
    [rent] = await rents_of(harness, trip.token)
    assert rent["state"] == "ended"


async def test_a_riding_vehicle_is_not_paused_and_an_idle_one_is_ended_where_holds_are_off(
        harness: Harness) -> None:
    trip = await make_trip(harness, allow_trip_on_hold=False, trip_auto_lock=2)
    # A path inside the area that never enters the zone: it rides a loop south of the parking.
    path = [(48.5750, 7.7300), (48.5750, 7.7400), (48.5700, 7.7400)]
    async with on_the_street(harness, trip, path=path, speed=60) as sim, user_feed(harness, trip.token) as feed:
        ok(await unlock(harness, trip))
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        await nothing_more(feed, 4.0)  # twice the auto-lock, riding: nothing
        sim.cruise = 0  # it stops on the pavement
        assert names(await feed.events(2, timeout=15)) == ["vehicle.locked", "rent.ended"]
        await eventually(lambda: sim.locked)
    [rent] = await rents_of(harness, trip.token)
    assert rent["state"] == "ended"


# --------------------------------------------------------------------------
# Speed zones


async def test_a_rented_vehicle_crossing_a_speed_zone_is_told_its_limit_and_then_none(harness: Harness) -> None:
    trip = await make_trip(harness)
    # Parked inside the zone, it rides north out of it.
    inside = (48.5860, 7.7300)
    async with on_the_street(harness, trip, at=inside, path=[(48.5950, 7.7300)], speed=150) as sim:
        await sim.send_status()
        await trio.sleep(1)
        assert sim.speed_limit == 0  # not rented: no limit
        ok(await unlock(harness, trip, (48.5860, 7.7300)))
        await eventually(lambda: sim.speed_limit == ZONE_KMH, timeout=15)
        await eventually(lambda: sim.position[0] > 48.5875 and sim.speed_limit == 0, timeout=30)


# --------------------------------------------------------------------------
# A cut connection


async def test_a_locked_cut_before_its_result_is_resent_and_ends_the_rent_once(harness: Harness) -> None:
    trip = await make_trip(harness)
    async with user_feed(harness, trip.token) as feed:
        async with booted_vehicle(harness.vehicle_url, trip.serial, trip.secret) as raw:
            await raw.status(*HOME)
            async with trio.open_nursery() as nursery:
                unlocked: list[httpx.Response] = []

                async def rider() -> None:
                    unlocked.append(await unlock(harness, trip))

                nursery.start_soon(rider)
                command = await raw.receive()
                assert command[2] == wire.Action.UNLOCK
                await raw.answer(command, {"status": "accepted"})
            ok(unlocked[0])
            await raw.unlocked(unlock=command[3]["unlock"], time=now_ms())
            assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]

            async with trio.open_nursery() as nursery:
                locking: list[httpx.Response] = []

                async def rider_locks() -> None:
                    locking.append(await lock(harness, trip))

                nursery.start_soon(rider_locks)
                command = await raw.receive()
                assert command[2] == wire.Action.LOCK
                await raw.answer(command, {"status": "accepted"})
            ok(locking[0])
            lock_id = command[3]["lock"]
            # The `locked` goes out and the connection drops before its RESULT is read.
            await raw.send([2, "locked-1", "locked", {"lat": HOME[0], "lng": HOME[1], "time": now_ms(),
                                                      "lock": lock_id}])
        async with booted_vehicle(harness.vehicle_url, trip.serial, trip.secret) as raw:
            answer = await raw.call("locked", {"lat": HOME[0], "lng": HOME[1], "time": now_ms(), "lock": lock_id},
                                    call_id="locked-1")
            assert answer == [3, "locked-1", {}]
        assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]
        await nothing_more(feed, 1.0)  # once
    assert [r["state"] for r in await rents_of(harness, trip.token)] == ["ended"]


# --------------------------------------------------------------------------
# Restarts


async def test_a_server_restart_in_the_middle_of_a_paused_rent_loses_nothing(settings: Settings) -> None:
    async with trio_asyncio.open_loop():
        async with serving(settings) as harness:
            trip = await make_trip(harness)
            async with on_the_street(harness, trip), user_feed(harness, trip.token) as feed:
                ok(await unlock(harness, trip))
                assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
                ok(await lock(harness, trip, temporary=True))
                assert names(await feed.events(1)) == ["rent.paused"]
            [rent] = await rents_of(harness, trip.token)
            trip_id = rent["trip_id"]
        # The server is gone (and the vehicle with its socket). A new server on the same database:
        async with serving(settings) as harness:
            await eventually(lambda: harness.svc.vehicles.state(trip.vehicle_id).rent is not None)
            assert [r["state"] for r in await rents_of(harness, trip.token)] == ["paused"]
            async with on_the_street(harness, trip), user_feed(harness, trip.token) as feed:
                ok(await resume(harness, trip, trip_id))
                assert names(await feed.events(1)) == ["rent.resumed"]
                ok(await lock(harness, trip))
                assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]
            assert [r["state"] for r in await rents_of(harness, trip.token)] == ["ended"]
