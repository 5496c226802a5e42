"""Database outages: PostgreSQL stopped (or hanging) under a running server.

The end-to-end test runs the real server on a private PostgreSQL cluster (its own
data folder and port), with a station and a feed client connected, stops the
cluster, checks what every kind of client gets meanwhile, starts it again and
checks that the service comes back by itself, with nothing acknowledged lost and
nothing applied twice. The hanging case puts a loopback TCP proxy that swallows
PostgreSQL's answers between the server and the test database.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import trio
import trio_asyncio
from trio_websocket import ConnectionClosed, ConnectionRejected

from knot_rt.config import Settings
from knot_rt.db import Database, DatabaseUnavailable, migrate
from knot_rt.pgcluster import PgCluster
from knot_rt.simulator import SimulatedStation
from tests.feed_client import open_feed
from tests.station_client import RawStation, station_socket
from tests.support import Harness, SmtpSink, bearer, eventually, serving
from tests.tcp_proxy import TcpProxy

PASSWORD = "correct horse battery"
OUTAGE_ANSWER = 15.0  # a hang guard for one request while the database is away (not a timing assertion)
RECOVERY = 5.0  # the bound: the service answers again within 5 s of PostgreSQL being back


@pytest.fixture
def private_cluster() -> Any:
    """A PostgreSQL cluster of this test only (it is stopped and started under the server)."""
    folder = Path(tempfile.mkdtemp(prefix="knot-outage-pg-"))
    os.chmod(folder, 0o755)  # initdb runs as the postgres user when the tests run as root
    cluster = PgCluster(folder)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def outage_settings(url: str, smtp_sink: SmtpSink, tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1", port=0, station_port=0, database_url=url, smtp_url=smtp_sink.url,
        secret_key="test-secret-" + uuid.uuid4().hex, data_dir=tmp_path / "data", public_url="http://knot.test",
        mail_retry_seconds=0.2, station_call_timeout=1.0,
    )


@dataclass
class Site:
    network: int
    cluster: int
    station: tuple[int, str]  # connected through the outage
    late_station: tuple[int, str]  # connects during the outage
    simulated_station: tuple[int, str]  # the station simulator, resending what got InternalError
    operator_token: str
    unused_token: str  # a session opened before the outage, never used: this process has not checked it


async def make_site(harness: Harness) -> Site:
    label = await harness.make.app_label()
    network = await harness.make.network(public=True, labels=[label])
    cluster = await harness.make.cluster(network, "Gare", 48.58, 7.73)
    station = await harness.make.station(cluster, 4)
    late = await harness.make.station(cluster, 2)
    simulated = await harness.make.station(cluster, 2)
    await harness.make.vehicles(network, range(101, 105))
    await harness.svc.catalog.reload()  # the vehicles are on the map
    await harness.create_user("operator@example.com", PASSWORD, perms=[("stations", True), ("clusters", True)],
                              networks=[network])
    login = await harness.login("operator@example.com")
    unused = await harness.login("operator@example.com", device_id="tablet")
    return Site(network, cluster, (station.station_id, station.secret), (late.station_id, late.secret),
                (simulated.station_id, simulated.secret), login["token"], unused["token"])


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["code"] == 48 and body["message"], body
    assert response.headers.get("Retry-After") == "5"


async def outage_answer(request: Any) -> httpx.Response:
    with trio.fail_after(OUTAGE_ANSWER):
        response: httpx.Response = await request
        return response


async def locked_event(station: RawStation, call_id: str, spot: int, vehicle: int) -> list[Any]:
    """A ``locked`` event, as a station sends it (and resends it, byte for byte)."""
    payload = {"spot": spot, "vehicle": vehicle, "time": 1_700_000_000, "cache_accepted": False}
    return await station.call("locked", payload, call_id)


def stop_postgresql(cluster: PgCluster, mode: str) -> None:
    """``pg_ctl stop -m <mode>``: ``fast`` ends the sessions, ``immediate`` kills them as a crash would."""
    command = [str(cluster.bindir / "pg_ctl"), "-D", str(cluster.pgdata), "stop", "-m", mode, "-w"]
    if os.geteuid() == 0:  # the cluster runs as the postgres user (see PgCluster)
        command = ["runuser", "-u", "postgres", "--", *command]
    subprocess.run(command, check=True, capture_output=True)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_postgresql_stopped_and_started_under_a_running_server(
    private_cluster: PgCluster, smtp_sink: SmtpSink, tmp_path: Path, mode: str
) -> None:
    async with trio_asyncio.open_loop():
        db = await Database.connect(private_cluster.url, min_size=1, max_size=1)
        try:
            # The cluster is durable (PgCluster's default): an immediate stop is a crash, and every
            # acknowledged write must survive it.
            await migrate(db)
        finally:
            await db.close()
        settings = outage_settings(private_cluster.url, smtp_sink, tmp_path)
        async with serving(settings, connect_timeout=2.0, acquire_timeout=3.0, command_timeout=5.0) as harness, \
                trio.open_nursery() as loops:
            # One more feed pruner, every 0.2 s: it keeps failing through the outage and prunes after it.
            loops.start_soon(harness.svc.bus.run_pruner, 0.2)
            await outage_scenario(harness, private_cluster, smtp_sink, mode)
            await harness.db.execute(  # an event forged 3 days old: no operator can date one
                """INSERT INTO feed_events (topic, seq, event, data, created_at)
                   VALUES ('cluster:0', 1, 'cluster.updated', '{}', now() - interval '3 days')"""
            )

            async def pruned() -> bool:
                return await harness.db.fetchval("SELECT count(*) FROM feed_events WHERE topic = 'cluster:0'") == 0

            await eventually(pruned)
            loops.cancel_scope.cancel()


async def outage_scenario(harness: Harness, cluster: PgCluster, smtp_sink: SmtpSink, mode: str) -> None:
    client = harness.client
    site = await make_site(harness)
    station_id, secret = site.station
    operator = bearer(site.operator_token)
    public_map = {"app_label": "knot", "lat": 48.58, "lng": 7.73, "latDeg": 0.1, "lngDeg": 0.1}

    simulator = SimulatedStation(*site.simulated_station, harness.station_url, spots=2, backoff_min=0.2,
                                 backoff_max=1.0)
    async with station_socket(harness.station_url, station_id, secret) as station, \
            open_feed(harness.base_url, site.operator_token) as feed, trio.open_nursery() as simulators:
        await simulators.start(simulator.run)
        with trio.fail_after(10):
            await simulator.wait_connected()
        assert (await station.boot())[0] == 3
        assert await station.state({1: None, 2: None, 3: None, 4: None}) == [3, "t-2", {}]
        assert (await feed.subscribe(f"cluster:{site.cluster}"))["code"] == 0
        # Acknowledged before the outage: an HTTP write and a station event.
        response = await client.put(f"/api/application/clusters/{site.cluster}/name", json={"name": "Gare Sud"},
                                    headers=operator)
        assert response.status_code == 200, response.text
        assert await locked_event(station, "before-1", 1, 101) == [3, "before-1", {"accepted": 0}]
        # A cluster written by another process (raw SQL on purpose: behind this service's catalog), which
        # this one's catalog learns of at its next reload.
        other_cluster = await harness.db.fetchval(
            "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, 'Parc', 48.581, 7.731) "
            "RETURNING id", site.network,
        )

        await trio.to_thread.run_sync(stop_postgresql, cluster, mode)

        # HTTP: 503 code 48, quickly, on every kind of route that needs the database.
        assert_unavailable(await outage_answer(client.post("/api/application/login", json={
            "email": "operator@example.com", "password": PASSWORD, "scope": "app", "app_label": "knot"})))
        assert_unavailable(await outage_answer(client.get("/api/application/users", headers=operator)))
        assert_unavailable(await outage_answer(client.get(f"/api/application/stations/{station_id}",
                                                          headers=operator)))
        assert_unavailable(await outage_answer(client.get("/api/application/faq", params={"lang": "en"})))
        assert_unavailable(await outage_answer(client.put(
            f"/api/application/clusters/{site.cluster}/name", json={"name": "Lost"}, headers=operator)))
        # What is served from memory keeps answering.
        public = await outage_answer(client.get("/api/application/map/public", params=public_map))
        assert public.status_code == 200 and [c["cluster_id"] for c in public.json()["clusters"]] == [site.cluster]
        health = await outage_answer(client.get("/health"))
        assert health.status_code == 503
        assert health.json()["status"] == "degraded"
        assert [part["part"] for part in health.json()["down"]] == ["database"]
        # A reload the database cannot serve is postponed, not failed: the catalog retries it by itself.
        assert await harness.svc.catalog.reload() is False

        # The feed: a session this process checked before is known from memory (no revocation can
        # commit while the database is away), so a new connection with its token opens; one it never
        # checked cannot be authenticated; a subscription that needs the database cannot be checked.
        with trio.fail_after(OUTAGE_ANSWER):
            async with open_feed(harness.base_url, site.operator_token) as known:
                assert (await known.request({"type": "ping"}))["type"] == "pong"
            async with open_feed(harness.base_url, site.unused_token) as other:
                with pytest.raises(ConnectionClosed) as closed:
                    await other.receive()
                assert closed.value.reason.code == 1013
            answer = await feed.subscribe(f"station:{station_id}")
            assert answer["code"] == 48, answer
            assert (await feed.request({"type": "ping"}))["type"] == "pong"

        # The station: an event sent now is not acknowledged (InternalError), and it is resent later.
        with trio.fail_after(OUTAGE_ANSWER):
            during = await locked_event(station, "during-1", 2, 102)
        assert during[0] == 4 and during[1] == "during-1" and during[2] == "InternalError", during

        # The simulator's events too; it keeps them and sends them again after a back-off.
        returned = [await simulator.return_vehicle(1, 103), await simulator.return_vehicle(2, 104)]
        # (polled: the simulator tells its waiters about final answers only)
        await eventually(lambda: all(d.internal_errors >= 1 for d in returned), timeout=OUTAGE_ANSWER)
        assert not any(d.answered for d in returned)

        # A station connecting now cannot be checked: 503, and it tries again later.
        with trio.fail_after(OUTAGE_ANSWER), pytest.raises(ConnectionRejected) as rejected:
            async with station_socket(harness.station_url, *site.late_station):
                pass
        assert rejected.value.status_code == 503

        await trio.to_thread.run_sync(cluster.start)

        # Back within seconds, without a restart.
        async def answers_again() -> bool:
            response = await client.get("/api/application/users", headers=operator)
            return response.status_code == 200

        await eventually(answers_again, timeout=RECOVERY)
        assert (await client.get("/health")).json()["status"] == "ok"

        async def map_shows_both() -> bool:
            response = await client.get("/api/application/map/public", params=public_map)
            return {c["cluster_id"] for c in response.json()["clusters"]} == {site.cluster, other_cluster}

        await eventually(map_shows_both, timeout=RECOVERY)
        login = await client.post("/api/application/login", json={
            "email": "operator@example.com", "password": PASSWORD, "scope": "app", "app_label": "knot"})
        assert login.status_code == 200, login.text

        async with station_socket(harness.station_url, *site.late_station) as late:
            assert (await late.boot(spots=2))[2]["status"] == "accepted"
        # The resent event is recorded once, and answered like any event.
        assert await locked_event(station, "during-1", 2, 102) == [3, "during-1", {"accepted": 0}]
        assert await locked_event(station, "during-1", 2, 102) == [3, "during-1", {"accepted": 0}]
        assert await locked_event(station, "before-1", 1, 101) == [3, "before-1", {"accepted": 0}]
        with trio.fail_after(10):
            for delivery in returned:
                await delivery.wait()
        assert [d.result for d in returned] == [{"accepted": 0}, {"accepted": 0}]
        # The live publisher survived: the cluster's totals reach the feed.
        with trio.fail_after(10):
            while True:
                event = (await feed.events(1))[0]
                if event["event"] == "cluster.updated" and event["data"]["available_vehicles"] == 4:
                    break
        simulator.stop()

    messages = await harness.db.fetch(
        "SELECT message_id, count(*) AS n FROM station_messages WHERE station_id = $1 GROUP BY message_id",
        station_id,
    )
    assert {r["message_id"]: r["n"] for r in messages} == {"t-2": 1, "before-1": 1, "during-1": 1}
    locked = await harness.db.fetchval(
        "SELECT count(*) FROM feed_events WHERE topic = $1 AND event = 'spot.locked'", f"station:{station_id}"
    )
    assert locked == 2
    spots = await harness.db.fetch("SELECT number, vehicle_id FROM spots WHERE station_id = $1 ORDER BY number",
                                   station_id)
    assert [(r["number"], r["vehicle_id"]) for r in spots] == [(1, 101), (2, 102), (3, None), (4, None)]
    simulated = await harness.db.fetch(
        "SELECT message_id, count(*) AS n FROM station_messages WHERE station_id = $1 AND action = 'locked' "
        "GROUP BY message_id", site.simulated_station[0],
    )
    assert {r["message_id"]: r["n"] for r in simulated} == {d.id: 1 for d in returned}
    spots = await harness.db.fetch("SELECT number, vehicle_id FROM spots WHERE station_id = $1 ORDER BY number",
                                   site.simulated_station[0])
    assert [(r["number"], r["vehicle_id"]) for r in spots] == [(1, 103), (2, 104)]
    # The write acknowledged before the outage is there; the one answered 503 is not.
    details = await client.get(f"/api/application/clusters/{site.cluster}", headers=operator)
    assert details.json()["data"]["name"] == "Gare Sud"
    # The mail sender survived: a mail asked for now is sent.
    response = await client.post("/api/application/login/password-reset",
                                 json={"email": "operator@example.com", "app_label": "knot"})
    assert response.status_code == 200, response.text
    await smtp_sink.wait_for("operator@example.com")


def through(url: str, port: int) -> str:
    """``url`` with its host and port replaced by the loopback proxy's."""
    scheme, rest = url.split("://", 1)
    credentials, _, after = rest.rpartition("@")
    _, _, path = after.partition("/")
    return f"{scheme}://{credentials + '@' if credentials else ''}127.0.0.1:{port}/{path}"


def upstream_port(url: str) -> int:
    after = url.split("://", 1)[1].rpartition("@")[2]
    hostport = after.partition("/")[0]
    return int(hostport.rpartition(":")[2]) if ":" in hostport else 5432


async def test_a_hanging_database_answers_503_within_the_timeouts_and_recovers(
    database_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """PostgreSQL accepts connections and reads queries but never answers (a proxy swallows its bytes)."""
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        proxy = TcpProxy(upstream_port(database_url))
        port = await nursery.start(proxy.run)
        settings = outage_settings(through(database_url, port), smtp_sink, tmp_path)
        async with serving(settings, connect_timeout=1.0, acquire_timeout=1.5, command_timeout=1.0) as harness:
            await harness.create_app_label()
            await harness.create_user("rider@example.com", PASSWORD)
            token = (await harness.login("rider@example.com"))["token"]
            login = {"email": "rider@example.com", "password": PASSWORD, "scope": "app", "app_label": "knot"}

            proxy.hold_downstream = True
            # A pooled connection's query times out; new connections time out while connecting.
            for _ in range(2):
                assert_unavailable(await outage_answer(harness.client.post("/api/application/login", json=login)))
                assert_unavailable(await outage_answer(harness.client.get("/api/application/users",
                                                                          headers=bearer(token))))
            assert not harness.db.available

            proxy.hold_downstream = False
            await proxy.cut()  # what was swallowed left those connections out of step: the pool replaces them

            async def answers_again() -> bool:
                response = await harness.client.post("/api/application/login", json=login)
                return response.status_code == 200

            await eventually(answers_again, timeout=RECOVERY)
            assert harness.db.available
        nursery.cancel_scope.cancel()


async def test_a_database_that_refuses_connections_is_unavailable_at_start_too() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with trio_asyncio.open_loop():
        with trio.fail_after(OUTAGE_ANSWER), pytest.raises(DatabaseUnavailable, match="ConnectionRefusedError"):
            await Database.connect(f"postgresql://knot@127.0.0.1:{port}/knot", connect_timeout=2.0)


async def test_errors_of_the_work_itself_are_not_an_outage(database_url: str) -> None:
    async with trio_asyncio.open_loop():
        db = await Database.connect(database_url, min_size=1, max_size=1)
        try:
            with pytest.raises(asyncpg.DivisionByZeroError):
                await db.fetchval("SELECT 1 / 0")
            with pytest.raises(asyncpg.UndefinedTableError):
                await db.transaction(lambda conn: conn.execute("INSERT INTO no_such_table VALUES (1)"))
            assert db.available
            assert await db.fetchval("SELECT 41 + 1") == 42  # and the connection is still good
        finally:
            await db.close()
