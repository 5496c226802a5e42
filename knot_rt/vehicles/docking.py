"""What a station's report tells its vehicles, and its delivery to their actors.

A station's report (a spot's vehicle, the batteries it reads, the station going
online or offline) becomes ``Docked``, ``Undocked`` and ``StationOnline``
messages to the vehicle actors. Each vehicle actor is the one writer of its row
and of its live state (``live.LiveVehicles``).

Only vehicles of the station's network get an actor: an id the station reports
that is no vehicle of that network (a misread, a foreign vehicle, a forged
frame) starts nothing; it is recorded as a ``fault`` event on the station's
topic (``fault_name: "unknown-vehicle"``), once while the station keeps
reporting it, again if it comes back after the station stopped reporting it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from actors import ActorError, ActorStopped, Registry
from actors.station import Released, Returned, SpotEvent, StationView
from actors.vehicle import VEHICLE, Docked, StationOnline, Undocked, VehicleMessage

log = logging.getLogger(__name__)


def vehicle_messages(
    before: StationView, after: StationView, cause: SpotEvent | None = None
) -> list[tuple[int, VehicleMessage]]:
    """What a change of a station tells its vehicles (vehicle id 0, unreadable, is skipped).

    ``cause`` (the event behind the change) adds what only the event tells: the unlock command that
    released a vehicle (``Undocked.unlock_id``, which starts a rent), and the time a vehicle was locked in
    (``Docked.locked_at_ms``, which ends one) — sent even when the spot already showed that vehicle.
    """
    messages: list[tuple[int, VehicleMessage]] = []
    readings = {r.vehicle: r for r in after.vehicles}
    old_spots = {s.number: s for s in before.spots}
    docked_now = {s.vehicle for s in after.spots if s.vehicle}
    for spot in after.spots:
        old = old_spots.get(spot.number)
        if old is not None and old.vehicle and old.vehicle != spot.vehicle and old.vehicle not in docked_now:
            messages.append((old.vehicle, Undocked(after.station_id)))
        if spot.vehicle:
            reading = readings.get(spot.vehicle)
            moved = old is None or old.vehicle != spot.vehicle
            if moved or reading is not None or before.online != after.online:
                messages.append((spot.vehicle, Docked(
                    after.station_id, spot.spot_id, spot.number,
                    reading.battery if reading else None, reading.voltage if reading else None, after.online,
                )))
    if before.online != after.online:
        docked = {vehicle for vehicle, message in messages if isinstance(message, Docked)}
        messages += [
            (spot.vehicle, StationOnline(after.station_id, after.online))
            for spot in after.spots if spot.vehicle and spot.vehicle not in docked
        ]
    if cause is not None:
        messages = _with_cause(messages, after, cause)
    return messages


def _with_cause(
    messages: list[tuple[int, VehicleMessage]], after: StationView, cause: SpotEvent
) -> list[tuple[int, VehicleMessage]]:
    vehicle = cause.vehicle
    others = [(v, m) for v, m in messages if not (v == vehicle and isinstance(m, Docked | Undocked))]
    if isinstance(cause, Released):
        return [*others, (vehicle, Undocked(after.station_id, cause.unlock_id))]
    assert isinstance(cause, Returned)
    spot = after.spot(cause.spot)
    if spot is None:  # pragma: no cover - the actor checked the spot
        return messages
    reading = next((r for r in after.vehicles if r.vehicle == vehicle), None)
    docked = Docked(
        after.station_id, spot.spot_id, spot.number, reading.battery if reading else None,
        reading.voltage if reading else None, after.online, locked_at_ms=cause.at_ms,
    )
    return [*others, (vehicle, docked)]


Members = Callable[[int, list[int]], Awaitable[set[int]]]
UnknownVehicle = Callable[[StationView, int, int | None], Awaitable[None]]


class VehicleMover:
    """Delivers a station's changes to its vehicles' actors, and waits until they took them.

    The station's event is already recorded (its spots are the truth of where a
    vehicle is); the messages are asked of the vehicles' actors one after the
    other, in order, each bounded by ``timeout``. So when the station's listener
    returns (before the station is answered and before its view and cluster
    totals change), its vehicles' rows and live states show the report: a reader
    never sees a station and its vehicles disagree, and what the station was
    answered is saved on the vehicles' side too. An ask of a vehicle actor that
    stops meanwhile (idle) fails and is sent again to a fresh one, where a plain
    send would have been dropped with its mailbox.

    The cost: a report waits for the saves of the vehicles it changes (one
    round trip each; a report that changes nothing of a vehicle saves nothing).
    One vehicle at a time, not all at once: a storm of reconnecting stations
    asks no more of the database pool at once than it did when the vehicles
    followed in the background (then each start, a load, was awaited in turn
    too); side by side, a storm exhausted the pool (each start also reads the
    vehicle's rent). The vehicles' store groups the loads and saves of many
    stations' vehicles into one statement per flush (``PgVehicleStore``). A vehicle that fails or is slow is logged and skipped after
    ``timeout``, never failing its station.

    ``members(station_id, ids)`` tells which ids are vehicles of the station's
    network (asked once per id and station: a vehicle does not change network
    while docked; the answer is kept while this process runs); ``unknown(view,
    vehicle_id, spot)`` records the fault of an id that is not.
    """

    def __init__(
        self, registry: Registry, *, timeout: float = 5.0, members: Members | None = None,
        unknown: UnknownVehicle | None = None,
    ) -> None:
        self._registry = registry
        self._timeout = timeout
        self._members = members
        self._unknown = unknown
        self._known: dict[int, set[int]] = {}  # station id -> vehicle ids known to be of its network
        self._faulted: dict[int, set[int]] = {}  # station id -> unknown ids it reports, fault recorded

    async def __call__(self, before: StationView, after: StationView, cause: SpotEvent | None = None) -> None:
        messages = vehicle_messages(before, after, cause)
        if self._members is not None:
            messages = await self._of_the_network(after, messages)
        # Each vehicle's messages in order; the vehicles side by side (their saves then share a group commit:
        # one wait for the database per station report, not one per vehicle).
        by_vehicle: dict[int, list[VehicleMessage]] = {}
        for vehicle_id, message in messages:
            by_vehicle.setdefault(vehicle_id, []).append(message)
        if len(by_vehicle) == 1:
            [(vehicle_id, its)] = by_vehicle.items()
            await self._deliver_all(vehicle_id, its)
        elif by_vehicle:
            async with trio.open_nursery() as nursery:
                for vehicle_id, its in by_vehicle.items():
                    nursery.start_soon(self._deliver_all, vehicle_id, its)

    async def _deliver_all(self, vehicle_id: int, messages: list[VehicleMessage]) -> None:
        for message in messages:
            await self._deliver(vehicle_id, message)

    async def _of_the_network(
        self, after: StationView, messages: list[tuple[int, VehicleMessage]]
    ) -> list[tuple[int, VehicleMessage]]:
        assert self._members is not None
        station_id = after.station_id
        known = self._known.setdefault(station_id, set())
        faulted = self._faulted.setdefault(station_id, set())
        reported = {spot.vehicle: spot.number for spot in after.spots if spot.vehicle}
        faulted &= set(reported)  # no longer reported: a later report records the fault again
        # Ids already found foreign are not asked again while the station keeps reporting them.
        asked = sorted({vehicle_id for vehicle_id, _ in messages} - known - faulted)
        if asked:
            try:
                known |= await self._members(station_id, asked)
            except Exception as exc:  # the database is away: those vehicles follow on a later report,
                # and none of them is taken for a foreign one meanwhile
                log.warning("station %s: checking vehicles %s failed: %r", station_id, asked, exc)
                return [(vehicle_id, message) for vehicle_id, message in messages if vehicle_id in known]
        for vehicle_id in asked:
            if vehicle_id in known or vehicle_id in faulted or vehicle_id not in reported:
                continue
            faulted.add(vehicle_id)
            log.warning("station %s reports vehicle %s, no vehicle of its network", station_id, vehicle_id,
                        extra={"station_id": station_id})
            if self._unknown is not None:
                try:
                    await self._unknown(after, vehicle_id, reported.get(vehicle_id))
                except Exception as exc:
                    log.warning("station %s: recording the unknown vehicle %s failed: %r", station_id, vehicle_id, exc)
        return [(vehicle_id, message) for vehicle_id, message in messages if vehicle_id in known]

    async def _deliver(self, vehicle_id: int, message: VehicleMessage) -> None:
        for _ in range(2):  # an idle actor may be stopping just as it is used: once more with a fresh one
            try:
                with trio.fail_after(self._timeout):
                    ref = await self._registry.get(VEHICLE, str(vehicle_id))
                    await ref.ask(message, timeout=self._timeout)
                return
            except ActorStopped:
                continue
            except (ActorError, trio.TooSlowError) as exc:  # one vehicle's trouble never stops its station
                log.warning("vehicle %s did not take %s: %r", vehicle_id, type(message).__name__, exc)
                return
        log.warning("vehicle %s did not take %s: its actor kept stopping", vehicle_id, type(message).__name__)
