"""Clusters: the database work of the cluster routes, and the closest clusters to a point.

Reads are answered from the in-memory catalog and the live station views; the
functions here that take a connection are asyncio-side units of work, given to
``Database.run``/``transaction`` whole. The writes are called by
``catalog_service.py`` inside a unit of work, which updates the catalog after the commit.

Virtual parkings may follow a cluster (``virtual_parkings.cluster_id``): moving
the cluster translates their shapes by the same latitude/longitude delta.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass

import asyncpg

from ..catalog import Catalog, Cluster
from .geo import distance_m
from .permissions import Scope

CLOSEST_COUNT = 20


# reads -------------------------------------------------------------------------


def closest_clusters(
    catalog: Catalog, networks: Iterable[int], lat: float, lng: float, count: int = CLOSEST_COUNT
) -> list[tuple[int, Cluster]]:
    """The ``count`` clusters of ``networks`` nearest to (lat, lng): (metres, cluster), nearest first.

    Distances are great-circle (haversine) distances; ties go to the lower id.
    ``heapq.nsmallest`` keeps only ``count`` candidates: no sort of every cluster.
    """
    allowed = set(networks)
    candidates = (
        (distance_m(lat, lng, c.latitude, c.longitude), c.id, c)
        for c in catalog.clusters.values() if c.network_id in allowed
    )
    return [(round(metres), cluster) for metres, _, cluster in heapq.nsmallest(count, candidates)]


@dataclass(frozen=True, slots=True)
class SpotFacts:
    """A spot of a cluster as the database knows it (flags are the durable truth; the rest is last known)."""

    spot_id: int
    station_id: int
    number: int
    displayed_number: int
    in_maintenance: bool
    is_accessible: bool
    vehicle_id: int | None
    station_online: bool


async def cluster_spots(conn: asyncpg.Connection, cluster_id: int) -> list[SpotFacts]:
    """The spots of every station of a cluster, by station then displayed number."""
    rows = await conn.fetch(
        """SELECT p.id, p.station_id, p.number, p.displayed_number, p.in_maintenance, p.is_accessible,
                  p.vehicle_id, s.online
           FROM spots p JOIN stations s ON s.id = p.station_id
           WHERE s.cluster_id = $1
           ORDER BY p.station_id, p.displayed_number, p.id""",
        cluster_id,
    )
    return [
        SpotFacts(r["id"], r["station_id"], r["number"], r["displayed_number"], r["in_maintenance"],
                  r["is_accessible"], r["vehicle_id"], r["online"])
        for r in rows
    ]


# scopes (for permission checks) --------------------------------------------------


async def network_scope(conn: asyncpg.Connection, network_id: int) -> Scope | None:
    row = await conn.fetchrow("SELECT id, organization_id FROM networks WHERE id = $1", network_id)
    return None if row is None else Scope(network_id=row["id"], organization_id=row["organization_id"])


async def cluster_scope(conn: asyncpg.Connection, cluster_id: int) -> Scope | None:
    row = await conn.fetchrow(
        """SELECT c.id, c.network_id, n.organization_id FROM clusters c JOIN networks n ON n.id = c.network_id
           WHERE c.id = $1""",
        cluster_id,
    )
    if row is None:
        return None
    return Scope(network_id=row["network_id"], cluster_id=row["id"], organization_id=row["organization_id"])


# writes ---------------------------------------------------------------------------


async def create_cluster(conn: asyncpg.Connection, network_id: int, name: str, lat: float, lng: float) -> int:
    cluster_id: int = await conn.fetchval(
        "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, $2, $3, $4) RETURNING id",
        network_id, name, lat, lng,
    )
    return cluster_id


async def rename_cluster(conn: asyncpg.Connection, cluster_id: int, name: str) -> bool:
    status = await conn.execute("UPDATE clusters SET name = $2 WHERE id = $1", cluster_id, name)
    return not status.endswith(" 0")


async def set_max_unlock_distance(conn: asyncpg.Connection, cluster_id: int, distance: int | None) -> bool:
    status = await conn.execute("UPDATE clusters SET max_unlock_distance = $2 WHERE id = $1", cluster_id, distance)
    return not status.endswith(" 0")


def _wrap_longitude(lng: float) -> float:
    return lng if -180.0 <= lng <= 180.0 else (lng + 180.0) % 360.0 - 180.0


def translate_shape(shape: list[list[float]], d_lat: float, d_lng: float) -> list[list[float]]:
    """A ``[[lng, lat], ...]`` shape moved by a delta (latitudes clamped to ±90, longitudes wrapped)."""
    return [
        [_wrap_longitude(point[0] + d_lng), max(-90.0, min(90.0, point[1] + d_lat)), *point[2:]]
        for point in shape
    ]


async def move_cluster(conn: asyncpg.Connection, cluster_id: int, lat: float, lng: float) -> list[int] | None:
    """Move a cluster and the parkings that follow it (inside a transaction); their ids, or None if unknown."""
    old = await conn.fetchrow("SELECT latitude, longitude FROM clusters WHERE id = $1 FOR UPDATE", cluster_id)
    if old is None:
        return None
    d_lat, d_lng = lat - old["latitude"], lng - old["longitude"]
    await conn.execute("UPDATE clusters SET latitude = $2, longitude = $3 WHERE id = $1", cluster_id, lat, lng)
    parkings = await conn.fetch(
        "SELECT id, shape FROM virtual_parkings WHERE cluster_id = $1 ORDER BY id FOR UPDATE", cluster_id
    )
    await conn.executemany(
        "UPDATE virtual_parkings SET shape = $2 WHERE id = $1",
        [(p["id"], translate_shape(p["shape"], d_lat, d_lng)) for p in parkings],
    )
    return [p["id"] for p in parkings]
