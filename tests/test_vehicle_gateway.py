"""The free-floating vehicles' door of the device gateway (``vehicle-protocol.md``), over real sockets against
the real server: who gets in, one socket per vehicle, rotated secrets, hostile frames, and the CLI that makes
the secrets."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from actors.link import CallRefused
from knot_rt.config import Settings
from knot_rt.devices.gateway import DeviceConnection
from protocols import station as station_wire
from protocols import vehicle as wire
from tests.station_client import booted_station
from tests.support import Harness, SmtpSink, eventually, serving
from tests.tcp_proxy import TcpProxy
from tests.test_database_outage import outage_settings, through, upstream_port
from tests.test_station_cli import error_line, knot_rt, printed
from tests.vehicle_peer import RawVehicle, booted_vehicle, status_payload, vehicle_socket

AUTH_FAILURES = 16  # per address and door, in a minute; each test has its own server


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, station_secret_check_seconds=0.2, station_auth_failures=f"{AUTH_FAILURES}/minute")


@dataclass
class Fleet:
    network: int
    vehicles: list[tuple[str, int, str]]  # (serial, vehicle id, secret)
    docked_serial: str  # a vehicle without a module (a station's): no secret
    station: tuple[int, str]  # (id, secret)


async def make_fleet(harness: Harness, count: int = 2) -> Fleet:
    network = await harness.make.network()
    vehicles = []
    for number in range(1, count + 1):
        serial = f"FF-{number:04d}"
        vehicle_id, secret = await harness.make.free_floating_vehicle(network, serial)
        vehicles.append((serial, vehicle_id, secret))
    await harness.make.vehicle(network, 101, "SN101")
    cluster = await harness.make.cluster(network)
    station = await harness.make.station(cluster, 2)
    return Fleet(network, vehicles, "SN101", (station.station_id, station.secret))


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def rejected_with(harness: Harness, headers: list[tuple[str, str]],
                        subprotocols: tuple[str, ...] = (wire.SUBPROTOCOL,)) -> int:
    """The HTTP status the vehicle door answers an upgrade with these headers (no socket is opened)."""
    with pytest.raises(ConnectionRejected) as rejected:
        async with open_websocket_url(harness.vehicle_url, subprotocols=list(subprotocols), extra_headers=headers):
            pass
    return int(rejected.value.status_code)


def door_of(harness: Harness) -> Any:
    return harness.svc.stations.vehicle_door


async def closed_code(vehicle: RawVehicle) -> int:
    """Read until the server closes the socket; its close code."""
    with trio.fail_after(10), pytest.raises(ConnectionClosed) as closed:
        while True:
            await vehicle.receive()
    return int(closed.value.reason.code)


# Who gets in ---------------------------------------------------------------------------------------------------


async def test_bad_credentials_are_a_401_and_no_socket(harness: Harness) -> None:
    fleet = await make_fleet(harness)
    serial, _, secret = fleet.vehicles[0]
    station_id, station_secret = fleet.station
    wrong: list[tuple[str, list[tuple[str, str]]]] = [
        ("wrong secret", [("Authorization", basic(serial, "x" * 32))]),
        ("another vehicle's secret", [("Authorization", basic(serial, fleet.vehicles[1][2]))]),
        ("unknown serial", [("Authorization", basic("FF-9999", secret))]),
        ("docked vehicle without a secret", [("Authorization", basic(fleet.docked_serial, secret))]),
        ("a station's credentials", [("Authorization", basic(str(station_id), station_secret))]),
        ("short secret", [("Authorization", basic(serial, secret[:15]))]),
        ("overlong serial", [("Authorization", basic("F" * 65, secret))]),
        ("no header", []),
        ("bearer", [("Authorization", f"Bearer {secret}")]),
        ("not base64", [("Authorization", "Basic !!!not-base64!!!")]),
        ("no colon", [("Authorization", "Basic " + base64.b64encode(serial.encode()).decode())]),
    ]
    assert len(wrong) + 1 < AUTH_FAILURES
    statuses = {what: await rejected_with(harness, headers) for what, headers in wrong}
    assert statuses == {what: 401 for what, _ in wrong}
    door = door_of(harness)
    assert door.counters.refused == len(wrong) and door.counters.accepted == 0 and len(door.links) == 0
    # Not UTF-8 inside the base64, and a huge header: still a plain 401.
    garbage = "Basic " + base64.b64encode(b"\xff\xfe:" + secret.encode()).decode()
    assert await rejected_with(harness, [("Authorization", garbage)]) == 401
    async with booted_vehicle(harness.vehicle_url, serial, secret) as vehicle:  # the right one gets in
        assert (await vehicle.status())[::2] == [3, {}]
    assert door.counters.accepted == 1


async def test_the_subprotocol_is_required(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, _, secret = fleet.vehicles[0]
    auth = [("Authorization", basic(serial, secret))]
    assert await rejected_with(harness, auth, subprotocols=()) == 400
    assert await rejected_with(harness, auth, subprotocols=(station_wire.SUBPROTOCOL,)) == 400
    async with vehicle_socket(harness.vehicle_url, serial, secret,
                              subprotocols=["chat", wire.SUBPROTOCOL]) as vehicle:
        assert vehicle.ws.subprotocol == wire.SUBPROTOCOL
        assert (await vehicle.boot())[0] == 3


async def test_auth_failures_are_throttled_per_door(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, _, secret = fleet.vehicles[0]
    wrong = [("Authorization", basic(serial, "y" * 32))]
    statuses = [await rejected_with(harness, wrong) for _ in range(AUTH_FAILURES + 2)]
    assert statuses == [401] * AUTH_FAILURES + [429, 429]
    assert await rejected_with(harness, [("Authorization", basic(serial, secret))]) == 429  # even the right one
    assert door_of(harness).counters.throttled == 3
    async with booted_station(harness.station_url, *fleet.station) as station:  # the stations' door is not shut
        assert (await station.state({1: None}))[::2] == [3, {}]


async def test_the_database_away_is_a_503_and_the_vehicle_gets_in_after(
    database_url: str, smtp_sink: SmtpSink, tmp_path: Path
) -> None:
    """PostgreSQL hangs (a proxy swallows its answers): the vehicle cannot be checked, so 503, not 401."""
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        proxy = TcpProxy(upstream_port(database_url))
        port = await nursery.start(proxy.run)
        settings = replace(outage_settings(through(database_url, port), smtp_sink, tmp_path),
                           station_handshake_seconds=2.0)
        async with serving(settings, connect_timeout=1.0, acquire_timeout=1.5, command_timeout=1.0) as harness:
            fleet = await make_fleet(harness, 1)
            serial, _, secret = fleet.vehicles[0]
            auth = [("Authorization", basic(serial, secret))]
            proxy.hold_downstream = True
            with trio.fail_after(15):
                assert await rejected_with(harness, auth) == 503
            proxy.hold_downstream = False
            await proxy.cut()

            async def gets_in() -> bool:
                try:
                    async with vehicle_socket(harness.vehicle_url, serial, secret) as vehicle:
                        return bool((await vehicle.boot())[0] == wire.MessageType.RESULT)  # else InternalError
                except ConnectionRejected as rejected:
                    assert rejected.status_code == 503
                    return False

            await eventually(gets_in, timeout=15)
            assert door_of(harness).counters.throttled == 0  # an outage is no failed login
        nursery.cancel_scope.cancel()


# One socket per vehicle ----------------------------------------------------------------------------------------


async def test_the_newest_connection_wins(harness: Harness) -> None:
    fleet = await make_fleet(harness)
    serial, vehicle_id, secret = fleet.vehicles[0]
    async with booted_vehicle(harness.vehicle_url, *fleet.vehicles[1][::2]) as other, \
            booted_vehicle(harness.vehicle_url, serial, secret) as first:
        async with booted_vehicle(harness.vehicle_url, serial, secret) as second:
            assert await closed_code(first) == wire.REPLACED
            assert (await second.status(battery=55))[::2] == [3, {}]
            connection = door_of(harness).links.current(vehicle_id)
            assert isinstance(connection, DeviceConnection) and connection.booted
            metrics = (await harness.client.get("/metrics")).text
            assert "knot_vehicles_connected 2\n" in metrics
        assert (await other.status())[::2] == [3, {}]
    assert door_of(harness).counters.replaced == 1
    await eventually(lambda: len(door_of(harness).links) == 0)


# Hostile frames ------------------------------------------------------------------------------------------------


def hostile_frames() -> list[tuple[str | bytes, str]]:
    """(what a hostile module sends after boot, the id its ERROR must carry)."""
    status = status_payload()
    frames: list[tuple[str | bytes, str]] = [
        ("{not json", "-1"),
        (b"\xff\xfe[2,\"x\",\"status\",{}]", "-1"),  # not UTF-8 (a binary message)
        (json.dumps([2, "nul-model", "boot", {"firmware_version": "1", "model": "a\u0000b"}]), "nul-model"),
        (json.dumps([2, "nul\u0000id", "status", status]), "-1"),
        (json.dumps([2, "surrogate", "boot", {"firmware_version": "\ud800", "model": "m"}]), "surrogate"),
        (json.dumps([2, "big-battery", "status", {**status, "battery": 2**64}]), "big-battery"),
        (json.dumps([2, "big-time", "status", {**status, "time": 10**30}]), "big-time"),
        (json.dumps([2, "digits", "unlocked", {"unlock": 1, "time": 1}]).replace('"unlock": 1', '"unlock": ' + "9" * 5000),
         "-1"),
        (json.dumps([2, "nan-lat", "status", {**status, "lat": 0.5}]).replace("0.5", "NaN"), "-1"),
        (json.dumps([2, "inf-speed", "status", {**status, "speed": 0.5}]).replace("0.5", "1e400"), "inf-speed"),
        (json.dumps([2, "str-battery", "status", {**status, "battery": "80"}]), "str-battery"),
        (json.dumps([2, "x" * 37, "status", status]), "-1"),
        (json.dumps([2, "self-destruct", "self-destruct", {}]), "self-destruct"),
    ]
    padded = json.dumps([2, "too-big", "boot", {"firmware_version": "1", "model": "m", "padding": ""}])
    padded = padded.replace('"padding": ""', '"padding": "' + "p" * (wire.MAX_FRAME_BYTES + 1 - len(padded)) + '"')
    assert len(padded.encode()) == wire.MAX_FRAME_BYTES + 1
    frames.append((padded, "-1"))
    return frames


async def test_hostile_frames_are_answered_with_an_error_and_hurt_no_one(harness: Harness) -> None:
    fleet = await make_fleet(harness)
    (serial, vehicle_id, secret), other = fleet.vehicles
    async with booted_station(harness.station_url, *fleet.station) as station, \
            booted_vehicle(harness.vehicle_url, other[0], other[2]) as innocent, \
            booted_vehicle(harness.vehicle_url, serial, secret) as hostile:
        assert (await hostile.status(battery=70, call_id="good-1"))[::2] == [3, {}]
        for text, error_id in hostile_frames():
            await hostile.send(text)
            answer = await hostile.receive()
            expected_code = "NotImplemented" if error_id == "self-destruct" else "FormatViolation"
            assert answer[:3] == [4, error_id, expected_code], (text[:80], answer)
            # the socket stays open and is served after each
            assert (await hostile.status(battery=70))[::2] == [3, {}]
        assert (await innocent.status(battery=30))[::2] == [3, {}]
        assert (await station.state({1: 101}))[::2] == [3, {}]
    door = door_of(harness)
    assert door.counters.malformed == len(hostile_frames())
    assert harness.svc.stations.metrics.restarts_total == 0
    recorded = await harness.db.fetchval("SELECT count(*) FROM vehicle_messages WHERE vehicle_id = $1", vehicle_id)
    assert recorded == 1 + len(hostile_frames())  # the good statuses only
    assert await harness.db.fetchval("SELECT battery_level FROM vehicles WHERE id = $1", vehicle_id) == 70


async def test_a_broken_answer_fails_our_call_and_a_good_one_settles_it(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, vehicle_id, secret = fleet.vehicles[0]
    async with booted_vehicle(harness.vehicle_url, serial, secret) as vehicle:
        connection = door_of(harness).links.current(vehicle_id)
        assert connection is not None
        outcomes: list[Any] = []

        async def ask(action: str, payload: wire.Payload) -> None:
            try:
                outcomes.append(await connection.call(action, payload, timeout=10))
            except CallRefused as refused:
                outcomes.append(refused)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "ring", wire.RingPayload())
            ring = await vehicle.receive()
            assert ring[0] == 2 and ring[2] == "ring"
            await vehicle.send([3, ring[1], []])  # not a RESULT payload: that CALL fails, the socket stays
        assert isinstance(outcomes[-1], CallRefused)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "unlock", wire.UnlockPayload(unlock=7))
            unlock = await vehicle.receive()
            assert unlock[2:] == ["unlock", {"unlock": 7}]
            await vehicle.answer(unlock, {"status": "accepted"})
        assert outcomes[-1] == {"status": "accepted"}
        assert (await vehicle.status())[::2] == [3, {}]


# The actor behind the door -------------------------------------------------------------------------------------


async def test_a_status_before_boot_is_a_protocol_error(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, vehicle_id, secret = fleet.vehicles[0]
    async with vehicle_socket(harness.vehicle_url, serial, secret) as vehicle:
        answer = await vehicle.status(battery=10)
        assert answer[:3] == [4, answer[1], "ProtocolError"]
        assert (await vehicle.boot())[0] == 3
        assert (await vehicle.status(battery=10))[::2] == [3, {}]
    assert await harness.db.fetchval("SELECT count(*) FROM vehicle_messages WHERE vehicle_id = $1", vehicle_id) == 1


async def test_a_repeated_call_id_gets_the_same_result_and_is_applied_once(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, vehicle_id, secret = fleet.vehicles[0]
    first = [2, "st-1", "status", status_payload(48.6, 7.7, battery=50)]
    async with booted_vehicle(harness.vehicle_url, serial, secret) as vehicle:
        await vehicle.send(first)
        answer = await vehicle.receive()
        assert answer == [3, "st-1", {}]
        assert (await vehicle.status(48.5, 7.6, battery=40, call_id="st-2"))[::2] == [3, {}]
    # A resend after a reconnection (the first RESULT may have been lost): the same answer, applied nothing.
    async with booted_vehicle(harness.vehicle_url, serial, secret) as vehicle:
        await vehicle.send(first)
        assert await vehicle.receive() == answer
    row = await harness.db.fetchrow("SELECT battery_level, latitude, speed, locked, reported_at FROM vehicles"
                                    " WHERE id = $1", vehicle_id)
    assert (row["battery_level"], row["latitude"], row["locked"]) == (40, 48.5, True)
    assert row["reported_at"] is not None
    ids = await harness.db.fetch("SELECT message_id FROM vehicle_messages WHERE vehicle_id = $1 ORDER BY 1", vehicle_id)
    assert [r["message_id"] for r in ids] == ["st-1", "st-2"]


async def test_old_message_ids_are_pruned(harness: Harness) -> None:
    fleet = await make_fleet(harness, 1)
    serial, vehicle_id, secret = fleet.vehicles[0]
    async with booted_vehicle(harness.vehicle_url, serial, secret) as vehicle:
        await vehicle.status(call_id="old")
        await vehicle.status(call_id="new")
    # A row forged in the past: no device can date its own messages.
    retention = timedelta(days=station_wire.ID_RETENTION_DAYS + 2)
    await harness.db.execute("UPDATE vehicle_messages SET received_at = now() - $1::interval WHERE message_id = 'old'",
                             retention)
    assert await harness.svc.vehicles.store.prune_messages() == 1
    kept = await harness.db.fetch("SELECT message_id FROM vehicle_messages WHERE vehicle_id = $1", vehicle_id)
    assert [r["message_id"] for r in kept] == ["new"]


# The CLI and rotated secrets -----------------------------------------------------------------------------------


async def test_cli_create_and_secret_end_to_end(harness: Harness, database_url: str, tmp_path: Path) -> None:
    network = await harness.make.network("Lyon")
    await harness.make.vehicle(network, 77, "DOCKED-77")
    [created] = printed(await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                                      "--serial", "FF-CLI-1", "--free-floating"))
    secret = created.pop("secret")
    assert created == {"vehicle_id": created["vehicle_id"], "serial_number": "FF-CLI-1", "network_id": network,
                       "model_id": None, "vehicle_type": None, "free_floating": True}
    assert len(secret) >= wire.MIN_SECRET_LENGTH
    async with booted_vehicle(harness.vehicle_url, "FF-CLI-1", secret) as vehicle:
        [rotated] = printed(await knot_rt(database_url, tmp_path, "vehicle", "secret", "FF-CLI-1"))
        assert rotated["vehicle_id"] == created["vehicle_id"] and rotated["secret"] != secret
        assert await closed_code(vehicle) == wire.SECRET_ROTATED
    assert door_of(harness).counters.rotated == 1
    assert await rejected_with(harness, [("Authorization", basic("FF-CLI-1", secret))]) == 401
    async with booted_vehicle(harness.vehicle_url, "FF-CLI-1", rotated["secret"]) as vehicle:
        assert (await vehicle.status())[::2] == [3, {}]

    unknown = await knot_rt(database_url, tmp_path, "vehicle", "secret", "NOPE-1")
    assert "NOPE-1" in error_line(unknown) and unknown.returncode == 2
    docked = await knot_rt(database_url, tmp_path, "vehicle", "secret", "DOCKED-77")
    assert "not free-floating" in error_line(docked) and docked.returncode == 2
    colon = await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                          "--serial", "FF:2", "--free-floating")
    assert "serial number" in error_line(colon) and colon.returncode == 2
    assert await harness.db.fetchval("SELECT secret_hash FROM vehicles WHERE id = 77") is None
