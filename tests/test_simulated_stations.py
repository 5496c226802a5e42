"""End to end with the station simulator over real sockets: unlock round trip, a dropped
connection in the middle of a flow, and 500 stations at once."""

from __future__ import annotations

from typing import Any

import trio

from knot_rt.simulator.station import SimulatedStation, Simulator
from knot_rt.stations.admin import hash_station_secret, new_station_secret
from tests.feed_client import open_feed
from tests.support import Harness, bearer, eventually, open_test_session
from tests.tcp_proxy import TcpProxy


async def make_stations(harness: Harness, count: int, spots: int = 4) -> tuple[int, list[tuple[int, str]]]:
    """A cluster with ``count`` stations of ``spots`` spots (bulk, for big counts)."""
    network = await harness.create_network()
    cluster: int = await harness.db.fetchval(
        "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, 'Quai', 48.58, 7.75) RETURNING id",
        network,
    )
    secrets = [new_station_secret() for _ in range(count)]

    async def work(conn: Any) -> list[int]:
        ids: list[int] = [
            r["id"] for r in await conn.fetch(
                """INSERT INTO stations (cluster_id, secret_hash, spot_count)
                   SELECT $1, h, $3 FROM unnest($2::text[]) AS h RETURNING id""",
                cluster, [hash_station_secret(s) for s in secrets], spots,
            )
        ]
        await conn.execute(
            """INSERT INTO spots (station_id, number, displayed_number)
               SELECT s, n, n FROM unnest($1::bigint[]) AS s, generate_series(1, $2) AS n""",
            ids, spots,
        )
        # The vehicles the simulator docks (station_id * 100 + spot) belong to the network.
        await conn.execute(
            """INSERT INTO vehicles (id, serial_number, network_id)
               SELECT s * 100 + n, 'SIM-' || (s * 100 + n), $3
               FROM unnest($1::bigint[]) AS s, generate_series(1, $2) AS n""",
            ids, spots, network,
        )
        return ids

    ids = await harness.db.transaction(work)
    return cluster, list(zip(ids, secrets, strict=True))


async def operator_token(harness: Harness) -> str:
    network: int = await harness.db.fetchval("SELECT min(id) FROM networks")
    user = await harness.create_user("operator@example.com", perms=[("stations", True)], networks=[network])
    return await open_test_session(harness, user)


async def test_unlock_round_trip_with_the_simulator(harness: Harness) -> None:
    cluster, [(station_id, secret)] = await make_stations(harness, 1)
    await harness.db.execute(  # vehicles of the station's network (an unknown id would be a fault event)
        "INSERT INTO vehicles (id, serial_number, network_id) SELECT g, 'SN' || g, min(id) FROM networks, "
        "generate_series(501, 502) g GROUP BY g"
    )
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
