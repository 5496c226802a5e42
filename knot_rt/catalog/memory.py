"""The catalog in memory: networks, clusters, parkings, speed zones and vehicles' static facts.

Maps and cluster routes are the hottest read paths, so they are answered from
here, from the live availability the station actors keep and from the
vehicles' live state (``vehicles.service``, its one owner), without a
database query per cluster or vehicle. The catalog is loaded at start; a cluster
write (``service.py``) updates only what it changed, after its commit
(``put_cluster``, ``put_parkings``), with the rows it read in its transaction.
``reload()`` reads everything again (tests, rows changed behind the service). A
reload the database cannot serve is left to ``run()``, which retries it with
back-off. Area
queries use a grid index of 0.01-degree cells (a box wider than the occupied
cells scans those instead); parkings and speed zones keep their bounds.
Free-floating vehicles are found in the vehicles' live state (a grid the
vehicle actors keep current) and joined here with their static facts; a
catalog load reads the vehicles' saved state again too (a vehicle created
since is then known with its position). The rows are read by ``store.py`` and
turned into the objects here (``network_of``, ``cluster_of``, ...).

Shapes are lists of ``[longitude, latitude]`` points (GeoJSON order). Beside
their bounds, each network's area, parkings and speed zones are kept as
prepared geometries (``geo.py``), rebuilt with them on every read: where a
free-floating trip may end (``may_end_trip``) and the speed limit at a point
(``speed_limit_at``) are answered from memory, with no query.
"""

from __future__ import annotations

import heapq
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import trio
from shapely.geometry.base import BaseGeometry

from actors.vehicle import VehicleView
from protocols.vehicle import MAX_SPEED_LIMIT

from ..db import Backoff, Database, DatabaseUnavailable, attempt
from ..grid import Grid
from ..services.geo import distance_m
from ..vehicles.service import VehicleService
from . import store
from .geo import ShapeIndex, covers, polygon_of

log = logging.getLogger(__name__)

ShapedT = TypeVar("ShapedT", "Parking", "SpeedZone")

CLOSEST_COUNT = 20  # the clusters ``closest_clusters`` answers


@dataclass(frozen=True, slots=True)
class OutOfOrder:
    id: int
    type: str
    reason: str
    custom_reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {"exceptional_out_of_order_id": self.id, "type": self.type, "reason": self.reason,
                "custom_reason": self.custom_reason}


@dataclass(frozen=True, slots=True)
class Network:
    id: int
    name: str
    organization_id: int | None
    is_public: bool
    organization_only: bool
    shape: list[list[float]]
    center_latitude: float
    center_longitude: float
    currency: str
    max_simultaneous_rented_vehicle: int
    allow_trip_on_hold: bool
    trip_too_long: int
    trip_auto_pause: int
    trip_max_pause: int
    trip_auto_lock: int
    min_guarantee: float
    max_guarantee: float
    out_of_order: OutOfOrder | None
    app_label_ids: frozenset[int]

    def bounds(self) -> tuple[float, float, float, float]:
        """(min lat, max lat, min lng, max lng) of its shape, or its centre."""
        if not self.shape:
            return (self.center_latitude, self.center_latitude, self.center_longitude, self.center_longitude)
        lngs = [p[0] for p in self.shape]
        lats = [p[1] for p in self.shape]
        return (min(lats), max(lats), min(lngs), max(lngs))


@dataclass(frozen=True, slots=True)
class Cluster:
    id: int
    network_id: int
    name: str
    latitude: float
    longitude: float
    description: dict[str, str]
    commissioning_date: datetime | None
    soon_to_be_available: bool
    out_of_order: OutOfOrder | None
    max_unlock_distance: int | None
    has_badge_reader: bool
    balancing_type: str

    def describe(self, lang: str) -> str | None:
        return self.description.get(lang) or self.description.get("en")


@dataclass(frozen=True, slots=True)
class Parking:
    id: int
    network_id: int
    cluster_id: int | None
    shape: list[list[float]]


@dataclass(frozen=True, slots=True)
class SpeedZone:
    id: int
    network_id: int
    shape: list[list[float]]
    max_speed: int


# Defaults of a vehicle's static facts where it has no model: here only (the schema's defaults too).
DEFAULT_VEHICLE_TYPE = "kick-scooter"
DEFAULT_MIN_BATTERY_TO_SLOW_DOWN = 15  # percent
DEFAULT_MIN_BATTERY_TO_AUTO_LOCK = 5  # percent


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    """What does not change as a vehicle moves (its live state: ``vehicles.service``)."""

    id: int
    serial_number: str
    network_id: int | None
    model_id: int | None
    model_name: str | None
    manufacturer: str | None
    vehicle_type: str
    avg_max_range: int
    state: str
    out_of_order: OutOfOrder | None
    has_freefloat_to_station_reward: bool
    min_battery_to_slow_down: int
    min_battery_to_auto_lock: int


def vehicle_facts(row: asyncpg.Record) -> VehicleFacts:
    """A vehicle's facts from a row of ``vehicle_id``, ``network_id`` and the ``store.VEHICLE_FACT_COLUMNS``."""
    return VehicleFacts(
        id=row["vehicle_id"], serial_number=row["serial_number"], network_id=row["network_id"],
        model_id=row["model_id"],
        model_name=row["model_name"], manufacturer=row["manufacturer"],
        vehicle_type=row["vehicle_type"] or DEFAULT_VEHICLE_TYPE, avg_max_range=row["avg_max_range"],
        state=row["state"], out_of_order=_out_of_order(row),
        has_freefloat_to_station_reward=row["has_freefloat_to_station_reward"],
        min_battery_to_slow_down=row["min_battery_to_slow_down"] or DEFAULT_MIN_BATTERY_TO_SLOW_DOWN,
        min_battery_to_auto_lock=row["min_battery_to_auto_lock"] or DEFAULT_MIN_BATTERY_TO_AUTO_LOCK,
    )


@dataclass(frozen=True, slots=True)
class Area:
    """A box given by its centre and its size in degrees."""

    lat: float
    lng: float
    lat_deg: float
    lng_deg: float

    @property
    def bounds(self) -> Bounds:
        """(south, north, west, east): the order the catalog's indexes and shapes' bounds use."""
        half_lat, half_lng = self.lat_deg / 2, self.lng_deg / 2
        return (self.lat - half_lat, self.lat + half_lat, self.lng - half_lng, self.lng + half_lng)

    def contains(self, lat: float, lng: float) -> bool:
        south, north, west, east = self.bounds
        return south <= lat <= north and west <= lng <= east

    def overlaps(self, bounds: Bounds) -> bool:
        return _overlap(self.bounds, bounds)


class Catalog:
    def __init__(self, db: Database, vehicles: VehicleService) -> None:
        self._db = db
        self._vehicles = vehicles  # the owner of their live state: read, and loaded with the catalog
        self.networks: dict[int, Network] = {}
        self.clusters: dict[int, Cluster] = {}
        self.parkings: dict[int, Parking] = {}
        self.speed_zones: dict[int, SpeedZone] = {}
        self.vehicles: dict[int, VehicleFacts] = {}
        self._cluster_grid = Grid()
        self._parking_bounds: list[tuple[Bounds, Parking]] = []
        self._zone_bounds: list[tuple[Bounds, SpeedZone]] = []
        # Geometry (``geo.py``), by network: its area (None: no limit), its parkings' ids, its zones' speeds.
        self._areas: dict[int, BaseGeometry | None] = {}
        self._parking_index: dict[int, ShapeIndex[int]] = {}
        self._zone_index: dict[int, ShapeIndex[int]] = {}
        self._reload_lock = trio.Lock()
        self.app_labels: dict[str, int] = {}  # name -> id, to answer public routes without a query
        self._stale = trio.Event()  # set when a reload could not be done: ``run()`` retries it

    async def reload(self) -> bool:
        """Read everything again after a write; False when the database is away (``run()`` retries)."""
        try:
            await self.load()
        except DatabaseUnavailable as exc:
            log.warning("catalog: reload postponed, the database is unavailable (%s)", exc)
            self._stale.set()
            return False
        return True

    def changed_elsewhere(self) -> None:
        """Another process (or a command) changed the catalog's tables: ``run()`` reads everything again now
        (changes told together are read once)."""
        self._stale.set()

    async def run(self, every: float = 60.0) -> None:
        """Read everything again every ``every`` seconds, and soon after a reload the database could
        not serve (retried with back-off until it succeeds).

        Writes through the catalog service update the catalog at once; this picks up what changed
        behind it (a CLI command, another process, a script), at the cost of one full read (a few
        hundred milliseconds at 10,000 vehicles) per period.
        """
        backoff = Backoff()
        while True:
            with trio.move_on_after(every):
                await self._stale.wait()
            self._stale = trio.Event()
            while not await attempt("catalog: reading everything again", self.load, backoff):
                await backoff.sleep()

    async def load(self) -> None:
        """Read everything (at start; raises ``DatabaseUnavailable`` when the database is away)."""
        async with self._reload_lock:
            rows = await self._db.run(store.load_all)
            await self._vehicles.load()
            self.networks = {r["id"]: network_of(r) for r in rows.networks}
            self.clusters = {r["id"]: cluster_of(r) for r in rows.clusters}
            self.parkings = {r["id"]: parking_of(r) for r in rows.parkings}
            self.speed_zones = {r["id"]: speed_zone_of(r) for r in rows.speed_zones}
            self.vehicles = {r["vehicle_id"]: vehicle_facts(r) for r in rows.vehicles}
            grid = Grid()
            for cluster in self.clusters.values():
                grid.add(cluster.id, cluster.latitude, cluster.longitude)
            self._cluster_grid = grid
            self._parking_bounds = _with_bounds(self.parkings.values())
            self._zone_bounds = _with_bounds(self.speed_zones.values())
            self._areas = {n.id: polygon_of(n.shape) for n in self.networks.values()}
            self._parking_index = _indexed(self.parkings.values(), lambda p: p.id)
            self._zone_index = _indexed(self.speed_zones.values(), lambda z: z.max_speed)
            self.app_labels = {r["name"]: r["id"] for r in rows.app_labels}

    async def put_cluster(self, cluster: Cluster) -> None:
        """A cluster created or changed (after its commit): that cluster only, in the maps at once.

        Taken under the reload lock, so a reload that read its rows before the
        commit cannot overwrite the change with the older snapshot: the update is
        applied after it.
        """
        async with self._reload_lock:
            old = self.clusters.get(cluster.id)
            if old is not None:
                self._cluster_grid.remove(old.id, old.latitude, old.longitude)
            self.clusters[cluster.id] = cluster
            self._cluster_grid.add(cluster.id, cluster.latitude, cluster.longitude)

    async def put_parkings(self, parkings: Iterable[Parking]) -> None:
        """Parkings changed (after their commit): these only; their bounds are computed again."""
        async with self._reload_lock:
            changed = {p.id: p for p in parkings}
            if not changed:
                return
            self.parkings.update(changed)
            self._parking_bounds = [
                item for item in self._parking_bounds if item[1].id not in changed
            ] + _with_bounds(changed.values())
            self._parking_bounds.sort(key=lambda item: item[1].id)
            touched = {p.network_id for p in changed.values()}
            rebuilt = _indexed((p for p in self.parkings.values() if p.network_id in touched), lambda p: p.id)
            self._parking_index = {
                **{n: index for n, index in self._parking_index.items() if n not in touched}, **rebuilt
            }

    # geometry --------------------------------------------------------------------------

    def may_end_trip(self, network_id: int, lat: float, lng: float) -> bool:
        """Whether a free-floating trip of the network may end at (lat, lng): inside the network's area,
        and inside one of its virtual parkings when it has any (edges count as inside).

        A network whose shape encloses nothing (empty, as networks are created by default, or of fewer
        than three points) has no area limit: its parkings, if any, are the only limit. An unknown
        network allows nothing. A parking whose shape encloses nothing is no parking."""
        if network_id not in self.networks:
            return False
        area = self._areas.get(network_id)
        if area is not None and not covers(area, lat, lng):
            return False
        parkings = self._parking_index.get(network_id)
        return parkings is None or len(parkings) == 0 or bool(parkings.at(lat, lng))

    def parkings_at(self, network_id: int, lat: float, lng: float) -> list[int]:
        """The ids of the network's parkings that cover (lat, lng)."""
        index = self._parking_index.get(network_id)
        return [] if index is None else index.at(lat, lng)

    def speed_limit_at(self, network_id: int, lat: float, lng: float) -> int:
        """The speed limit (km/h) at (lat, lng): the lowest ``max_speed`` of the network's zones that cover
        it, 0 for none. A zone of ``max_speed`` 0 or less limits nothing (0 is "no limit" on the vehicle's
        wire); a limit above what the wire carries is sent as its highest (``MAX_SPEED_LIMIT``)."""
        index = self._zone_index.get(network_id)
        speeds = [] if index is None else [speed for speed in index.at(lat, lng) if speed > 0]
        return min(min(speeds), MAX_SPEED_LIMIT) if speeds else 0

    def free_floating_in(self, area: Area, networks: Iterable[int]) -> list[tuple[VehicleFacts, VehicleView]]:
        """Free-floating vehicles of ``networks`` inside ``area``, by id, with their live state."""
        allowed = set(networks)
        found = []
        for view in self._vehicles.free_floating_in(*area.bounds):
            facts = self.vehicles.get(view.vehicle_id)
            if facts is not None and facts.network_id in allowed:
                found.append((facts, view))
        found.sort(key=lambda item: item[0].id)
        return found

    def app_label_id(self, name: str) -> int | None:
        return self.app_labels.get(name)

    def remember_app_label(self, name: str, label_id: int) -> None:
        """An app label created since the last reload, found in the database."""
        self.app_labels = {**self.app_labels, name: label_id}

    def clusters_in(self, area: Area, networks: Iterable[int] | None = None) -> list[Cluster]:
        allowed = None if networks is None else set(networks)
        found = []
        south, north, west, east = box = area.bounds  # once, not once a cluster
        for cluster_id in self._cluster_grid.within(*box):
            cluster = self.clusters[cluster_id]
            if south <= cluster.latitude <= north and west <= cluster.longitude <= east and (
                allowed is None or cluster.network_id in allowed
            ):
                found.append(cluster)
        found.sort(key=lambda c: c.id)
        return found

    def networks_in(self, area: Area | None, networks: Iterable[int] | None = None) -> list[Network]:
        allowed = None if networks is None else set(networks)
        return [
            n for n in sorted(self.networks.values(), key=lambda n: n.id)
            if (allowed is None or n.id in allowed) and (area is None or area.overlaps(n.bounds()))
        ]

    def parkings_in(self, area: Area, networks: Iterable[int]) -> list[Parking]:
        return _overlapping(self._parking_bounds, area, set(networks))

    def speed_zones_in(self, area: Area, networks: Iterable[int]) -> list[SpeedZone]:
        return _overlapping(self._zone_bounds, area, set(networks))

    def closest_clusters(
        self, networks: Iterable[int], lat: float, lng: float, count: int = CLOSEST_COUNT
    ) -> list[tuple[int, Cluster]]:
        """The ``count`` clusters of ``networks`` nearest to (lat, lng): (metres, cluster), nearest first.

        Distances are great-circle (haversine) distances; ties go to the lower id.
        ``heapq.nsmallest`` keeps only ``count`` candidates: no sort of every cluster.
        """
        allowed = set(networks)
        candidates = (
            (distance_m(lat, lng, c.latitude, c.longitude), c.id, c)
            for c in self.clusters.values() if c.network_id in allowed
        )
        return [(round(metres), cluster) for metres, _, cluster in heapq.nsmallest(count, candidates)]

    def nearest_network_id(self, lat: float, lng: float) -> int | None:
        """The network whose centre is the closest to (lat, lng), among every network (public or not: the
        discounts' rule, ``api/discounts.py``); ties go to the lower id; None when there is no network.

        Great-circle distance to the centre, unrounded; a walk of the networks in memory (a few hundred at
        most), no query. A network created behind the service is known after the next reload.
        """
        nearest = min(
            self.networks.values(),
            key=lambda n: (distance_m(lat, lng, n.center_latitude, n.center_longitude), n.id),
            default=None,
        )
        return None if nearest is None else nearest.id


Bounds = tuple[float, float, float, float]  # south, north, west, east


def _overlap(a: Bounds, b: Bounds) -> bool:
    """Whether two boxes share a point (touching edges count)."""
    a_south, a_north, a_west, a_east = a
    b_south, b_north, b_west, b_east = b
    return not (b_north < a_south or b_south > a_north or b_east < a_west or b_west > a_east)


def _overlapping(items: list[tuple[Bounds, ShapedT]], area: Area, networks: set[int]) -> list[ShapedT]:
    box = area.bounds  # once, not once an item
    return [item for bounds, item in items if item.network_id in networks and _overlap(box, bounds)]


def _indexed(items: Iterable[ShapedT], value: Callable[[ShapedT], int]) -> dict[int, ShapeIndex[int]]:
    """One ``ShapeIndex`` of ``items`` per network, by id (shapes that enclose nothing left out)."""
    by_network: dict[int, list[ShapedT]] = {}
    for item in sorted(items, key=lambda i: i.id):
        by_network.setdefault(item.network_id, []).append(item)
    return {network_id: ShapeIndex((item.shape, value(item)) for item in found)
            for network_id, found in by_network.items()}


def _with_bounds(items: Iterable[ShapedT]) -> list[tuple[Bounds, ShapedT]]:
    """Items with the bounds of their shape, by id (an empty shape overlaps nothing)."""
    found = []
    for item in sorted(items, key=lambda i: i.id):
        if item.shape:
            lngs = [p[0] for p in item.shape]
            lats = [p[1] for p in item.shape]
            found.append(((min(lats), max(lats), min(lngs), max(lngs)), item))
    return found


def _out_of_order(row: asyncpg.Record, prefix: str = "ooo_") -> OutOfOrder | None:
    if row[prefix + "id"] is None:
        return None
    return OutOfOrder(row[prefix + "id"], row[prefix + "type"], row[prefix + "reason"], row[prefix + "custom_reason"])


def cluster_of(r: asyncpg.Record) -> Cluster:
    """A cluster from a row of ``store.CLUSTER_QUERY``."""
    return Cluster(
        id=r["id"], network_id=r["network_id"], name=r["name"], latitude=r["latitude"],
        longitude=r["longitude"], description=r["description"] or {}, commissioning_date=r["commissioning_date"],
        soon_to_be_available=r["soon_to_be_available"], out_of_order=_out_of_order(r),
        max_unlock_distance=r["max_unlock_distance"], has_badge_reader=r["has_badge_reader"],
        balancing_type=r["balancing_type"],
    )


def network_of(r: asyncpg.Record) -> Network:
    """A network from a row of ``store.load_all``'s networks."""
    return Network(
        id=r["id"], name=r["name"], organization_id=r["organization_id"], is_public=r["is_public"],
        organization_only=r["organization_only"], shape=r["shape"], center_latitude=r["center_latitude"],
        center_longitude=r["center_longitude"], currency=r["currency"],
        max_simultaneous_rented_vehicle=r["max_simultaneous_rented_vehicle"],
        allow_trip_on_hold=r["allow_trip_on_hold"], trip_too_long=r["trip_too_long"],
        trip_auto_pause=r["trip_auto_pause"], trip_max_pause=r["trip_max_pause"],
        trip_auto_lock=r["trip_auto_lock"], min_guarantee=float(r["min_guarantee"]),
        max_guarantee=float(r["max_guarantee"]), out_of_order=_out_of_order(r),
        app_label_ids=frozenset(r["app_labels"]),
    )


def parking_of(r: asyncpg.Record) -> Parking:
    """A parking from a row of ``id, network_id, cluster_id, shape``."""
    return Parking(r["id"], r["network_id"], r["cluster_id"], r["shape"])


def speed_zone_of(r: asyncpg.Record) -> SpeedZone:
    return SpeedZone(r["id"], r["network_id"], r["shape"], r["max_speed"])
