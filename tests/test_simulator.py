"""The station simulator against a strict protocol peer, over real sockets."""

from __future__ import annotations

import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio

from knot_rt.cli import build_parser
from knot_rt.simulator.backoff import Backoff
from knot_rt.simulator.cli import parse_station, read_stations_file, run_from_args
from knot_rt.simulator.device import StopReason
from knot_rt.simulator.station import SimulatedStation, Simulator, SpotStatus
from protocols import station as st
from tests.station_peer import StationPeer, simulating, started, stderr_of, within

SECRET = "simulated-secret-0001"


@pytest.fixture
async def peer(nursery: trio.Nursery) -> AsyncIterator[StationPeer]:
    peer = StationPeer({1: SECRET, 2: SECRET})
    await nursery.start(peer.serve)
    yield peer
    assert peer.violations == []


def make_station(peer: StationPeer, station_id: int = 1, secret: str = SECRET, **options: Any) -> SimulatedStation:
    settings: dict[str, Any] = {"spots": 4, "vehicles": {1: 101, 2: 102}, "backoff_min": 0.01, "backoff_max": 0.05}
    settings.update(options)
    return SimulatedStation(station_id, secret, peer.url, **settings)



async def settled(station: SimulatedStation) -> None:
    """A sync point: a fresh `state` and everything before it answered."""
    delivery = await station.send_state()
    await within(station.wait_until(lambda: delivery.answered and not station.pending))


ID = re.compile(r"[0-9a-f]{8}-(\d+)-(\d+)")


def id_parts(id: str) -> tuple[str, int, int]:
    match = ID.fullmatch(id)
    assert match, id
    return id.split("-")[0], int(match[1]), int(match[2])


# --------------------------------------------------------------------------
# Session start and heartbeat


async def test_boot_first_then_state_exact_frames(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    (boot,) = await peer.wait_calls("boot")
    (state,) = await peer.wait_calls("state")
    await within(station.wait_until(lambda: station.stats.events_acknowledged == 1))

    assert peer.received[0] is boot
    spot_board = {"firmware_version": "knot-sim-spot 1.0", "board_revision": "A1"}
    assert boot.data == [2, boot.id, "boot", {
        "mainboard": {"firmware_version": "knot-sim 1.0", "board_revision": "B2"},
        "spots": [spot_board] * 4,
    }]
    assert state.data == [2, state.id, "state", {
        "mainboard": {"v5": 5020, "v48": 48150, "temp": 24.5},
        "spots": [
            {"spot": 1, "vehicle": 101, "lock": 1},
            {"spot": 2, "vehicle": 102, "lock": 1},
            {"spot": 3, "vehicle": None, "lock": 0},
            {"spot": 4, "vehicle": None, "lock": 0},
        ],
        "vehicles": [
            {"vehicle": 101, "voltage": 41800, "battery": 80},
            {"vehicle": 102, "voltage": 41800, "battery": 80},
        ],
        "connectivity": {"type": "CAT-M1", "rssi": -71, "rsrp": -96},
    }]
    token, boot_no, seq = id_parts(boot.id)
    assert (boot_no, seq) == (1, 1)
    assert id_parts(state.id) == (token, 1, 2)
    assert station.heartbeat_interval == 1800  # from the boot RESULT
    assert station.connected and station.boot_count == 1
    assert station.stats.events_sent == 1 and station.stats.reconnects == 0
    assert station.spot(1) == SpotStatus(1, 101, st.Lock.CLOSED, 80)


async def test_periodic_state(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer, heartbeat=0.01))
    states = await peer.wait_calls("state", 4)
    await within(station.wait_until(lambda: station.stats.events_acknowledged >= 4))
    assert len({r.id for r in states}) == len(states)
    assert station.heartbeat_interval == 0.01
    assert peer.calls("boot") == [peer.received[0]]


# --------------------------------------------------------------------------
# Backend commands


async def test_unlock_opens_the_spot_and_reports_unlocked(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)

    answer = await conn.call("unlock", st.UnlockPayload(spot=2, unlock=77))
    assert isinstance(answer, st.Result) and answer.payload == {"status": "accepted"}
    (unlocked,) = await peer.wait_calls("unlocked")
    assert unlocked.data[3] == {"spot": 2, "unlock": 77, "vehicle": 102}
    assert station.spot(2) == SpotStatus(2, None, st.Lock.OPEN, None)

    for spot in (2, 3):  # now empty, always empty
        answer = await conn.call("unlock", st.UnlockPayload(spot=spot, unlock=78))
        assert isinstance(answer, st.Result) and answer.payload == {"status": "rejected"}
    answer = await conn.call("unlock", st.UnlockPayload(spot=9, unlock=79))  # the station has 4 spots
    assert isinstance(answer, st.Result) and answer.payload == {"status": "rejected"}

    await settled(station)
    assert len(peer.calls("unlocked")) == 1
    assert station.spot(1).vehicle == 101
    assert station.stats.commands_answered == 4


async def test_with_a_ride_the_unlocked_vehicle_is_docked_back(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer, ride=0.01))
    conn = await peer.wait_connection(1)
    answer = await conn.call("unlock", st.UnlockPayload(spot=2, unlock=77))
    assert isinstance(answer, st.Result) and answer.payload == {"status": "accepted"}
    (locked,) = await peer.wait_calls("locked")
    assert (locked.data[3]["spot"], locked.data[3]["vehicle"]) == (2, 102)
    assert station.spot(2) == SpotStatus(2, 102, st.Lock.CLOSED, 80)
    with pytest.raises(ValueError, match="ride"):
        make_station(peer, ride=-1)


async def test_several_backend_calls_in_flight(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer, spots=8, vehicles={n: 100 + n for n in range(1, 9)}))
    conn = await peer.wait_connection(1)
    answers: dict[int, st.Result | st.Error] = {}

    async def unlock(spot: int) -> None:
        answers[spot] = await conn.call("unlock", st.UnlockPayload(spot=spot, unlock=1000 + spot))

    async with trio.open_nursery() as calls:
        for spot in range(1, 9):
            calls.start_soon(unlock, spot)
    assert all(isinstance(a, st.Result) and a.payload == {"status": "accepted"} for a in answers.values())
    unlocked = await peer.wait_calls("unlocked", 8)
    assert sorted((r.data[3]["unlock"], r.data[3]["vehicle"]) for r in unlocked) == [
        (1000 + n, 100 + n) for n in range(1, 9)
    ]
    await settled(station)


async def test_return_vehicle_and_deny_releases_it(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    delivery = await station.return_vehicle(3, 555)
    await within(delivery.wait())
    assert delivery.acknowledged and delivery.result == {"accepted": 0}
    (locked,) = peer.calls("locked")
    payload = locked.data[3]
    assert payload == {"spot": 3, "vehicle": 555, "time": payload["time"], "cache_accepted": False}
    assert isinstance(payload["time"], int) and payload["time"] > 1_600_000_000_000
    assert station.spot(3) == SpotStatus(3, 555, st.Lock.CLOSED, 80)
    with pytest.raises(ValueError, match="already holds"):
        await station.return_vehicle(3, 556)
    with pytest.raises(ValueError, match="no spot 5"):
        await station.return_vehicle(5, 556)

    peer.locked_answer = st.LockAccepted.DENY
    denied = await station.return_vehicle(4, 556)
    await within(denied.wait())
    assert denied.result == {"accepted": 2}
    (unlocked,) = await peer.wait_calls("unlocked")
    assert unlocked.data[3] == {"spot": 4, "unlock": 0, "vehicle": 556}
    assert station.spot(4) == SpotStatus(4, None, st.Lock.OPEN, None)
    await settled(station)


async def test_refresh_sends_locked_again(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)

    answer = await conn.call("refresh", st.RefreshPayload())
    assert isinstance(answer, st.Result) and answer.payload == {}
    locked = await peer.wait_calls("locked", 2)
    assert sorted((r.data[3]["spot"], r.data[3]["vehicle"], r.data[3]["cache_accepted"]) for r in locked) == [
        (1, 101, False), (2, 102, False),
    ]

    answer = await conn.call("refresh", st.RefreshPayload(spot=2))
    assert isinstance(answer, st.Result)
    locked = await peer.wait_calls("locked", 3)
    assert locked[2].data[3]["spot"] == 2
    await conn.call("refresh", st.RefreshPayload(spot=3))  # empty: nothing to report
    await settled(station)
    assert len(peer.calls("locked")) == 3


async def test_ping_config_and_badge_feedback(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)
    await peer.wait_calls("state")

    answer = await conn.call("ping")
    assert isinstance(answer, st.Result) and answer.payload == {}
    await peer.wait_calls("state", 2)

    answer = await conn.call("config", st.ConfigPayload(config=st.ConfigType.VOLUME, value=40))
    assert isinstance(answer, st.Result) and answer.payload == {}
    (configured,) = await peer.wait_calls("configured")
    assert configured.data[3] == {"type": "volume", "value": 40}
    assert station.config == {"volume": 40}

    feedback = st.BadgeFeedbackPayload(status=st.BadgeFeedbackStatus.LINKED, spot=2)
    answer = await conn.call("badge-feedback", feedback)
    assert isinstance(answer, st.Result) and answer.payload == {}
    assert list(station.badge_feedback) == [feedback]
    await settled(station)


async def test_unknown_action_and_malformed_frames(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)

    answer = await conn.send_raw('[2,"x-1","self-destruct",{}]', "x-1")
    assert isinstance(answer, st.Error) and answer.code is st.ErrorCode.NOT_IMPLEMENTED
    answer = await conn.send_raw('[2,"x-2","unlock",{"spot":"1","unlock":5}]', "x-2")
    assert isinstance(answer, st.Error) and answer.code is st.ErrorCode.FORMAT_VIOLATION
    answer = await conn.send_raw("not json at all", st.UNKNOWN_ID)
    assert isinstance(answer, st.Error) and answer.code is st.ErrorCode.FORMAT_VIOLATION

    assert station.connected
    assert station.stats.commands_failed == 3
    answer = await conn.call("unlock", st.UnlockPayload(spot=1, unlock=5))
    assert isinstance(answer, st.Result) and answer.payload == {"status": "accepted"}
    await settled(station)


# --------------------------------------------------------------------------
# Delivery guarantee and reconnects


async def test_unanswered_event_is_resent_with_the_same_id_after_reconnect(
    peer: StationPeer, nursery: trio.Nursery
) -> None:
    station = await started(nursery, make_station(peer))
    await within(station.wait_until(lambda: not station.pending))
    peer.withhold = {"locked"}
    delivery = await station.return_vehicle(3, 333)
    (first,) = await peer.wait_calls("locked")
    assert not delivery.answered and station.pending == [delivery]

    peer.withhold.clear()
    await peer.current[1].close(1012, "restart")
    second_conn = await peer.wait_connection(1, 2)
    await within(delivery.wait())
    assert delivery.acknowledged
    await settled(station)

    locked = peer.calls("locked")
    assert [r.id for r in locked] == [first.id, first.id]  # sent again exactly once, same id
    assert locked[1].text == first.text
    on_second = [r for r in peer.received if r.connection == second_conn.number]
    assert [r.action for r in on_second[:3]] == ["boot", "locked", "state"]  # boot, then the resend, then new
    assert id_parts(on_second[0].id)[1] == 2  # a new boot, a new id
    assert station.stats.events_resent == 1 and station.stats.reconnects == 1
    assert peer.duplicates == 0


async def test_event_answered_with_error_is_not_retried(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    peer.error_for = {"badge-rfid"}
    delivery = await station.badge("04a1b2c3d4e5f6", spot=2)
    await within(delivery.wait())
    assert not delivery.acknowledged
    assert delivery.error is not None and delivery.error.code is st.ErrorCode.GENERIC_ERROR
    assert station.stats.events_failed == 1 and station.pending == []
    (badge,) = peer.calls("badge-rfid")
    assert badge.data[3] == {"badge_id": "04A1B2C3D4E5F6", "spot": 2}

    await peer.current[1].close(1012, "restart")
    await peer.wait_connection(1, 2)
    await settled(station)
    assert len(peer.calls("badge-rfid")) == 1


async def test_event_answered_internal_error_is_sent_again_until_recorded(
    peer: StationPeer, nursery: trio.Nursery
) -> None:
    """The backend could not record it (its database is down): same id, same connection, after a back-off."""
    station = await started(nursery, make_station(peer))
    peer.unavailable_for = {"alert"}
    delivery = await station.alert(st.Alert.SHAKE, st.AlertStatus.APPEARING)
    await within(peer.wait_until(lambda: len(peer.calls("alert")) >= 3))
    assert not delivery.answered and [d.id for d in station.pending] == [delivery.id]
    peer.unavailable_for = set()
    await within(delivery.wait())
    assert delivery.acknowledged and station.pending == []
    alerts = peer.calls("alert")
    assert len({a.id for a in alerts}) == 1 and len({a.connection for a in alerts}) == 1
    assert station.stats.events_retried == len(alerts) - 1 and station.stats.events_failed == 0
    assert station.stats.connects == 1


async def test_call_timeout_reconnects_and_resends(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer, call_timeout=0.2))
    peer.withhold = {"alert"}
    delivery = await station.alert(st.Alert.HIGH_TEMP)
    (first,) = await peer.wait_calls("alert")
    assert first.data[3] == {"alert": 2, "alert_name": "high-temp", "alert_status": "appearing"}
    await within(station.wait_until(lambda: station.stats.timeouts >= 1))
    peer.withhold.clear()
    await within(delivery.wait())
    assert delivery.acknowledged
    alerts = peer.calls("alert")
    assert len(alerts) >= 2 and {r.id for r in alerts} == {first.id}
    assert station.stats.reconnects >= 1


async def test_reconnects_with_backoff_after_the_peer_goes_away(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    await within(station.wait_until(lambda: not station.pending))
    peer.withhold = {"unexpected-unlock"}
    delivery = await station.unexpected_unlock(1)
    (first,) = await peer.wait_calls("unexpected-unlock")

    port = peer.port
    await peer.go_away()  # the listener closes and every socket drops
    await within(station.wait_until(lambda: station.stats.connect_failures >= 2))
    assert not station.connected and station.pending == [delivery]

    peer.withhold.clear()
    await nursery.start(peer.serve, port)
    await within(station.wait_connected())
    await within(delivery.wait())
    await settled(station)
    assert [r.id for r in peer.calls("unexpected-unlock")] == [first.id, first.id]
    assert station.boot_count == 2 and station.stats.reconnects == 1
    assert station.spot(1).lock is st.Lock.OPEN and station.spot(1).vehicle == 101


async def test_reboot_reconnects_with_a_new_boot(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)
    answer = await conn.call("reboot")
    assert isinstance(answer, st.Result) and answer.payload == {}
    await peer.wait_connection(1, 2)
    await within(conn.closed.wait())
    await within(station.wait_connected())
    boots = peer.calls("boot")
    assert len(boots) == 2 and id_parts(boots[1].id)[1:] == (2, 1)
    assert not station.stopped and station.stats.reconnects == 1


async def test_replaced_connection_stops_the_older_instance(peer: StationPeer, nursery: trio.Nursery) -> None:
    older = await started(nursery, make_station(peer))
    newer = await started(nursery, make_station(peer))
    assert await within(older.wait_stopped()) is StopReason.REPLACED
    assert older.last_close_code == st.REPLACED
    assert newer.connected and not newer.stopped
    assert older.stats.boots == 1
    await settled(newer)
    assert peer.current[1].number == 2


async def test_rejected_boot_stops_the_station(nursery: trio.Nursery) -> None:
    peer = StationPeer({1: SECRET}, boot_status=st.BootStatus.REJECTED)
    await nursery.start(peer.serve)
    station = make_station(peer)
    await within(station.run())
    assert station.stop_reason is StopReason.REJECTED and not station.connected
    assert [r.action for r in peer.received] == ["boot"]
    assert peer.violations == []


async def test_wrong_secret_keeps_retrying_until_stopped(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = make_station(peer, secret="not-the-right-secret")
    nursery.start_soon(station.run)
    await within(station.wait_until(lambda: station.stats.connect_failures >= 3))
    assert peer.unauthorized >= 3 and not station.connected and peer.received == []
    station.stop()
    assert await within(station.wait_stopped()) is StopReason.STOPPED


async def test_stop_closes_the_connection_cleanly(peer: StationPeer, nursery: trio.Nursery) -> None:
    station = await started(nursery, make_station(peer))
    conn = await peer.wait_connection(1)
    station.stop()
    assert await within(station.wait_stopped()) is StopReason.STOPPED
    await within(conn.closed.wait())
    assert conn.ws.closed is not None and conn.ws.closed.code == 1001


async def test_events_while_disconnected_are_sent_in_order_after_boot(
    peer: StationPeer, nursery: trio.Nursery
) -> None:
    station = make_station(peer)
    first = await station.return_vehicle(3, 301)  # before the station ever connects
    second = await station.alert(st.Alert.SHAKE, spot=3)
    await started(nursery, station)
    await within(second.wait())
    assert first.acknowledged and second.acknowledged
    assert [r.action for r in peer.received] == ["boot", "locked", "alert", "state"]


# --------------------------------------------------------------------------
# Many stations


async def test_two_hundred_stations_at_once(nursery: trio.Nursery) -> None:
    credentials = {n: f"station-{n:04d}-secret-xyz" for n in range(1, 201)}
    peer = StationPeer(credentials)
    await nursery.start(peer.serve)
    simulator = Simulator(peer.url, credentials.items(), spots=4, backoff_min=0.05, backoff_max=0.5)
    finished = trio.Event()

    async def run() -> None:
        await simulator.run()
        finished.set()

    nursery.start_soon(run)
    await within(simulator.wait_connected())
    await within(simulator.wait_until(lambda: simulator.summary().events_acknowledged >= 200))
    summary = simulator.summary()
    assert (summary.devices, summary.connected, summary.events_sent, summary.events_acknowledged) == (
        200, 200, 200, 200)
    assert summary.events_pending == summary.reconnects == summary.events_failed == 0
    assert {r.station_id for r in peer.calls("boot")} == set(credentials)
    assert "stations 200/200 connected" in summary.line()

    conn = await peer.wait_connection(7)  # spots 1..2 of 4 hold vehicles 701, 702
    answer = await conn.call("unlock", st.UnlockPayload(spot=2, unlock=9))
    assert isinstance(answer, st.Result) and answer.payload == {"status": "accepted"}
    (unlocked,) = await peer.wait_calls("unlocked")
    assert unlocked.data[3] == {"spot": 2, "unlock": 9, "vehicle": 702}
    await within(simulator.wait_until(lambda: simulator.summary().commands_answered == 1))

    simulator.stop()
    await within(finished.wait())
    assert all(s.stop_reason is StopReason.STOPPED for s in simulator.stations)
    assert simulator.summary().stopped == 200
    assert peer.violations == []


# --------------------------------------------------------------------------
# Back-off of reconnects and retries


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(0.5, 30.0)
    assert [backoff.delay(n) for n in range(8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.delay(10_000) == 30.0  # a long outage never overflows
    for failures in (0, 3, 50):
        ceiling = backoff.delay(failures)
        assert all(ceiling / 2 <= backoff.jittered(failures) <= ceiling for _ in range(100))
    for low, high in ((0.0, 1.0), (2.0, 1.0), (-1.0, 1.0)):
        with pytest.raises(ValueError, match="backoff_min <= backoff_max"):
            Backoff(low, high)
    with pytest.raises(ValueError, match="backoff_min <= backoff_max"):
        SimulatedStation(1, SECRET, backoff_min=1.0, backoff_max=0.5)


# --------------------------------------------------------------------------
# Command line


def test_station_credentials_parsing(tmp_path: Path) -> None:
    assert parse_station("12:abcdefghijklmnop") == (12, "abcdefghijklmnop")
    assert parse_station('{"station_id": 3, "secret": "abcdefghijklmnop:q", "spots": [1]}') == (
        3, "abcdefghijklmnop:q")
    for bad in ("x:abcdefghijklmnop", "12:short", "12"):
        with pytest.raises(ValueError):
            parse_station(bad)
    path = tmp_path / "stations.txt"
    path.write_text("# made by knot-rt station create\n1:aaaaaaaaaaaaaaaa\n\n2:bbbbbbbbbbbbbbbb\n")
    assert read_stations_file(str(path)) == [(1, "a" * 16), (2, "b" * 16)]

    def run(*argv: str) -> int:
        return run_from_args(build_parser().parse_args(["simulate", *argv]))

    assert run("--stations", "2") == 2  # needs a file
    assert run("--stations-file", str(path), "--stations", "3") == 2  # only 2 in it
    assert run() == 2  # no station at all
    assert run("--station", "1:short") == 2


async def test_cli_simulate_until_interrupted(peer: StationPeer, nursery: trio.Nursery, tmp_path: Path) -> None:
    path = tmp_path / "stations.txt"
    path.write_text(f"2:{SECRET}\n")
    async with simulating("--url", peer.url, "--station", f"1:{SECRET}", "--stations-file", str(path),
                          "--stations", "1", "--spots", "2") as process:
        await peer.wait_calls("state", 2)
        conn = await peer.wait_connection(2)
        answer = await conn.call("unlock", st.UnlockPayload(spot=1, unlock=3))  # --vehicles: half the spots
        assert isinstance(answer, st.Result) and answer.payload == {"status": "accepted"}
        (unlocked,) = await peer.wait_calls("unlocked")
        assert unlocked.data[3] == {"spot": 1, "unlock": 3, "vehicle": 201}
        await peer.wait_until(lambda: sum(1 for c in peer.connections if c.booted) == 2)
        process.send_signal(signal.SIGINT)
        assert await within(process.wait()) == 0
    text = await stderr_of(process)
    assert "simulating 2 station(s)" in text
    # the last RESULT may still be on its way when SIGINT arrives: then it is reported pending
    counts = re.search(r"events sent (\d+), acknowledged (\d+), pending (\d+), failed 0", text.splitlines()[-1])
    assert counts and int(counts[1]) == 3 and int(counts[2]) + int(counts[3]) == 3, text
    await peer.wait_until(lambda: not peer.current)
    assert all(c.ws.closed is not None and c.ws.closed.code == 1001 for c in peer.connections)
