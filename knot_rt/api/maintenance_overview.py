"""Maintenance overview of a cluster and counts of clusters (ROUTES rows 56-57), from live state.

The counts are the open maintenances the server keeps in memory (``maintenance/live.py``, fed by the
after-change hook and loaded at start); the spots' occupancy and locks are the stations' live views, the
vehicles' places their live state. One query per request at most (row 56: the static spot numbers and
mainboard ids of the cluster's stations), none per station.

``perm:maintenance`` (read) on the cluster's network: an unknown cluster answers 404/4 before rights are
looked at; a known one without the right 403/13. Row 57 checks every cluster asked the same way, in order.

Row 56's ``vehicles``: the vehicles with an open maintenance that are docked nowhere now and whose
maintenance was opened in the cluster (taken from it for repair); the docked ones are in their spots.
Row 57's counts are row 56's sums: the stations', their spots', the vehicles docked there and those
``vehicles``.
"""

from __future__ import annotations

from typing import Annotated, Any

import asyncpg
from pydantic import BaseModel, Field, field_validator
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..maintenance.live import Counts
from ..services.permissions import Scope
from ..web.auth import caller_permissions, require_user
from .models import Data, PageQuery

bp = Blueprint("maintenance_overview", __name__, url_prefix="/api/application")

TAGS = ["Maintenance"]
PERMISSION = "maintenance"
MAX_CLUSTERS = 100


class CountsOut(BaseModel):
    info_count: int
    low_count: int
    high_count: int


class OverviewSpotOut(BaseModel):
    spot_id: int
    contained_vehicle_id: int | None
    serial_number: str | None
    station_id: int
    displayed_number: int
    lock_status: int | None
    vehicle_maintenances: CountsOut
    spot_maintenances: CountsOut
    vehicle_type: str | None


class OverviewStationOut(BaseModel):
    station_id: int
    mainboard_id: int | None
    station_maintenances: CountsOut
    spots: list[OverviewSpotOut]


class OverviewVehicleOut(BaseModel):
    vehicle_id: int
    serial_number: str
    vehicle_maintenances: CountsOut
    vehicle_type: str


class OverviewOut(BaseModel):
    stations: list[OverviewStationOut]
    vehicles: list[OverviewVehicleOut]


class ClusterCountOut(BaseModel):
    cluster_id: int
    maintenances: CountsOut


class ClustersQuery(PageQuery):
    clusters: Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1, max_length=MAX_CLUSTERS)] = Field(
        description="Identifiers of the clusters (repeated: ``?clusters=1&clusters=2``)."
    )

    @field_validator("clusters", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        """The query string gives one value as itself and a repeated one as a list."""
        return value if isinstance(value, list) else [value]


async def _scope(cluster_id: int) -> Scope | None:
    """The cluster's scope from the in-memory catalog; the database for one created since its last read."""
    svc = services()
    cluster = svc.catalog.clusters.get(cluster_id)
    network = svc.catalog.networks.get(cluster.network_id) if cluster is not None else None
    if cluster is None or network is None:
        return await svc.catalog_service.cluster_scope(cluster_id)
    return Scope(network_id=network.id, cluster_id=cluster_id, organization_id=network.organization_id)


async def _check(cluster_id: int) -> None:
    scope = await _scope(cluster_id)
    if scope is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no cluster {cluster_id}")
    permissions = await caller_permissions()
    if not permissions.allows(PERMISSION, scope, write=False):
        raise ApiError(ErrorCode.NOT_ALLOWED)


async def _static(conn: asyncpg.Connection, cluster_id: int) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT s.id AS station_id, s.mainboard_id, p.id AS spot_id, p.number, p.displayed_number
           FROM stations s LEFT JOIN spots p ON p.station_id = s.id
           WHERE s.cluster_id = $1 ORDER BY s.id, p.displayed_number, p.id""",
        cluster_id,
    )


def _counts(counts: Counts) -> dict[str, int]:
    return counts.as_json()


@bp.get("/maintenances/clusters/<int:cluster_id>")
@require_user
@tag(TAGS)
@validate_response(Data[OverviewOut])
async def cluster_overview(cluster_id: int) -> Data[OverviewOut]:
    """Returns the list of spot of the cluster with the a count of all maintenances on them."""
    await _check(cluster_id)
    svc = services()
    live = svc.maintenance_live
    rows = await svc.db.run(lambda conn: _static(conn, cluster_id))
    stations: dict[int, dict[str, Any]] = {}
    for row in rows:
        station_id = row["station_id"]
        station = stations.get(station_id)
        if station is None:
            station = stations[station_id] = {
                "station_id": station_id, "mainboard_id": row["mainboard_id"],
                "station_maintenances": _counts(live.station_counts(station_id)), "spots": [],
            }
        if row["spot_id"] is None:
            continue
        view = svc.stations.live.station(station_id)
        spot = view.spot(row["number"]) if view is not None else None
        docked = svc.vehicles.docked_at(station_id).get(row["number"])
        vehicle_id = docked.vehicle_id if docked is not None else None
        facts = svc.catalog_service.vehicle(vehicle_id) if vehicle_id is not None else None
        station["spots"].append({
            "spot_id": row["spot_id"],
            "contained_vehicle_id": vehicle_id,
            "serial_number": facts.serial_number if facts is not None else None,
            "station_id": station_id,
            "displayed_number": row["displayed_number"],
            "lock_status": spot.lock if spot is not None else None,
            "vehicle_maintenances": _counts(live.vehicle_counts(vehicle_id) if vehicle_id is not None else Counts()),
            "spot_maintenances": _counts(live.spot_counts(row["spot_id"])),
            "vehicle_type": facts.vehicle_type if facts is not None else None,
        })
    vehicles = []
    for vehicle_id in live.undocked_vehicles(cluster_id):
        facts = svc.catalog_service.vehicle(vehicle_id)
        if facts is None:
            continue
        vehicles.append({
            "vehicle_id": vehicle_id, "serial_number": facts.serial_number,
            "vehicle_maintenances": _counts(live.vehicle_counts(vehicle_id)), "vehicle_type": facts.vehicle_type,
        })
    return Data(data=OverviewOut.model_validate({"stations": list(stations.values()), "vehicles": vehicles}))


@bp.get("/maintenances/clusters")
@require_user
@tag(TAGS)
@validate_querystring(ClustersQuery)
@validate_response(Data[list[ClusterCountOut]])
async def cluster_counts(query_args: ClustersQuery) -> Data[list[ClusterCountOut]]:
    """Returns the list of clusters given with the maintenance count for each cluster."""
    found = []
    live = services().maintenance_live
    for cluster_id in dict.fromkeys(query_args.clusters):
        await _check(cluster_id)
        found.append(ClusterCountOut.model_validate(
            {"cluster_id": cluster_id, "maintenances": _counts(live.cluster_counts(cluster_id))}
        ))
    return Data(data=found)
