"""The rents domain's entry point: unlock a vehicle (docked or free-floating), pause, resume and end a
free-floating rent, read a rider's rents.

Who does what (DESIGN.md, "Rents"):

- This service checks what it can before a vehicle is touched, in the order
  of the contract: the vehicle (404/4), the caller's right to use its network
  (403/13), the vehicle being rentable where it is — docked and locked in an
  accessible spot of an online station, no rent, not out of order (409/30) —
  and the rider's distance to the station's cluster (403/31; a cluster
  without ``max_unlock_distance`` has no limit).
- The vehicle's actor then reserves the rent (``ReserveRent``): it is the one
  writer of its rent, so of two riders racing for one vehicle one gets the rent
  and the other 409/30; the book counts the rider's current rents under a
  lock of the rider (409/32) and, on a network that requires a guarantee, takes
  the rider's usable one for the rent (none, or payments not configured: 402/33;
  ``payments/jobs.py``).
- This service then sends the unlock, with the rent's unlock id, through the
  station's actor. Offline (503/50), refused (409/41) or not recorded (503/48):
  the rent fails at once and the vehicle is available again. No answer
  (504/40): the rent stays ``unlocking``; the station's ``unlocked`` still
  starts it if it comes, else the actor fails it after ``rent_unlock_seconds``.
- The station's report finishes the story inside the actors: ``unlocked``
  with the unlock id starts the rent, ``locked`` of the vehicle in a spot of a
  station of its network ends it (``actors/vehicle.py``).

The sending is shielded from the caller's cancellation (a client that hangs
up): a reserved rent always gets its unlock sent or its failure recorded.

Free-floating vehicles (their own module and socket, ``vehicle-protocol.md``):

- Unlock: the same first checks (404/4, 403/13), then the vehicle must be
  rentable where it is — not rented, not out of order, its module connected
  (409/30) — and the rider within ``FREE_FLOATING_UNLOCK_METRES`` of its last
  known position (403/31). The actor reserves the rent as for a docked one,
  then sends the unlock (``SendUnlock``); the vehicle's RESULT answers the
  rider: refused (409/41) or offline (503/50) fail the rent at once; no answer
  (504/40) leaves it ``unlocking``, for the vehicle's ``unlocked`` or the
  actor's unlock timeout. The rider's own paused rent of that vehicle is
  resumed instead.
- End (``lock``), pause (``lock/temporary``), resume: checked here against the
  rent as the database has it (404/4 not the caller's, 409/36 docked, 409/35
  not in a state for it, 403/34 pauses not allowed, 403/39 not a place to end
  a trip: outside the network's area or its parkings), then a ``RentCommand``
  to the vehicle's actor, which checks again against the rent it holds (it is
  the one writer), records the command with a fresh id and sends it. The
  rider's answer is the vehicle's RESULT; the rent changes when the vehicle's
  ``locked`` / ``unlocked`` echoing that id arrives (``rent.paused``,
  ``rent.resumed``, ``rent.ended`` on the rider's ``user`` topic).

Every id a rider names is checked against the rider (another rider's trip or
vehicle answers as an unknown one, 404/4); the rider is the token's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import trio

from actors import ActorError, AskTimeout, RunsElsewhere
from actors.link import CommandFailed, Failure, PendingCommand
from actors.rent import CommandKind, Rent, RentRefused, RentRequest, RentState, Via
from actors.station import StationView
from actors.vehicle import (
    VEHICLE,
    RentCommand,
    ReserveRent,
    SendUnlock,
    UnlockFailed,
    VehicleMessage,
    VehicleReply,
    VehicleView,
)
from protocols.errors import ErrorCode

from ..catalog.memory import Catalog, Cluster, Network, VehicleFacts, vehicle_facts
from ..cluster.node import Cluster as ProcessCluster
from ..config import FREE_FLOATING_UNLOCK_METRES
from ..db import Backoff, Database, attempt
from ..errors import ApiError
from ..services.access import AccessCache, UserAccess
from ..services.geo import distance_m
from ..stations.service import StationService
from ..uow import Work
from ..vehicles.service import VehicleService
from . import store
from .book import PgRentBook

log = logging.getLogger(__name__)

# Codes of a failed unlock after which the rent fails at once (a timeout leaves it to the station's report).
_FAILS_THE_RENT = {ErrorCode.DEVICE_OFFLINE, ErrorCode.DEVICE_REJECTED, ErrorCode.SERVICE_UNAVAILABLE,
                   ErrorCode.INVALID_INPUT, ErrorCode.INTERNAL}


# A command to a free-floating vehicle that did not go through, as the rider is answered.
_COMMAND_FAILURES: dict[Failure, ErrorCode] = {
    Failure.OFFLINE: ErrorCode.DEVICE_OFFLINE,
    Failure.TIMEOUT: ErrorCode.DEVICE_TIMEOUT,
    Failure.REJECTED: ErrorCode.DEVICE_REJECTED,
    Failure.INVALID: ErrorCode.RENT_STATE,  # the rent changed meanwhile (its unlock timed out, it ended)
    Failure.UNAVAILABLE: ErrorCode.SERVICE_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class Unlocked:
    trip_id: int
    external_locks: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class DockedTarget:
    """Where a rentable docked vehicle is."""

    vehicle_id: int
    network_id: int
    station: StationView
    spot: int
    cluster: Cluster


class RentService:
    def __init__(
        self, work: Work, catalog: Catalog, stations: StationService, vehicles: VehicleService, access: AccessCache,
        *, book: PgRentBook | None = None, ask_timeout: float = 10.0,
        unlock_metres: float = FREE_FLOATING_UNLOCK_METRES, command_timeout: float = 15.0,
    ) -> None:
        self.work = work
        self.db: Database = work.db
        self.book = book or PgRentBook(work)  # the same one the vehicle actors write through
        self.catalog = catalog
        self.stations = stations
        self.vehicles = vehicles
        self.access = access
        self.ask_timeout = ask_timeout
        self.unlock_metres = unlock_metres  # a free-floating vehicle is unlocked from this close at most
        self.command_timeout = command_timeout  # bound of the wait for a vehicle's RESULT (its actor's is shorter)
        # Several processes (``knot_rt/cluster``): a rent's request is run by the process that holds the vehicle
        # (its actor), or the station it is docked at; set by ``join``.
        self.cluster: ProcessCluster | None = None

    def join(self, cluster: ProcessCluster) -> None:
        self.cluster = cluster
        cluster.calls.handle("rent.unlock", self._remote_unlock)
        cluster.calls.handle("rent.end", lambda a: self.end(int(a["user_id"]), int(a["vehicle_id"]), forward=False))
        cluster.calls.handle("rent.pause", lambda a: self.pause(int(a["user_id"]), int(a["vehicle_id"]), forward=False))
        cluster.calls.handle("rent.resume", lambda a: self.resume(int(a["user_id"]), int(a["rent_id"]), forward=False))

    async def _holder_elsewhere(self, vehicle_id: int) -> int | None:
        """The other process that holds the vehicle, or the station it is docked at; None: this one may."""
        if self.cluster is None:
            return None
        ownership = self.cluster.ownership
        node = await ownership.elsewhere("vehicle", vehicle_id)
        if node:
            return node
        station_id = await self.db.run(lambda conn: store.vehicle_station(conn, vehicle_id))
        return None if station_id is None else await ownership.elsewhere("station", station_id)

    async def _remote_unlock(self, args: dict[str, Any]) -> dict[str, Any]:
        access = await self.access.of(self.db, self.catalog, int(args["user_id"]))
        unlocked = await self.unlock(access, str(args["serial_number"]), float(args["lat"]), float(args["lng"]),
                                     forward=False)
        return {"trip_id": unlocked.trip_id, "external_locks": unlocked.external_locks}

    async def _forward(self, node: int, op: str, args: dict[str, Any]) -> Any:
        assert self.cluster is not None
        return await self.cluster.calls.call(node, op, args, timeout=self.command_timeout + 10)

    # unlocking -------------------------------------------------------------------------

    async def unlock(
        self, access: UserAccess, serial_number: str, lat: float, lng: float, *, forward: bool = True
    ) -> Unlocked:
        """Rent the vehicle ``serial_number`` for the caller at (lat, lng), or resume the caller's paused rent of
        it (free-floating); see the module's docstring."""
        assert access.user_id is not None
        row = await self.db.run(lambda conn: store.vehicle_by_serial(conn, serial_number))
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle {serial_number}")
        if forward and (node := await self._holder_elsewhere(row.vehicle_id)):
            found = await self._forward(node, "rent.unlock", {
                "user_id": access.user_id, "serial_number": serial_number, "lat": lat, "lng": lng,
            })
            return Unlocked(trip_id=int(found["trip_id"]), external_locks=list(found["external_locks"]))
        live = self.vehicles.state(row.vehicle_id)
        if (row.free_floating or live.has_module) and not live.docked:
            return await self._unlock_free_floating(access, row, live, lat, lng)
        target = self._docked_target(access, row)
        limit = target.cluster.max_unlock_distance
        if limit is not None and distance_m(lat, lng, target.cluster.latitude, target.cluster.longitude) > limit:
            raise ApiError(ErrorCode.TOO_FAR, f"farther than {limit} m from the vehicle's station")
        request = RentRequest(access.user_id, target.network_id, Via.APP, target.station.station_id, target.spot)
        return await self._rent(target, request)

    async def unlock_for_badge(self, user_id: int, station_id: int, spot: int | None) -> Unlocked:
        """A rider's badge at a station's reader: the vehicle of that spot (one reader per spot), else the
        best-charged rentable vehicle of the station. The app's checks but the distance."""
        access = await self.access.of(self.db, self.catalog, user_id)
        station = self.stations.live.station(station_id)
        if station is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
        docked = self.vehicles.docked_at(station_id)
        numbers = [spot] if spot is not None else sorted(
            docked, key=lambda n: (-(docked[n].battery_level or 0), n)
        )
        ids = [docked[n].vehicle_id for n in numbers if n in docked]
        rows = await self.db.run(lambda conn: store.vehicles_by_id(conn, ids))
        refusal: ApiError | None = None
        for vehicle_id in ids:
            try:
                target = self._docked_target(access, rows[vehicle_id]) if vehicle_id in rows else None
                if target is None:
                    continue
                return await self._rent(target, RentRequest(user_id, target.network_id, Via.BADGE, station_id,
                                                            target.spot))
            except ApiError as error:
                if error.code not in (ErrorCode.VEHICLE_NOT_AVAILABLE, ErrorCode.NOT_ALLOWED):
                    raise
                refusal = error
        raise refusal or ApiError(ErrorCode.VEHICLE_NOT_AVAILABLE, f"no vehicle to rent at station {station_id}")

    def _usable_network(self, access: UserAccess, vehicle: store.VehicleToRent) -> Network:
        network = self.catalog.networks.get(vehicle.network_id) if vehicle.network_id is not None else None
        if network is None or not access.may_use(network):
            raise ApiError(ErrorCode.NOT_ALLOWED, "this network is not open to you")
        return network

    def _docked_target(self, access: UserAccess, vehicle: store.VehicleToRent) -> DockedTarget:
        vehicle_id = vehicle.vehicle_id
        network = self._usable_network(access, vehicle)
        unavailable = ApiError(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {vehicle_id} is not available")
        if vehicle.state not in ("available", "rented") or vehicle.out_of_order or network.out_of_order is not None:
            raise unavailable
        live: VehicleView = self.vehicles.state(vehicle_id)
        if live.rented or live.station_id is None or live.spot_number is None:
            raise unavailable
        if self.vehicles.in_maintenance(vehicle_id):
            raise ApiError(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {vehicle_id} is in maintenance")
        station = self.stations.live.station(live.station_id)
        spot = station.spot(live.spot_number) if station is not None else None
        if (
            station is None or spot is None or not station.online or spot.vehicle != vehicle_id or spot.lock != 1
            or spot.in_maintenance or not spot.is_accessible
        ):
            raise unavailable
        cluster = self.catalog.clusters.get(station.cluster_id)
        if cluster is None or cluster.network_id != network.id or cluster.out_of_order is not None:
            raise unavailable
        return DockedTarget(vehicle_id, network.id, station, spot.number, cluster)

    async def _rent(self, target: DockedTarget, request: RentRequest) -> Unlocked:
        with trio.CancelScope(shield=True):  # a reserved rent always gets its unlock sent or its failure
            rent = await self._reserve(target.vehicle_id, request)
            assert rent.unlock_id is not None and request.spot is not None
            try:
                await self.stations.unlock(target.station.station_id, request.spot, rent.unlock_id)
            except ApiError as error:
                if error.code in _FAILS_THE_RENT:
                    await self._unlock_failed(rent, error.message or error.code.name.lower())
                raise
        return Unlocked(trip_id=rent.rent_id, external_locks=[])

    async def _reserve(self, vehicle_id: int, request: RentRequest) -> Rent:
        reply = await self._ask_vehicle(vehicle_id, ReserveRent(request))
        assert isinstance(reply, Rent)
        return reply

    async def _ask_vehicle(self, vehicle_id: int, message: VehicleMessage) -> VehicleReply:
        """Ask the vehicle's actor; a refusal is its ``ApiError``, a busy or restarting actor 503/48."""
        try:
            actor = await self.stations.registry.get(VEHICLE, str(vehicle_id))
            reply = await actor.ask(message, timeout=self.ask_timeout)
        except AskTimeout as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "the vehicle is busy; try again shortly") from exc
        except ActorError as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "the vehicle is restarting; try again shortly") from exc
        if isinstance(reply, RentRefused):
            raise ApiError(reply.code, reply.message)
        return reply

    async def _unlock_failed(self, rent: Rent, reason: str) -> None:
        try:
            actor = await self.stations.registry.get(VEHICLE, str(rent.vehicle_id))
            await actor.ask(UnlockFailed(rent.rent_id, reason), timeout=self.ask_timeout)
        except ActorError as exc:  # the actor's clock fails the rent when its unlock times out
            log.warning("rent %s: recording the failed unlock failed: %r", rent.rent_id, exc)

    # free-floating ---------------------------------------------------------------------

    async def _unlock_free_floating(
        self, access: UserAccess, vehicle: store.VehicleToRent, live: VehicleView, lat: float, lng: float
    ) -> Unlocked:
        assert access.user_id is not None
        network = self._usable_network(access, vehicle)
        rent = live.rent
        if rent is not None and rent.user_id == access.user_id and rent.state is RentState.PAUSED:
            await self._command(rent.vehicle_id, RentCommand(access.user_id, CommandKind.UNLOCK, rent.rent_id))
            return Unlocked(trip_id=rent.rent_id, external_locks=[])
        vehicle_id = vehicle.vehicle_id
        why = (
            "is out of order" if vehicle.state not in ("available", "rented") or vehicle.out_of_order
            or network.out_of_order is not None
            else "is in maintenance" if self.vehicles.in_maintenance(vehicle_id)
            else "is rented" if live.rented
            else "is not connected" if not live.connected
            else "has not told where it is" if live.latitude is None or live.longitude is None
            else None
        )
        if why is not None:
            raise ApiError(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {vehicle_id} {why}")
        assert live.latitude is not None and live.longitude is not None
        if distance_m(lat, lng, live.latitude, live.longitude) > self.unlock_metres:
            raise ApiError(ErrorCode.TOO_FAR, f"farther than {self.unlock_metres:g} m from the vehicle")
        request = RentRequest(access.user_id, network.id, Via.APP)
        with trio.CancelScope(shield=True):  # a reserved rent always gets its unlock sent or its failure
            reserved = await self._reserve(vehicle_id, request)
            try:
                await self._command(vehicle_id, SendUnlock(reserved.rent_id))
            except ApiError as error:
                if error.code is not ErrorCode.DEVICE_TIMEOUT:
                    await self._unlock_failed(reserved, error.message or error.code.name.lower())
                raise
        return Unlocked(trip_id=reserved.rent_id, external_locks=[])

    async def end(self, user_id: int, vehicle_id: int, *, forward: bool = True) -> None:
        """End the caller's free-floating rent of ``vehicle_id`` where the vehicle is: answered once the vehicle
        accepted its ``lock``; the rent ends on its ``locked`` (``rent.ended``)."""
        if forward and (node := await self._holder_elsewhere(vehicle_id)):
            await self._forward(node, "rent.end", {"user_id": user_id, "vehicle_id": vehicle_id})
            return
        rent = await self._riding_free_floating(user_id, vehicle_id)
        if not rent.state.riding:
            raise ApiError(ErrorCode.RENT_STATE, f"trip {rent.rent_id} is {rent.state.value}")
        live = self.vehicles.state(vehicle_id)
        if live.latitude is None or live.longitude is None or not self.catalog.may_end_trip(
            rent.network_id, live.latitude, live.longitude
        ):
            raise ApiError(ErrorCode.LOCK_NOT_ALLOWED_HERE,
                           "a trip may not end here: outside the network's area or its parkings")
        await self._command(vehicle_id, RentCommand(user_id, CommandKind.END))

    async def pause(self, user_id: int, vehicle_id: int, *, forward: bool = True) -> None:
        """Pause the caller's ongoing free-floating rent of ``vehicle_id`` (a temporary lock): answered once
        the vehicle accepted its ``lock``; the rent pauses on its ``locked`` (``rent.paused``)."""
        if forward and (node := await self._holder_elsewhere(vehicle_id)):
            await self._forward(node, "rent.pause", {"user_id": user_id, "vehicle_id": vehicle_id})
            return
        rent = await self._riding_free_floating(user_id, vehicle_id)
        if not rent.rules.allow_pause:
            raise ApiError(ErrorCode.PAUSE_NOT_ALLOWED, "pausing a trip is not allowed on this network")
        if rent.state is not RentState.ONGOING or rent.command is CommandKind.PAUSE:
            state = "pausing" if rent.command is CommandKind.PAUSE else rent.state.value
            raise ApiError(ErrorCode.RENT_STATE, f"trip {rent.rent_id} is {state}")
        await self._command(vehicle_id, RentCommand(user_id, CommandKind.PAUSE))

    async def resume(self, user_id: int, rent_id: int, *, forward: bool = True) -> None:
        """Resume a paused rent of the caller: another rider's rent or an unknown one is 404/4, a rent that is
        not paused 409/35, a docked one 409/36. Answered once the vehicle accepted its ``unlock``; the rent
        resumes on its ``unlocked`` (``rent.resumed``)."""
        row = await self.db.run(lambda conn: store.rent_of_user(conn, user_id, rent_id))
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no trip {rent_id}")
        if row["rent_state"] != "paused":
            raise ApiError(ErrorCode.RENT_STATE, f"trip {rent_id} is {row['rent_state']}, not paused")
        if not row["free_floating"]:
            raise ApiError(ErrorCode.WRONG_VEHICLE_KIND, "only free-floating rents are paused")
        if forward and (node := await self._holder_elsewhere(row["vehicle_id"])):
            await self._forward(node, "rent.resume", {"user_id": user_id, "rent_id": rent_id})
            return
        await self._command(row["vehicle_id"], RentCommand(user_id, CommandKind.UNLOCK, rent_id))

    async def _riding_free_floating(self, user_id: int, vehicle_id: int) -> Rent:
        """The caller's current rent of a free-floating vehicle, as the database has it: 404/4 for an unknown
        vehicle or no rent of the caller on it, 409/36 for a docked vehicle or one without a module."""
        vehicle = await self.db.run(lambda conn: store.vehicle_by_id(conn, vehicle_id))
        if vehicle is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle {vehicle_id}")
        live = self.vehicles.state(vehicle_id)
        if not (vehicle.free_floating or live.has_module) or live.docked:
            raise ApiError(ErrorCode.WRONG_VEHICLE_KIND, f"vehicle {vehicle_id} is docked, not free-floating")
        rent = await self.db.run(lambda conn: store.current_rent(conn, vehicle_id))
        if rent is None or rent.user_id != user_id:
            raise ApiError(ErrorCode.NOT_FOUND, f"no trip of yours on vehicle {vehicle_id}")
        if not rent.free_floating:
            raise ApiError(ErrorCode.WRONG_VEHICLE_KIND, f"trip {rent.rent_id} started at a station")
        return rent

    async def _command(self, vehicle_id: int, message: RentCommand | SendUnlock) -> dict[str, Any]:
        """Ask the vehicle's actor, then wait for the vehicle's RESULT: its payload, or ``ApiError`` (a
        refusal of the actor with its code; offline 503/50, no answer 504/40, rejected 409/41)."""
        reply = await self._ask_vehicle(vehicle_id, message)
        if isinstance(reply, PendingCommand):
            try:  # the actor settles it within its call timeout; this bound only guards against a lost reply
                outcome = await reply.wait_within(self.command_timeout)
            except trio.TooSlowError:
                outcome = CommandFailed(Failure.TIMEOUT, f"vehicle {vehicle_id} did not answer")
        elif isinstance(reply, CommandFailed):
            outcome = reply
        else:  # pragma: no cover - the actor answers one of the three
            raise ApiError(ErrorCode.INTERNAL, f"unexpected answer of vehicle {vehicle_id}")
        if isinstance(outcome, CommandFailed):
            raise ApiError(_COMMAND_FAILURES[outcome.failure], outcome.message)
        return outcome

    # reads -------------------------------------------------------------------------------

    async def history(self, user_id: int, before: int | None, limit: int) -> list[dict[str, Any]]:
        """The rider's rents, current ones first, then past ones newest first (``before``: a trip id)."""
        rows = await self.db.run(lambda conn: store.history(conn, user_id, before, limit))
        return [self.describe(row, past=True) for row in rows]

    async def for_map(self, user_id: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The rider's current rents and passes as the logged-in map shows them (``rents``, ``passes``), in
        one statement."""

        rents, passes = await self.db.run(lambda conn: store.rents_and_passes(conn, user_id))
        return (
            [self.describe(row) for row in rents],
            [{"pass_id": row["id"], "end_date": row["end_date"], "in_use": row["in_use"]} for row in passes],
        )

    def describe(self, row: asyncpg.Record, *, past: bool = False) -> dict[str, Any]:
        """A rent's row as the map shows it, with its vehicle's live battery and spot; ``past`` adds its
        end, duration and price (``GET /users/rents``)."""
        paused = row["rent_state"] == "paused"
        found = self._fields(
            vehicle_facts(row), trip_id=row["id"], network_id=row["network_id"], free_floating=row["free_floating"],
            being_rented=row["rent_state"] == "ongoing", station_id=row["station_id"],
            spot_number=row["spot_number"], displayed_number=row["displayed_number"],
            lock_status=row["lock_status"], time_start=row["time_start"],
            billing_time_stop=row["billing_time_stop"], on_hold_since=row["on_hold_since"] if paused else None,
        )
        if past:
            stop = row["billing_time_stop"]
            found.update({
                "state": row["rent_state"],
                "via": row["via"],
                "time_stop": row["ended_at"] if row["rent_state"] == "ended" else None,
                "duration": int((stop - row["time_start"]).total_seconds()) if stop is not None else None,
                "currency": row["currency"],
                "price": _amount(row["price"]),
                "paid_by_wallet": _amount(row["paid_by_wallet"]),
                "amount_due": _amount(row["amount_due"]),
                "end_latitude": row["end_latitude"],
                "end_longitude": row["end_longitude"],
                "ended_by": row["ended_by"],
            })
        return found

    def _fields(
        self, facts: VehicleFacts, *, trip_id: int, network_id: int, free_floating: bool, being_rented: bool,
        station_id: int | None, spot_number: int | None, displayed_number: int | None, lock_status: int | None,
        time_start: datetime, billing_time_stop: datetime | None, on_hold_since: datetime | None,
    ) -> dict[str, Any]:
        """The map's fields of a rent (spec row 61): its vehicle's facts and live battery, its spot's lock
        while docked (the station's live view first), a free-floating vehicle's own lock as it last
        reported it (1 locked, 0 open, None unknown)."""
        if free_floating and station_id is None:
            locked = self.vehicles.state(facts.id).locked
            lock_status = None if locked is None else int(locked)
        elif station_id is not None and spot_number is not None:
            station = self.stations.live.station(station_id)
            spot = station.spot(spot_number) if station is not None else None
            if spot is not None:
                lock_status = spot.lock
        return {
            "vehicle_id": facts.id,
            "serial_number": facts.serial_number,
            "free_floating": free_floating,
            "being_rented": being_rented,
            "displayed_number": displayed_number,
            "lock_status": lock_status,
            "trip_id": trip_id,
            "time_start": time_start,
            "billing_time_stop": billing_time_stop,
            "on_hold_since": on_hold_since,
            "on_hold_activated": on_hold_since is not None,
            "network_id": network_id,
            "battery_level": self.vehicles.state(facts.id).battery_level,
            "min_battery_to_slow_down": facts.min_battery_to_slow_down,
            "min_battery_to_auto_lock": facts.min_battery_to_auto_lock,
            "avg_max_range": facts.avg_max_range,
            "external_locks": [],
            "vehicle_model_id": facts.model_id,
            "vehicle_model_name": facts.model_name,
            "vehicle_manufacturer": facts.manufacturer,
            "vehicle_type": facts.vehicle_type,
        }

    # running -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Start the actors of the vehicles with a current rent (their clocks, and the reconciliation of
        what the stations recorded while they were down), retrying until the database answers."""

        async def wake() -> None:
            vehicle_ids = await self.book.load_renting()
            for vehicle_id in vehicle_ids:
                try:
                    await self.stations.registry.get(VEHICLE, str(vehicle_id))
                except RunsElsewhere:
                    pass  # another process holds it (several processes): its clock runs there
            if vehicle_ids:
                log.info("rents: %s vehicles with a current rent are live", len(vehicle_ids))

        backoff = Backoff(cap=5.0)
        while not await attempt("rents: waking the vehicles of current rents", wake, backoff):
            await backoff.sleep()


def _amount(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
