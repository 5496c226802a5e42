"""The GBFS v3.0 files of one network, built from what the service holds in memory.

Each ``build_*`` function reads the in-memory catalog, the station actors' live views and the vehicles'
live state (through a ``Sources``) and answers the file's ``data`` object; the envelope, the cache and
the ETag are ``service.py``'s. Nothing here reads the database.

How the model maps onto GBFS:

- a GBFS *station* is one of our stations (its docks are its spots), placed at its cluster and named by
  its cluster's name in every language the cluster has (the keys of its ``description``; English when it
  has none); a cluster's stations share that name;
- a *vehicle type* is a vehicle model (``model-<id>``), or, for vehicles without a model, the plain
  ``vehicle_type`` (``type-<name>``): form factor and propulsion come from the type's name, the range from
  the vehicles' ``avg_max_range`` (kilometres);
- ``vehicle_status`` lists the free-floating vehicles that are not rented, under a random id that is
  replaced after each trip (``VehicleIds``): never their serial number nor their id;
- the *pricing plan* is the network's tariff (unlock fee + price per started minute), one per network;
- *geofencing zones*: speed zones (their ``maximum_speed_kph``), virtual parkings (where a free-floating
  trip may end) and the network's area, with the global rule outside them;
- *alerts*: a station offline or out of service, a cluster or the whole network out of order.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from actors.station import StationView
from actors.vehicle import VehicleView

from ..catalog.memory import Cluster, Network, VehicleFacts

VERSION = "3.0"
LANGUAGE = re.compile(r"^[a-z]{2,3}(-[A-Z]{2})?$")
DEFAULT_LANGUAGE = "en"
EPOCH = "1970-01-01T00:00:00Z"  # the ``last_reported`` of a station that never reported


def rfc3339(seconds: float) -> str:
    """A POSIX time as an RFC 3339 UTC timestamp, to the second (``2026-11-30T23:00:00Z``)."""
    return datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class NetworkTariff:
    """What a rent costs on a network (``rents.pricing.Tariff``'s columns, read with the networks)."""

    currency: str
    unlock_fee: Decimal
    price_per_minute: Decimal


class Sources(Protocol):
    """What the files are built from: all of it in memory."""

    def network(self, network_id: int) -> Network | None: ...
    def networks(self) -> list[Network]: ...
    def clusters_of(self, network_id: int) -> list[Cluster]: ...
    def stations_of(self, cluster_id: int) -> list[StationView]: ...
    def available_vehicles(self, view: StationView) -> int: ...
    def vehicles_of(self, network_id: int) -> list[VehicleFacts]: ...
    def vehicle(self, vehicle_id: int) -> VehicleFacts | None: ...
    def vehicle_state(self, vehicle_id: int) -> VehicleView: ...
    def vehicle_blocked(self, vehicle_id: int) -> bool: ...
    def parkings_of(self, network_id: int) -> list[list[list[float]]]: ...
    def speed_zones_of(self, network_id: int) -> list[tuple[int, list[list[float]], int]]: ...
    def tariff(self, network_id: int) -> NetworkTariff | None: ...
    def timezone(self, network_id: int) -> str: ...


class VehicleIds:
    """The public ids of the free-floating vehicles: random, kept in memory, replaced after each trip.

    ``observe`` is told a vehicle's live state (by the service's watch, and at every build of
    ``vehicle_status``): a vehicle seen rented gets a new id once it is seen free again.
    """

    def __init__(self) -> None:
        self._ids: dict[int, str] = {}
        self._rented: set[int] = set()
        self.version = 0  # bumped whenever an id is replaced or dropped

    def observe(self, vehicle_id: int, rented: bool) -> None:
        if rented:
            if vehicle_id not in self._rented:
                self._rented.add(vehicle_id)
                if self._ids.pop(vehicle_id, None) is not None:
                    self.version += 1
        elif vehicle_id in self._rented:
            self._rented.discard(vehicle_id)
            self._ids.pop(vehicle_id, None)
            self.version += 1

    def rented(self) -> frozenset[int]:
        """The vehicles last seen rented."""
        return frozenset(self._rented)

    def public_id(self, vehicle_id: int) -> str:
        found = self._ids.get(vehicle_id)
        if found is None:
            found = self._ids[vehicle_id] = secrets.token_urlsafe(12)
        return found


# languages ---------------------------------------------------------------------------------------


def cluster_languages(cluster: Cluster) -> list[str]:
    """The languages of the cluster's texts (valid BCP 47 tags only), English when it has none."""
    found = sorted(lang for lang in cluster.description if LANGUAGE.match(lang))
    return found or [DEFAULT_LANGUAGE]


def network_languages(sources: Sources, network_id: int) -> list[str]:
    found: set[str] = set()
    for cluster in sources.clusters_of(network_id):
        found.update(cluster_languages(cluster))
    return sorted(found) or [DEFAULT_LANGUAGE]


def texts(text: str, languages: Iterable[str]) -> list[dict[str, str]]:
    return [{"text": text, "language": lang} for lang in languages]


# ids ---------------------------------------------------------------------------------------------


def system_id(network: Network) -> str:
    return f"knot-{network.id}"


def plan_id(network: Network) -> str:
    return f"network-{network.id}"


def vehicle_type_id(facts: VehicleFacts) -> str:
    return f"model-{facts.model_id}" if facts.model_id is not None else f"type-{facts.vehicle_type}"


# vehicle types -----------------------------------------------------------------------------------

# Our ``vehicle_type`` names -> (form factor, propulsion); any other name: ("other", "electric").
KINDS: dict[str, tuple[str, str]] = {
    "kick-scooter": ("scooter_standing", "electric"),
    "scooter": ("scooter_standing", "electric"),
    "seated-scooter": ("scooter_seated", "electric"),
    "e-bike": ("bicycle", "electric_assist"),
    "bike": ("bicycle", "human"),
    "bicycle": ("bicycle", "human"),
    "cargo-bike": ("cargo_bicycle", "electric_assist"),
    "e-cargo-bike": ("cargo_bicycle", "electric_assist"),
    "moped": ("moped", "electric"),
    "car": ("car", "electric"),
}


def build_vehicle_types(sources: Sources, network: Network) -> dict[str, Any]:
    language = network_languages(sources, network.id)[0]
    tariff = sources.tariff(network.id)
    types: dict[str, dict[str, Any]] = {}
    ranges: dict[str, int] = {}
    for facts in sources.vehicles_of(network.id):
        type_id = vehicle_type_id(facts)
        ranges[type_id] = max(ranges.get(type_id, 0), facts.avg_max_range)
        if type_id in types:
            continue
        form_factor, propulsion = KINDS.get(facts.vehicle_type, ("other", "electric"))
        item: dict[str, Any] = {
            "vehicle_type_id": type_id, "form_factor": form_factor, "propulsion_type": propulsion,
            "name": texts(facts.model_name or facts.vehicle_type, [language]),
        }
        if facts.manufacturer:
            item["make"] = texts(facts.manufacturer, [language])
        if facts.model_name:
            item["model"] = texts(facts.model_name, [language])
        if tariff is not None:
            item["default_pricing_plan_id"] = plan_id(network)
            item["pricing_plan_ids"] = [plan_id(network)]
        types[type_id] = item
    for type_id, item in types.items():
        if item["propulsion_type"] != "human":
            item["max_range_meters"] = ranges[type_id] * 1000  # avg_max_range is in kilometres
    return {"vehicle_types": [types[key] for key in sorted(types)]}


# stations ----------------------------------------------------------------------------------------


def _network_stations(sources: Sources, network_id: int) -> list[tuple[Cluster, StationView]]:
    return [(cluster, view) for cluster in sources.clusters_of(network_id)
            for view in sources.stations_of(cluster.id)]


def build_station_information(sources: Sources, network: Network) -> dict[str, Any]:
    stations = []
    for cluster, view in _network_stations(sources, network.id):
        stations.append({
            "station_id": str(view.station_id),
            "name": texts(cluster.name, cluster_languages(cluster)),
            "lat": cluster.latitude,
            "lon": cluster.longitude,
            "capacity": view.total_spots,
            "is_virtual_station": False,
            "rental_methods": ["key", "phone"],  # the RFID badge and the app
        })
    return {"stations": stations}


def station_usable(network: Network, cluster: Cluster, view: StationView) -> bool:
    """Renting and returning: online, enabled, not in maintenance (some spot in service) and nothing out of
    order over it."""
    return (
        view.online and view.enabled and any(not s.in_maintenance for s in view.spots)
        and cluster.out_of_order is None and network.out_of_order is None
    )


def build_station_status(sources: Sources, network: Network) -> dict[str, Any]:
    stations = []
    for cluster, view in _network_stations(sources, network.id):
        usable = station_usable(network, cluster, view)
        available = sources.available_vehicles(view) if usable else 0
        docked = [s for s in view.spots if s.vehicle not in (None, 0)]
        free = [s for s in view.spots if s.vehicle is None]
        free_usable = view.free_spots if usable else 0
        by_type: dict[str, int] = {}
        if usable:
            for spot in docked:
                if spot.lock == 1 and not spot.in_maintenance and spot.is_accessible and spot.vehicle is not None \
                        and not sources.vehicle_blocked(spot.vehicle):
                    facts = sources.vehicle(spot.vehicle)
                    if facts is not None and facts.network_id == network.id:
                        type_id = vehicle_type_id(facts)
                        by_type[type_id] = by_type.get(type_id, 0) + 1
        stations.append({
            "station_id": str(view.station_id),
            "num_vehicles_available": available,
            "vehicle_types_available": [{"vehicle_type_id": k, "count": n} for k, n in sorted(by_type.items())],
            "num_vehicles_disabled": len(docked) - available,
            "num_docks_available": free_usable,
            "num_docks_disabled": len(free) - free_usable,
            "is_installed": view.enabled,
            "is_renting": usable,
            "is_returning": usable,
            "last_reported": rfc3339(view.last_seen_ms / 1000) if view.last_seen_ms else EPOCH,
        })
    return {"stations": stations}


# free-floating vehicles --------------------------------------------------------------------------


def vehicle_available(sources: Sources, facts: VehicleFacts, state: VehicleView) -> bool:
    """As the map's: available, not out of order nor out of rent for maintenance, battery above the
    auto-lock level, and connected when it has its own module."""
    return (
        facts.state == "available" and facts.out_of_order is None and not sources.vehicle_blocked(facts.id)
        and (state.battery_level is None or state.battery_level > facts.min_battery_to_auto_lock)
        and (state.connected or not state.has_module)
    )


def build_vehicle_status(sources: Sources, network: Network, ids: VehicleIds) -> dict[str, Any]:
    tariff = sources.tariff(network.id)
    vehicles = []
    for facts in sources.vehicles_of(network.id):
        state = sources.vehicle_state(facts.id)
        ids.observe(facts.id, state.rented)
        if state.rented or not state.free_floating:
            continue
        assert state.latitude is not None and state.longitude is not None
        item: dict[str, Any] = {
            "vehicle_id": ids.public_id(facts.id),
            "lat": state.latitude,
            "lon": state.longitude,
            "is_reserved": False,
            "is_disabled": not vehicle_available(sources, facts, state),
            "vehicle_type_id": vehicle_type_id(facts),
        }
        if state.battery_level is not None:
            item["current_fuel_percent"] = max(0, min(100, state.battery_level)) / 100
        if state.estimated_range is not None:
            item["current_range_meters"] = max(0, state.estimated_range) * 1000
        if tariff is not None:
            item["pricing_plan_id"] = plan_id(network)
        vehicles.append(item)
    vehicles.sort(key=lambda v: v["vehicle_id"])  # never in the order of our ids
    return {"vehicles": vehicles}


# pricing -----------------------------------------------------------------------------------------


def build_pricing_plans(sources: Sources, network: Network) -> dict[str, Any]:
    tariff = sources.tariff(network.id)
    if tariff is None:
        return {"plans": []}
    language = network_languages(sources, network.id)[0]
    fee, per_minute = tariff.unlock_fee, tariff.price_per_minute
    plan: dict[str, Any] = {
        "plan_id": plan_id(network),
        "name": texts(f"{network.name}: standard tariff", [language]),
        "currency": tariff.currency,
        "price": float(fee),
        "is_taxable": False,
        "description": texts(
            f"{fee} {tariff.currency} to unlock, then {per_minute} {tariff.currency} per started minute.", [language]
        ),
    }
    if per_minute > 0:
        plan["per_min_pricing"] = [{"start": 0, "rate": float(per_minute), "interval": 1}]
    return {"plans": [plan]}


# geofencing --------------------------------------------------------------------------------------


def _multipolygon(shape: list[list[float]]) -> dict[str, Any] | None:
    """A closed ring of ``[lng, lat]`` points as a GeoJSON MultiPolygon; None for fewer than three points."""
    ring = [[float(p[0]), float(p[1])] for p in shape if len(p) >= 2]
    if len({(p[0], p[1]) for p in ring}) < 3:
        return None
    if ring[0] != ring[-1]:
        ring.append(list(ring[0]))
    return {"type": "MultiPolygon", "coordinates": [[ring]]}


def _feature(geometry: dict[str, Any], name: str, language: str, rule: dict[str, Any]) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry,
            "properties": {"name": texts(name, [language]), "rules": [rule]}}


def _rule(*, end: bool, speed: int | None = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"ride_start_allowed": True, "ride_end_allowed": end, "ride_through_allowed": True}
    if speed is not None:
        rule["maximum_speed_kph"] = speed
    return rule


def build_geofencing_zones(sources: Sources, network: Network) -> dict[str, Any]:
    """Speed zones first (the first feature wins where features overlap), then the parkings, then the
    network's area. A trip may end inside the area, and inside a parking when the network has any."""
    language = network_languages(sources, network.id)[0]
    parkings = [g for shape in sources.parkings_of(network.id) if (g := _multipolygon(shape)) is not None]
    area = _multipolygon(network.shape)
    end_anywhere = not parkings  # where the area allows an end
    features = []
    for zone_id, shape, max_speed in sources.speed_zones_of(network.id):
        geometry = _multipolygon(shape)
        if geometry is not None and max_speed > 0:
            features.append(_feature(geometry, f"Speed zone {zone_id}", language,
                                     _rule(end=end_anywhere, speed=max_speed)))
    for number, geometry in enumerate(parkings, start=1):
        features.append(_feature(geometry, f"Parking {number}", language, _rule(end=True)))
    if area is not None:
        features.append(_feature(area, network.name, language, _rule(end=end_anywhere)))
    outside_ends = area is None and end_anywhere
    return {
        "geofencing_zones": {"type": "FeatureCollection", "features": features},
        "global_rules": [_rule(end=outside_ends)],
    }


# alerts ------------------------------------------------------------------------------------------


def build_system_alerts(sources: Sources, network: Network) -> dict[str, Any]:
    language = network_languages(sources, network.id)[0]
    alerts: list[dict[str, Any]] = []
    if network.out_of_order is not None:
        ooo = network.out_of_order
        alerts.append(_alert(f"network-{network.id}-out-of-order-{ooo.id}", "system_closure", language,
                             f"{network.name} is out of order ({ooo.reason})", ooo.custom_reason))
    for cluster in sources.clusters_of(network.id):
        views = sources.stations_of(cluster.id)
        if cluster.out_of_order is not None:
            ooo = cluster.out_of_order
            alerts.append(_alert(f"cluster-{cluster.id}-out-of-order-{ooo.id}", "station_closure", language,
                                 f"{cluster.name} is out of order ({ooo.reason})", ooo.custom_reason,
                                 station_ids=[str(v.station_id) for v in views]))
        for view in views:
            if not view.enabled:
                alerts.append(_alert(f"station-{view.station_id}-disabled", "station_closure", language,
                                     f"A station of {cluster.name} is out of service", None,
                                     station_ids=[str(view.station_id)]))
            elif not view.online:
                alert = _alert(f"station-{view.station_id}-offline", "station_closure", language,
                               f"A station of {cluster.name} is offline", None,
                               station_ids=[str(view.station_id)])
                if view.last_seen_ms:
                    alert["times"] = [{"start": rfc3339(view.last_seen_ms / 1000)}]
                alerts.append(alert)
            elif not any(not s.in_maintenance for s in view.spots):
                alerts.append(_alert(f"station-{view.station_id}-maintenance", "station_closure", language,
                                     f"A station of {cluster.name} is in maintenance", None,
                                     station_ids=[str(view.station_id)]))
    return {"alerts": alerts}


def _alert(alert_id: str, kind: str, language: str, summary: str, description: str | None,
           station_ids: list[str] | None = None) -> dict[str, Any]:
    alert: dict[str, Any] = {"alert_id": alert_id, "type": kind, "summary": texts(summary, [language])}
    if description:
        alert["description"] = texts(description, [language])
    if station_ids:
        alert["station_ids"] = station_ids
    return alert


# discovery ---------------------------------------------------------------------------------------


def feed_url(base: str, network_id: int, name: str) -> str:
    return f"{base}/gbfs/v3/{network_id}/{name}.json"


def manifest_url(base: str) -> str:
    return f"{base}/gbfs/v3/manifest.json"


def build_gbfs(base: str, network: Network, names: Iterable[str]) -> dict[str, Any]:
    return {"feeds": [{"name": name, "url": feed_url(base, network.id, name)} for name in names]}


def build_manifest(base: str, networks: Iterable[Network]) -> dict[str, Any]:
    return {"datasets": [
        {"system_id": system_id(n), "versions": [{"version": VERSION, "url": feed_url(base, n.id, "gbfs")}]}
        for n in networks
    ]}


def build_system_information(sources: Sources, network: Network, base: str, contact_email: str) -> dict[str, Any]:
    languages = network_languages(sources, network.id)
    return {
        "system_id": system_id(network),
        "languages": languages,
        "name": texts(network.name, languages),
        "opening_hours": "24/7",
        "feed_contact_email": contact_email,
        "manifest_url": manifest_url(base),
        "timezone": sources.timezone(network.id),
    }
