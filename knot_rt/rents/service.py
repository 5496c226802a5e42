"""The rents domain's entry point: unlock a docked vehicle, read a rider's rents.

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
  lock of the rider (409/32) and refuses a network that requires a guarantee
  (402/33, until payments exist).
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
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg
import trio

from actors import ActorError, AskTimeout
from actors.rent import Rent, RentRefused, RentRequest, Via
from actors.station import StationView
from actors.vehicle import VEHICLE, ReserveRent, UnlockFailed, VehicleView
from protocols.errors import ErrorCode

from ..catalog.memory import Catalog, Cluster, VehicleFacts, vehicle_facts
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
    ) -> None:
        self.work = work
        self.db: Database = work.db
        self.book = book or PgRentBook(work)  # the same one the vehicle actors write through
        self.catalog = catalog
        self.stations = stations
        self.vehicles = vehicles
        self.access = access
        self.ask_timeout = ask_timeout

    # unlocking -------------------------------------------------------------------------

    async def unlock(self, access: UserAccess, serial_number: str, lat: float, lng: float) -> Unlocked:
        """Rent the docked vehicle ``serial_number`` for the caller at (lat, lng); see the module's docstring."""
        assert access.user_id is not None
        row = await self.db.run(lambda conn: store.vehicle_by_serial(conn, serial_number))
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle {serial_number}")
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

    def _docked_target(self, access: UserAccess, vehicle: store.VehicleToRent) -> DockedTarget:
        vehicle_id = vehicle.vehicle_id
        network = self.catalog.networks.get(vehicle.network_id) if vehicle.network_id is not None else None
        if network is None or not access.may_use(network):
            raise ApiError(ErrorCode.NOT_ALLOWED, "this network is not open to you")
        unavailable = ApiError(ErrorCode.VEHICLE_NOT_AVAILABLE, f"vehicle {vehicle_id} is not available")
        if vehicle.state not in ("available", "rented") or vehicle.out_of_order or network.out_of_order is not None:
            raise unavailable
        live: VehicleView = self.vehicles.state(vehicle_id)
        if live.rented or live.station_id is None or live.spot_number is None:
            raise unavailable
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
        try:
            actor = await self.stations.registry.get(VEHICLE, str(vehicle_id))
            reply = await actor.ask(ReserveRent(request), timeout=self.ask_timeout)
        except AskTimeout as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "the vehicle is busy; try again shortly") from exc
        except ActorError as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, "the vehicle is restarting; try again shortly") from exc
        if isinstance(reply, RentRefused):
            raise ApiError(reply.code, reply.message)
        assert isinstance(reply, Rent)
        return reply

    async def _unlock_failed(self, rent: Rent, reason: str) -> None:
        try:
            actor = await self.stations.registry.get(VEHICLE, str(rent.vehicle_id))
            await actor.ask(UnlockFailed(rent.rent_id, reason), timeout=self.ask_timeout)
        except ActorError as exc:  # the actor's clock fails the rent when its unlock times out
            log.warning("rent %s: recording the failed unlock failed: %r", rent.rent_id, exc)

    async def resume(self, user_id: int, rent_id: int) -> None:
        """Resume a paused rent of the caller (pauses are free-floating's, next issue): another rider's
        rent or an unknown one is 404/4, a rent that is not paused 409/35."""
        row = await self.db.run(lambda conn: store.rent_of_user(conn, user_id, rent_id))
        if row is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no trip {rent_id}")
        if row["rent_state"] != "paused":
            raise ApiError(ErrorCode.RENT_STATE, f"trip {rent_id} is {row['rent_state']}, not paused")
        raise ApiError(ErrorCode.WRONG_VEHICLE_KIND, "only free-floating rents are paused")  # pragma: no cover

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
        found = self._fields(
            vehicle_facts(row), trip_id=row["id"], network_id=row["network_id"], free_floating=row["free_floating"],
            being_rented=row["rent_state"] == "ongoing" and row["on_hold_since"] is None, station_id=row["station_id"],
            spot_number=row["spot_number"], displayed_number=row["displayed_number"],
            lock_status=row["lock_status"], time_start=row["time_start"],
            billing_time_stop=row["billing_time_stop"], on_hold_since=row["on_hold_since"],
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
            })
        return found

    def _fields(
        self, facts: VehicleFacts, *, trip_id: int, network_id: int, free_floating: bool, being_rented: bool,
        station_id: int | None, spot_number: int | None, displayed_number: int | None, lock_status: int | None,
        time_start: datetime, billing_time_stop: datetime | None, on_hold_since: datetime | None,
    ) -> dict[str, Any]:
        """The map's fields of a rent (spec row 61): its vehicle's facts and live battery, its spot's lock
        while docked (the station's live view first)."""
        if station_id is not None and spot_number is not None:
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
                await self.stations.registry.get(VEHICLE, str(vehicle_id))
            if vehicle_ids:
                log.info("rents: %s vehicles with a current rent are live", len(vehicle_ids))

        backoff = Backoff(cap=5.0)
        while not await attempt("rents: waking the vehicles of current rents", wake, backoff):
            await backoff.sleep()


def _amount(value: Decimal | None) -> float | None:
    return None if value is None else float(value)
