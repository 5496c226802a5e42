"""Live availability: what the stations reported a moment ago, kept in memory.

The station actors tell this object what changed (it is their
``StationListener``). It publishes the station's feed events, keeps the latest
view of every station, and keeps per-cluster totals (available vehicles, free
and total spots, down or not), publishing ``cluster.updated`` on the cluster's
topic whenever they change. Routes read the totals here, without a database
query per cluster.

A station's change is first handed to its vehicles (``vehicle_moves``: their
actors take it, and the vehicles' live state, owned by ``knot_rt.vehicles``,
follows), then applied here: a reader who sees a station's new totals finds
its vehicles where the station reports them.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from actors.station import SpotEvent, StationView
from protocols import station as wire
from protocols.feed import EventName, Topic

from ..db import Backoff, DatabaseUnavailable
from ..uow import Work

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClusterAvailability:
    available_vehicles: int = 0
    free_spots: int = 0
    total_spots: int = 0
    cluster_is_down: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "available_vehicles": self.available_vehicles,
            "free_spots": self.free_spots,
            "total_spots": self.total_spots,
            "cluster_is_down": self.cluster_is_down,
        }


VehicleMoves = Callable[[StationView, StationView, SpotEvent | None], Awaitable[None]]
#: Told of every event a station actor recorded and applied, and of its going on- and offline (a watcher that
#: must not wait on the actor: ``knot_rt.maintenance.automatic`` queues what it decides).
StationReports = Callable[[StationView, StationView, wire.Payload], None]
OnlineChanges = Callable[[StationView], None]


class LiveStations:
    """Reads see a change at once; ``cluster.updated`` is published by one task (``run``), which
    gathers the changes of ``coalesce`` seconds: a burst (a whole cluster reconnecting) becomes
    one event per cluster instead of one per station, in order, with the latest totals."""

    def __init__(self, work: Work, *, coalesce: float = 0.05) -> None:
        self._work = work
        self._views: dict[int, StationView] = {}
        self._by_cluster: defaultdict[int, set[int]] = defaultdict(set)
        # Each station's share of its cluster's totals (available, free, total, online), and the clusters'
        # sums: a change costs its own station's count, not a pass over the cluster's stations.
        self._shares: dict[int, tuple[int, int, int, int]] = {}
        self._sums: defaultdict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
        self._availability: dict[int, ClusterAvailability] = {}
        self._published: dict[int, ClusterAvailability] = {}
        self._dirty: set[int] = set()
        self._wake = trio.Event()
        self.coalesce = coalesce
        self.vehicle_moves: VehicleMoves | None = None
        # Vehicles out of rent (an open ``high`` maintenance, ``knot_rt.maintenance.live``): docked in a usable
        # spot, they do not count as available. The vehicles' live state owns the set; this only reads it.
        self.vehicle_blocked: Callable[[int], bool] = lambda _vehicle_id: False
        self.reports: StationReports | None = None
        self.online_changes: OnlineChanges | None = None

    def seed(self, views: list[StationView]) -> None:
        """The last known state of every station, from the database at start."""
        for view in views:
            self._remember(view)
        for cluster_id in list(self._by_cluster):
            self._availability[cluster_id] = self._compute(cluster_id)

    def add_missing(self, views: list[StationView]) -> int:
        """Stations created since start (by another process, e.g. ``knot-rt station create``)."""
        added = [v for v in views if v.station_id not in self._views]
        for view in added:
            self._remember(view)
        for cluster_id in {v.cluster_id for v in added}:
            self._availability[cluster_id] = self._compute(cluster_id)
        return len(added)

    def _remember(self, view: StationView) -> None:
        """Keep ``view`` and its share of its cluster's totals (the previous share taken out first)."""
        station_id = view.station_id
        previous = self._views.get(station_id)
        if previous is not None:
            if previous.cluster_id != view.cluster_id:
                self._by_cluster[previous.cluster_id].discard(station_id)
            self._add(previous.cluster_id, self._shares[station_id], -1)
        self._views[station_id] = view
        self._by_cluster[view.cluster_id].add(station_id)
        share = (self.available_vehicles(view), view.free_spots, view.total_spots, 1 if view.online else 0)
        self._shares[station_id] = share
        self._add(view.cluster_id, share, 1)

    def _add(self, cluster_id: int, share: tuple[int, int, int, int], sign: int) -> None:
        sums = self._sums[cluster_id]
        for index, value in enumerate(share):
            sums[index] += sign * value

    def _compute(self, cluster_id: int) -> ClusterAvailability:
        available, free, total, online = self._sums.get(cluster_id, (0, 0, 0, 0))
        return ClusterAvailability(available_vehicles=available, free_spots=free, total_spots=total,
                                   cluster_is_down=online == 0)

    def available_vehicles(self, view: StationView) -> int:
        """``view.available_vehicles`` less the vehicles out of rent for maintenance."""
        if not view.online:
            return 0
        return sum(
            1 for s in view.spots
            if s.vehicle not in (None, 0) and s.lock == 1 and not s.in_maintenance and s.is_accessible
            and not self.vehicle_blocked(s.vehicle)
        )

    def refresh_station(self, station_id: int) -> None:
        """Recompute the totals of the station's cluster (a vehicle docked there went in or out of
        maintenance); ``cluster.updated`` follows when they changed."""
        view = self._views.get(station_id)
        if view is not None:
            self._remember(view)  # its share again, with the vehicles' maintenance as it is now
            self._update_totals(view.cluster_id)

    def _update_totals(self, cluster_id: int) -> None:
        totals = self._compute(cluster_id)
        if totals != self._availability.get(cluster_id):
            self._availability[cluster_id] = totals
            self._dirty.add(cluster_id)
            self._wake.set()

    # reads -----------------------------------------------------------------

    def station(self, station_id: int) -> StationView | None:
        return self._views.get(station_id)

    def station_ids(self) -> list[int]:
        return sorted(self._views)

    def stations_of(self, cluster_id: int) -> list[int]:
        """The ids of the cluster's stations, in order."""
        return sorted(self._by_cluster.get(cluster_id, ()))

    def cluster(self, cluster_id: int) -> ClusterAvailability:
        return self._availability.get(cluster_id, ClusterAvailability())

    @property
    def online_stations(self) -> int:
        return sum(1 for v in self._views.values() if v.online)

    # StationListener ---------------------------------------------------------

    async def station_event(self, view: StationView, event: EventName, data: dict[str, Any]) -> None:
        await self._work.publish(Topic.station(view.station_id), event, data)

    async def station_reported(self, before: StationView, after: StationView, payload: wire.Payload) -> None:
        if self.reports is not None:
            self.reports(before, after, payload)

    async def station_changed(self, before: StationView, after: StationView, cause: SpotEvent | None = None) -> None:
        """The vehicles first (their actors take the report), then the station's view and totals:
        whoever reads the new view or totals finds the station's vehicles where it reports them."""
        if before.online != after.online and self.online_changes is not None:
            self.online_changes(after)
        if self.vehicle_moves is not None:
            try:
                await self.vehicle_moves(before, after, cause)
            except Exception:  # the vehicles' trouble never keeps the station's view behind
                log.exception("station %s: moving its vehicles failed", after.station_id)
        self._remember(after)
        if before.cluster_id != after.cluster_id:  # moved: the cluster it left changed too
            self._update_totals(before.cluster_id)
        self._update_totals(after.cluster_id)

    async def run(self) -> None:
        """Publish the clusters whose totals changed, gathering ``coalesce`` seconds of changes, all in one
        statement (one round trip however many clusters changed).

        A publish that fails (the database is away) leaves its clusters to publish, retried with back-off:
        the events then carry the latest totals.
        """
        backoff = Backoff()
        while True:
            await self._wake.wait()
            await trio.sleep(self.coalesce)
            self._wake = trio.Event()
            dirty, self._dirty = sorted(self._dirty), set()
            changed = {cluster_id: self._availability[cluster_id] for cluster_id in dirty
                       if self._availability[cluster_id] != self._published.get(cluster_id)}
            try:
                await self._work.publish_each([
                    (Topic.cluster(cluster_id), EventName.CLUSTER_UPDATED, {"cluster_id": cluster_id, **totals.as_json()})
                    for cluster_id, totals in changed.items()
                ])
            except Exception as exc:
                if backoff.failures == 0:
                    log.warning("stations: publishing cluster totals failed (%s); retrying", exc,
                                exc_info=not isinstance(exc, DatabaseUnavailable))
                self._dirty.update(dirty)
                self._wake.set()
                await backoff.sleep()
                continue
            self._published.update(changed)
            backoff.reset()

    def replace_remote(self, view: StationView) -> None:
        """A station whose actor runs in another process changed (its record, read again): reads see it at
        once; the totals' event is that process's to publish (``cluster.updated`` once, not per process)."""
        self._remember(view)
        self._availability[view.cluster_id] = self._compute(view.cluster_id)
