"""The GBFS feeds as answers: envelope, cache, ETag; and what keeps them honest (the vehicle ids' watch).

``GbfsService.answer(network_id, name)`` answers a file of a public network (None: no such network or
file, or a network that is not public) from a small cache keyed by (network, file). An entry is kept
while the live state it was built from is the same (its *inputs*: the very objects it read, compared by
identity first, then by value; the actors and the catalog replace a view or a row object on every change)
and for at most the file's ``ttl``. A rebuild whose ``data`` comes out the same keeps its ``last_updated``
and its ETag: ``last_updated`` is when the data last changed.

Nothing is read from the database per request. Two facts the catalog does not keep in memory are read
here: each network's tariff (its pricing plan), read in the background (``refresh``: at start, again when
the catalog's networks were read again — a network created or changed — and every ``refresh_seconds``;
while the database is away the last ones read are kept), and its time zone, looked up offline from its
centre on its first ``system_information``.

``run`` also watches the free-floating vehicles' rents every ``watch_seconds``, in memory: a vehicle seen
rented gets a new public id once it is free again (GBFS: ``vehicle_id`` rotated after each trip), even when
no one read ``vehicle_status`` during the trip.

Who may see a network: public (``is_public``) and not reserved to its organisation
(``organization_only``); any other network answers 404, as an unknown one does.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from email.utils import parseaddr
from typing import Any

import asyncpg
import trio

from actors.station import StationView
from actors.vehicle import VehicleView

from ..catalog.memory import Catalog, Cluster, Network, VehicleFacts
from ..db import Database, DatabaseUnavailable
from ..services.geo import COUNTRY_FINDER
from ..stations.live import LiveStations
from ..vehicles.service import VehicleService
from . import feeds
from .feeds import NetworkTariff, VehicleIds

log = logging.getLogger(__name__)

DEFAULT_TIMEZONE = "Etc/UTC"
DEFAULT_CONTACT = "gbfs@knot.local"
RETRY_SECONDS = 5.0  # a refresh the database could not serve is tried again after this


@dataclass(frozen=True, slots=True)
class FeedFile:
    name: str
    ttl: int  # seconds: the envelope's ``ttl`` and the answer's ``Cache-Control: max-age``


# The files of one network, in the order gbfs.json lists them, and the manifest (all networks).
FILES: dict[str, FeedFile] = {f.name: f for f in (
    FeedFile("gbfs", 300),
    FeedFile("system_information", 300),
    FeedFile("vehicle_types", 300),
    FeedFile("station_information", 300),
    FeedFile("station_status", 15),
    FeedFile("vehicle_status", 15),
    FeedFile("system_pricing_plans", 300),
    FeedFile("geofencing_zones", 300),
    FeedFile("system_alerts", 60),
)}
MANIFEST = FeedFile("manifest", 300)
LISTED = [name for name in FILES if name != "gbfs"]  # what gbfs.json links to


@dataclass(frozen=True, slots=True)
class Answer:
    body: bytes
    etag: str  # quoted, strong
    ttl: int

    def matches(self, if_none_match: str | None) -> bool:
        """Whether an ``If-None-Match`` header names this answer (weak or strong tags, a list, or ``*``)."""
        if not if_none_match:
            return False
        for tag in if_none_match.split(","):
            tag = tag.strip()
            if tag == "*":
                return True
            if tag.startswith("W/"):
                tag = tag[2:]
            if tag == self.etag:
                return True
        return False


@dataclass(slots=True)
class _Entry:
    inputs: tuple[Any, ...]
    built_at: float  # trio clock
    data_hash: str
    last_updated: float  # POSIX time the data last changed
    answer: Answer


class _Memory:
    """``feeds.Sources`` over the catalog, the live stations and the vehicles' live state."""

    def __init__(self, service: GbfsService) -> None:
        self._svc = service

    def network(self, network_id: int) -> Network | None:
        return self._svc.catalog.networks.get(network_id)

    def networks(self) -> list[Network]:
        return sorted(self._svc.catalog.networks.values(), key=lambda n: n.id)

    def clusters_of(self, network_id: int) -> list[Cluster]:
        return self._svc.clusters_of(network_id)

    def stations_of(self, cluster_id: int) -> list[StationView]:
        live = self._svc.stations
        return [v for s in live.stations_of(cluster_id) if (v := live.station(s)) is not None]

    def available_vehicles(self, view: StationView) -> int:
        return self._svc.stations.available_vehicles(view)

    def vehicles_of(self, network_id: int) -> list[VehicleFacts]:
        return self._svc.vehicles_of(network_id)

    def vehicle(self, vehicle_id: int) -> VehicleFacts | None:
        return self._svc.catalog.vehicles.get(vehicle_id)

    def vehicle_state(self, vehicle_id: int) -> VehicleView:
        return self._svc.vehicles.state(vehicle_id)

    def vehicle_blocked(self, vehicle_id: int) -> bool:
        return self._svc.vehicles.in_maintenance(vehicle_id)

    def parkings_of(self, network_id: int) -> list[list[list[float]]]:
        parkings = self._svc.catalog.parkings.values()
        return [p.shape for p in sorted(parkings, key=lambda p: p.id) if p.network_id == network_id]

    def speed_zones_of(self, network_id: int) -> list[tuple[int, list[list[float]], int]]:
        zones = self._svc.catalog.speed_zones.values()
        return [(z.id, z.shape, z.max_speed) for z in sorted(zones, key=lambda z: z.id) if z.network_id == network_id]

    def tariff(self, network_id: int) -> NetworkTariff | None:
        return self._svc.tariffs.get(network_id)

    def timezone(self, network_id: int) -> str:
        return self._svc.timezones.get(network_id, DEFAULT_TIMEZONE)


def is_public(network: Network | None) -> bool:
    return network is not None and network.is_public and not network.organization_only


class GbfsService:
    def __init__(self, db: Database, catalog: Catalog, stations: LiveStations, vehicles: VehicleService, *,
                 base_url: str, contact_email: str | None = None, refresh_seconds: float = 300.0,
                 watch_seconds: float = 0.5) -> None:
        self.db = db
        self.catalog = catalog
        self.stations = stations
        self.vehicles = vehicles
        self.base_url = base_url.rstrip("/")
        address = parseaddr(contact_email or "")[1]
        self.contact_email = address if "@" in address else DEFAULT_CONTACT
        self.refresh_seconds = refresh_seconds
        self.watch_seconds = watch_seconds
        self.tariffs: dict[int, NetworkTariff] = {}
        self.timezones: dict[int, str] = {}
        self.ids = VehicleIds()
        self.sources = _Memory(self)
        self._cache: dict[tuple[int | None, str], _Entry] = {}
        self._read_networks: object = None  # the catalog's networks dict the tariffs were read with
        self._refreshed_at = -float("inf")
        self._index_key: tuple[int, int, int, int] | None = None
        self._cluster_ids: dict[int, list[int]] = {}
        self._vehicle_ids: dict[int, list[int]] = {}

    # per-network lookups, rebuilt when the catalog's dicts are replaced or grow ------------------

    def _index(self) -> None:
        """The ids of each network's clusters and vehicles, found again when the catalog's dicts were
        replaced (a reload) or changed size (a cluster or vehicle added)."""
        catalog = self.catalog
        key = (id(catalog.clusters), len(catalog.clusters), id(catalog.vehicles), len(catalog.vehicles))
        if key == self._index_key:
            return
        clusters: dict[int, list[int]] = {}
        for cluster in sorted(catalog.clusters.values(), key=lambda c: c.id):
            clusters.setdefault(cluster.network_id, []).append(cluster.id)
        vehicles: dict[int, list[int]] = {}
        for facts in sorted(catalog.vehicles.values(), key=lambda f: f.id):
            if facts.network_id is not None:
                vehicles.setdefault(facts.network_id, []).append(facts.id)
        self._cluster_ids, self._vehicle_ids, self._index_key = clusters, vehicles, key

    def clusters_of(self, network_id: int) -> list[Cluster]:
        """The network's clusters as the catalog holds them now (a cluster changed in place is seen)."""
        self._index()
        clusters = self.catalog.clusters
        return [c for cid in self._cluster_ids.get(network_id, ()) if (c := clusters.get(cid)) is not None
                and c.network_id == network_id]

    def vehicles_of(self, network_id: int) -> list[VehicleFacts]:
        self._index()
        vehicles = self.catalog.vehicles
        return [f for vid in self._vehicle_ids.get(network_id, ()) if (f := vehicles.get(vid)) is not None
                and f.network_id == network_id]

    # answers -------------------------------------------------------------------------------------

    def public_network(self, network_id: int) -> Network | None:
        network = self.catalog.networks.get(network_id)
        return network if is_public(network) else None

    async def answer(self, network_id: int | None, name: str) -> Answer | None:
        """The file ``name`` of a public network (``network_id`` None: the manifest); None: not found.

        The first ``system_information`` of a network looks its time zone up (offline, from its centre; the
        boundaries are loaded on the process's first lookup, in a worker thread)."""
        if network_id is None:
            if name != MANIFEST.name:
                return None
            public = [n for n in self.sources.networks() if is_public(n)]
            return self._cached(None, MANIFEST, (tuple(public),),
                                lambda: feeds.build_manifest(self.base_url, public))
        feed = FILES.get(name)
        network = self.public_network(network_id)
        if feed is None or network is None:
            return None
        if name == "system_information" and network.id not in self.timezones:
            zone = await COUNTRY_FINDER.zone_at(network.center_latitude, network.center_longitude)
            self.timezones[network.id] = zone or DEFAULT_TIMEZONE
        inputs, build = self._file(network, feed)
        return self._cached(network.id, feed, inputs, build)

    def _file(self, network: Network, feed: FeedFile) -> tuple[tuple[Any, ...], Callable[[], dict[str, Any]]]:
        """What the file is built from (its inputs, compared to decide whether the cached one still holds),
        and how it is built."""
        src = self.sources
        nid = network.id
        name = feed.name
        clusters = tuple(self.clusters_of(nid))
        if name == "gbfs":
            return (network,), lambda: feeds.build_gbfs(self.base_url, network, LISTED)
        if name == "system_information":
            return (network, clusters, src.timezone(nid)), lambda: feeds.build_system_information(
                src, network, self.base_url, self.contact_email)
        vehicles = tuple(self.vehicles_of(nid))
        tariff = src.tariff(nid)
        if name == "vehicle_types":
            return (network, clusters, vehicles, tariff), lambda: feeds.build_vehicle_types(src, network)
        if name == "system_pricing_plans":
            return (network, clusters, tariff), lambda: feeds.build_pricing_plans(src, network)
        if name == "geofencing_zones":
            shapes = (tuple(src.parkings_of(nid)), tuple(src.speed_zones_of(nid)))
            return (network, clusters, shapes), lambda: feeds.build_geofencing_zones(src, network)
        views = tuple(tuple(src.stations_of(c.id)) for c in clusters)
        if name == "station_information":
            return (network, clusters, views), lambda: feeds.build_station_information(src, network)
        if name == "system_alerts":
            return (network, clusters, views), lambda: feeds.build_system_alerts(src, network)
        if name == "station_status":
            # A docked vehicle put out of rent (or back) changes no view but its cluster's totals.
            totals = tuple(self.stations.cluster(c.id) for c in clusters)
            return (network, clusters, views, vehicles, totals), lambda: feeds.build_station_status(src, network)
        assert name == "vehicle_status"
        states = tuple(src.vehicle_state(f.id) for f in vehicles)
        blocked = tuple(src.vehicle_blocked(f.id) for f in vehicles)
        for facts, state in zip(vehicles, states, strict=True):
            self.ids.observe(facts.id, state.rented)
        return ((network, vehicles, states, blocked, tariff, self.ids.version),
                lambda: feeds.build_vehicle_status(src, network, self.ids))

    def _cached(self, network_id: int | None, feed: FeedFile, inputs: tuple[Any, ...],
                build: Callable[[], dict[str, Any]]) -> Answer:
        key = (network_id, feed.name)
        now = trio.current_time()
        entry = self._cache.get(key)
        if entry is not None and now - entry.built_at < feed.ttl and entry.inputs == inputs:
            return entry.answer
        data = build()
        data_json = json.dumps(data, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
        data_hash = hashlib.sha256(data_json.encode()).hexdigest()
        if entry is not None and entry.data_hash == data_hash:
            entry.inputs, entry.built_at = inputs, now  # same data: same last_updated, same ETag
            return entry.answer
        last_updated = time.time()
        body = json.dumps(
            {"last_updated": feeds.rfc3339(last_updated), "ttl": feed.ttl, "version": feeds.VERSION, "data": data},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()
        answer = Answer(body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"', feed.ttl)
        self._cache[key] = _Entry(inputs, now, data_hash, last_updated, answer)
        return answer

    # background: the tariffs and time zones, and the rents' watch -----------------------------------

    async def refresh(self) -> bool:
        """Read the networks' tariffs again; False when the database is away (the last ones read are kept)."""
        networks = self.catalog.networks
        try:
            rows = await self.db.run(_read_tariffs)
        except DatabaseUnavailable as exc:
            log.warning("gbfs: tariffs not read, the database is unavailable (%s); retried in %s s", exc,
                        RETRY_SECONDS)
            self._read_networks = networks
            self._refreshed_at = trio.current_time() - self.refresh_seconds + RETRY_SECONDS
            return False
        self.tariffs = {
            r["id"]: NetworkTariff(r["currency"], Decimal(r["unlock_fee"]), Decimal(r["price_per_minute"]))
            for r in rows
        }
        self._read_networks = networks
        self._refreshed_at = trio.current_time()
        return True

    def watch(self) -> None:
        """Note which vehicles are rented now, and which rented ones are free again (a trip's end replaces the
        vehicle's id): the rented ones only, not every vehicle of the catalog."""
        for vehicle_id in self.vehicles.rented() | self.ids.rented():
            self.ids.observe(vehicle_id, self.vehicles.state(vehicle_id).rented)

    async def run(self) -> None:
        while True:
            self.watch()
            stale = trio.current_time() - self._refreshed_at >= self.refresh_seconds
            if stale or self.catalog.networks is not self._read_networks:
                await self.refresh()
            await trio.sleep(self.watch_seconds)


async def _read_tariffs(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT id, currency, unlock_fee, price_per_minute FROM networks"
    )
    return rows
