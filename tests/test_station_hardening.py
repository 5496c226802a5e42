"""No station, socket or crash loop may hurt anyone else (issue 7), over real sockets against the real server."""

from __future__ import annotations

import base64
import json
from contextlib import AsyncExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from actors import ActorError
from actors.station import Changes, Crash
from actors.vehicle import VEHICLE
from knot_rt.config import Settings
from protocols import station as wire
from tests.feed_client import open_feed
from tests.station_client import RawStation, booted_station, state_payload, station_socket, unlock_by_operator
from tests.support import Harness, eventually, open_test_session
from tests.tcp_proxy import TcpProxy
from tests.test_station_cli import knot_rt, printed
from tests.test_stations import Site, make_site

INNOCENTS = 100


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(
        settings, station_call_timeout=2.0, station_restart_backoff=0.05, subtree_restart_backoff=5.0,
        station_secret_check_seconds=0.2, vehicle_idle_seconds=0.5, station_handshake_seconds=3.0,
        station_auth_failures="3/minute",  # each test has its own server: only that test's failures count
    )


def poison_frames() -> list[tuple[str, str]]:
    """(frame text, the id the ERROR must carry) for what a hostile station may send after boot."""
    alert = {"alert": 0, "alert_status": "appearing"}
    board = {"firmware_version": "1", "board_revision": "B"}
    state = state_payload({1: 101})
    frames: list[tuple[str, Any, str]] = [
        ("nul-name", ["alert", {**alert, "alert_name": "x\u0000y"}], "nul-name"),
        ("surrogate-name", ["alert", {**alert, "alert_name": "x\ud800y"}], "surrogate-name"),
        ("nul-fault", ["fault", {"fault": 1, "fault_name": "\u0000", "fault_status": "on", "spot": 1}], "nul-fault"),
        ("surrogate-fw", ["boot", {"mainboard": {**board, "board_revision": "\udc00"}, "spots": [board]}],
         "surrogate-fw"),
        ("nul\u0000id", ["alert", {**alert, "alert_name": "ok"}], "-1"),
        ("\ud800", ["alert", {**alert, "alert_name": "ok"}], "-1"),
        ("big-vehicle", ["locked", {"spot": 1, "vehicle": 2**64, "time": 1, "cache_accepted": False}],
         "big-vehicle"),
        ("big-voltage", ["state", {**state, "vehicles": [{"vehicle": 101, "voltage": 2**40, "battery": 5}]}],
         "big-voltage"),
        ("big-unlock", ["unlocked", {"spot": 1, "unlock": 10**30, "vehicle": None}], "big-unlock"),
        ("big-energy", ["state", {**state, "energy": {"total_active_energy": 2**63, "total_apparent_energy": 0}}],
         "big-energy"),
    ]
    texts = [(json.dumps([2, call_id, action, payload]), expected) for call_id, (action, payload), expected in frames]
    # Numbers JSON allows but nothing stores: infinity, and 5,000 digits (more than Python reads).
    texts.append((json.dumps([2, "inf-temp", "state", state]).replace("21.5", "1e400"), "inf-temp"))
    texts.append((json.dumps([2, "huge-int", "locked", {"spot": 1, "vehicle": 1, "time": 1,
                                                       "cache_accepted": False}]).replace('"time": 1', '"time": ' + "9" * 5000),
                  "-1"))
    return texts


async def big_site(harness: Harness, stations: int) -> Site:
    network = await harness.make.network()
    cluster = await harness.make.cluster(network, "Gare", 48.58, 7.73)

    made = await harness.make.stations(cluster, stations, 2)
    await harness.make.vehicles(network, range(101, 141))
    operator = await harness.create_user("operator@example.com", perms=[("stations", True)], networks=[network])
    return Site(network, cluster, made, await open_test_session(harness, operator))


async def test_a_poison_station_disturbs_none_of_100_innocent_stations(harness: Harness) -> None:
    site = await big_site(harness, INNOCENTS + 1)
    (poison_id, poison_secret), innocents = site.stations[0], site.stations[1:]
    async with AsyncExitStack() as stack:
        sockets: list[RawStation] = []
        for station_id, secret in innocents:
            sockets.append(
                await stack.enter_async_context(booted_station(harness.station_url, station_id, secret, spots=2))
            )
        poison = await stack.enter_async_context(booted_station(harness.station_url, poison_id, poison_secret, spots=2))

        frames = poison_frames()
        answers: list[list[Any]] = []

        async def fire(text: str) -> None:
            await poison.send(text)

        for _ in range(5):  # rounds of every poison frame at once, as in the report (six at a time)
            async with trio.open_nursery() as nursery:
                for text, _ in frames:
                    nursery.start_soon(fire, text)
            for _ in frames:
                answers.append(await poison.receive())
        errors = sorted((answer[0], answer[1], answer[2]) for answer in answers)
        expected = sorted((4, call_id, "FormatViolation") for _, call_id in frames for _ in range(5))
        assert errors == expected

        # The poison station itself is still served, by the same actor.
        assert (await poison.state({1: 101}))[::2] == [3, {}]
        # Every innocent station still answers a round trip.
        for index, station in enumerate(sockets):
            assert (await station.state({1: None, 2: None}))[::2] == [3, {}], index
        # An operator unlock of an innocent station works end to end.
        target_id = innocents[-1][0]
        _, response = await unlock_by_operator(harness.base_url, site.operator_token, sockets[-1], target_id, 1)
        assert response.status_code == 200, response.text
    health = await harness.client.get("/health")
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = harness.svc.stations.metrics
    assert metrics.restarts_total == 0 and metrics.escalations_total == 0
    assert await harness.db.fetchval("SELECT count(*) FROM station_messages WHERE station_id = $1", poison_id) == 1


async def test_a_crash_loop_backs_off_and_disconnects_that_station_only(harness: Harness) -> None:
    site = await make_site(harness, stations=2)
    (victim_id, victim_secret), (other_id, other_secret) = site.stations
    async with booted_station(harness.station_url, other_id, other_secret) as other:
        async with booted_station(harness.station_url, victim_id, victim_secret) as victim:
            ref = harness.svc.stations.running_actor(victim_id)
            assert ref is not None
            crashes = 0
            with trio.fail_after(10):
                while not ref.stopped:  # the drill: crash it again as soon as it is back
                    try:
                        await ref.ask(Crash("drill"))
                    except ActorError:
                        crashes += 1
                    await trio.sleep(0.01)
            with pytest.raises(ConnectionClosed) as closed:
                await victim.receive()
            assert closed.value.reason.code == wire.TRY_AGAIN_LATER
        assert crashes == 4  # three restarts (with back-off), then given up
        metrics = harness.svc.stations.metrics
        assert metrics.given_up_total == 1 and metrics.escalations_total == 0
        assert (await other.state({1: 101}))[::2] == [3, {}]  # the sibling never noticed
        # The station reconnects to a fresh actor.
        async with station_socket(harness.station_url, victim_id, victim_secret) as again:
            assert (await again.boot())[2]["status"] == "accepted"
            assert (await again.state({1: None}))[::2] == [3, {}]
    assert (await harness.client.get("/health")).status_code == 200


async def test_a_subtree_escalation_degrades_health_and_the_subtree_comes_back(harness: Harness) -> None:
    harness.svc.stations.stations.intensity = replace(harness.svc.stations.stations.intensity, max_total_restarts=2)
    site = await make_site(harness, stations=3)
    async with AsyncExitStack() as stack:
        sockets = []
        for station_id, secret in site.stations:
            sockets.append(await stack.enter_async_context(booted_station(harness.station_url, station_id, secret)))
        for station_id, _ in site.stations:  # three restarts in 5 s across the stations: a storm
            ref = harness.svc.stations.running_actor(station_id)
            assert ref is not None
            with pytest.raises(ActorError):
                await ref.ask(Crash("storm"))
        await eventually(lambda: bool(harness.svc.stations.down()), timeout=5)
        health = await harness.client.get("/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded" and body["code"] == 48
        assert [part["part"] for part in body["down"]] == ["stations"]
        assert "RestartIntensityExceeded" in body["message"]
        assert (await harness.client.get("/api/application/faq")).status_code != 503  # HTTP keeps serving
        for station in sockets:  # their actors were stopped with the subtree
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await station.receive()
            assert closed.value.reason.code == wire.TRY_AGAIN_LATER
        # While the subtree is down, a station that connects is told to come back later; nothing else happens.
        async with station_socket(harness.station_url, *site.stations[0]) as early:
            with pytest.raises(ConnectionClosed) as closed:
                await early.boot()
            assert closed.value.reason.code == wire.TRY_AGAIN_LATER
        assert harness.svc.stations.down()

    async def healthy() -> bool:
        return (await harness.client.get("/health")).status_code == 200

    await eventually(healthy, timeout=15)
    assert harness.svc.stations.metrics.escalations_total == 1
    for station_id, secret in site.stations:  # the subtree is back: the stations reconnect
        async with station_socket(harness.station_url, station_id, secret) as station:
            assert (await station.boot())[2]["status"] == "accepted"
            assert (await station.state({1: 101}))[::2] == [3, {}]


async def test_unknown_and_foreign_vehicles_start_no_actor_and_are_a_fault_once(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    foreign_network = await harness.create_network("Colmar")
    await harness.make.vehicle(foreign_network, 500, "F500")
    registry = harness.svc.stations.registry
    async with open_feed(harness.base_url, site.operator_token) as feed:
        assert (await feed.subscribe(f"station:{station_id}"))["code"] == 0
        async with booted_station(harness.station_url, station_id, secret) as station:
            await feed.events(1)  # station.online
            for battery in (80, 70, 60):  # reported again and again: one fault per id
                assert (await station.state({1: 101, 2: 500, 3: 999}, battery=battery))[::2] == [3, {}]
            await eventually(lambda: registry.lookup(VEHICLE, "101") is not None)
            events = await feed.events(5)  # three station.state and two faults
            assert sorted(e["event"] for e in events) == ["fault", "fault", "station.state", "station.state",
                                                          "station.state"]
            faults = [e["data"] for e in events if e["event"] == "fault"]
            assert sorted((f["vehicle"], f["spot"], f["fault_name"]) for f in faults) == [
                (500, 2, "unknown-vehicle"), (999, 3, "unknown-vehicle")]
            assert registry.lookup(VEHICLE, "500") is None and registry.lookup(VEHICLE, "999") is None
            # 999 leaves, then comes back: a new fault.
            await station.state({1: 101, 2: 500, 3: None})
            await station.state({1: 101, 2: 500, 3: 999})
            again = [e["data"] for e in await feed.events(3) if e["event"] == "fault"]
            assert [(f["vehicle"], f["spot"]) for f in again] == [(999, 3)]
    assert await harness.db.fetchval("SELECT spot_id FROM vehicles WHERE id = 500") is None  # never written
    assert registry.lookup(VEHICLE, "999") is None


async def test_idle_vehicle_actors_stop_and_come_back_on_use(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    registry = harness.svc.stations.registry
    async with booted_station(harness.station_url, station_id, secret) as station:
        await station.state({1: 101}, battery=80)
        await eventually(lambda: registry.lookup(VEHICLE, "101") is not None)
        await eventually(lambda: registry.lookup(VEHICLE, "101") is None)  # idle for 0.5 s: stopped
        await station.state({1: 101}, battery=40)  # used again: a fresh actor from the database

        async def saved() -> bool:
            return bool(await harness.db.fetchval("SELECT battery_level FROM vehicles WHERE id = 101") == 40)

        await eventually(saved)
    assert harness.svc.stations.metrics.restarts_total == 0


# The gateway -------------------------------------------------------------------------------------------------


def _basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.mark.parametrize("user", ["9" * 5000, "\u00b2", "0", "-5", str(2**63), "١٢", " 1", "1e3", ""])
async def test_odd_station_ids_are_a_plain_401(harness: Harness, user: str) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(harness.station_url, subprotocols=[wire.SUBPROTOCOL],
                                      extra_headers=[("Authorization", _basic(user, secret))]):
            pass
    assert rejected.value.status_code == 401
    async with station_socket(harness.station_url, station_id, secret) as station:  # the gateway is fine
        assert (await station.boot())[0] == 3


async def test_repeated_auth_failures_from_an_address_are_throttled(harness: Harness) -> None:
    gateway = harness.svc.stations.gateway
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    statuses = []
    for _ in range(5):
        with pytest.raises(ConnectionRejected) as rejected:
            async with station_socket(harness.station_url, station_id, "wrong-secret-" + "x" * 20):
                pass
        statuses.append(rejected.value.status_code)
    assert statuses == [401, 401, 401, 429, 429]
    with pytest.raises(ConnectionRejected) as rejected:  # even the right secret, until the window moves
        async with station_socket(harness.station_url, station_id, secret):
            pass
    assert rejected.value.status_code == 429
    assert gateway.counters.throttled == 3


async def handshakes_taken(harness: Harness, wait: float) -> list[trio.SocketStream]:
    """The gateway's handshake cap lowered to 2 and both taken by silent sockets (connected, sending nothing);
    a socket past it waits ``wait`` seconds for a slot."""
    gateway = harness.svc.stations.gateway
    gateway.max_handshakes = 2
    gateway.handshake_wait = wait
    port = int(harness.station_url.split(":")[2].split("/")[0])
    silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
    await eventually(lambda: gateway.handshakes == 2)
    return silent


async def test_handshake_and_connection_caps(harness: Harness) -> None:
    gateway = harness.svc.stations.gateway
    site = await make_site(harness, stations=3)
    silent = await handshakes_taken(harness, wait=0.3)
    with pytest.raises(Exception):  # noqa: B017 - closed during the handshake, however it shows
        async with station_socket(harness.station_url, *site.stations[0], connect_timeout=2) as station:
            await station.boot()
    assert gateway.counters.busy >= 1
    for stream in silent:
        await stream.aclose()
    await eventually(lambda: gateway.handshakes == 0)
    gateway.max_handshakes = 512
    gateway.max_connections = 2
    async with station_socket(harness.station_url, *site.stations[0]) as first, \
            station_socket(harness.station_url, *site.stations[1]) as second:
        await first.boot()
        await second.boot()
        with pytest.raises(Exception):  # noqa: B017
            async with station_socket(harness.station_url, *site.stations[2], connect_timeout=2) as third:
                await third.boot()
        assert gateway.counters.busy >= 2
        assert (await first.state({1: None}))[::2] == [3, {}]
    await eventually(lambda: gateway.sockets == 0)
    async with station_socket(harness.station_url, *site.stations[2]) as third:
        assert (await third.boot())[0] == 3


async def test_a_station_over_the_handshake_cap_waits_for_a_slot_and_gets_in(harness: Harness) -> None:
    """A burst past ``max_handshakes`` (a fleet reconnecting at once) waits, unread, for a handshake to end,
    instead of being closed: the station gets in as soon as a slot frees."""
    gateway = harness.svc.stations.gateway
    site = await make_site(harness, stations=1)
    silent = await handshakes_taken(harness, wait=30.0)
    booted: list[Any] = []

    async def station() -> None:
        async with station_socket(harness.station_url, *site.stations[0], connect_timeout=20) as socket:
            booted.append(await socket.boot())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(station)
        await eventually(lambda: gateway.sockets == 3)  # it waits: counted, not in a handshake, not closed
        await trio.sleep(0.3)
        assert booted == [] and gateway.handshakes == 2 and gateway.counters.busy == 0
        await silent[0].aclose()  # a slot frees
    assert booted[0][0] == 3
    assert gateway.counters.busy == 0
    await silent[1].aclose()
    await eventually(lambda: gateway.handshakes == 0 and gateway.sockets == 0)


async def test_a_station_that_stops_answering_pings_is_dropped_and_one_that_answers_stays(harness: Harness) -> None:
    gateway = harness.svc.stations.gateway
    gateway.ping_interval = 0.3
    site = await make_site(harness, stations=2)
    port = int(harness.station_url.split(":")[2].split("/")[0])
    (mute_id, mute_secret), (alive_id, alive_secret) = site.stations[:2]
    async with trio.open_nursery() as nursery:
        proxy = TcpProxy(port)
        proxy_port = await nursery.start(proxy.run)
        proxied = harness.station_url.replace(f":{port}/", f":{proxy_port}/")
        async with booted_station(proxied, mute_id, mute_secret) as mute, \
                booted_station(harness.station_url, alive_id, alive_secret) as alive:
            await trio.sleep(1.5)  # five intervals: both answered their pings
            assert (await mute.state({1: None}))[0] == 3
            proxy.hold_downstream = True  # the server's pings no longer reach it: no pongs
            await eventually(lambda: not harness.svc.stations.live.station(mute_id).online)
            assert harness.svc.stations.live.station(alive_id).online
            assert (await alive.state({1: None}))[0] == 3
        nursery.cancel_scope.cancel()


async def test_a_silent_handshake_is_dropped_after_the_time_limit(harness: Harness) -> None:
    harness_port = int(harness.station_url.split(":")[2].split("/")[0])
    stream = await trio.open_tcp_stream("127.0.0.1", harness_port)
    with trio.fail_after(10):  # the limit is 3 s here
        assert await stream.receive_some(100) == b""  # closed by the server
    await stream.aclose()


async def test_a_rotated_secret_closes_the_socket_that_used_the_old_one(harness: Harness, tmp_path: Path) -> None:
    site = await make_site(harness, stations=2)
    (station_id, secret), (other_id, other_secret) = site.stations
    async with booted_station(harness.station_url, other_id, other_secret) as other:
        async with booted_station(harness.station_url, station_id, secret) as station:
            rotated = printed(await knot_rt(harness.svc.settings.database_url or "", tmp_path, "station", "secret",
                                            str(station_id)))
            with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
                while True:
                    await station.receive()
            assert closed.value.reason.code == wire.SECRET_ROTATED
        new_secret = rotated[0]["secret"]
        with pytest.raises(ConnectionRejected):
            async with station_socket(harness.station_url, station_id, secret):
                pass
        async with station_socket(harness.station_url, station_id, new_secret) as station:
            assert (await station.boot())[0] == 3
        assert (await other.state({1: None}))[::2] == [3, {}]  # the other station kept its socket
    assert harness.svc.stations.gateway.counters.rotated == 1


async def test_a_record_postgresql_refuses_fails_alone_in_its_group(harness: Harness) -> None:
    """Records arriving while one is written go together in one statement; a value PostgreSQL refuses in one
    of them (a NUL in jsonb) fails that record only, the others are written."""
    site = await make_site(harness, stations=3)
    store = harness.svc.stations.store
    (first, _), (good, _), (bad, _) = site.stations[:3]
    outcomes: dict[int, object] = {}

    async def record(station_id: int, payload: dict[str, Any]) -> None:
        try:
            outcomes[station_id] = await store.record(station_id, f"grouped-{station_id}", "alert", payload, {},
                                                      Changes())
        except Exception as exc:
            outcomes[station_id] = exc

    statements = store.records.statements
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record, first, {"n": 1})  # leads alone; the next two wait and go together
        await trio.lowlevel.checkpoint()
        nursery.start_soon(record, good, {"n": 2})
        nursery.start_soon(record, bad, {"n": "nul \u0000 here"})
    assert outcomes[first] is None and outcomes[good] is None
    assert isinstance(outcomes[bad], Exception)
    assert store.records.statements - statements >= 2
    written = await harness.db.fetch("SELECT station_id FROM station_messages WHERE message_id LIKE 'grouped-%'")
    assert sorted(r["station_id"] for r in written) == sorted([first, good])
