"""Live values of the map and cluster routes with stations brought up by the simulator."""

from __future__ import annotations

from typing import Any

import trio

from knot_rt.simulator.station import SimulatedStation
from tests.support import Harness, bearer, eventually, open_test_session

AREA = {"lat": 48.58, "lng": 7.75, "latDeg": 0.05, "lngDeg": 0.05, "app_label": "knot"}


async def make_cluster_with_stations(harness: Harness) -> tuple[int, int, list[tuple[int, str]]]:
    label = await harness.make.app_label()
    network = await harness.make.network(labels=[label])
    cluster = await harness.make.cluster(network, "Kléber", 48.5833, 7.7458)
    stations = await harness.make.stations(cluster, 2, 4)
    for station_id, _ in stations:  # the vehicles the simulator docks: station_id * 100 + spot
        await harness.make.vehicles(network, range(station_id * 100 + 1, station_id * 100 + 5), prefix="SIM")
    await harness.svc.catalog.reload()
    return network, cluster, stations


async def public_cluster(harness: Harness, cluster: int) -> dict[str, Any]:
    response = await harness.client.get("/api/application/map/public", params=AREA)
    assert response.status_code == 200, response.text
    (found,) = [c for c in response.json()["clusters"] if c["cluster_id"] == cluster]
    return dict(found)


async def test_map_and_cluster_routes_follow_simulated_stations(harness: Harness) -> None:
    network, cluster, stations = await make_cluster_with_stations(harness)
    operator = await harness.create_user("op@example.com", perms=[("stations", True)], networks=[network])
    token = await open_test_session(harness, operator)
    (first_id, first_secret), (second_id, second_secret) = stations
    first = SimulatedStation(first_id, first_secret, harness.station_url, spots=4,
                             vehicles={1: first_id * 100 + 1, 2: first_id * 100 + 2})
    second = SimulatedStation(second_id, second_secret, harness.station_url, spots=4,
                              vehicles={1: second_id * 100 + 1})
    live = harness.svc.stations.live
    async with trio.open_nursery() as nursery:
        nursery.start_soon(first.run)
        nursery.start_soon(second.run)
        await eventually(lambda: live.cluster(cluster).available_vehicles == 3)
        shown = await public_cluster(harness, cluster)
        assert (shown["available_vehicles"], shown["free_spots"], shown["total_spots"], shown["cluster_is_down"]) == (
            3, 5, 8, False)

        unlocked = await harness.client.post("/api/application/spots/unlock/admin", headers=bearer(token),
                                             json={"station_id": first_id, "spot": 2})
        assert unlocked.status_code == 200, unlocked.text
        await eventually(lambda: live.cluster(cluster).available_vehicles == 2)
        vehicles = await harness.client.get(f"/api/application/clusters/{cluster}/vehicles", headers=bearer(token))
        assert vehicles.status_code == 200, vehicles.text
        assert sorted(v["vehicle_id"] for v in vehicles.json()["data"]) == [first_id * 100 + 1, second_id * 100 + 1]
        assert all(v["vehicle_online"] for v in vehicles.json()["data"])

        first.stop()
        await eventually(lambda: live.cluster(cluster).available_vehicles == 1)
        shown = await public_cluster(harness, cluster)
        assert (shown["available_vehicles"], shown["total_spots"], shown["cluster_is_down"]) == (1, 8, False)

        second.stop()
        await eventually(lambda: live.cluster(cluster).cluster_is_down)
        shown = await public_cluster(harness, cluster)
        assert (shown["available_vehicles"], shown["cluster_is_down"]) == (0, True)
        details = await harness.client.get(f"/api/application/clusters/{cluster}", headers=bearer(token))
        assert (details.json()["data"]["cluster_is_down"], details.json()["data"]["available_vehicles"]) == (True, 0)
