"""The clusters' totals of ``LiveStations`` are kept by each station's share (no pass over a cluster's stations
per change): after any run of changes (spots filled and emptied, locks, maintenance, stations going offline,
a station moved to another cluster, a vehicle blocked for maintenance) they are what a recount of the views
gives."""

from __future__ import annotations

import random
from dataclasses import replace

from actors.station import SpotView, StationView
from knot_rt.stations.live import ClusterAvailability, LiveStations
from tests.support import Harness


def recount(live: LiveStations, cluster_id: int) -> ClusterAvailability:
    views = [v for v in (live.station(s) for s in live.stations_of(cluster_id)) if v is not None]
    return ClusterAvailability(
        available_vehicles=sum(live.available_vehicles(v) for v in views),
        free_spots=sum(v.free_spots for v in views),
        total_spots=sum(v.total_spots for v in views),
        cluster_is_down=not any(v.online for v in views),
    )


async def test_cluster_totals_match_a_recount_after_any_changes(harness: Harness) -> None:
    rng = random.Random(14)
    blocked: set[int] = set()
    live = LiveStations(harness.svc.work)
    live.vehicle_blocked = lambda vehicle: vehicle in blocked
    live.seed([
        StationView(station_id, cluster_id=1 + station_id % 3, enabled=True, online=rng.random() < 0.5,
                    last_seen_ms=None, spots=tuple(SpotView(n, 100 * station_id + n) for n in range(1, 5)))
        for station_id in range(1, 13)
    ])
    for _ in range(600):
        station_id = rng.randint(1, 12)
        before = live.station(station_id)
        assert before is not None
        what = rng.random()
        if what < 0.6:
            number = rng.randint(1, 4)
            spot = before.spot(number)
            assert spot is not None  # a vehicle is in one place: each spot's own vehicle, or none, or unreadable (0)
            spot = replace(spot, vehicle=rng.choice([None, 0, spot.spot_id]),
                           lock=rng.choice([0, 1, None]), in_maintenance=rng.random() < 0.1,
                           is_accessible=rng.random() < 0.9)
            after = replace(before, spots=tuple(spot if s.number == number else s for s in before.spots))
        elif what < 0.8:
            after = replace(before, online=not before.online)
        elif what < 0.9:
            after = replace(before, cluster_id=rng.randint(1, 4))
        else:  # a vehicle docked there goes in or out of maintenance (``maintenance.live`` refreshes its station)
            docked = [s.vehicle for s in before.spots if s.vehicle]
            if docked:
                blocked.symmetric_difference_update({rng.choice(docked)})
                live.refresh_station(station_id)
            after = before
        if after is not before:
            await live.station_changed(before, after)
        for cluster_id in range(1, 5):
            if live.stations_of(cluster_id):
                assert live.cluster(cluster_id) == recount(live, cluster_id), cluster_id
