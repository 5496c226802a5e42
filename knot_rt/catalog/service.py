"""The catalog's service: the one entry point of the catalog's routes (maps, clusters, networks, discounts,
countries).

Reads the in-memory catalog holds (networks, clusters, parkings, speed zones,
vehicles' facts, in an area or by id) are answered from ``memory.py`` with no
query; what a caller sees there is asked of the access policy
(``services.access``) with this catalog. Reads of rows the memory does not hold
(spots, scopes, the caller's rents and passes, discounts, countries) are SQL in
``store.py``, run here.

Every write opens one unit of work (``Work.run``): the rows change in one
transaction, the changed rows are read again in that transaction, and a
TARGETED update of the in-memory catalog (that cluster, the parkings that
followed it) is queued with ``uow.after``. It runs after the commit, never after
a rollback. Before this service, each route reloaded the whole catalog (every
network, cluster, parking, zone and vehicle) to rename one cluster.

Choices and costs:

- The update carries the rows read inside the transaction, so it needs no
  database after the commit: a write that committed is in the maps at once,
  even when PostgreSQL goes away right after it. The cost is one extra
  one-row read per write.
- Rows changed behind the service (a script, another process) are not picked
  up by a write here; they arrive with the catalog's periodic full read
  (``Catalog.run``, every ``catalog_refresh_seconds``). The nearest network of
  the discounts is the memory's too (``Catalog.nearest_network_id``): a network
  added behind the service counts from that read on.
- The catalog applies the update under its reload lock (``Catalog.put_cluster``),
  so a reload that read an older snapshot cannot overwrite a committed change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import asyncpg

from actors.vehicle import VehicleView

from ..db import Database
from ..services.access import UserAccess, seen_cluster
from ..services.permissions import Scope
from ..uow import UnitOfWork, Work
from . import store
from .memory import (
    Area,
    Catalog,
    Cluster,
    Network,
    Parking,
    SpeedZone,
    VehicleFacts,
    cluster_of,
    parking_of,
    vehicle_facts,
)
from .store import SpotFacts

# A rent of the caller as the map shows it: its row (``store.RENTS_AND_PASSES``) and its vehicle's facts.
Rent = tuple[asyncpg.Record, VehicleFacts]


class CatalogService:
    """The catalog's reads (memory first) and cluster writes through units of work, with targeted updates."""

    def __init__(self, db: Database, work: Work, catalog: Catalog) -> None:
        self.db = db
        self.work = work
        self.catalog = catalog

    # reads from memory -----------------------------------------------------------------

    def seen_networks(self, access: UserAccess) -> set[int]:
        """The ids of the networks ``access`` sees."""
        return access.seen_networks(self.catalog)

    def seen_cluster(self, access: UserAccess, cluster_id: int) -> Cluster | None:
        """The cluster if ``access`` sees it; None for an unknown and an unseen one alike."""
        return seen_cluster(access, self.catalog, cluster_id)

    def network(self, network_id: int) -> Network | None:
        return self.catalog.networks.get(network_id)

    def vehicle(self, vehicle_id: int) -> VehicleFacts | None:
        """A vehicle's static facts, or None for a vehicle the catalog does not know."""
        return self.catalog.vehicles.get(vehicle_id)

    def networks_in(self, area: Area | None, networks: Iterable[int] | None = None) -> list[Network]:
        """Networks (of ``networks``, when given) whose shape overlaps ``area`` (every one for None), by id."""
        return self.catalog.networks_in(area, networks)

    def clusters_in(self, area: Area, networks: Iterable[int]) -> list[Cluster]:
        """Clusters of ``networks`` inside ``area``, by id."""
        return self.catalog.clusters_in(area, networks)

    def parkings_in(self, area: Area, networks: Iterable[int]) -> list[Parking]:
        """Parkings of ``networks`` overlapping ``area``, by id."""
        return self.catalog.parkings_in(area, networks)

    def speed_zones_in(self, area: Area, networks: Iterable[int]) -> list[SpeedZone]:
        """Speed zones of ``networks`` overlapping ``area``, by id."""
        return self.catalog.speed_zones_in(area, networks)

    def free_floating_in(self, area: Area, networks: Iterable[int]) -> list[tuple[VehicleFacts, VehicleView]]:
        """Free-floating vehicles of ``networks`` inside ``area``, by id, with their live state."""
        return self.catalog.free_floating_in(area, networks)

    def closest_clusters(self, networks: Iterable[int], lat: float, lng: float) -> list[tuple[int, Cluster]]:
        return self.catalog.closest_clusters(networks, lat, lng)

    # reads from the database -------------------------------------------------------------

    async def network_scope(self, network_id: int) -> Scope | None:
        return await self.db.run(lambda conn: store.network_scope(conn, network_id))

    async def cluster_scope(self, cluster_id: int) -> Scope | None:
        return await self.db.run(lambda conn: store.cluster_scope(conn, cluster_id))

    async def cluster_spots(self, cluster_id: int) -> list[SpotFacts]:
        return await self.db.run(lambda conn: store.cluster_spots(conn, cluster_id))

    async def rents_and_passes(self, user_id: int) -> tuple[list[Rent], list[asyncpg.Record]]:
        """The caller's open rents, with their vehicles' facts, and current passes (rows of
        ``store.RENTS_AND_PASSES``), by id."""
        rows = await self.db.run(lambda conn: store.rents_and_passes(conn, user_id))
        rents = [(row, vehicle_facts(row)) for row in rows if row["kind"] == "rent"]
        return rents, [row for row in rows if row["kind"] == "pass"]

    async def user_discounts(self, user_id: int) -> list[asyncpg.Record]:
        return await self.db.run(lambda conn: store.user_discounts(conn, user_id))

    async def shop_discounts(self, user_id: int, lat: float, lng: float, on: date) -> list[asyncpg.Record]:
        """The user's active shop discounts valid on ``on`` and on the network nearest to (lat, lng)."""
        network_id = self.catalog.nearest_network_id(lat, lng)
        return await self.db.run(lambda conn: store.shop_discounts(conn, user_id, network_id, on))

    async def use_code(self, user_id: int, code: str, lat: float, lng: float, on: date) -> asyncpg.Record:
        """Redeem a discount code in one unit of work (``ApiError`` for a refused code: nothing is written)."""
        network_id = self.catalog.nearest_network_id(lat, lng)
        return await self.work.run(lambda uow: store.use_code(uow.conn, user_id, code, network_id, on))

    async def country(self, iso_2: str) -> asyncpg.Record | None:
        """The country of an ISO 3166-1 alpha-2 code, or None."""
        return await self.db.run(lambda conn: store.country_by_iso_2(conn, iso_2))

    # writes ----------------------------------------------------------------------------

    async def _refresh_cluster(self, uow: UnitOfWork, cluster_id: int) -> None:
        """Read the cluster again in this transaction; put it in the catalog once committed."""
        row = await store.cluster_row(uow.conn, cluster_id)
        if row is not None:
            cluster = cluster_of(row)
            uow.after(lambda: self.catalog.put_cluster(cluster))

    async def create_cluster(self, network_id: int, name: str, lat: float, lng: float) -> int:
        async def change(uow: UnitOfWork) -> int:
            cluster_id = await store.create_cluster(uow.conn, network_id, name, lat, lng)
            await self._refresh_cluster(uow, cluster_id)
            return cluster_id

        return await self.work.run(change)

    async def rename_cluster(self, cluster_id: int, name: str) -> bool:
        """False when the cluster is unknown."""
        async def change(uow: UnitOfWork) -> bool:
            if not await store.rename_cluster(uow.conn, cluster_id, name):
                return False
            await self._refresh_cluster(uow, cluster_id)
            return True

        return await self.work.run(change)

    async def set_max_unlock_distance(self, cluster_id: int, distance: int | None) -> bool:
        """False when the cluster is unknown."""
        async def change(uow: UnitOfWork) -> bool:
            if not await store.set_max_unlock_distance(uow.conn, cluster_id, distance):
                return False
            await self._refresh_cluster(uow, cluster_id)
            return True

        return await self.work.run(change)

    async def move_cluster(self, cluster_id: int, lat: float, lng: float) -> list[int] | None:
        """Move a cluster and the parkings that follow it: their ids, or None for an unknown cluster."""
        async def change(uow: UnitOfWork) -> list[int] | None:
            moved = await store.move_cluster(uow.conn, cluster_id, lat, lng)
            if moved is None:
                return None
            await self._refresh_cluster(uow, cluster_id)
            parkings = [parking_of(r) for r in await store.parking_rows(uow.conn, moved)]
            uow.after(lambda: self.catalog.put_parkings(parkings))
            return moved

        return await self.work.run(change)
