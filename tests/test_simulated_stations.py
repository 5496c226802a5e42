"""End to end with the station simulator over real sockets: unlock round trip, a dropped
connection in the middle of a flow, and 500 stations at once."""

from __future__ import annotations

import trio

from knot_rt.simulator.station import SimulatedStation, Simulator
from tests.feed_client import open_feed
from tests.support import Harness, bearer, eventually, open_test_session
from tests.tcp_proxy import TcpProxy


async def make_stations(
    harness: Harness, count: int, spots: int = 4, *, vehicles: range = range(0)
) -> tuple[int, list[tuple[int, str]]]:
    """A cluster with ``count`` stations of ``spots`` spots; the vehicles the simulator docks
    (station_id * 100 + spot) and ``vehicles`` belong to its network."""
    network = await harness.make.network()
    cluster = await harness.make.cluster(network, "Quai", 48.58, 7.75)
    stations = await harness.make.stations(cluster, count, spots)
    for station_id, _ in stations:
        await harness.make.vehicles(network, range(station_id * 100 + 1, station_id * 100 + spots + 1), prefix="SIM-")
    await harness.make.vehicles(network, vehicles)
    return cluster, stations


async def operator_token(harness: Harness) -> str:
    network: int = await harness.db.fetchval("SELECT min(id) FROM networks")
    user = await harness.create_user("operator@example.com", perms=[("stations", True)], networks=[network])
    return await open_test_session(harness, user)


async def test_unlock_round_trip_with_the_simulator(harness: Harness) -> None:
    # 501 and 502 are vehicles of the station's network (an unknown id would be a fault event).
    cluster, [(station_id, secret)] = await make_stations(harness, 1, vehicles=range(501, 503))
    token = await operator_token(harness)
    await harness.svc.catalog.reload()  # the cluster is seen (and subscribable) once the catalog knows it
    station = SimulatedStation(station_id, secret, harness.station_url, spots=4, vehicles={1: 501, 2: 502})
    async with trio.open_nursery() as nursery, open_feed(harness.base_url, token) as feed:
        nursery.start_soon(station.run)
        await eventually(lambda: harness.svc.stations.live.cluster(cluster).available_vehicles == 2)  # state is in

        async def cluster_told() -> bool:  # and the cluster's feed has told of it (so it comes before we subscribe)
            data = await harness.db.fetchval(
                "SELECT data FROM feed_events WHERE topic = $1 ORDER BY seq DESC LIMIT 1", f"cluster:{cluster}")
            return data is not None and data["available_vehicles"] == 2

        await eventually(cluster_told)
        assert (await feed.subscribe(f"station:{station_id}"))["code"] == 0
        assert (await feed.subscribe(f"cluster:{cluster}"))["code"] == 0
        response = await harness.client.post(
            "/api/application/spots/unlock/admin", json={"station_id": station_id, "spot": 2}, headers=bearer(token)
        )
        assert response.status_code == 200, response.json()
        unlock_id = response.json()["data"]["unlock"]
        events = await feed.events(2)
        station.stop()
    assert [(e["topic"], e["event"]) for e in events] == [
        (f"station:{station_id}", "spot.unlocked"), (f"cluster:{cluster}", "cluster.updated")]
    assert (events[0]["data"]["spot"], events[0]["data"]["unlock"], events[0]["data"]["vehicle"]) == (2, unlock_id, 502)
    assert (events[1]["data"]["available_vehicles"], events[1]["data"]["free_spots"]) == (1, 3)
    assert station.spot(2).vehicle is None


async def test_a_dropped_connection_resends_the_event_which_is_applied_once(harness: Harness) -> None:
    _, [(station_id, secret)] = await make_stations(harness, 1)
    token = await operator_token(harness)
    port = int(harness.station_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy(port)
    async with trio.open_nursery() as nursery, open_feed(harness.base_url, token) as feed:
        proxy_port = await nursery.start(proxy.run)
        url = f"ws://127.0.0.1:{proxy_port}/api/stations/ws"
        station = SimulatedStation(station_id, secret, url, spots=4, vehicles={}, backoff_min=0.05, backoff_max=0.2)
        nursery.start_soon(station.run)
        await eventually(lambda: harness.svc.stations.live.online_stations == 1)
        await station.wait_until(lambda: station.pending_count == 0 and station.stats.events_acknowledged > 0)
        assert (await feed.subscribe(f"station:{station_id}"))["code"] == 0
        proxy.hold_downstream = True  # the backend's answers no longer reach the station
        delivery = await station.return_vehicle(3, 777)
        with trio.fail_after(10):  # the backend has recorded it (and answered into the void)
            while not await harness.db.fetchval(  # noqa: ASYNC110
                    "SELECT count(*) FROM station_messages WHERE message_id = $1", delivery.id):
                await trio.sleep(0.01)
        assert not delivery.acknowledged
        proxy.hold_downstream = False
        await proxy.cut()
        await delivery.wait()  # resent on the new connection with the same id, answered
        assert delivery.acknowledged
        events = await feed.events(4)
        station.stop()
        nursery.cancel_scope.cancel()
    locked = [e for e in events if e["event"] == "spot.locked"]
    assert [(e["data"]["spot"], e["data"]["vehicle"]) for e in locked] == [(3, 777)]
    assert [e["event"] for e in events if e["event"].startswith("station.")][:2] == ["station.offline",
                                                                                     "station.online"]
    assert await harness.db.fetchval("SELECT count(*) FROM station_messages WHERE message_id = $1", delivery.id) == 1
    assert await harness.db.fetchval(
        "SELECT vehicle_id FROM spots WHERE station_id = $1 AND number = 3", station_id) == 777
    assert proxy.connections == 2


async def test_five_hundred_stations_at_once(harness: Harness) -> None:
    cluster, stations = await make_stations(harness, 500, spots=2)
    simulator = Simulator(harness.station_url, stations, spots=2, vehicles=1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(simulator.run)
        with trio.fail_after(120):
            await simulator.wait_connected(500)
            while harness.svc.stations.live.online_stations < 500:  # noqa: ASYNC110
                await trio.sleep(0.05)
            await simulator.wait_until(lambda: simulator.summary().events_pending == 0)
        summary = simulator.summary()
        simulator.stop()
    # Every station connected and every event was answered; how many reconnected (an answer slower than the
    # simulator's 10 s patience on a loaded machine) is a matter of timing, not of correctness.
    assert (summary.connected, summary.events_failed, summary.events_pending) == (500, 0, 0)
    availability = harness.svc.stations.live.cluster(cluster)
    assert (availability.total_spots, availability.available_vehicles, availability.free_spots) == (1000, 500, 500)
    assert harness.svc.stations.metrics.restarts_total == 0
