"""The catalog in memory: networks, clusters, parkings, speed zones and vehicles' static facts.

Maps and cluster routes are the hottest read paths, so they are answered from
here and from the live availability the station actors keep, without a
database query per cluster. The catalog is loaded at start and refreshed by
the routes that change it (``reload()`` after a write; it is small). Area
queries use a grid index of 0.05-degree cells.

Shapes are lists of ``[longitude, latitude]`` points (GeoJSON order).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg
import trio

from .db import Database

CELL = 0.05  # degrees


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


def _cell(lat: float, lng: float) -> tuple[int, int]:
    return (math.floor(lat / CELL), math.floor(lng / CELL))


@dataclass
class _Grid:
    cells: defaultdict[tuple[int, int], list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, item_id: int, lat: float, lng: float) -> None:
        self.cells[_cell(lat, lng)].append(item_id)

    def within(self, south: float, north: float, west: float, east: float) -> Iterator[int]:
        low, high = _cell(south, west), _cell(north, east)
        for i in range(low[0], high[0] + 1):
            for j in range(low[1], high[1] + 1):
                yield from self.cells.get((i, j), ())


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
        self._reload_lock = trio.Lock()

    async def reload(self) -> None:
        """Read everything again (after a write, or at start)."""
        async with self._reload_lock:
            snapshot = await self._db.run(_load)
            (self.networks, self.clusters, self.parkings, self.speed_zones, self.vehicles) = snapshot
            grid = _Grid()
            for cluster in self.clusters.values():
                grid.add(cluster.id, cluster.latitude, cluster.longitude)
            self._cluster_grid = grid

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
        allowed = set(networks)
        return [p for p in self.parkings.values() if p.network_id in allowed and _shape_overlaps(area, p.shape)]

    def speed_zones_in(self, area: Area, networks: Iterable[int]) -> list[SpeedZone]:
        allowed = set(networks)
        return [z for z in self.speed_zones.values() if z.network_id in allowed and _shape_overlaps(area, z.shape)]


def _shape_overlaps(area: Area, shape: list[list[float]]) -> bool:
    if not shape:
        return False
    lngs = [p[0] for p in shape]
    lats = [p[1] for p in shape]
    return area.overlaps((min(lats), max(lats), min(lngs), max(lngs)))


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
