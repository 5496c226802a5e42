"""The catalog in memory: networks, clusters, parkings, speed zones and vehicles' static facts.

Maps and cluster routes are the hottest read paths, so they are answered from
here and from the live availability the station actors keep, without a
database query per cluster. The catalog is loaded at start and refreshed by
the routes that change it (``reload()`` after a write; it is small). A reload
the database cannot serve is left to ``run()``, which retries it with back-off:
the write is committed, so its route still answers success, and the maps show
it a few seconds after PostgreSQL is back. Area
queries use a grid index of 0.01-degree cells (a box wider than the occupied
cells scans those instead); parkings and speed zones keep their bounds.
Free-floating vehicles have a grid of their own that the vehicle actors keep
current (``vehicle_changed``).

Shapes are lists of ``[longitude, latitude]`` points (GeoJSON order).
"""

from __future__ import annotations

import logging
import math
from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import trio

from actors.vehicle import VehicleView

from .db import Backoff, Database, DatabaseUnavailable

log = logging.getLogger(__name__)

ShapedT = TypeVar("ShapedT", "Parking", "SpeedZone")

CELL = 0.01  # degrees (about 1.1 km north-south): a street-level view touches a few cells


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


@dataclass(frozen=True, slots=True)
class VehicleFacts:
    """What does not change as a vehicle moves."""

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


@dataclass(frozen=True, slots=True)
class VehiclePlace:
    """Where a vehicle is and what it last reported: its row at load, then every live change."""

    battery_level: int | None
    online: bool
    spot_id: int | None
    latitude: float | None
    longitude: float | None

    @property
    def free_floating(self) -> bool:
        """In no spot, at a known position: shown on the map on its own."""
        return self.spot_id is None and self.latitude is not None and self.longitude is not None


def _cell(lat: float, lng: float) -> tuple[int, int]:
    return (math.floor(lat / CELL), math.floor(lng / CELL))


def _cells_within(
    cells: Mapping[tuple[int, int], Collection[int]], south: float, north: float, west: float, east: float
) -> Iterator[int]:
    """Items of the cells a box touches: cell by cell for a small box, else by scanning the occupied cells."""
    low, high = _cell(south, west), _cell(north, east)
    if (high[0] - low[0] + 1) * (high[1] - low[1] + 1) <= len(cells):
        for i in range(low[0], high[0] + 1):
            for j in range(low[1], high[1] + 1):
                yield from cells.get((i, j), ())
    else:
        for (i, j), items in cells.items():
            if low[0] <= i <= high[0] and low[1] <= j <= high[1]:
                yield from items


@dataclass
class _Grid:
    cells: defaultdict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, item_id: int, lat: float, lng: float) -> None:
        self.cells[_cell(lat, lng)].append(item_id)

    def within(self, south: float, north: float, west: float, east: float) -> Iterator[int]:
        return _cells_within(self.cells, south, north, west, east)


class _MovingGrid:
    """A grid whose items move (free-floating vehicles): each item is in at most one cell."""

    def __init__(self) -> None:
        self.cells: defaultdict[tuple[int, int], set[int]] = defaultdict(set)
        self._where: dict[int, tuple[int, int]] = {}

    def place(self, item_id: int, position: tuple[float, float] | None) -> None:
        old = self._where.pop(item_id, None)
        if old is not None:
            self.cells[old].discard(item_id)
        if position is not None:
            cell = _cell(*position)
            self.cells[cell].add(item_id)
            self._where[item_id] = cell

    def within(self, south: float, north: float, west: float, east: float) -> Iterator[int]:
        return _cells_within(self.cells, south, north, west, east)


@dataclass(frozen=True, slots=True)
class Area:
    """A box given by its centre and its size in degrees."""

    lat: float
    lng: float
    lat_deg: float
    lng_deg: float

    @property
    def south(self) -> float:
        return self.lat - self.lat_deg / 2

    @property
    def north(self) -> float:
        return self.lat + self.lat_deg / 2

    @property
    def west(self) -> float:
        return self.lng - self.lng_deg / 2

    @property
    def east(self) -> float:
        return self.lng + self.lng_deg / 2

    def contains(self, lat: float, lng: float) -> bool:
        return self.south <= lat <= self.north and self.west <= lng <= self.east

    def overlaps(self, bounds: tuple[float, float, float, float]) -> bool:
        south, north, west, east = bounds
        return not (north < self.south or south > self.north or east < self.west or west > self.east)


class Catalog:
    def __init__(self, db: Database) -> None:
        self._db = db
        self.networks: dict[int, Network] = {}
        self.clusters: dict[int, Cluster] = {}
        self.parkings: dict[int, Parking] = {}
        self.speed_zones: dict[int, SpeedZone] = {}
        self.vehicles: dict[int, VehicleFacts] = {}
        self._cluster_grid = _Grid()
        self._parking_bounds: list[tuple[Bounds, Parking]] = []
        self._zone_bounds: list[tuple[Bounds, SpeedZone]] = []
        self._reload_lock = trio.Lock()
        # Free-floating vehicles: loaded with the rest, then kept current by ``vehicle_changed``.
        self.vehicle_places: dict[int, VehiclePlace] = {}
        self._free_grid = _MovingGrid()
        self._changed_while_loading: dict[int, VehiclePlace] | None = None
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

    async def run(self) -> None:
        """Retry the reloads the database could not serve, with back-off, until one succeeds."""
        backoff = Backoff()
        while True:
            await self._stale.wait()
            self._stale = trio.Event()
            while True:
                try:
                    await self.load()
                except DatabaseUnavailable:
                    await backoff.sleep()
                    continue
                except Exception:  # a bug: keep the last catalog and try again later
                    if backoff.failures == 0:
                        log.exception("catalog: reload failed; retrying")
                    await backoff.sleep()
                    continue
                log.info("catalog: postponed reload done (%s more failed attempts)", backoff.failures)
                backoff.reset()
                break

    async def load(self) -> None:
        """Read everything (at start; raises ``DatabaseUnavailable`` when the database is away)."""
        async with self._reload_lock:
            self._changed_while_loading = {}
            try:
                snapshot, places, app_labels = await self._db.run(_load_all)
                places.update(self._changed_while_loading)  # live changes win over the rows read
            finally:
                self._changed_while_loading = None
            (self.networks, self.clusters, self.parkings, self.speed_zones, self.vehicles) = snapshot
            grid = _Grid()
            for cluster in self.clusters.values():
                grid.add(cluster.id, cluster.latitude, cluster.longitude)
            self._cluster_grid = grid
            self._parking_bounds = _with_bounds(self.parkings.values())
            self._zone_bounds = _with_bounds(self.speed_zones.values())
            free_grid = _MovingGrid()
            for vehicle_id, place in places.items():
                free_grid.place(vehicle_id, _free_position(place))
            self.vehicle_places, self._free_grid = places, free_grid
            self.app_labels = app_labels

    async def vehicle_changed(self, view: VehicleView) -> None:
        """A vehicle actor saved a change (``VehicleListener``): follow it on the map."""
        place = VehiclePlace(view.battery_level, view.online, view.spot_id, view.latitude, view.longitude)
        self.vehicle_places[view.vehicle_id] = place
        self._free_grid.place(view.vehicle_id, _free_position(place))
        if self._changed_while_loading is not None:
            self._changed_while_loading[view.vehicle_id] = place

    def free_floating_in(
        self, area: Area, networks: Iterable[int]
    ) -> list[tuple[VehicleFacts, VehiclePlace]]:
        """Free-floating vehicles of ``networks`` inside ``area``, by id."""
        allowed = set(networks)
        south, north, west, east = area.south, area.north, area.west, area.east
        found = []
        for vehicle_id in self._free_grid.within(south, north, west, east):
            facts = self.vehicles.get(vehicle_id)
            place = self.vehicle_places.get(vehicle_id)
            if (
                facts is not None and place is not None and facts.network_id in allowed
                and place.latitude is not None and place.longitude is not None
                and south <= place.latitude <= north and west <= place.longitude <= east
            ):
                found.append((facts, place))
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
        for cluster_id in self._cluster_grid.within(area.south, area.north, area.west, area.east):
            cluster = self.clusters[cluster_id]
            if area.contains(cluster.latitude, cluster.longitude) and (
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


def _free_position(place: VehiclePlace) -> tuple[float, float] | None:
    if not place.free_floating:
        return None
    assert place.latitude is not None and place.longitude is not None
    return (place.latitude, place.longitude)


Bounds = tuple[float, float, float, float]  # south, north, west, east


def _overlapping(items: list[tuple[Bounds, ShapedT]], area: Area, networks: set[int]) -> list[ShapedT]:
    south, north, west, east = area.south, area.north, area.west, area.east
    return [
        item for (s, n, w, e), item in items
        if item.network_id in networks and not (n < south or s > north or e < west or w > east)
    ]


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


_OOO = ("o.id AS ooo_id, o.type AS ooo_type, o.reason AS ooo_reason, o.custom_reason AS ooo_custom_reason")


async def _load(conn: asyncpg.Connection) -> tuple[
    dict[int, Network], dict[int, Cluster], dict[int, Parking], dict[int, SpeedZone], dict[int, VehicleFacts]
]:
    networks = {
        r["id"]: Network(
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
        for r in await conn.fetch(
            f"""SELECT n.*, {_OOO},
                       ARRAY(SELECT app_label_id FROM network_app_labels l WHERE l.network_id = n.id) AS app_labels
                FROM networks n LEFT JOIN exceptional_out_of_orders o ON o.id = n.exceptional_out_of_order_id"""
        )
    }
    clusters = {
        r["id"]: Cluster(
            id=r["id"], network_id=r["network_id"], name=r["name"], latitude=r["latitude"],
            longitude=r["longitude"], description=r["description"] or {}, commissioning_date=r["commissioning_date"],
            soon_to_be_available=r["soon_to_be_available"], out_of_order=_out_of_order(r),
            max_unlock_distance=r["max_unlock_distance"], has_badge_reader=r["has_badge_reader"],
            balancing_type=r["balancing_type"],
        )
        for r in await conn.fetch(
            f"""SELECT c.*, {_OOO} FROM clusters c
                LEFT JOIN exceptional_out_of_orders o ON o.id = c.exceptional_out_of_order_id"""
        )
    }
    parkings = {
        r["id"]: Parking(r["id"], r["network_id"], r["cluster_id"], r["shape"])
        for r in await conn.fetch("SELECT * FROM virtual_parkings")
    }
    zones = {
        r["id"]: SpeedZone(r["id"], r["network_id"], r["shape"], r["max_speed"])
        for r in await conn.fetch("SELECT * FROM speed_zones")
    }
    vehicles = {
        r["id"]: VehicleFacts(
            id=r["id"], serial_number=r["serial_number"], network_id=r["network_id"], model_id=r["model_id"],
            model_name=r["model_name"], manufacturer=r["manufacturer"],
            vehicle_type=r["vehicle_type"] or "kick-scooter", avg_max_range=r["avg_max_range"], state=r["state"],
            out_of_order=_out_of_order(r), has_freefloat_to_station_reward=r["has_freefloat_to_station_reward"],
            min_battery_to_slow_down=r["min_battery_to_slow_down"] or 15,
            min_battery_to_auto_lock=r["min_battery_to_auto_lock"] or 5,
        )
        for r in await conn.fetch(
            f"""SELECT v.*, m.name AS model_name, m.manufacturer, m.vehicle_type, m.min_battery_to_slow_down,
                       m.min_battery_to_auto_lock, {_OOO}
                FROM vehicles v LEFT JOIN vehicle_models m ON m.id = v.model_id
                LEFT JOIN exceptional_out_of_orders o ON o.id = v.exceptional_out_of_order_id"""
        )
    }
    return networks, clusters, parkings, zones, vehicles


async def _load_all(conn: asyncpg.Connection) -> tuple[
    tuple[dict[int, Network], dict[int, Cluster], dict[int, Parking], dict[int, SpeedZone], dict[int, VehicleFacts]],
    dict[int, VehiclePlace],
    dict[str, int],
]:
    snapshot = await _load(conn)
    places = {
        r["id"]: VehiclePlace(r["battery_level"], r["online"], r["spot_id"], r["latitude"], r["longitude"])
        for r in await conn.fetch("SELECT id, battery_level, online, spot_id, latitude, longitude FROM vehicles")
    }
    labels = {r["name"]: r["id"] for r in await conn.fetch("SELECT id, name FROM app_labels")}
    return snapshot, places, labels
