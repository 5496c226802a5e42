"""Rents at stations over real sockets: unlock, ride, return, live on the rider's feed.

Stations are the simulator's (``SimulatedStation``: it answers ``unlock`` and
sends ``unlocked``, docks a returned vehicle with ``locked``) or, where a test
needs a station that misbehaves at one precise moment, a raw station socket.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from knot_rt.config import Settings
from knot_rt.simulator.station import SimulatedStation
from tests.feed_client import FeedClient, open_feed
from tests.station_client import RawStation, station_socket
from tests.support import Harness, bearer, eventually, open_test_session, serving, wait_station_online

NEAR = {"lat": 48.5801, "lng": 7.7301}  # a few metres from the cluster
FAR = {"lat": 48.60, "lng": 7.80}  # kilometres away


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, station_call_timeout=1.0, rent_unlock_seconds=2.0)


@dataclass
class City:
    network: int
    cluster: int
    stations: list[tuple[int, str]]  # (id, secret)
    label: int

    async def rider(self, harness: Harness, email: str) -> tuple[int, str]:
        user = await harness.create_user(email, app_label=self.label)
        return user, await open_test_session(harness, user)


async def make_city(harness: Harness, *, stations: int = 2, spots: int = 4, max_rents: int = 1,
                    unlock_fee: str = "1.00", per_minute: str = "0.25", **rules: object) -> City:
    """A network shown by the ``knot`` app with its rules and tariff, one cluster, its stations and
    vehicles 101..140, made through the services."""
    make = harness.make
    label = await make.app_label_once("knot")
    network = await make.network(labels=[label], center=(48.58, 7.73), rules={
        "max_simultaneous_rented_vehicle": max_rents, "unlock_fee": Decimal(unlock_fee),
        "price_per_minute": Decimal(per_minute), **rules,
    })
    cluster = await make.cluster(network)
    made = await make.stations(cluster, stations, spots)
    await make.vehicles(network, range(101, 141))
    await harness.svc.catalog.reload()
    return City(network, cluster, made, label)


@asynccontextmanager
async def simulated(harness: Harness, station: tuple[int, str], vehicles: dict[int, int]) -> AsyncIterator[
        SimulatedStation]:
    sim = SimulatedStation(*station, harness.station_url, spots=4, vehicles=vehicles, heartbeat=3600)
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        await sim.wait_connected()
        await wait_station_online(harness, station[0])
        await eventually(lambda: all(harness.svc.vehicles.state(v).online for v in vehicles.values()))
        yield sim
        sim.stop()


async def unlock(harness: Harness, token: str, serial: str, where: dict[str, float] = NEAR) -> httpx.Response:
    return await harness.client.post(
        "/api/application/vehicles/unlock", json={"serial_number": serial, **where}, headers=bearer(token)
    )


async def rents_of(harness: Harness, token: str, **query: Any) -> list[dict[str, Any]]:
    response = await harness.client.get("/api/application/users/rents", params=query, headers=bearer(token))
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


@asynccontextmanager
async def user_feed(harness: Harness, token: str) -> AsyncIterator[FeedClient]:
    async with open_feed(harness.base_url, token) as feed:
        answer = await feed.subscribe("user")
        assert answer.get("code") == 0, answer
        yield feed


def names(events: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in events]


def failed(response: httpx.Response) -> tuple[int, int]:
    return response.status_code, response.json()["code"]


# --------------------------------------------------------------------------
# The whole rent


async def test_a_rent_from_unlock_to_return_at_another_station_with_every_event_in_order(harness: Harness) -> None:
    city = await make_city(harness)
    rider, token = await rider_city(harness, city)
    # Wallet credit pays first: the rider redeems a discount code worth 0.50 EUR.
    await harness.make.discount("Welcome", "add-credit", code="WELCOME", data="0.5", network=city.network)
    redeemed = await harness.client.post("/api/application/discounts/code",
                                         json={"code": "WELCOME", **NEAR}, headers=bearer(token))
    assert redeemed.status_code == 200, redeemed.text
    async with simulated(harness, city.stations[0], {1: 101, 2: 102}) as first, \
            simulated(harness, city.stations[1], {}) as second, user_feed(harness, token) as feed:
        response = await unlock(harness, token, "SN101")
        assert response.status_code == 200, response.text
        body = response.json()
        trip = body["data"]["trip_id"]
        assert body == {"code": 0, "data": {"external_locks": [], "trip_id": trip}}

        started = await feed.events(2)
        assert names(started) == ["vehicle.unlocked", "rent.started"]
        assert started[1]["data"]["trip_id"] == trip and started[1]["data"]["state"] == "ongoing"
        assert first.spot(1).vehicle is None  # out of its spot
        ongoing = await rents_of(harness, token)
        assert [(r["trip_id"], r["state"], r["being_rented"]) for r in ongoing] == [(trip, "ongoing", True)]

        # The vehicle is not available to anyone else while rented.
        _, other_token = await city.rider(harness, "other@example.com")
        assert failed(await unlock(harness, other_token, "SN101")) == (409, 30)

        await second.return_vehicle(3, 101)
        ended = await feed.events(2)
        assert names(ended) == ["vehicle.locked", "rent.ended"]
        end = ended[1]["data"]
        assert (end["trip_id"], end["end_station_id"], end["end_spot"]) == (trip, city.stations[1][0], 3)
        # A ride of under a minute: the unlock fee and one started minute, 0.50 of it from the wallet.
        assert (end["price"], end["paid_by_wallet"], end["amount_due"], end["currency"]) == (1.25, 0.5, 0.75, "EUR")
        assert [e["seq"] for e in started + ended] == sorted(e["seq"] for e in started + ended)

    past = await rents_of(harness, token)
    assert len(past) == 1
    record = past[0]
    assert (record["trip_id"], record["state"], record["price"], record["paid_by_wallet"], record["amount_due"]) == (
        trip, "ended", 1.25, 0.5, 0.75)
    assert record["time_stop"] is not None and record["billing_time_stop"] is not None
    assert 0 <= record["duration"] < 60
    wallet = await harness.db.fetchval("SELECT sum(amount) FROM wallet_entries WHERE user_id = $1", rider)
    assert wallet == 0
    # Available again: the other rider may take it now.
    assert harness.svc.vehicles.state(101).rent is None


async def rider_city(harness: Harness, city: City) -> tuple[int, str]:
    return await city.rider(harness, "rider@example.com")


async def test_the_checks_of_an_unlock_in_their_order(harness: Harness) -> None:
    city = await make_city(harness, stations=1)
    _, token = await rider_city(harness, city)
    await harness.svc.catalog_service.set_max_unlock_distance(city.cluster, 100)
    stranger_network = await harness.make.network("Elsewhere")  # shown by no app of the rider
    await harness.make.vehicle(stranger_network, 900)
    # A network asking a bank guarantee (payments not configured here: every rent there is refused).
    guarded = await harness.make.network("Guarded", labels=[city.label], rules={"min_guarantee": Decimal(50)})
    guarded_cluster = await harness.make.cluster(guarded)
    guarded_station = (await harness.make.stations(guarded_cluster, 1))[0]
    await harness.make.vehicle(guarded, 950)
    await harness.svc.catalog.reload()

    no_token = await harness.client.post("/api/application/vehicles/unlock", json={"serial_number": "SN101", **NEAR})
    assert failed(no_token) == (401, 3)
    assert failed(await unlock(harness, token, "SN101", {"lat": 91, "lng": 0})) == (400, 2)
    assert failed(await unlock(harness, token, "\x00")) == (400, 2)
    assert failed(await unlock(harness, token, "NO-SUCH")) == (404, 4)
    assert failed(await unlock(harness, token, "SN900")) == (403, 13)  # a network the rider may not use
    assert failed(await unlock(harness, token, "SN101")) == (409, 30)  # station offline: not available
    async with simulated(harness, city.stations[0], {1: 101}):
        assert failed(await unlock(harness, token, "SN102")) == (409, 30)  # not docked anywhere
        assert failed(await unlock(harness, token, "SN101", FAR)) == (403, 31)
        async with simulated(harness, guarded_station, {1: 950}):
            assert failed(await unlock(harness, token, "SN950")) == (402, 33)
        assert (await unlock(harness, token, "SN101")).status_code == 200


async def test_two_riders_racing_for_one_vehicle_get_one_rent_and_one_409(harness: Harness) -> None:
    city = await make_city(harness, stations=1)
    _, first = await city.rider(harness, "first@example.com")
    _, second = await city.rider(harness, "second@example.com")
    async with simulated(harness, city.stations[0], {1: 101}):
        answers: list[httpx.Response] = []

        async def take(token: str) -> None:
            answers.append(await unlock(harness, token, "SN101"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(take, first)
            nursery.start_soon(take, second)
        assert sorted(a.status_code for a in answers) == [200, 409]
        assert [a.json()["code"] for a in answers if a.status_code == 409] == [30]
    assert await harness.db.fetchval("SELECT count(*) FROM rents WHERE vehicle_id = 101") == 1


async def test_five_unlocks_at_once_never_pass_the_networks_maximum(harness: Harness) -> None:
    city = await make_city(harness, stations=2, max_rents=2)
    rider, token = await rider_city(harness, city)
    async with simulated(harness, city.stations[0], {1: 101, 2: 102, 3: 103}), \
            simulated(harness, city.stations[1], {1: 104, 2: 105}):
        answers: list[httpx.Response] = []

        async def take(serial: str) -> None:
            answers.append(await unlock(harness, token, serial))

        async with trio.open_nursery() as nursery:
            for n in range(101, 106):
                nursery.start_soon(take, f"SN{n}")
        assert sorted(failed(a) if a.status_code != 200 else (200, 0) for a in answers) == [
            (200, 0), (200, 0), (409, 32), (409, 32), (409, 32)]
    current = await harness.db.fetchval(
        "SELECT count(*) FROM rents WHERE user_id = $1 AND state IN ('unlocking', 'ongoing')", rider)
    assert current == 2


# --------------------------------------------------------------------------
# Stations that answer late, never, or twice


@asynccontextmanager
async def raw_station(harness: Harness, station: tuple[int, str], spots: dict[int, int | None]) -> AsyncIterator[
        RawStation]:
    async with station_socket(harness.station_url, *station) as raw:
        await raw.boot()
        assert (await raw.state(spots))[0] == 3
        await wait_station_online(harness, station[0])
        yield raw


async def answering(raw: RawStation, answer: Callable[[list[Any]], Awaitable[None]]) -> list[Any]:
    """The next backend CALL on ``raw``, answered by ``answer``."""
    while True:
        frame = await raw.receive()
        if frame[0] == 2:
            await answer(frame)
            return frame


@asynccontextmanager
async def vehicle_101_at_a_raw_station(harness: Harness) -> AsyncIterator[tuple[str, RawStation, FeedClient]]:
    """A rider (token) following their feed, and vehicle 101 docked in spot 1 of a raw station."""
    city = await make_city(harness, stations=1)
    _, token = await rider_city(harness, city)
    async with raw_station(harness, city.stations[0], {1: 101, 2: None, 3: None, 4: None}) as raw, \
            user_feed(harness, token) as feed:
        yield token, raw, feed


async def unlock_at(
    harness: Harness, token: str, raw: RawStation, answer: Callable[[list[Any]], Awaitable[None]]
) -> tuple[httpx.Response, list[Any]]:
    """The rider's unlock of SN101 while ``raw`` answers the station's unlock CALL with ``answer``:
    (the HTTP answer, the CALL)."""
    answers: list[httpx.Response] = []

    async def rider() -> None:
        answers.append(await unlock(harness, token, "SN101"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rider)
        call = await answering(raw, answer)
    return answers[0], call


async def test_an_unlocked_that_comes_after_the_504_still_starts_the_rent(harness: Harness) -> None:
    async with vehicle_101_at_a_raw_station(harness) as (token, raw, feed):
        async def silent(frame: list[Any]) -> None:
            """The station takes the command and says nothing in time."""

        response, call = await unlock_at(harness, token, raw, silent)
        assert failed(response) == (504, 40)
        unlock_id = call[3]["unlock"]
        # The locker opens after all: the rent starts.
        answer = await raw.call("unlocked", {"spot": 1, "unlock": unlock_id, "vehicle": 101})
        assert answer[0] == 3
        events = await feed.events(2)
        assert names(events) == ["vehicle.unlocked", "rent.started"]
        assert [r["state"] for r in await rents_of(harness, token)] == ["ongoing"]


async def test_an_unlock_never_reported_fails_the_rent_and_frees_the_vehicle(harness: Harness) -> None:
    async with vehicle_101_at_a_raw_station(harness) as (token, raw, feed):
        async def accept(frame: list[Any]) -> None:
            await raw.answer(frame, {"status": "accepted"})  # but the locker never opens

        response, _ = await unlock_at(harness, token, raw, accept)
        assert response.status_code == 200
        trip = response.json()["data"]["trip_id"]
        [failure] = await feed.events(1)
        assert failure["event"] == "unlock.failed" and failure["data"]["trip_id"] == trip
        assert await rents_of(harness, token) == []  # a failed unlock is no rent
        # Available again.
        again, _ = await unlock_at(harness, token, raw, accept)
        assert again.status_code == 200


async def test_a_refused_unlock_fails_the_rent_and_leaves_the_vehicle_available(harness: Harness) -> None:
    async with vehicle_101_at_a_raw_station(harness) as (token, raw, feed):
        async def refuse(frame: list[Any]) -> None:
            await raw.answer(frame, {"status": "rejected"})

        response, _ = await unlock_at(harness, token, raw, refuse)
        assert failed(response) == (409, 41)
        [failure] = await feed.events(1)
        assert failure["event"] == "unlock.failed"
        assert harness.svc.vehicles.state(101).rent is None


@asynccontextmanager
async def riding_101(harness: Harness, **city_options: Any) -> AsyncIterator[tuple[City, str, FeedClient]]:
    """A rider riding vehicle 101, taken from spot 1 of the city's first (simulated) station, following their
    feed (its start events read)."""
    city = await make_city(harness, **{"stations": 2, **city_options})
    _, token = await rider_city(harness, city)
    async with simulated(harness, city.stations[0], {1: 101}), user_feed(harness, token) as feed:
        assert (await unlock(harness, token, "SN101")).status_code == 200
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        yield city, token, feed


async def test_a_locked_resent_after_a_cut_connection_ends_the_rent_once(harness: Harness) -> None:
    async with riding_101(harness) as (city, _, feed):
        returned = {"spot": 2, "vehicle": 101, "time": 1_700_000_000_000, "cache_accepted": False}
        async with station_socket(harness.station_url, *city.stations[1]) as raw:
            await raw.boot()
            await raw.send([2, "lock-1", "locked", returned])  # the connection drops before the answer is read
        async with raw_station(harness, city.stations[1], {1: None, 2: 101, 3: None, 4: None}) as raw:
            answer = await raw.call("locked", returned, call_id="lock-1")
            assert answer == [3, "lock-1", {"accepted": 0}]
            again = await raw.call("locked", returned, call_id="lock-1")
            assert again == answer
        assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]
        with trio.move_on_after(0.5):
            extra = await feed.events(1)
            pytest.fail(f"ended twice: {extra}")
    assert await harness.db.fetchval("SELECT count(*) FROM rents WHERE state = 'ended'") == 1


async def test_a_spot_in_maintenance_denies_the_return_and_the_rent_goes_on(harness: Harness) -> None:
    city = await make_city(harness, stations=2)
    _, token = await rider_city(harness, city)
    station_b = city.stations[1][0]
    await harness.svc.stations.set_spot_maintenance(station_b, 2, True)
    async with simulated(harness, city.stations[0], {1: 101}), simulated(harness, city.stations[1], {}) as second, \
            user_feed(harness, token) as feed:
        assert (await unlock(harness, token, "SN101")).status_code == 200
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        denied = await (await second.return_vehicle(2, 101)).wait()
        assert denied.result == {"accepted": 2}
        await second.wait_until(lambda: second.spot(2).vehicle is None)  # released again by the station
        assert [r["state"] for r in await rents_of(harness, token)] == ["ongoing"]
        await second.return_vehicle(3, 101)
        assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]


async def test_an_unreadable_vehicle_is_matched_through_refresh(harness: Harness) -> None:
    async with riding_101(harness) as (city, _, feed):
        async with raw_station(harness, city.stations[1], {1: None, 2: None, 3: None, 4: None}) as raw:
            unreadable = {"spot": 4, "vehicle": 0, "time": 1_700_000_000_000, "cache_accepted": False}
            assert (await raw.call("locked", unreadable))[2] == {"accepted": 0}
            refresh = await answering(raw, lambda frame: raw.answer(frame))
            assert refresh[2:] == ["refresh", {"spot": 4}]
            readable = {**unreadable, "vehicle": 101}
            assert (await raw.call("locked", readable))[2] == {"accepted": 0}
            assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]


async def test_a_trip_too_long_warns_the_rider_once(harness: Harness) -> None:
    async with riding_101(harness, stations=1, trip_too_long=1) as (_, _, feed):
        [warning] = await feed.events(1)
        assert warning["event"] == "rent.too_long" and warning["data"]["trip_too_long"] == 1
        with trio.move_on_after(1.5):
            extra = await feed.events(1)
            pytest.fail(f"warned twice: {extra}")


# --------------------------------------------------------------------------
# Privacy and hostile input


async def test_another_riders_trip_answers_404_and_rents_are_the_callers_only(harness: Harness) -> None:
    city = await make_city(harness, stations=1)
    _, token = await rider_city(harness, city)
    _, other = await city.rider(harness, "other@example.com")
    async with simulated(harness, city.stations[0], {1: 101}):
        response = await unlock(harness, token, "SN101")
        trip = response.json()["data"]["trip_id"]
        await eventually(lambda: harness.svc.vehicles.state(101).rent is not None)
    assert await rents_of(harness, other) == []
    resume = await harness.client.put(f"/api/application/trips/{trip}/resume", headers=bearer(other))
    assert failed(resume) == (404, 4)
    unknown = await harness.client.put("/api/application/trips/999999/resume", headers=bearer(token))
    assert failed(unknown) == (404, 4)
    mine = await harness.client.put(f"/api/application/trips/{trip}/resume", headers=bearer(token))
    assert failed(mine) == (409, 35)  # not paused


async def test_the_history_pages_with_before_and_limit(harness: Harness) -> None:
    city = await make_city(harness, stations=2)
    _, token = await rider_city(harness, city)
    async with simulated(harness, city.stations[0], {1: 101, 2: 102, 3: 103}), \
            simulated(harness, city.stations[1], {}) as second, user_feed(harness, token) as feed:
        trips = []
        for n, vehicle in enumerate((101, 102, 103)):
            response = await unlock(harness, token, f"SN{vehicle}")
            trips.append(response.json()["data"]["trip_id"])
            await feed.events(2)
            if n < 2:
                await second.return_vehicle(n + 1, vehicle)
                await feed.events(2)
        everything = await rents_of(harness, token)
        assert [r["trip_id"] for r in everything] == [trips[2], trips[1], trips[0]]  # ongoing first, then newest
        assert [r["state"] for r in everything] == ["ongoing", "ended", "ended"]
        assert [r["trip_id"] for r in await rents_of(harness, token, limit=1)] == [trips[2]]
        assert [r["trip_id"] for r in await rents_of(harness, token, before=trips[2], limit=5)] == [trips[1], trips[0]]
    bad = await harness.client.get("/api/application/users/rents", params={"limit": 0}, headers=bearer(token))
    assert failed(bad) == (400, 2)
    huge = await harness.client.get("/api/application/users/rents", params={"before": 2**70}, headers=bearer(token))
    assert failed(huge) == (400, 2)


async def test_hostile_unlock_bodies_get_400(harness: Harness) -> None:
    city = await make_city(harness, stations=1)
    _, token = await rider_city(harness, city)
    for body in (
        b'{"serial_number": "SN101", "lat": 48.58}',
        b'{"serial_number": 101, "lat": 48.58, "lng": 7.73}',
        b'{"serial_number": "' + b"A" * 65 + b'", "lat": 48.58, "lng": 7.73}',
        b'{"serial_number": "SN\\u0000", "lat": 48.58, "lng": 7.73}',
        b'{"serial_number": "SN101", "lat": 1e400, "lng": 7.73}',
        b'\xff\xfe',
        b'[]',
    ):
        response = await harness.client.post(
            "/api/application/vehicles/unlock", content=body,
            headers={**bearer(token), "Content-Type": "application/json"},
        )
        assert failed(response) == (400, 2), (body, response.text)
        assert json.loads(response.text)["code"] == 2


# --------------------------------------------------------------------------
# Restarts


async def test_a_server_restart_in_the_middle_of_a_rent_loses_nothing(settings: Settings) -> None:
    async with trio_asyncio.open_loop():
        async with serving(settings) as harness:
            city = await make_city(harness, stations=2)
            _, token = await rider_city(harness, city)
            async with simulated(harness, city.stations[0], {1: 101}), user_feed(harness, token) as feed:
                assert (await unlock(harness, token, "SN101")).status_code == 200
                assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        # The server is gone; the rider rides on. A new server on the same database:
        async with serving(settings) as harness:
            await eventually(lambda: harness.svc.vehicles.state(101).rent is not None)
            assert [r["state"] for r in await rents_of(harness, token)] == ["ongoing"]
            async with simulated(harness, city.stations[1], {}) as second, user_feed(harness, token) as feed:
                await second.return_vehicle(1, 101)
                assert names(await feed.events(2)) == ["vehicle.locked", "rent.ended"]
            assert [r["state"] for r in await rents_of(harness, token)] == ["ended"]
