"""The catalog's service: the entry point of the catalog's routes (clusters, map, discounts, countries).

Reads of the catalog's rows that the in-memory catalog does not hold (spots,
scopes, the caller's rents and passes, discounts, countries) are SQL in
``catalog_store.py`` / ``services/clusters.py`` / ``services/countries.py``, run here.

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
  (``Catalog.run``, every ``catalog_refresh_seconds``).
- The catalog applies the update under its reload lock (``Catalog.put_cluster``),
  so a reload that read an older snapshot cannot overwrite a committed change.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date

import asyncpg

from . import catalog_store as store
from .catalog import CLUSTER_QUERY, Catalog, Cluster, Parking, cluster_of
from .db import Database
from .services import clusters as sql
from .services.clusters import SpotFacts
from .services.countries import country_by_iso_2
from .services.permissions import Scope
from .uow import UnitOfWork, Work


class CatalogService:
    """Cluster writes through units of work, with targeted catalog updates; the routes' database reads."""

    def __init__(self, db: Database, work: Work, catalog: Catalog) -> None:
        self.db = db
        self.work = work
        self.catalog = catalog

    # reads -----------------------------------------------------------------------------

    async def network_scope(self, network_id: int) -> Scope | None:
        return await self.db.run(lambda conn: sql.network_scope(conn, network_id))

    async def cluster_scope(self, cluster_id: int) -> Scope | None:
        return await self.db.run(lambda conn: sql.cluster_scope(conn, cluster_id))

    async def cluster_spots(self, cluster_id: int) -> list[SpotFacts]:
        return await self.db.run(lambda conn: sql.cluster_spots(conn, cluster_id))

    async def rents_and_passes(self, user_id: int) -> list[asyncpg.Record]:
        """The caller's open rents and current passes (rows of ``catalog_store.RENTS_AND_PASSES``)."""
        return await self.db.run(lambda conn: store.rents_and_passes(conn, user_id))

    async def user_discounts(self, user_id: int) -> list[asyncpg.Record]:
        return await self.db.run(lambda conn: store.user_discounts(conn, user_id))

    async def shop_discounts(self, user_id: int, lat: float, lng: float, on: date) -> list[asyncpg.Record]:
        return await self.db.run(lambda conn: store.shop_discounts(conn, user_id, lat, lng, on))

    async def use_code(self, user_id: int, code: str, lat: float, lng: float, on: date) -> asyncpg.Record:
        """Redeem a discount code in one unit of work (``ApiError`` for a refused code: nothing is written)."""
        return await self.work.run(lambda uow: store.use_code(uow.conn, user_id, code, lat, lng, on))

    async def country(self, iso_2: str) -> asyncpg.Record | None:
        """The country of an ISO 3166-1 alpha-2 code, or None."""
        return await self.db.run(lambda conn: country_by_iso_2(conn, iso_2))

    def closest_clusters(self, networks: Iterable[int], lat: float, lng: float) -> list[tuple[int, Cluster]]:
        return sql.closest_clusters(self.catalog, networks, lat, lng)

    # writes ----------------------------------------------------------------------------

    async def _refresh_cluster(self, uow: UnitOfWork, cluster_id: int) -> None:
        """Read the cluster again in this transaction; put it in the catalog once committed."""
        row = await uow.conn.fetchrow(CLUSTER_QUERY + " WHERE c.id = $1", cluster_id)
        if row is not None:
            cluster = cluster_of(row)
            uow.after(lambda: self.catalog.put_cluster(cluster))

    async def create_cluster(self, network_id: int, name: str, lat: float, lng: float) -> int:
        async def change(uow: UnitOfWork) -> int:
            cluster_id = await sql.create_cluster(uow.conn, network_id, name, lat, lng)
            await self._refresh_cluster(uow, cluster_id)
            return cluster_id

        return await self.work.run(change)

    async def rename_cluster(self, cluster_id: int, name: str) -> bool:
        """False when the cluster is unknown."""
        async def change(uow: UnitOfWork) -> bool:
            if not await sql.rename_cluster(uow.conn, cluster_id, name):
                return False
            await self._refresh_cluster(uow, cluster_id)
            return True

        return await self.work.run(change)

    async def set_max_unlock_distance(self, cluster_id: int, distance: int | None) -> bool:
        """False when the cluster is unknown."""
        async def change(uow: UnitOfWork) -> bool:
            if not await sql.set_max_unlock_distance(uow.conn, cluster_id, distance):
                return False
            await self._refresh_cluster(uow, cluster_id)
            return True

        return await self.work.run(change)

    async def move_cluster(self, cluster_id: int, lat: float, lng: float) -> list[int] | None:
        """Move a cluster and the parkings that follow it: their ids, or None for an unknown cluster."""
        async def change(uow: UnitOfWork) -> list[int] | None:
            moved = await sql.move_cluster(uow.conn, cluster_id, lat, lng)
            if moved is None:
                return None
            await self._refresh_cluster(uow, cluster_id)
            rows = await uow.conn.fetch(
                "SELECT id, network_id, cluster_id, shape FROM virtual_parkings WHERE id = ANY($1::int[])", moved
            )
            parkings = [Parking(r["id"], r["network_id"], r["cluster_id"], r["shape"]) for r in rows]
            uow.after(lambda: self.catalog.put_parkings(parkings))
            return moved

        return await self.work.run(change)
