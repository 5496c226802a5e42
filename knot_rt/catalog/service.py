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

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import date
from decimal import Decimal
from typing import TypeVar

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
)
from .store import SpotFacts

T = TypeVar("T")


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

    def may_end_trip(self, network_id: int, lat: float, lng: float) -> bool:
        """Whether a free-floating trip of the network may end at (lat, lng): inside its area (a network
        whose shape is empty has no area limit) and, when it has virtual parkings, inside one of them."""
        return self.catalog.may_end_trip(network_id, lat, lng)

    def speed_limit_at(self, network_id: int, lat: float, lng: float) -> int:
        """The lowest ``max_speed`` (km/h) of the network's speed zones that cover (lat, lng); 0 for none."""
        return self.catalog.speed_limit_at(network_id, lat, lng)

    def limit_at(self, network_id: int, latitude: float, longitude: float) -> int:
        """``speed_limit_at`` under the name the vehicle actors' ``SpeedZones`` asks for: hand this
        service to ``vehicle_factory(zones=...)``."""
        return self.catalog.speed_limit_at(network_id, latitude, longitude)

    # reads from the database -------------------------------------------------------------

    async def network_scope(self, network_id: int) -> Scope | None:
        return await self.db.run(lambda conn: store.network_scope(conn, network_id))

    async def cluster_scope(self, cluster_id: int) -> Scope | None:
        return await self.db.run(lambda conn: store.cluster_scope(conn, cluster_id))

    async def cluster_spots(self, cluster_id: int) -> list[SpotFacts]:
        return await self.db.run(lambda conn: store.cluster_spots(conn, cluster_id))

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

    async def create_cluster(
        self, network_id: int, name: str, lat: float, lng: float, *, details: Mapping[str, object] | None = None
    ) -> int:
        """A cluster of the network; ``details`` sets more of its columns (``store.CLUSTER_DETAILS``)."""
        async def change(uow: UnitOfWork) -> int:
            cluster_id = await store.create_cluster(uow.conn, network_id, name, lat, lng)
            await store.set_cluster_details(uow.conn, cluster_id, details or {})
            await self._refresh_cluster(uow, cluster_id)
            return cluster_id

        return await self.work.run(change)

    async def _update_cluster(self, cluster_id: int, update: Callable[[asyncpg.Connection], Awaitable[bool]]) -> bool:
        """Run a store update of one cluster row (False: no such row) and refresh the cluster when it found one."""
        async def change(uow: UnitOfWork) -> bool:
            if not await update(uow.conn):
                return False
            await self._refresh_cluster(uow, cluster_id)
            return True

        return await self.work.run(change)

    async def rename_cluster(self, cluster_id: int, name: str) -> bool:
        """False when the cluster is unknown."""
        return await self._update_cluster(cluster_id, lambda conn: store.rename_cluster(conn, cluster_id, name))

    async def set_max_unlock_distance(self, cluster_id: int, distance: int | None) -> bool:
        """False when the cluster is unknown."""
        return await self._update_cluster(
            cluster_id, lambda conn: store.set_max_unlock_distance(conn, cluster_id, distance)
        )

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

    # operators' writes of what the map shows. A network, a parking or a zone is rare: the catalog is read
    # again whole after the commit (one full read, as the periodic refresh does) rather than patched.

    async def _write_and_reload(self, write: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        async def change(uow: UnitOfWork) -> T:
            result = await write(uow.conn)
            uow.after(self.catalog.reload)
            return result

        return await self.work.run(change)

    async def create_network(
        self, name: str, *, organization_id: int | None = None, public: bool = True, organization_only: bool = False,
        shape: list[list[float]] | None = None, center: tuple[float, float] = (0.0, 0.0), currency: str = "EUR",
        app_labels: Sequence[int] = (), rules: Mapping[str, object] | None = None,
    ) -> int:
        """A network shown in the apps of ``app_labels``; ``rules`` sets its trip rules
        (``store.NETWORK_RULES``; others are ``INVALID_INPUT``)."""
        async def write(conn: asyncpg.Connection) -> int:
            network_id = await store.create_network(
                conn, name, organization_id=organization_id, public=public, organization_only=organization_only,
                shape=shape or [], center=center, currency=currency, rules=rules or {},
            )
            for label in app_labels:
                await store.link_app_label(conn, network_id, label)
            return network_id

        return await self._write_and_reload(write)

    async def link_app_label(self, network_id: int, app_label_id: int) -> None:
        """Show the network in one more app."""
        await self._write_and_reload(lambda conn: store.link_app_label(conn, network_id, app_label_id))

    async def create_out_of_order(self, kind: str, reason: str, custom_reason: str | None = None) -> int:
        """An exceptional out-of-order notice (weather, event, maintenance, other) to put on clusters or vehicles."""
        return await self.work.run(lambda uow: store.create_out_of_order(uow.conn, kind, reason, custom_reason))

    async def create_parking(self, network_id: int, cluster_id: int | None, shape: list[list[float]]) -> int:
        """A virtual parking; with a cluster, it follows the cluster when that moves."""
        return await self._write_and_reload(lambda conn: store.create_parking(conn, network_id, cluster_id, shape))

    async def create_speed_zone(self, network_id: int, shape: list[list[float]], max_speed: int) -> int:
        return await self._write_and_reload(lambda conn: store.create_speed_zone(conn, network_id, shape, max_speed))

    async def create_discount(
        self, name: str, discount_type: str, *, kind: int = 1, stop_date: date | None = None, code: str | None = None,
        data: Decimal = Decimal(0), currency: str = "EUR", network_id: int | None = None, usable_in_shop: bool = False,
    ) -> int:
        """A discount riders redeem by ``code`` (or that is granted); not in the in-memory catalog."""
        return await self.work.run(lambda uow: store.create_discount(
            uow.conn, name, discount_type, kind=kind, stop_date=stop_date, code=code, data=data, currency=currency,
            network_id=network_id, usable_in_shop=usable_in_shop,
        ))

    async def grant_discount(self, user_id: int, discount_id: int, *, active: bool = True) -> None:
        """Give a discount to a user (an inactive grant is listed but not applied)."""
        await self.work.run(lambda uow: store.grant_discount(uow.conn, user_id, discount_id, active=active))
