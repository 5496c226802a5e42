"""The one read model of the vehicles' live state, kept in memory.

Every vehicle's current ``VehicleView`` (battery, voltage, range, online, the
spot and station it is docked in or its position), and two indexes over it:
free-floating vehicles by grid cell (the map) and docked vehicles by station
and spot number (a cluster's vehicles).

Its one writer is the vehicle actors: it is their ``VehicleListener``, told
each change after the actor saved it. ``load`` fills it with the saved rows (at
start, and when the catalog reloads, so a vehicle created by another process
shows up); a change an actor reports while the rows are being read wins over
the row, since it was saved after the row was read or is at least as new.
A vehicle it has no state of answers ``VehicleView.unknown``: there is no
other default anywhere.

The station views keep what their station reported (which vehicle id each
spot reads, its last battery readings): that is the station's state, the input
the vehicle actors follow, not a copy that routes read vehicles from.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable, Mapping

from actors.vehicle import VehicleRecord, VehicleView

from ..grid import MovingGrid


class LiveVehicles:
    """Reads are plain dict and grid lookups: no query per vehicle."""

    def __init__(self) -> None:
        self._views: dict[int, VehicleView] = {}
        self._free = MovingGrid()
        self._docked: dict[int, dict[int, int]] = {}  # station id -> spot number -> vehicle id
        self._changed_while_loading: dict[int, VehicleView] | None = None
        # Out of rent for maintenance (an open ``high`` one), written by ``knot_rt.maintenance.live`` after
        # the maintenance's commit; not part of a ``VehicleView`` (the actor's), kept beside it.
        self._in_maintenance: set[int] = set()
        self._rented: set[int] = set()  # vehicles whose actor reported a current rent

    # reads -------------------------------------------------------------------

    def state(self, vehicle_id: int) -> VehicleView:
        """The vehicle's current state; ``VehicleView.unknown`` for one never saved nor reported."""
        found = self._views.get(vehicle_id)
        return found if found is not None else VehicleView.unknown(vehicle_id)

    def rented(self) -> frozenset[int]:
        """The vehicles rented now (as their actors last reported)."""
        return frozenset(self._rented)

    def known(self, vehicle_id: int) -> bool:
        return vehicle_id in self._views

    def free_floating_in(self, south: float, north: float, west: float, east: float) -> list[VehicleView]:
        """Free-floating vehicles inside the box (unordered)."""
        found = []
        for vehicle_id in self._free.within(south, north, west, east):
            view = self._views[vehicle_id]
            assert view.latitude is not None and view.longitude is not None
            if south <= view.latitude <= north and west <= view.longitude <= east:
                found.append(view)
        return found

    def docked_at(self, station_id: int) -> dict[int, VehicleView]:
        """The vehicles docked at a station, by spot number."""
        return {number: self._views[vehicle_id] for number, vehicle_id in self._docked.get(station_id, {}).items()}

    def in_maintenance(self, vehicle_id: int) -> bool:
        """Out of rent for maintenance: not unlockable (409/30), not available on the map or in its cluster."""
        return vehicle_id in self._in_maintenance

    # writes ------------------------------------------------------------------

    def set_in_maintenance(self, vehicle_id: int, blocked: bool) -> bool:
        """Put a vehicle out of rent or back; True when it changed."""
        if blocked == (vehicle_id in self._in_maintenance):
            return False
        if blocked:
            self._in_maintenance.add(vehicle_id)
        else:
            self._in_maintenance.discard(vehicle_id)
        return True

    async def vehicle_changed(self, view: VehicleView) -> None:
        """A vehicle actor saved a change (``VehicleListener``)."""
        self._put(view)
        if self._changed_while_loading is not None:
            self._changed_while_loading[view.vehicle_id] = view

    async def load(self, read: Callable[[], Awaitable[Mapping[int, VehicleRecord]]]) -> None:
        """Replace everything by the saved rows ``read()`` returns, keeping changes reported meanwhile.

        Callers serialize loads (``VehicleService.load``); a failing ``read`` changes nothing.
        """
        self._changed_while_loading = {}
        try:
            records = await read()
            # The rows hold no rent: a vehicle's current rent is what its actor last reported.
            views = {
                vehicle_id: self._with_rent(VehicleView.of_record(vehicle_id, r)) for vehicle_id, r in records.items()
            }
            views.update(self._changed_while_loading)
        finally:
            self._changed_while_loading = None
        self._replace(views.values())

    def _with_rent(self, view: VehicleView) -> VehicleView:
        old = self._views.get(view.vehicle_id)
        return view if old is None or old.rent is None else dataclasses.replace(view, rent=old.rent)

    def _replace(self, views: Iterable[VehicleView]) -> None:
        self._views, self._free, self._docked, self._rented = {}, MovingGrid(), {}, set()
        for view in views:
            self._put(view)

    def _put(self, view: VehicleView) -> None:
        vehicle_id = view.vehicle_id
        old = self._views.get(vehicle_id)
        self._views[vehicle_id] = view
        if view.rented:
            self._rented.add(vehicle_id)
        else:
            self._rented.discard(vehicle_id)
        if old is not None and old.station_id is not None and old.spot_number is not None:
            spots = self._docked.get(old.station_id, {})
            if spots.get(old.spot_number) == vehicle_id:
                del spots[old.spot_number]
        if view.station_id is not None and view.spot_number is not None:
            self._docked.setdefault(view.station_id, {})[view.spot_number] = vehicle_id
        if view.free_floating:
            assert view.latitude is not None and view.longitude is not None
            self._free.place(vehicle_id, (view.latitude, view.longitude))
        elif old is not None and old.free_floating:
            self._free.place(vehicle_id, None)
