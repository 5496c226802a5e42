"""The vehicle actor: location, battery, range and connectivity, fed by station state.

``MemoryVehicleStore`` and ``RecordingListener`` stand for the database and the
live map (external I/O interfaces handed to the actor): the only fakes here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import ActorCrashed, ActorRef, ActorSpec, Registry, Supervisor
from actors.vehicle import (
    VEHICLE,
    Docked,
    Positioned,
    Snapshot,
    StationOnline,
    Undocked,
    Vehicle,
    VehicleMessage,
    VehicleRecord,
    VehicleReply,
    VehicleView,
    vehicle_factory,
)

VehicleRef = ActorRef[VehicleMessage, VehicleReply]


class MemoryVehicleStore:
    def __init__(self, records: dict[int, VehicleRecord] | None = None, events: list[str] | None = None) -> None:
        self.records = dict(records or {})
        self.saved: list[VehicleView] = []
        self.events = events if events is not None else []
        self.fail_next_save = False
        self.messages: dict[tuple[int, str], tuple[str, dict[str, Any], dict[str, Any]]] = {}

    async def load(self, vehicle_id: int) -> VehicleRecord | None:
        await trio.lowlevel.checkpoint()
        return self.records.get(vehicle_id)

    async def save(self, view: VehicleView) -> None:
        await trio.lowlevel.checkpoint()
        if self.fail_next_save:
            self.fail_next_save = False
            raise ConnectionError("database down")
        # What a real store keeps: the live fields; avg_max_range is the model's.
        old = self.records.get(view.vehicle_id, VehicleRecord())
        self.records[view.vehicle_id] = VehicleRecord(
            battery_level=view.battery_level,
            voltage=view.voltage,
            avg_max_range=old.avg_max_range,
            station_id=view.station_id,
            spot_id=view.spot_id,
            spot_number=view.spot_number,
            latitude=view.latitude,
            longitude=view.longitude,
            online=view.online,
            has_module=view.has_module,
            speed=view.speed,
            locked=view.locked,
        )
        self.saved.append(view)
        self.events.append(f"save {view.vehicle_id}")

    async def record(
        self, vehicle_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        view: VehicleView | None,
    ) -> dict[str, Any] | None:
        """A module's CALL recorded once (``messages``), with the state it leads to."""
        await trio.lowlevel.checkpoint()
        if (vehicle_id, message_id) in self.messages:
            return self.messages[(vehicle_id, message_id)][2]
        if view is not None:
            await self.save(view)
        self.messages[(vehicle_id, message_id)] = (action, payload, result)
        self.events.append(f"record {action} {message_id}")
        return None


class RecordingListener:
    def __init__(self, events: list[str] | None = None, *, broken: bool = False) -> None:
        self.views: list[VehicleView] = []
        self.events = events if events is not None else []
        self.broken = broken

    async def vehicle_changed(self, view: VehicleView) -> None:
        await trio.lowlevel.checkpoint()
        self.views.append(view)
        self.events.append(f"notify {view.vehicle_id}")
        if self.broken:
            raise RuntimeError("bus down")


@asynccontextmanager
async def vehicle(
    store: MemoryVehicleStore, *listeners: RecordingListener, vehicle_id: int = 1042
) -> AsyncIterator[tuple[Supervisor, VehicleRef]]:
    spec = ActorSpec(f"vehicle:{vehicle_id}", lambda: Vehicle(vehicle_id, store, listeners), kind="vehicle")
    async with Supervisor("vehicles", [spec]).running() as sup:
        ref = sup.child(spec.child_id)
        assert isinstance(ref, ActorRef)
        yield sup, ref


DOCKED = Docked(station_id=7, spot_id=703, spot_number=3, battery=80, voltage=41800, station_online=True)


async def test_an_unknown_vehicle_starts_empty() -> None:
    store = MemoryVehicleStore()
    async with vehicle(store) as (_, ref):
        view = await ref.ask(Snapshot())
    assert view == VehicleView(1042)
    assert (view.battery_level, view.estimated_range, view.online, view.docked) == (None, None, False, False)
    assert (view.station_id, view.latitude) == (None, None)
    assert store.saved == []


async def test_docking_sets_location_battery_and_online_saved_before_listeners_hear() -> None:
    events: list[str] = []
    store = MemoryVehicleStore({1042: VehicleRecord(avg_max_range=40)}, events)
    listener = RecordingListener(events)
    async with vehicle(store, listener) as (_, ref):
        view = await ref.ask(DOCKED)
        assert await ref.ask(Snapshot()) == view
    assert dataclasses.asdict(view) == {
        "vehicle_id": 1042,
        "battery_level": 80,
        "voltage": 41800,
        "avg_max_range": 40,
        "online": True,
        "station_id": 7,
        "spot_id": 703,
        "spot_number": 3,
        "latitude": None,
        "longitude": None,
        "rent": None,
        "has_module": False,
        "connected": False,
        "speed": None,
        "locked": None,
        "estimated_range": 32,
    }
    assert view.docked
    assert store.saved == [view] and listener.views == [view]
    assert events == ["save 1042", "notify 1042"]


async def test_docking_replaces_a_free_floating_position_and_an_unknown_battery_is_unknown() -> None:
    store = MemoryVehicleStore()
    async with vehicle(store) as (_, ref):
        await ref.ask(Positioned(48.85, 2.35))
        view = await ref.ask(dataclasses.replace(DOCKED, battery=None))
    assert (view.latitude, view.longitude) == (None, None)
    assert view.station_id == 7 and view.battery_level is None and view.estimated_range is None


async def test_undock_from_its_station_leaves_it_free_and_offline_with_its_last_battery() -> None:
    store = MemoryVehicleStore()
    listener = RecordingListener()
    async with vehicle(store, listener) as (_, ref):
        await ref.ask(DOCKED)
        view = await ref.ask(Undocked(7))
        assert (view.station_id, view.spot_id, view.spot_number, view.online) == (None, None, None, False)
        assert (view.battery_level, view.voltage) == (80, 41800)
        assert not view.docked
        # A free-floating vehicle reports its position.
        view = await ref.ask(Positioned(48.85, 2.35))
        assert (view.latitude, view.longitude, view.online) == (48.85, 2.35, False)
    assert len(listener.views) == 3


async def test_undock_from_another_station_is_ignored() -> None:
    store = MemoryVehicleStore()
    listener = RecordingListener()
    async with vehicle(store, listener) as (_, ref):
        assert await ref.ask(Undocked(7)) == VehicleView(1042)  # not docked at all
        await ref.ask(DOCKED)
        moved = await ref.ask(
            Docked(station_id=8, spot_id=801, spot_number=1, battery=79, voltage=41700, station_online=True)
        )
        # The stale undock from the first station arrives after the dock at the second.
        assert await ref.ask(Undocked(7)) == moved
        assert (moved.station_id, moved.spot_id, moved.spot_number) == (8, 801, 1)
    assert len(store.saved) == 2 and len(listener.views) == 2


async def test_its_station_going_offline_makes_it_offline() -> None:
    store = MemoryVehicleStore()
    listener = RecordingListener()
    async with vehicle(store, listener) as (_, ref):
        await ref.ask(DOCKED)
        view = await ref.ask(StationOnline(7, False))
        assert not view.online and view.station_id == 7  # still there, unreachable
        assert (await ref.ask(StationOnline(8, True))).online is False  # another station: ignored
        assert (await ref.ask(StationOnline(7, True))).online is True
    assert [view.online for view in listener.views] == [True, False, True]


async def test_a_position_report_while_docked_is_ignored() -> None:
    store = MemoryVehicleStore()
    async with vehicle(store) as (_, ref):
        docked = await ref.ask(DOCKED)
        assert await ref.ask(Positioned(48.85, 2.35)) == docked
    assert store.saved == [docked]


async def test_nothing_changed_nothing_saved_nobody_notified() -> None:
    store = MemoryVehicleStore()
    listener = RecordingListener()
    async with vehicle(store, listener) as (_, ref):
        await ref.ask(DOCKED)
        await ref.ask(DOCKED)  # the station's next state report: same values
        await ref.ask(StationOnline(7, True))
        await ref.ask(Undocked(7))
        await ref.ask(Undocked(7))
        await ref.ask(Positioned(1.5, 2.5))
        await ref.ask(Positioned(1.5, 2.5))
        await ref.ask(StationOnline(7, False))  # not docked any more
    assert len(store.saved) == 3 and len(listener.views) == 3


async def test_a_restart_rebuilds_from_the_store() -> None:
    store = MemoryVehicleStore(
        {
            1042: VehicleRecord(
                battery_level=55, voltage=39000, avg_max_range=30, station_id=7, spot_id=702, spot_number=2, online=True
            )
        }
    )
    listener = RecordingListener()
    async with vehicle(store, listener) as (sup, ref):
        loaded = await ref.ask(Snapshot())
        assert (loaded.station_id, loaded.spot_number, loaded.battery_level, loaded.online) == (7, 2, 55, True)
        assert loaded.estimated_range == 17  # 16.5 rounded half up

        await ref.ask(StationOnline(7, False))  # saved
        store.fail_next_save = True
        with pytest.raises(ActorCrashed) as crash:
            await ref.ask(dataclasses.replace(DOCKED, battery=10))
        assert isinstance(crash.value.cause, ConnectionError)
        # Restarted behind the same ref: the saved state, not the lost change.
        view = await ref.ask(Snapshot())
        assert sup.metrics.restarts_by_kind == {"vehicle": 1}
        assert view == dataclasses.replace(loaded, online=False)
        assert len(listener.views) == 1  # the lost change was never announced


async def test_a_vehicle_started_again_through_the_registry_is_where_it_was_saved() -> None:
    store = MemoryVehicleStore({1042: VehicleRecord(avg_max_range=25)})
    async with Supervisor("vehicles").running() as sup:
        registry = Registry()
        registry.register(VEHICLE, sup, vehicle_factory(store))
        first = await registry.get(VEHICLE, "1042")
        saved = await first.ask(dataclasses.replace(DOCKED, battery=50))
        assert saved.estimated_range == 13  # 12.5 rounded half up
        await registry.stop(VEHICLE, "1042")
        again = await registry.get(VEHICLE, "1042")
        assert again is not first
        assert await again.ask(Snapshot()) == saved


async def test_a_stored_free_floating_vehicle_is_offline_and_a_docked_one_has_no_position() -> None:
    store = MemoryVehicleStore(
        {
            1: VehicleRecord(latitude=48.85, longitude=2.35, online=True),
            2: VehicleRecord(station_id=7, spot_id=701, spot_number=1, latitude=48.85, longitude=2.35),
        }
    )
    async with vehicle(store, vehicle_id=1) as (_, ref):
        free = await ref.ask(Snapshot())
    async with vehicle(store, vehicle_id=2) as (_, ref):
        docked = await ref.ask(Snapshot())
    assert (free.latitude, free.longitude, free.online) == (48.85, 2.35, False)
    assert (docked.station_id, docked.latitude, docked.longitude) == (7, None, None)


@pytest.mark.parametrize(
    ("avg_max_range", "battery", "expected"),
    [
        (40, 50, 20),
        (25, 50, 13),  # 12.5: half up
        (30, 55, 17),  # 16.5: half up
        (33, 49, 16),  # 16.17
        (45000, 87, 39150),  # metres
        (40, 100, 40),
        (40, 0, 0),
        (0, 80, 0),  # avg_max_range unknown
        (40, None, None),  # battery unknown
    ],
)
async def test_range_from_the_average_max_range_and_the_battery(
    avg_max_range: int, battery: int | None, expected: int | None
) -> None:
    store = MemoryVehicleStore({1042: VehicleRecord(avg_max_range=avg_max_range)})
    async with vehicle(store) as (_, ref):
        view = await ref.ask(dataclasses.replace(DOCKED, battery=battery))
    assert view.estimated_range == expected
    assert VehicleView(1042, battery_level=battery, avg_max_range=avg_max_range).estimated_range == expected


async def test_a_snapshot_is_an_immutable_value() -> None:
    store = MemoryVehicleStore()
    async with vehicle(store) as (_, ref):
        before = await ref.ask(Snapshot())
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.battery_level = 90  # type: ignore[misc]
        with pytest.raises(dataclasses.FrozenInstanceError):
            before.estimated_range = 90  # type: ignore[misc]
        after = await ref.ask(DOCKED)
        assert before == VehicleView(1042) and before is not after  # a change makes a new value
        assert await ref.ask(Snapshot()) == after
        assert hash(after) == hash(await ref.ask(Snapshot()))


async def test_a_failing_listener_is_logged_and_others_still_hear(caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryVehicleStore()
    broken, working = RecordingListener(broken=True), RecordingListener()
    async with vehicle(store, broken, working) as (sup, ref):
        view = await ref.ask(DOCKED)
        assert await ref.ask(Snapshot()) == view
        assert sup.metrics.restarts_total == 0
    assert working.views == [view] and store.saved == [view]
    [record] = [r for r in caplog.records if r.name == "actors.vehicle"]
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_messages_refuse_impossible_values() -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(DOCKED, battery=101)
    with pytest.raises(ValueError):
        Positioned(91.0, 0.0)
    with pytest.raises(ValueError):
        Positioned(0.0, -180.5)


async def test_an_idle_vehicle_actor_stops_and_a_fresh_one_serves_the_next_message(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryVehicleStore()
    registry = Registry()
    async with Supervisor("vehicles").running() as sup:
        registry.register(VEHICLE, sup, vehicle_factory(store, idle_after=60))
        first = await registry.get(VEHICLE, "7")
        await first.ask(Docked(1, 11, 1, 80, 41000, True))
        await trio.sleep(50)
        await first.ask(Snapshot())  # used: the idle clock starts again
        await trio.sleep(50)
        assert not first.stopping
        await trio.sleep(11)  # 61 s without a message
        assert first.stopped and registry.lookup(VEHICLE, "7") is None and sup.child_ids() == []
        again = await registry.get(VEHICLE, "7")
        view = await again.ask(Snapshot())
    assert again is not first
    assert (view.station_id, view.battery_level, view.online) == (1, 80, True)  # rebuilt from the store
    assert sup.metrics.restarts_total == 0
