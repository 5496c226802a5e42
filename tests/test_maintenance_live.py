"""Maintenances live (issue 13): their effects through the station actors and the vehicles' live state,
the ones the stations open themselves, and the cluster overview and counts (rows 56-57).

Real server (hypercorn on port 0, real PostgreSQL), real station sockets (``RawStation``), the real feed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any

import httpx
import pytest

from knot_rt.config import Settings
from knot_rt.maintenance.store import Maintenance, Target
from tests.feed_client import FeedClient, open_feed
from tests.station_client import RawStation, station_socket
from tests.support import Harness, bearer, eventually, eventually_value, open_test_session, wait_station_online
from tests.test_maps import by_id, ids, public_map, user_map
from tests.test_networks import make_city as make_map_city

NEAR = {"lat": 48.5801, "lng": 7.7301}
RETURN_TIME = 1_700_000_000_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, station_call_timeout=1.0, station_offline_maintenance_seconds=0.3)


@dataclass
class Site:
    network: int
    cluster: int
    station: tuple[int, str]
    operator: int
    operator_token: str
    rider_token: str


async def make_site(harness: Harness) -> Site:
    make = harness.make
    label = await make.app_label_once("knot")
    network = await make.network(labels=[label], center=(48.58, 7.73))
    cluster = await make.cluster(network)
    [station] = await make.stations(cluster, 1, 4)
    await make.vehicles(network, range(101, 111))
    await harness.svc.catalog.reload()
    operator = await harness.create_user("maint@example.com", perms=[("maintenance", True)], networks=[network])
    rider = await harness.create_user("rider@example.com", app_label=label)
    return Site(network, cluster, station, operator, await open_test_session(harness, operator),
                await open_test_session(harness, rider))


@asynccontextmanager
async def raw_station(harness: Harness, station: tuple[int, str], spots: dict[int, int | None]) -> AsyncIterator[
        RawStation]:
    async with station_socket(harness.station_url, *station) as raw:
        await raw.boot()
        assert (await raw.state(spots))[0] == 3
        await wait_station_online(harness, station[0])
        yield raw


async def spot_target(harness: Harness, station_id: int, number: int) -> Target:
    target = await harness.svc.maintenance.spot_by_number(station_id, number)
    assert target is not None
    return target


async def open_for(harness: Harness, site: Site, target: Target, type_key: str, severity: str = "high") -> Maintenance:
    opened = await harness.svc.maintenance.open(target, type_key, severity=severity,  # type: ignore[arg-type]
                                                by_user_id=site.operator, comment="seen by an operator")
    assert opened is not None
    return opened


async def cluster_json(harness: Harness, site: Site) -> dict[str, Any]:
    response = await harness.client.get(f"/api/application/clusters/{site.cluster}", headers=bearer(site.rider_token))
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()["data"]
    return data


async def unlock(harness: Harness, site: Site, serial: str) -> httpx.Response:
    return await harness.client.post("/api/application/vehicles/unlock", headers=bearer(site.rider_token),
                                     json={"serial_number": serial, **NEAR})


def locked(spot: int, vehicle: int) -> dict[str, Any]:
    return {"spot": spot, "vehicle": vehicle, "time": RETURN_TIME, "cache_accepted": False}


async def topic_events(harness: Harness, topic: str) -> list[tuple[str, int | None]]:
    """The durable events of a topic, in order: (event, maintenance_id)."""
    rows = await harness.db.fetch("SELECT event, data FROM feed_events WHERE topic = $1 ORDER BY seq", topic)
    found = []
    for row in rows:
        data = row["data"] if isinstance(row["data"], dict) else json.loads(row["data"])
        found.append((row["event"], data.get("maintenance_id")))
    return found


def maintenance_events(events: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    return [e for e in events if e[0].startswith("maintenance.")]


async def events_until(feed: FeedClient, done: Callable[[dict[str, Any]], bool], at_most: int = 20) -> list[
        dict[str, Any]]:
    """The feed's next events up to the first for which ``done`` holds (bounded)."""
    found: list[dict[str, Any]] = []
    for _ in range(at_most):
        [event] = await feed.events(1)
        found.append(event)
        if done(event):
            return found
    raise AssertionError(f"not seen in {at_most} events: {found}")


async def open_automatic(harness: Harness, target: Target) -> list[Maintenance]:
    return [m for m in await harness.svc.maintenance.ongoing_of(target) if m.started_by == "automatic"]


# --------------------------------------------------------------------------------------------------------
# effects of operators' maintenances


async def test_a_high_spot_maintenance_denies_a_return_and_resolving_restores_it(harness: Harness) -> None:
    """The operator's flow over HTTP; the cluster, the station's and the network's topics on the real feed."""
    site = await make_site(harness)
    station_id = site.station[0]
    headers = bearer(site.operator_token)
    target = await spot_target(harness, station_id, 2)
    async with raw_station(harness, site.station, {1: 101, 2: None, 3: None, 4: None}) as raw:
        before = await eventually_value(lambda: cluster_json(harness, site), lambda c: c["free_spots"] == 3)
        assert before["available_vehicles"] == 1
        async with open_feed(harness.base_url, site.operator_token) as feed:
            for topic in (f"cluster:{site.cluster}", f"station:{station_id}", f"maintenance:{site.network}"):
                assert (await feed.subscribe(topic)).get("code") == 0, topic
            opened = await harness.client.post("/api/application/maintenances/spots", headers=headers, json={
                "maintenance_type": "lock-stuck", "comment": "the lock sticks", "spot_id": target.spot_id,
            })
            assert opened.status_code == 200, opened.text
            maintenance_id = opened.json()["data"]["maintenance_id"]
            assert opened.json()["data"]["severity"] == "high"  # the type's
            view = harness.svc.stations.live.station(station_id)
            assert view is not None and view.spot(2) is not None and view.spot(2).in_maintenance  # type: ignore[union-attr]
            assert (await cluster_json(harness, site))["free_spots"] == 2  # at once: the hook ran before the answer
            # maintenance.opened twice, then cluster.updated with the spot gone (a cluster.updated of the boot,
            # published after its coalescing delay, may come first).
            seen = await events_until(feed, lambda e: e["event"] == "cluster.updated" and e["data"]["free_spots"] == 2)
            assert (await raw.call("locked", locked(2, 102)))[2] == {"accepted": 2}  # DENY
            resolved = await harness.client.delete(f"/api/application/maintenances/{maintenance_id}", headers=headers)
            assert resolved.status_code == 200, resolved.text
            assert (await cluster_json(harness, site))["free_spots"] == 3
            seen += await events_until(feed, lambda e: e["event"] == "cluster.updated" and e["data"]["free_spots"] == 3)
            while sum(1 for e in seen if e["event"] == "maintenance.resolved") < 2:
                seen += await feed.events(1)
        assert (await raw.call("locked", locked(2, 102)))[2] == {"accepted": 0}
    by_topic: dict[str, list[tuple[str, Any]]] = {}
    for event in seen:
        by_topic.setdefault(event["topic"], []).append((event["event"], event["data"].get("maintenance_id")))
    assert by_topic[f"station:{station_id}"] == [("maintenance.opened", maintenance_id), ("spot.locked", None),
                                                 ("maintenance.resolved", maintenance_id)]
    assert by_topic[f"maintenance:{site.network}"] == maintenance_events(by_topic[f"station:{station_id}"])
    free = [e["data"]["free_spots"] for e in seen if e["event"] == "cluster.updated"]
    assert free[-2:] == [2, 3]
    assert await harness.db.fetchval(
        "SELECT in_maintenance FROM spots WHERE station_id = $1 AND number = 2", station_id) is False
    events = maintenance_events(await topic_events(harness, f"station:{station_id}"))
    assert events == [("maintenance.opened", maintenance_id), ("maintenance.resolved", maintenance_id)]


async def test_a_station_maintenance_takes_every_spot_out_and_a_lower_severity_puts_them_back(
        harness: Harness) -> None:
    site = await make_site(harness)
    station_id = site.station[0]
    target = await harness.svc.maintenance.station(station_id)
    assert target is not None
    async with raw_station(harness, site.station, {1: None, 2: None, 3: None, 4: None}) as raw:
        await eventually_value(lambda: cluster_json(harness, site), lambda c: c["free_spots"] == 4)
        m = await open_for(harness, site, target, "power-supply")
        assert (await cluster_json(harness, site))["free_spots"] == 0
        assert (await raw.call("locked", locked(3, 103)))[2] == {"accepted": 2}
        await harness.svc.maintenance.update(m.id, severity="low")
        assert (await cluster_json(harness, site))["free_spots"] == 4
        assert (await raw.call("locked", locked(3, 103)))[2] == {"accepted": 0}


async def test_a_high_vehicle_maintenance_takes_it_out_of_rent_until_resolved(harness: Harness) -> None:
    site = await make_site(harness)
    async with raw_station(harness, site.station, {1: 101, 2: None, 3: None, 4: None}):
        await eventually_value(lambda: cluster_json(harness, site), lambda c: c["available_vehicles"] == 1)
        target = await harness.svc.maintenance.vehicle(serial_number="SN101")
        assert target is not None and target.station_id == site.station[0]
        m = await open_for(harness, site, target, "flat-tyre")
        assert (await cluster_json(harness, site))["available_vehicles"] == 0
        refused = await unlock(harness, site, "SN101")
        assert (refused.status_code, refused.json()["code"]) == (409, 30)
        await harness.svc.maintenance.resolve(m.id, by_user_id=site.operator)
        assert (await cluster_json(harness, site))["available_vehicles"] == 1
        assert harness.svc.vehicles.in_maintenance(101) is False


async def test_the_effects_of_open_high_maintenances_are_applied_again_at_start(harness: Harness) -> None:
    site = await make_site(harness)
    m = await open_for(harness, site, await spot_target(harness, site.station[0], 4), "spot-damaged")
    vehicle = await harness.svc.maintenance.vehicle(vehicle_id=105)
    assert vehicle is not None
    await open_for(harness, site, vehicle, "brake")
    # What a restart reads: forget the live state, flag the spot back in service behind its back, load.
    live = harness.svc.maintenance_live
    harness.svc.vehicles.live.set_in_maintenance(105, False)
    for open_one in list(live.open_maintenances()):
        live._forget(open_one.id)
    await harness.svc.stations.set_spot_maintenance(site.station[0], 4, False)
    await live.load()
    assert live.spot_counts(m.spot_id or 0).high == 1
    view = await harness.svc.stations.view(site.station[0])
    assert view is not None and view.spot(4) is not None and view.spot(4).in_maintenance  # type: ignore[union-attr]
    assert harness.svc.vehicles.in_maintenance(105)


# --------------------------------------------------------------------------------------------------------
# opened by the stations


def fault(status: str, spot: int = 2) -> dict[str, Any]:
    return {"fault": 1, "fault_name": "charge-fault", "fault_status": status, "spot": spot}


async def test_a_fault_opens_one_maintenance_resent_or_repeated_and_disappeared_resolves_it(
        harness: Harness) -> None:
    site = await make_site(harness)
    station_id = site.station[0]
    target = await spot_target(harness, station_id, 2)
    async with raw_station(harness, site.station, {1: None, 2: None, 3: None, 4: None}) as raw:
        assert (await raw.call("fault", fault("appearing"), call_id="f-1"))[0] == 3
        [m] = await eventually_value(lambda: open_automatic(harness, target), lambda found: len(found) == 1)
        assert m.automatic_code_description == "charge-fault" and m.type_key == "charge-fault"
        assert m.started_by == "automatic" and m.started_by_uid is None
        assert (await raw.call("fault", fault("appearing"), call_id="f-1"))[0] == 3  # resent: same id
        assert (await raw.call("fault", fault("appearing"), call_id="f-2"))[0] == 3  # repeated: a new id
        # The worker handles reports in order: once a later report is handled, the repeats were too.
        assert (await raw.call("fault", fault("appearing", spot=3), call_id="f-3"))[0] == 3
        other = await spot_target(harness, station_id, 3)
        await eventually_value(lambda: open_automatic(harness, other), lambda found: len(found) == 1)
        assert [x.id for x in await open_automatic(harness, target)] == [m.id]
        assert (await raw.call("fault", fault("disappeared"), call_id="f-4"))[0] == 3
        await eventually_value(lambda: open_automatic(harness, target), lambda found: found == [])
    [resolved] = await harness.svc.maintenance.history(target)
    assert resolved.id == m.id and resolved.stopped_by == "automatic"
    assert await harness.db.fetchval(
        "SELECT count(*) FROM maintenances WHERE spot_id = $1", target.spot_id) == 1
    events = maintenance_events(await topic_events(harness, f"station:{station_id}"))
    assert [e for e in events if e[1] == m.id] == [("maintenance.opened", m.id), ("maintenance.resolved", m.id)]


async def test_a_locker_stuck_alert_takes_its_spot_out_until_it_disappears(harness: Harness) -> None:
    site = await make_site(harness)
    station_id = site.station[0]
    target = await spot_target(harness, station_id, 1)
    alert = {"alert": 4, "alert_name": "locker-stuck", "spot": 1}
    async with raw_station(harness, site.station, {1: None, 2: None, 3: None, 4: None}) as raw:
        await raw.call("alert", {**alert, "alert_status": "appearing"})
        [m] = await eventually_value(lambda: open_automatic(harness, target), lambda found: len(found) == 1)
        assert (m.type_key, m.severity, m.automatic_code_description) == ("lock-stuck", "high", "locker-stuck")
        await eventually(lambda: harness.svc.stations.live.station(station_id).spot(1).in_maintenance)  # type: ignore[union-attr]
        assert (await raw.call("locked", locked(1, 104)))[2] == {"accepted": 2}
        await raw.call("alert", {**alert, "alert_status": "disappeared"})
        await eventually(lambda: not harness.svc.stations.live.station(station_id).spot(1).in_maintenance)  # type: ignore[union-attr]
        assert (await raw.call("locked", locked(1, 104)))[2] == {"accepted": 0}


async def test_an_unexpected_unlock_of_a_vehicle_not_rented_opens_a_check(harness: Harness) -> None:
    site = await make_site(harness)
    async with raw_station(harness, site.station, {1: 101, 2: None, 3: None, 4: None}) as raw:
        await eventually(lambda: harness.svc.vehicles.state(101).station_id == site.station[0])
        assert (await raw.call("unexpected-unlock", {"spot": 1}))[0] == 3
        target = await harness.svc.maintenance.vehicle(vehicle_id=101)
        assert target is not None
        [m] = await eventually_value(lambda: open_automatic(harness, target), lambda found: len(found) == 1)
        assert (m.type_key, m.automatic_code_description) == ("check-vehicle", "unexpected-unlock")


async def test_a_station_offline_past_the_configured_time_gets_a_maintenance_resolved_when_back(
        harness: Harness) -> None:
    site = await make_site(harness)
    station_id = site.station[0]
    target = await harness.svc.maintenance.station(station_id)
    assert target is not None
    async with raw_station(harness, site.station, {1: None, 2: None, 3: None, 4: None}):
        pass
    await wait_station_online(harness, station_id, online=False)
    [m] = await eventually_value(lambda: open_automatic(harness, target), lambda found: len(found) == 1)
    assert (m.type_key, m.automatic_code_description) == ("station-offline", "offline")
    async with raw_station(harness, site.station, {1: None, 2: None, 3: None, 4: None}):
        await eventually_value(lambda: open_automatic(harness, target), lambda found: found == [])
    [resolved] = await harness.svc.maintenance.history(target)
    assert resolved.id == m.id and resolved.stopped_by == "automatic"


# --------------------------------------------------------------------------------------------------------
# rows 56-57


async def test_the_cluster_overview_and_counts_follow_the_maintenances(harness: Harness) -> None:
    site = await make_site(harness)
    station_id = site.station[0]
    headers = bearer(site.operator_token)
    async with raw_station(harness, site.station, {1: 101, 2: None, 3: None, 4: None}):
        await eventually(lambda: harness.svc.vehicles.state(101).station_id == station_id)
        station = await harness.svc.maintenance.station(station_id)
        vehicle = await harness.svc.maintenance.vehicle(vehicle_id=101)
        assert station is not None and vehicle is not None
        await open_for(harness, site, station, "station-cleaning", "info")
        await open_for(harness, site, await spot_target(harness, station_id, 2), "spot-damaged", "low")
        resolved = await open_for(harness, site, vehicle, "flat-tyre")
        await open_for(harness, site, vehicle, "cleaning", "info")
        await harness.svc.maintenance.resolve(resolved.id, by_user_id=site.operator)

        response = await harness.client.get(f"/api/application/maintenances/clusters/{site.cluster}", headers=headers)
        assert response.status_code == 200, response.text
        data = response.json()["data"]
        [row] = data["stations"]
        assert row["station_id"] == station_id
        assert row["station_maintenances"] == {"info_count": 1, "low_count": 0, "high_count": 0}
        spots = {s["displayed_number"]: s for s in row["spots"]}
        assert spots[1]["contained_vehicle_id"] == 101 and spots[1]["serial_number"] == "SN101"
        assert spots[1]["lock_status"] == 1 and spots[1]["vehicle_type"] == "kick-scooter"
        assert spots[1]["vehicle_maintenances"] == {"info_count": 1, "low_count": 0, "high_count": 0}
        assert spots[2]["spot_maintenances"] == {"info_count": 0, "low_count": 1, "high_count": 0}
        assert spots[2]["contained_vehicle_id"] is None and spots[2]["serial_number"] is None
        assert set(spots[1]) == {"spot_id", "contained_vehicle_id", "serial_number", "station_id", "displayed_number",
                                 "lock_status", "vehicle_maintenances", "spot_maintenances", "vehicle_type"}
        assert data["vehicles"] == []

        other = await harness.make.cluster(site.network, name="Port")
        await harness.svc.catalog.reload()
        counts = await harness.client.get(
            f"/api/application/maintenances/clusters?clusters={site.cluster}&clusters={other}", headers=headers)
        assert counts.status_code == 200, counts.text
        assert counts.json()["data"] == [
            {"cluster_id": site.cluster, "maintenances": {"info_count": 2, "low_count": 1, "high_count": 0}},
            {"cluster_id": other, "maintenances": {"info_count": 0, "low_count": 0, "high_count": 0}},
        ]

    # Unknown cluster first (404/4), then rights (403/13).
    unknown = await harness.client.get("/api/application/maintenances/clusters/999999", headers=headers)
    assert (unknown.status_code, unknown.json()["code"]) == (404, 4)
    forbidden = await harness.client.get(f"/api/application/maintenances/clusters/{site.cluster}",
                                         headers=bearer(site.rider_token))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, 13)
    forbidden = await harness.client.get(f"/api/application/maintenances/clusters?clusters={site.cluster}",
                                         headers=bearer(site.rider_token))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, 13)


async def test_a_free_floating_vehicle_in_high_maintenance_is_not_available_on_the_maps(harness: Harness) -> None:
    city = await make_map_city(harness)
    free = city.vehicles["free"]
    target = await harness.svc.maintenance.vehicle(vehicle_id=free)
    assert target is not None
    operator = await harness.create_user("maint@example.com", perms=[("maintenance", True)],
                                         networks=[target.network_id])
    m = await harness.svc.maintenance.open(target, "brake", by_user_id=operator)
    assert m is not None
    assert by_id((await user_map(harness, city, "rider"))["vehicles"], "vehicle_id")[free]["is_available"] is False
    assert free not in ids((await public_map(harness, app_label="knot"))["vehicle"], "vehicle_id")
    await harness.svc.maintenance.resolve(m.id, by_user_id=operator)
    assert by_id((await user_map(harness, city, "rider"))["vehicles"], "vehicle_id")[free]["is_available"] is True
    assert free in ids((await public_map(harness, app_label="knot"))["vehicle"], "vehicle_id")
