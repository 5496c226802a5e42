"""The one owner of the vehicles' live state (``knot_rt.vehicles``): fed by the vehicle actors, read by all.

Over the real server with real station sockets, and the read model on its own
(``LiveVehicles`` is in-memory state: it is used here as the service uses it).
"""

from __future__ import annotations

import trio

from actors.vehicle import VehicleRecord, VehicleView
from knot_rt.vehicles.live import LiveVehicles
from tests.station_client import station_socket
from tests.support import Harness
from tests.test_stations import make_site

STREET = (48.57, 48.59, 7.73, 7.76)  # south, north, west, east


async def test_a_station_report_is_in_its_vehicles_state_once_the_station_is_answered(harness: Harness) -> None:
    site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    vehicles = harness.svc.vehicles
    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        await station.state({1: 101, 2: None, 3: None, 4: 102}, battery=64)
        # No waiting: the vehicles' actors took the report before the station got its answer.
        state = vehicles.state(101)
        assert (state.station_id, state.spot_number, state.battery_level, state.online) == (station_id, 1, 64, True)
        assert {n: v.vehicle_id for n, v in vehicles.docked_at(station_id).items()} == {1: 101, 4: 102}
        row = await harness.db.fetchrow(
            "SELECT v.battery_level, s.number FROM vehicles v JOIN spots s ON s.id = v.spot_id WHERE v.id = 102")
        assert (row["battery_level"], row["number"]) == (64, 4)

        # 102 moves from spot 4 to spot 2 in one report: it leaves spot 4 and stays docked (in spot 2).
        await station.state({1: 101, 2: 102, 3: None, 4: None}, battery=63)
        moved = vehicles.state(102)
        assert (moved.station_id, moved.spot_number, moved.battery_level) == (station_id, 2, 63)
        assert {n: v.vehicle_id for n, v in vehicles.docked_at(station_id).items()} == {1: 101, 2: 102}

        # An id the station reads that is no vehicle of its network gets no state.
        await station.state({1: 101, 2: 102, 3: 999, 4: None}, battery=63)
        assert vehicles.state(999) == VehicleView.unknown(999)
        assert 3 not in vehicles.docked_at(station_id)


async def test_a_vehicle_never_reported_has_the_one_unknown_state(harness: Harness) -> None:
    network = await harness.create_network()
    await harness.make.vehicle(network, 301, "SN301", avg_max_range=40000)
    vehicles = harness.svc.vehicles
    assert not vehicles.live.known(301)  # created after start, by another process
    assert vehicles.state(301) == VehicleView.unknown(301)
    unknown = VehicleView.unknown(301)
    assert (unknown.battery_level, unknown.voltage, unknown.estimated_range, unknown.online, unknown.docked,
            unknown.free_floating) == (None, None, None, False, False, False)
    await harness.svc.catalog.reload()  # a catalog load reads the vehicles' saved state too
    assert vehicles.live.known(301)
    assert vehicles.state(301) == VehicleView(301, avg_max_range=40000)


async def test_free_floating_and_docked_indexes_follow_each_change() -> None:
    live = LiveVehicles()
    await live.vehicle_changed(VehicleView(7, battery_level=80, latitude=48.58, longitude=7.75))
    assert [v.vehicle_id for v in live.free_floating_in(*STREET)] == [7]
    assert live.free_floating_in(48.0, 48.1, 7.0, 7.1) == []

    await live.vehicle_changed(VehicleView(7, battery_level=80, online=True, station_id=3, spot_id=31, spot_number=1))
    assert live.free_floating_in(*STREET) == []  # docked: shown through its station, not on its own
    assert {n: v.vehicle_id for n, v in live.docked_at(3).items()} == {1: 7}

    # 8 is reported in the same spot (7's state is stale until its own report): 8 holds it; 7 leaving
    # afterwards does not take 8 out of it.
    await live.vehicle_changed(VehicleView(8, station_id=3, spot_id=31, spot_number=1))
    await live.vehicle_changed(VehicleView(7, battery_level=80))
    assert {n: v.vehicle_id for n, v in live.docked_at(3).items()} == {1: 8}
    assert live.state(7).docked is False and live.free_floating_in(*STREET) == []  # position unknown


async def test_a_load_keeps_the_changes_reported_while_the_rows_were_read() -> None:
    live = LiveVehicles()
    await live.vehicle_changed(VehicleView(1, battery_level=10))

    async def read() -> dict[int, VehicleRecord]:
        # While the rows are read, vehicle 2's actor saves a change (after its row was read).
        await live.vehicle_changed(VehicleView(2, battery_level=55, latitude=48.58, longitude=7.75))
        await trio.lowlevel.checkpoint()
        return {
            1: VehicleRecord(battery_level=20, station_id=4, spot_id=41, spot_number=2, online=True),
            2: VehicleRecord(battery_level=90, latitude=48.0, longitude=7.0),
            3: VehicleRecord(battery_level=30, station_id=4, spot_id=42, spot_number=3, latitude=48.5,
                             longitude=7.7),
        }

    await live.load(read)
    assert live.state(1).battery_level == 20  # the row: saved after the earlier report
    assert live.state(2) == VehicleView(2, battery_level=55, latitude=48.58, longitude=7.75)  # the report wins
    assert [v.vehicle_id for v in live.free_floating_in(*STREET)] == [2]
    # A saved docked row stands for a docked vehicle with no position of its own (as its actor would load it).
    assert (live.state(3).docked, live.state(3).latitude) == (True, None)
    assert live.state(4) == VehicleView.unknown(4)
