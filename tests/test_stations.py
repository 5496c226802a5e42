"""Stations over real sockets: the gateway, the station actors, operator commands and the feed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import pytest
import trio
import trio.testing
from trio_websocket import ConnectionClosed, ConnectionRejected

from actors.station import Crash
from knot_rt.config import Settings
from tests.feed_client import FeedClient, open_feed, rider_seeing
from tests.station_client import RawStation, next_call, state_payload, station_socket, unlock_by_operator
from tests.support import Harness, bearer, eventually, open_test_session, wait_station_online


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, station_call_timeout=1.0)


@dataclass
class Site:
    network: int
    cluster: int
    stations: list[tuple[int, str]]  # (id, secret)
    operator_token: str


async def make_site(harness: Harness, stations: int = 2, spots: int = 4) -> Site:
    network = await harness.make.network()
    cluster = await harness.make.cluster(network, "Gare", 48.58, 7.73)
    made = await harness.make.stations(cluster, stations, spots)
    await harness.make.vehicles(network, range(101, 141))
    operator = await harness.create_user("operator@example.com", perms=[("stations", True)], networks=[network])
    return Site(network, cluster, made, await open_test_session(harness, operator))


@asynccontextmanager
async def two_booted(harness: Harness, site: Site) -> AsyncIterator[tuple[RawStation, RawStation]]:
    """The site's first two stations, connected and booted."""
    (first_id, first_secret), (second_id, second_secret) = site.stations[:2]
    async with station_socket(harness.station_url, first_id, first_secret) as first, \
            station_socket(harness.station_url, second_id, second_secret) as second:
        await first.boot()
        await second.boot()
        yield first, second


async def booted(harness: Harness, station: tuple[int, str]) -> Any:
    return station_socket(harness.station_url, *station)


async def test_boot_state_and_live_details(harness: Harness) -> None:
    site = await make_site(harness)
    station_id, secret = site.stations[0]
    async with station_socket(harness.station_url, station_id, secret) as station:
        answer = await station.boot()
        assert answer[0] == 3 and answer[2]["status"] == "accepted"
        assert answer[2]["heartbeat_interval"] == 1800 and answer[2]["server_time"] > 0
        assert await station.state({1: 101, 2: None, 3: 102, 4: None}, battery=77) == [3, "t-2", {}]
        response = await harness.client.get(f"/api/application/stations/{station_id}",
                                            headers=bearer(site.operator_token))
    assert response.status_code == 200
    data = response.json()["data"]
    assert data["online"] is True and data["cluster_id"] == site.cluster
    assert [(s["spot"], s["vehicle"], s["lock"]) for s in data["spots"]] == [(1, 101, 1), (2, None, 0), (3, 102, 1),
                                                                          (4, None, 0)]
    assert {v["vehicle"]: v["battery"] for v in data["vehicles"]} == {101: 77, 102: 77}
    assert data["connectivity"]["type"] == "CAT-M1"

    async def saved() -> bool:
        row = await harness.db.fetchrow("SELECT battery_level, spot_id FROM vehicles WHERE id = 101")
        return bool(row["battery_level"] == 77 and row["spot_id"] is not None)

    await eventually(saved)  # the vehicle actors write their rows after the station's event


async def test_wrong_secret_unknown_station_and_missing_subprotocol_are_refused(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    for sid, sec in ((station_id, "x" * 32), (999999, secret)):
        with pytest.raises(ConnectionRejected) as rejected:
            async with station_socket(harness.station_url, sid, sec):
                pass
        assert rejected.value.status_code == 401
    with pytest.raises(ConnectionRejected) as rejected:
        async with station_socket(harness.station_url, station_id, secret, subprotocols=[]):
            pass
    assert rejected.value.status_code == 400


async def test_bad_frames_get_the_contract_answer_and_the_actor_keeps_running(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    async with station_socket(harness.station_url, station_id, secret) as station:
        assert (await station.call("state", state_payload({1: None})))[2] == "ProtocolError"  # before boot
        await station.boot()
        await station.send("not json at all")
        assert (await station.receive())[:3] == [4, "-1", "FormatViolation"]
        await station.send([2, "x-1"])
        assert (await station.receive())[:3] == [4, "x-1", "FormatViolation"]
        assert (await station.call("fly", {}))[2] == "NotImplemented"
        bad_range = await station.call("locked", {"spot": 40, "vehicle": 1, "time": 1, "cache_accepted": False})
        assert bad_range[2] == "FormatViolation" and "spot" in bad_range[3]
        not_ours = await station.call("locked", {"spot": 9, "vehicle": 1, "time": 1, "cache_accepted": False})
        assert not_ours[2] == "FormatViolation"  # this station has 4 spots
        await station.send([2, "big-1", "alert", {"alert": 0, "alert_name": "x" * 70_000,
                                                  "alert_status": "appearing"}])
        oversized = await station.receive()
        assert oversized[:3] == [4, "-1", "FormatViolation"] and "65536" in oversized[3]
        assert (await station.state({1: 101}))[::2] == [3, {}]  # still served by the same actor
    assert harness.svc.stations.metrics.restarts_total == 0


async def test_a_frame_over_the_transport_limit_closes_the_connection(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    async with station_socket(harness.station_url, *site.stations[0]) as station:
        await station.boot()
        await station.send([2, "big", "alert", {"alert_name": "x" * 300_000}])
        with pytest.raises(ConnectionClosed) as closed:
            await station.receive()
    assert closed.value.reason.code == 1009


async def test_a_repeated_message_id_is_answered_the_same_and_applied_once(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    locked = {"spot": 2, "vehicle": 103, "time": 1_700_000_000_000, "cache_accepted": True}
    async with open_feed(harness.base_url, site.operator_token) as feed:
        assert (await feed.subscribe(f"station:{station_id}"))["code"] == 0
        async with station_socket(harness.station_url, station_id, secret) as station:
            await station.boot()
            first = await station.call("locked", locked, call_id="boot1-7")
        async with station_socket(harness.station_url, station_id, secret) as station:
            await station.boot()
            again = await station.call("locked", locked, call_id="boot1-7")
            await station.call("unexpected-unlock", {"spot": 3})
        assert first == again == [3, "boot1-7", {"accepted": 1}]
        events = [e["event"] for e in await feed.events(6)]
    assert events.count("spot.locked") == 1
    assert events == ["station.online", "spot.locked", "station.offline", "station.online", "spot.unlocked",
                      "station.offline"][: len(events)]
    count = await harness.db.fetchval("SELECT count(*) FROM station_messages WHERE message_id = 'boot1-7'")
    assert count == 1


async def test_the_newest_connection_replaces_the_older(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    async with station_socket(harness.station_url, station_id, secret) as old:
        await old.boot()
        async with station_socket(harness.station_url, station_id, secret) as new:
            with pytest.raises(ConnectionClosed) as closed:
                await old.receive()
            assert closed.value.reason.code == 4001
            await new.boot()
            assert await new.state({1: 101}) == [3, "t-2", {}]
            view = await wait_station_online(harness, station_id)
    assert view.spot(1) is not None and view.spot(1).vehicle == 101  # type: ignore[union-attr]


async def feed_events(feed: FeedClient, count: int) -> list[tuple[str, str]]:
    return [(e["topic"], e["event"]) for e in await feed.events(count)]


async def test_operator_unlock_round_trip_reaches_station_and_cluster_subscribers(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    rider = await open_test_session(harness, await rider_seeing(harness, site.network))
    async with station_socket(harness.station_url, station_id, secret) as station, \
            open_feed(harness.base_url, site.operator_token) as operator_feed, \
            open_feed(harness.base_url, rider) as rider_feed:
        assert (await rider_feed.subscribe(f"cluster:{site.cluster}"))["code"] == 0
        await station.boot()
        await station.state({1: 101, 2: None, 3: None, 4: None})
        # Cluster changes are gathered for a moment, then published with the latest totals.
        totals: tuple[int, int] | None = None
        while totals != (1, 3):  # the boot and the state may come as one event or two
            (docked,) = await rider_feed.events(1)
            totals = (docked["data"]["available_vehicles"], docked["data"]["free_spots"])
        assert (await operator_feed.subscribe(f"station:{station_id}"))["code"] == 0
        command, response = await unlock_by_operator(harness.base_url, site.operator_token, station, station_id, 1)
        assert response.status_code == 200
        assert response.json()["data"] == {"station_id": station_id, "spot": 1, "unlock": command[3]["unlock"]}
        unlocked = await station.call("unlocked", {"spot": 1, "unlock": command[3]["unlock"], "vehicle": 101})
        assert unlocked[0] == 3
        station_events = await operator_feed.events(1)
        cluster_events = await rider_feed.events(1)
    assert [(e["event"], e["data"]["spot"], e["data"]["unlock"], e["data"]["requested"]) for e in station_events] == [
        ("spot.unlocked", 1, command[3]["unlock"], True)]
    assert [(e["event"], e["data"]["available_vehicles"], e["data"]["free_spots"]) for e in cluster_events] == [
        ("cluster.updated", 0, 4)]
    assert harness.svc.stations.live.cluster(site.cluster).available_vehicles == 0


async def test_commands_to_an_offline_or_silent_station(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    headers = bearer(site.operator_token)
    offline = await harness.client.post(f"/api/application/stations/{station_id}/ping", headers=headers)
    assert (offline.status_code, offline.json()["code"]) == (503, 50)
    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        silent = await harness.client.post(f"/api/application/stations/{station_id}/reboot", headers=headers)
        assert (silent.status_code, silent.json()["code"]) == (504, 40)
        assert (await next_call(station))[2] == "reboot"  # it was sent; the station just did not answer

        async def refuse() -> None:
            command = await next_call(station)
            await station.answer(command, {"status": "rejected"})

        async with trio.open_nursery() as nursery:
            nursery.start_soon(refuse)
            rejected = await harness.client.post("/api/application/spots/unlock/admin",
                                                 json={"station_id": station_id, "spot": 2}, headers=headers)
        assert (rejected.status_code, rejected.json()["code"]) == (409, 41)
        no_spot = await harness.client.post("/api/application/spots/unlock/admin",
                                            json={"station_id": station_id, "spot": 9}, headers=headers)
        assert (no_spot.status_code, no_spot.json()["code"]) == (400, 2)


async def test_config_and_refresh_go_through(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    headers = bearer(site.operator_token)
    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        for method, path, body, action in (
            ("PUT", "config", {"config": "volume", "value": 40}, "config"),
            ("POST", "refresh", {"spot": 2}, "refresh"),
        ):
            outcome: dict[str, Any] = {}

            async def call(method: str = method, path: str = path, body: dict[str, Any] = body,
                           outcome: dict[str, Any] = outcome) -> None:
                response = await harness.client.request(method, f"/api/application/stations/{station_id}/{path}",
                                                        json=body, headers=headers)
                outcome["status"] = response.status_code

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                command = await next_call(station)
                await station.answer(command)
            assert (command[2], outcome["status"]) == (action, 200)
        bad = await harness.client.put(f"/api/application/stations/{station_id}/config",
                                       json={"config": "volume", "value": 101}, headers=headers)
        assert (bad.status_code, bad.json()["code"]) == (400, 2)


async def test_rights_on_stations(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, _ = site.stations[0]
    other = await harness.create_network("Kehl")
    foreign = await harness.create_user("foreign@example.com", perms=[("stations", True)], networks=[other])
    reader = await harness.create_user("maint@example.com", perms=[("maintenance", False)], networks=[site.network])
    rider = await harness.create_user("rider@example.com")
    for user, path, expected in (
        (foreign, f"stations/{station_id}", 403),
        (rider, f"stations/{station_id}", 403),
        (reader, f"stations/{station_id}", 200),
        (reader, f"stations/{station_id}/ping", 403),
        (foreign, "stations/999999", 404),
    ):
        token = await open_test_session(harness, user)
        method = "POST" if path.endswith("ping") else "GET"
        response = await harness.client.request(method, f"/api/application/{path}", headers=bearer(token))
        assert response.status_code == expected, (path, response.json())
    unlock = await harness.client.post("/api/application/spots/unlock/admin", json={"station_id": station_id, "spot": 1},
                                       headers=bearer(await open_test_session(harness, foreign)))
    assert (unlock.status_code, unlock.json()["code"]) == (403, 13)
    assert (await harness.client.post("/api/application/spots/unlock/admin", json={"spot": 1})).status_code == 401


async def test_a_crashed_station_actor_restarts_with_its_state_and_others_notice_nothing(harness: Harness) -> None:
    site = await make_site(harness, stations=2)
    first_id = site.stations[0][0]
    async with two_booted(harness, site) as (first, second):
        await first.state({1: 101, 2: 102})
        await second.state({3: 103})
        ref = harness.svc.stations.running_actor(first_id)
        assert ref is not None
        with pytest.raises(Exception, match="forced crash"):
            await ref.ask(Crash())
        view = await wait_station_online(harness, first_id)
        assert (view.spot(1).vehicle, view.spot(2).vehicle) == (101, 102)  # type: ignore[union-attr]
        assert await first.state({1: 101, 2: None}) == [3, "t-3", {}]  # same socket, served by the new actor
        assert await second.state({3: None}) == [3, "t-3", {}]
    await eventually(lambda: harness.svc.stations.metrics.restarts_total == 1)  # counted just after the asker hears
    await trio.testing.wait_all_tasks_blocked()
    assert harness.svc.stations.metrics.restarts_total == 1


async def test_dropping_the_connection_marks_the_station_offline(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        await station.state({1: 101})
        await wait_station_online(harness, station_id)
        assert harness.svc.stations.live.cluster(site.cluster).available_vehicles == 1
    await wait_station_online(harness, station_id, online=False)
    availability = harness.svc.stations.live.cluster(site.cluster)
    assert (availability.available_vehicles, availability.cluster_is_down) == (0, True)
    assert await harness.db.fetchval("SELECT online FROM stations WHERE id = $1", station_id) is False
    vehicles = harness.svc.vehicles
    await eventually(lambda: vehicles.state(101).station_id == station_id and not vehicles.state(101).online)
    vehicle = vehicles.state(101)
    assert (vehicle.online, vehicle.station_id, vehicle.spot_number, vehicle.battery_level) == (False, station_id, 1, 80)
    assert await harness.db.fetchval("SELECT online FROM vehicles WHERE id = 101") is False


async def test_vehicles_follow_what_the_stations_report(harness: Harness) -> None:
    site = await make_site(harness, stations=2)
    (first_id, _), (second_id, _) = site.stations
    async with two_booted(harness, site) as (first, second):
        vehicles = harness.svc.vehicles
        await first.state({1: 101, 2: None}, battery=64)
        await eventually(lambda: vehicles.state(101).battery_level == 64)
        docked = vehicles.state(101)
        assert (docked.online, docked.station_id, docked.battery_level) == (True, first_id, 64)
        await first.call("unlocked", {"spot": 1, "unlock": 0, "vehicle": 101})
        await eventually(lambda: vehicles.state(101).station_id is None)
        await second.call("locked", {"spot": 3, "vehicle": 101, "time": 1, "cache_accepted": False})
        await eventually(lambda: vehicles.state(101).station_id == second_id)
        moved = vehicles.state(101)
        assert (moved.station_id, moved.spot_number, moved.online) == (second_id, 3, True)

        async def saved_in_spot_3() -> bool:
            number = await harness.db.fetchval(
                "SELECT s.number FROM vehicles v JOIN spots s ON s.id = v.spot_id WHERE v.id = 101")
            return bool(number == 3)

        await eventually(saved_in_spot_3)


async def test_metrics_count_live_stations_and_restarts(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    async with station_socket(harness.station_url, *site.stations[0]) as station:
        await station.boot()
        text = (await harness.client.get("/metrics")).text
    assert "knot_stations_connected 1\n" in text and "knot_stations_online 1\n" in text
    assert 'knot_actors_running{kind="station"} 1' in text
    assert "knot_actor_restarts_total 0\n" in text
