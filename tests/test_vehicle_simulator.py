"""The free-floating vehicle simulator against a strict vehicle protocol peer, over real sockets."""

from __future__ import annotations

import json
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from trio.testing import wait_all_tasks_blocked

from knot_rt.cli import build_parser
from knot_rt.simulator.cli import read_vehicles_file, run_from_args, write_vehicles_file
from knot_rt.simulator.vehicle import PathMode, Route, SimulatedVehicle, VehicleFleet, VehicleSpec, distance_km
from protocols import vehicle as vh
from tests.station_peer import VehiclePeer, simulating, started, stderr_of, within

SERIAL = "SIM-0001"
SECRET = "simulated-vehicle-secret-1"
START = (48.5834, 7.7458)
PATH = [(48.5840, 7.7470), (48.5850, 7.7470)]


@pytest.fixture
async def peer(nursery: trio.Nursery) -> AsyncIterator[VehiclePeer]:
    peer = VehiclePeer({SERIAL: SECRET, "SIM-0002": SECRET}, heartbeat_interval=60)
    await nursery.start(peer.serve)
    yield peer
    assert peer.violations == []


def make_vehicle(peer: VehiclePeer, serial: str = SERIAL, secret: str = SECRET, **options: Any) -> SimulatedVehicle:
    settings: dict[str, Any] = {"lat": START[0], "lng": START[1], "path": PATH, "backoff_min": 0.01,
                                "backoff_max": 0.05}
    settings.update(options)
    return SimulatedVehicle(serial, secret, peer.url, **settings)



def answer_payload(answer: vh.Result | vh.Error) -> dict[str, Any]:
    assert isinstance(answer, vh.Result), answer
    return answer.payload


# --------------------------------------------------------------------------
# Boot and status


async def test_boot_first_then_status_exact_frames(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    vehicle = await started(nursery, make_vehicle(peer, battery=50))
    (boot,) = await peer.wait_calls("boot")
    (status,) = await peer.wait_calls("status")
    await within(vehicle.wait_until(lambda: vehicle.stats.events_acknowledged == 1))

    assert peer.received[0] is boot and peer.connections[0].device == SERIAL
    assert boot.data == [2, boot.id, "boot", {"firmware_version": "knot-vehicle-sim 1.0", "model": "Max G30"}]
    frame = status.data
    assert frame[:3] == [2, status.id, "status"]
    assert {k: v for k, v in frame[3].items() if k != "time"} == {
        "lat": START[0], "lng": START[1], "battery": 50, "voltage": 37500, "speed": 0.0, "locked": True}
    assert isinstance(frame[3]["time"], int) and frame[3]["time"] > 1_600_000_000_000  # epoch milliseconds
    assert vehicle.heartbeat_interval == 60  # from the boot RESULT
    assert re.fullmatch(r"[0-9a-f]{8}-1-2", status.id)


async def test_status_every_status_interval(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    vehicle = await started(nursery, make_vehicle(peer, heartbeat=0.01))
    statuses = await peer.wait_calls("status", 4)
    assert len({r.id for r in statuses}) == len(statuses)
    assert vehicle.heartbeat_interval == 0.01
    assert peer.calls("boot") == [peer.received[0]]


# --------------------------------------------------------------------------
# Backend commands


async def test_unlock_ride_speed_limit_and_lock(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    vehicle = await started(nursery, make_vehicle(peer, speed=3600.0, tick=0.01))  # 10 m per tick
    conn = await peer.wait_connection(SERIAL)
    assert vehicle.locked and vehicle.speed == 0

    answer = await conn.call("unlock", vh.UnlockPayload(unlock=41))
    assert answer_payload(answer) == {"status": "accepted"}
    (unlocked,) = await peer.wait_calls("unlocked")
    assert unlocked.data[3]["unlock"] == 41 and isinstance(unlocked.data[3]["time"], int)
    assert not vehicle.locked and vehicle.speed == 3600.0
    battery = vehicle.battery
    await within(vehicle.wait_until(lambda: vehicle.position != START and vehicle.battery < battery))

    assert answer_payload(await conn.call("speed-limit", vh.SpeedLimitPayload(kmh=20))) == {}
    assert vehicle.speed_limit == 20 and vehicle.speed == 20.0
    status = await vehicle.send_status()
    await within(status.wait())
    assert isinstance(status.payload, vh.StatusPayload)
    assert status.payload.speed == 20.0 and status.payload.locked is False
    assert answer_payload(await conn.call("speed-limit", vh.SpeedLimitPayload(kmh=0))) == {}
    assert vehicle.speed == 3600.0  # 0: no limit

    answer = await conn.call("lock", vh.LockPayload(lock=42))
    assert answer_payload(answer) == {"status": "accepted"}
    (locked,) = await peer.wait_calls("locked")
    assert vehicle.locked and vehicle.speed == 0
    lat, lng = vehicle.position
    assert {k: v for k, v in locked.data[3].items() if k != "time"} == {"lat": lat, "lng": lng, "lock": 42}
    vehicle.advance(3600)  # locked: an hour later it is still there
    assert vehicle.position == (lat, lng)


async def test_locate_ring_and_a_flat_battery(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    vehicle = await started(nursery, make_vehicle(peer, battery=0))
    conn = await peer.wait_connection(SERIAL)
    await peer.wait_calls("status")
    assert answer_payload(await conn.call("locate")) == {}
    await peer.wait_calls("status", 2)  # a status follows the locate
    assert answer_payload(await conn.call("ring")) == {}
    assert vehicle.rings == 1
    assert answer_payload(await conn.call("unlock", vh.UnlockPayload(unlock=7))) == {"status": "rejected"}
    assert vehicle.locked and peer.calls("unlocked") == []


async def test_unknown_action_and_malformed_frames(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    vehicle = await started(nursery, make_vehicle(peer))
    conn = await peer.wait_connection(SERIAL)
    answer = await conn.send_raw('[2,"x1","reboot",{}]', "x1")  # a station action, not a vehicle one
    assert isinstance(answer, vh.Error) and answer.code is vh.ErrorCode.NOT_IMPLEMENTED
    answer = await conn.send_raw('[2,"x2","speed-limit",{"kmh":"5"}]', "x2")
    assert isinstance(answer, vh.Error) and answer.code is vh.ErrorCode.FORMAT_VIOLATION
    assert vehicle.stats.commands_failed == 2 and vehicle.speed_limit == 0 and vehicle.connected


# --------------------------------------------------------------------------
# Delivery: the outbox across reconnects


async def test_a_locked_left_unanswered_is_resent_with_the_same_id_after_reconnect(
    peer: VehiclePeer, nursery: trio.Nursery
) -> None:
    vehicle = await started(nursery, make_vehicle(peer))
    conn = await peer.wait_connection(SERIAL)
    assert answer_payload(await conn.call("unlock", vh.UnlockPayload(unlock=1))) == {"status": "accepted"}
    await peer.wait_calls("unlocked")
    peer.withhold.add("locked")
    assert answer_payload(await conn.call("lock", vh.LockPayload(lock=2))) == {"status": "accepted"}
    (first,) = await peer.wait_calls("locked")
    assert [d.action for d in vehicle.pending] == ["locked"]

    await conn.close(1011, "the backend went away")  # before answering the locked
    peer.withhold.clear()
    await peer.wait_connection(SERIAL, 2)
    sent = await peer.wait_calls("locked", 2)
    await within(vehicle.wait_until(lambda: not vehicle.pending))
    assert [r.id for r in sent] == [first.id, first.id] and sent[1].text == first.text  # byte for byte
    assert sent[1].connection == 2 and vehicle.stats.events_resent == 1
    assert vehicle.stats.reconnects == 1 and vehicle.boot_count == 2
    # after the new boot, the resent event went first, then the status of the new connection
    second = [r.action for r in peer.received if r.connection == 2]
    assert second[:3] == ["boot", "locked", "status"]


async def test_events_while_disconnected_wait_in_the_outbox(nursery: trio.Nursery) -> None:
    peer = VehiclePeer({SERIAL: SECRET})
    vehicle = make_vehicle(peer, tick=0.01)  # nothing listens yet (port 0 is refused)
    vehicle.url = "ws://127.0.0.1:9/api/vehicles/ws"
    nursery.start_soon(vehicle.run)
    locked = await vehicle.lock_here()
    alert = await vehicle.alert(vh.AlertKind.TOW)
    await wait_all_tasks_blocked()
    assert not vehicle.connected and [d.id for d in vehicle.pending] == [locked.id, alert.id]
    await nursery.start(peer.serve)
    vehicle.url = peer.url
    await within(vehicle.wait_until(lambda: not vehicle.pending))
    assert [r.action for r in peer.received][:3] == ["boot", "locked", "alert"]
    assert peer.calls("locked")[0].data[3]["lock"] == 0  # locked by the rider, no command
    assert peer.violations == []
    vehicle.stop()


async def test_wrong_secret_and_a_fleet(peer: VehiclePeer, nursery: trio.Nursery) -> None:
    wrong = make_vehicle(peer, secret="not-the-secret-at-all")
    nursery.start_soon(wrong.run)
    await peer.wait_until(lambda: peer.unauthorized >= 2)
    assert not wrong.connected
    wrong.stop()
    await within(wrong.wait_stopped())

    specs = [VehicleSpec(SERIAL, SECRET, *START, PATH), VehicleSpec("SIM-0002", SECRET, *START)]
    fleet = VehicleFleet(peer.url, specs, heartbeat=30)
    await nursery.start(fleet.run)
    await within(fleet.wait_connected())
    assert fleet.vehicle("SIM-0002").route.length == 0 and fleet.summary().line().startswith("vehicles 2/2")
    fleet.stop()
    await within(fleet.wait_until(lambda: all(v.stopped for v in fleet.vehicles)))
    with pytest.raises(ValueError, match="given twice"):
        VehicleFleet(peer.url, specs * 2)


# --------------------------------------------------------------------------
# The path


def test_route_loops_or_bounces_through_its_points() -> None:
    a, b, c = (48.0, 7.0), (48.01, 7.0), (48.01, 7.01)
    leg = distance_km(a, b)
    assert 1.10 < leg < 1.11  # a hundredth of a degree of latitude
    loop = Route(a, [b, b, c])  # a repeated point is one point
    assert loop.at(0) == a and loop.at(leg) == b
    assert loop.length == pytest.approx(leg + distance_km(b, c) + distance_km(c, a))
    assert loop.at(loop.length + leg / 2) == pytest.approx((48.005, 7.0))  # round again
    bounce = Route(a, [b, c], PathMode.BOUNCE)
    assert bounce.length == pytest.approx(2 * (leg + distance_km(b, c)))
    assert bounce.at(bounce.length - leg / 2) == pytest.approx((48.005, 7.0))  # coming back along a-b
    still = Route(a, [])
    assert still.length == 0 and still.at(5) == a
    vehicle = SimulatedVehicle("V1", SECRET, "ws://127.0.0.1:9/", lat=a[0], lng=a[1], path=[b], speed=36,
                               battery=10, drain=100)
    vehicle.locked = False
    vehicle.advance(60)  # 600 m at 36 km/h, 60 % of battery for 0.6 km at 100 %/km: flat, clamped
    assert vehicle.position[0] == pytest.approx(48.0 + 0.6 / leg * 0.01)
    assert vehicle.battery == 0 and vehicle.speed == 0  # a flat battery stops it
    with pytest.raises(ValueError):
        SimulatedVehicle("a:b", SECRET, lat=0, lng=0)
    with pytest.raises(ValueError):
        SimulatedVehicle("V2", SECRET, lat=91, lng=0)


# --------------------------------------------------------------------------
# The vehicles file and `knot-rt simulate`


def simulate(*argv: str) -> int:
    return run_from_args(build_parser().parse_args(["simulate", *argv]))


def test_vehicles_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "vehicles.json"
    specs = [VehicleSpec("SXB-1", SECRET, 48.5, 7.7, [(48.51, 7.71)]), VehicleSpec("SXB-2", SECRET, 48.6, 7.8)]
    write_vehicles_file(str(path), specs, [{"vehicle_id": 12}])
    assert path.stat().st_mode & 0o777 == 0o600
    data = json.loads(path.read_text())
    assert data[0] == {"serial": "SXB-1", "secret": SECRET, "lat": 48.5, "lng": 7.7, "path": [[48.51, 7.71]],
                       "vehicle_id": 12}
    assert read_vehicles_file(str(path)) == specs
    path.write_text(json.dumps([{"serial": "SXB-3", "secret": SECRET, "lat": 1, "lng": 2}]))
    assert read_vehicles_file(str(path)) == [VehicleSpec("SXB-3", SECRET, 1, 2, [])]  # integers are degrees too


@pytest.mark.parametrize(("content", "message"), [
    ("", "not JSON"),
    ("{\"serial\": 1}", "expected a JSON list"),
    ("[1]", "vehicle 0: entry: Input should be a valid dictionary"),
    (json.dumps([{"secret": SECRET, "lat": 1, "lng": 2}]), "vehicle 0: serial: Field required"),
    (json.dumps([{"serial": "A", "secret": "short", "lat": 1, "lng": 2}]), "vehicle 0: secret: String should"),
    (json.dumps([{"serial": "A:B", "secret": SECRET, "lat": 1, "lng": 2}]), "has a colon"),
    (json.dumps([{"serial": "A", "secret": SECRET, "lat": 91, "lng": 2}]), "vehicle 0: lat: Input should be less"),
    (json.dumps([{"serial": "A", "secret": SECRET, "lat": "1", "lng": 2}]), "vehicle 0: lat: Input should be"),
    (json.dumps([{"serial": "A", "secret": SECRET, "lat": 1, "lng": 2, "path": [[1]]}]), "vehicle 0: path.0"),
    (json.dumps([{"serial": "A", "secret": SECRET, "lat": 1, "lng": 2}] * 2), "vehicle 1: serial 'A' is given"),
])
def test_a_bad_vehicles_file_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "vehicles.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=re.escape(message)):
        read_vehicles_file(str(path))
    assert simulate("--vehicles-file", str(path)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"knot-rt simulate: {path}: ") and message in err and len(err.splitlines()) == 1


def test_simulate_options_without_devices(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate() == 2
    assert "nothing to simulate" in capsys.readouterr().err
    assert simulate("--vehicles-file", str(tmp_path / "missing.json")) == 2
    assert "No such file" in capsys.readouterr().err
    path = tmp_path / "vehicles.json"
    path.write_text(json.dumps([{"serial": "A", "secret": SECRET, "lat": 1, "lng": 2}]))
    assert simulate("--vehicles-file", str(path), "--url", "ws://127.0.0.1:1/elsewhere") == 2
    assert "--vehicles-url" in capsys.readouterr().err


async def test_cli_simulates_vehicles_until_interrupted(
    peer: VehiclePeer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    path = tmp_path / "vehicles.json"
    write_vehicles_file(str(path), [VehicleSpec(SERIAL, SECRET, *START, PATH)])
    station_url = peer.url.removesuffix(vh.WS_PATH) + "/api/stations/ws"  # the vehicles' URL is derived from it
    async with simulating("--url", station_url, "--vehicles-file", str(path), "--status-interval", "0.05",
                          "--vehicle-speed", "30") as process:
        conn = await peer.wait_connection(SERIAL)
        await peer.wait_calls("status", 2)
        assert answer_payload(await conn.call("unlock", vh.UnlockPayload(unlock=5))) == {"status": "accepted"}
        await peer.wait_calls("unlocked")
        await peer.wait_until(lambda: any(r.data[3]["speed"] == 30 for r in peer.calls("status")))
        process.send_signal(signal.SIGINT)
        assert await within(process.wait()) == 0
    text = await stderr_of(process)
    assert "simulating 1 vehicle(s) against " + peer.url in text
    assert re.search(r"^vehicles 0/1 connected, 1 stopped \| events sent \d+", text.splitlines()[-1]), text
    await peer.wait_until(lambda: not peer.current)
    assert all(c.ws.closed is not None and c.ws.closed.code == 1001 for c in peer.connections)
