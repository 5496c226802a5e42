"""The live effects of the open maintenances, and their counts in memory (rows 56-57).

Kept here, fed by ``MaintenanceService``'s after-change hook (run after each commit) and loaded once at
start:

- every open maintenance (one row each, a few thousand at most), and its counts by severity per station
  (the station's own), per spot and per vehicle;
- the effects of the ``high`` ones, applied through their owners:

  - a spot: out of service through its station's actor (``SetSpotMaintenance``: it leaves ``free_spots``,
    a vehicle locked into it is answered DENY), and back when no ``high`` one is open on it nor on its
    station;
  - a station: all its spots, the same way;
  - a vehicle: out of rent in the vehicles' live state (``LiveVehicles.in_maintenance``): unlocks answer
    409/30, the map shows it not available, its cluster's ``available_vehicles`` leaves it out.

  The station actor writes the spot's flag and tells the live station side, which publishes
  ``cluster.updated``; the hook runs before the route answers, so the caller's next read sees it.

Choices and their costs:

- The effects are recomputed from the whole in-memory set of the target each time (not toggled by the
  one maintenance that changed): two hooks racing end in the state of the last set, whatever their order.
- At start the ``high`` maintenances' effects are applied again (spots the database has out of service
  already are left as they are). A spot flag set without a maintenance (``StationService.set_spot_maintenance``
  called directly) is not cleared at start; a maintenance resolved on a station or spot clears it.
- A vehicle's maintenance counts where the vehicle is docked now (its station's cluster); an undocked one
  counts in the cluster where its maintenance was opened (``cluster_id``), else in none.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

import trio

from ..db import Backoff, attempt
from ..stations.service import StationService
from ..vehicles.service import VehicleService
from . import store
from .service import MaintenanceService
from .store import Maintenance

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Counts:
    info: int = 0
    low: int = 0
    high: int = 0

    def add(self, severity: str, delta: int = 1) -> None:
        setattr(self, severity, getattr(self, severity) + delta)

    def merge(self, other: Counts) -> None:
        self.info += other.info
        self.low += other.low
        self.high += other.high

    def as_json(self) -> dict[str, int]:
        return {"info_count": self.info, "low_count": self.low, "high_count": self.high}


class LiveMaintenance:
    def __init__(self, service: MaintenanceService, stations: StationService, vehicles: VehicleService) -> None:
        self.service = service
        self.stations = stations
        self.vehicles = vehicles
        self._open: dict[int, Maintenance] = {}
        self._stations: defaultdict[int, Counts] = defaultdict(Counts)
        self._spots: defaultdict[int, Counts] = defaultdict(Counts)
        self._vehicles: defaultdict[int, Counts] = defaultdict(Counts)
        self._lock = trio.Lock()  # one effect at a time: a target's state is computed then applied whole
        self.loaded = trio.Event()
        service.hooks.append(self.changed)

    # reads -------------------------------------------------------------------------------------------------

    def open_maintenances(self) -> Iterable[Maintenance]:
        return self._open.values()

    def station_counts(self, station_id: int) -> Counts:
        return self._stations.get(station_id) or Counts()

    def spot_counts(self, spot_id: int) -> Counts:
        return self._spots.get(spot_id) or Counts()

    def vehicle_counts(self, vehicle_id: int) -> Counts:
        return self._vehicles.get(vehicle_id) or Counts()

    def station_automatic_open(self, station_id: int, code: str) -> bool:
        """An automatic maintenance of ``code`` is open on the station itself."""
        return any(
            m.target_type == "station" and m.station_id == station_id and m.started_by == "automatic"
            and m.automatic_code_description == code for m in self._open.values()
        )

    def undocked_vehicles(self, cluster_id: int) -> list[int]:
        """Vehicles with an open maintenance, not docked now, whose maintenance opened in the cluster."""
        found = set()
        for m in self._open.values():
            if m.target_type == "vehicle" and m.vehicle_id is not None and m.cluster_id == cluster_id:
                if self.vehicles.state(m.vehicle_id).station_id is None:
                    found.add(m.vehicle_id)
        return sorted(found)

    def cluster_counts(self, cluster_id: int) -> Counts:
        """The open maintenances of the cluster: its stations', their spots', the vehicles docked there now
        and the undocked ones opened there (row 57's count is row 56's sum)."""
        total = Counts()
        live = self.stations.live
        for station_id in live.stations_of(cluster_id):
            total.merge(self.station_counts(station_id))
            view = live.station(station_id)
            for spot in view.spots if view is not None else ():
                total.merge(self.spot_counts(spot.spot_id))
            for docked in self.vehicles.docked_at(station_id).values():
                total.merge(self.vehicle_counts(docked.vehicle_id))
        for vehicle_id in self.undocked_vehicles(cluster_id):
            total.merge(self.vehicle_counts(vehicle_id))
        return total

    # the hook ----------------------------------------------------------------------------------------------

    async def changed(self, m: Maintenance, _high_open: bool = False) -> None:
        """After the commit of a change to ``m``: the counts, then its target's effects."""
        async with self._lock:
            self._forget(m.id)
            if m.is_open and not m.deleted_from_history:
                self._remember(m)
            await self._apply(m)

    def _remember(self, m: Maintenance) -> None:
        self._open[m.id] = m
        for counts in self._counts_of(m):
            counts.add(m.severity)

    def _forget(self, maintenance_id: int) -> None:
        old = self._open.pop(maintenance_id, None)
        if old is not None:
            for counts in self._counts_of(old):
                counts.add(old.severity, -1)

    def _counts_of(self, m: Maintenance) -> list[Counts]:
        if m.target_type == "station" and m.station_id is not None:
            return [self._stations[m.station_id]]
        if m.target_type == "spot" and m.spot_id is not None:
            return [self._spots[m.spot_id]]
        if m.target_type == "vehicle" and m.vehicle_id is not None:
            return [self._vehicles[m.vehicle_id]]
        return []

    # effects -----------------------------------------------------------------------------------------------

    def _spot_out(self, station_id: int, spot_id: int) -> bool:
        return self.spot_counts(spot_id).high > 0 or self.station_counts(station_id).high > 0

    async def _apply(self, m: Maintenance) -> None:
        if m.target_type == "vehicle" and m.vehicle_id is not None:
            self._apply_vehicle(m.vehicle_id)
        elif m.station_id is not None:
            await self._apply_station(m.station_id, only_spot=m.spot_id if m.target_type == "spot" else None)

    def _apply_vehicle(self, vehicle_id: int) -> None:
        if self.vehicles.live.set_in_maintenance(vehicle_id, self.vehicle_counts(vehicle_id).high > 0):
            station_id = self.vehicles.state(vehicle_id).station_id
            if station_id is not None:  # its cluster's available vehicles change
                self.stations.live.refresh_station(station_id)

    async def _apply_station(self, station_id: int, *, only_spot: int | None = None,
                             only_set: bool = False) -> None:
        """Put the station's spots (or one) in or out of service as their open ``high`` maintenances say
        (``only_set``: never take one out of maintenance, at start)."""
        view = await self.stations.view(station_id)
        if view is None:  # deleted meanwhile
            return
        for spot in view.spots:
            if only_spot is not None and spot.spot_id != only_spot:
                continue
            wanted = self._spot_out(station_id, spot.spot_id)
            if wanted != spot.in_maintenance and (wanted or not only_set):
                await self.stations.set_spot_maintenance(station_id, spot.number, wanted)

    # start -------------------------------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the open maintenances and apply the effects of the ``high`` ones again."""
        async with self._lock:
            rows = await self.service.db.run(store.open_all)
            for m in rows:
                self._forget(m.id)
                self._remember(m)
            stations = {m.station_id for m in rows if m.high_open and m.target_type != "vehicle"}
            for station_id in sorted(s for s in stations if s is not None):
                await self._apply_station(station_id, only_set=True)
            for vehicle_id in sorted({m.vehicle_id for m in rows if m.high_open and m.vehicle_id is not None
                                      and m.target_type == "vehicle"}):
                self._apply_vehicle(vehicle_id)
        log.info("maintenances: %s open maintenances live", len(rows))

    async def run(self) -> None:
        """Load at start, retrying until the database answers."""
        backoff = Backoff(cap=5.0)
        while not await attempt("maintenances: loading the open maintenances", self.load, backoff):
            await backoff.sleep()
        self.loaded.set()
