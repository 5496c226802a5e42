"""Clusters: areas, closest, details, spots, vehicles, and the operators' writes (ROUTES rows 11-20).

Reads come from the in-memory catalog (through ``svc.catalog_service``) and the
live station side (``svc.stations.live``): no database query per cluster. What a caller
sees and may use is decided by ``services.access`` only. A cluster the caller
does not see answers 404, exactly as an unknown id: its existence is not leaked.

Writes need ``perm:clusters`` with ``write`` on an OU covering the cluster (or,
to create one, the network). An unknown cluster or network answers 404 before
rights are looked at (as the station routes do); a known one without the right
answers 403 + code 13. Each write goes through ``svc.catalog_service``: one
unit of work, then a targeted update of the in-memory catalog before answering.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from pydantic import BaseModel, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from actors.vehicle import VehicleView
from protocols.errors import ErrorCode

from ..catalog.memory import Cluster, Network
from ..catalog.service import CatalogService
from ..context import services
from ..errors import ApiError
from ..services.access import UserAccess, unknown_cluster
from ..services.geo import Latitude, Longitude
from ..services.permissions import Scope
from ..web.auth import caller_access, caller_permissions, label_access, require_user
from .catalog_models import (
    AreaQuery,
    ClosestClusterOut,
    ClusterOut,
    PublicClusterOut,
    cluster_fields,
    pick,
)
from .models import Body, Data, Lang, Ok, PageQuery, Positive

bp = Blueprint("clusters", __name__, url_prefix="/api/application")

R = TypeVar("R")

TAGS = ["Clusters"]
PERMISSION = "clusters"

ClusterName = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50),
    Field(description="Display name of the cluster (1 to 50 characters)."),
]


# inputs --------------------------------------------------------------------------------


class LangQuery(PageQuery):
    lang: Lang = Field(default="en", description="ISO 639-1 language of the description (English by default).")


class ClosestQuery(PageQuery):
    lat: Latitude
    lng: Longitude


class PublicAreaQuery(AreaQuery):
    network_id: Positive | None = Field(default=None, description="Only the public clusters of this network.")
    app_label: str = Field(description="The name of the application white label calling the route.")


class CreateClusterBody(Body):
    lat: Latitude
    lng: Longitude
    name: ClusterName
    network_id: Positive


class RenameClusterBody(Body):
    name: ClusterName


class MoveClusterBody(Body):
    lat: Latitude
    lng: Longitude


class MaxUnlockDistanceBody(Body):
    new_distance: Annotated[int, Field(ge=10, le=1000)] | None = Field(
        description="New max unlock distance in metres (10 to 1000), or null for none."
    )


# outputs ---------------------------------------------------------------------------------


class ClusterSpotOut(BaseModel):
    spot_id: int
    station_id: int
    displayed_number: int
    in_maintenance: bool
    is_accessible: bool


class ClusterVehicleOut(BaseModel):
    vehicle_id: int
    serial_number: str
    battery_level: int | None = Field(description="percent; null while no reading is known")
    avg_max_range: int
    vehicle_type: str
    vehicle_online: bool
    spot_id: int
    station_id: int
    displayed_number: int
    in_maintenance: bool
    is_accessible: bool
    model_id: int | None
    model_name: str | None
    manufacturer: str | None


class MovedParkings(BaseModel):
    parkings: list[int] = Field(description="The virtual parkings that followed the cluster.")


# helpers -----------------------------------------------------------------------------------


class _Usable:
    """``access.may_use`` per network, computed once per request."""

    def __init__(self, access: UserAccess, catalog: CatalogService) -> None:
        self._access = access
        self._catalog = catalog
        self._known: dict[int, bool] = {}

    def __call__(self, network_id: int) -> bool:
        found = self._known.get(network_id)
        if found is None:
            network: Network | None = self._catalog.network(network_id)
            found = self._known[network_id] = network is not None and self._access.may_use(network)
        return found


async def _seen_cluster(cluster_id: int) -> tuple[Cluster, UserAccess]:
    """A cluster the caller sees; 404 for unknown and unseen ones alike."""
    access = await caller_access()
    cluster = services().catalog_service.seen_cluster(access, cluster_id)
    if cluster is None:
        raise ApiError(ErrorCode.NOT_FOUND, unknown_cluster(cluster_id))
    return cluster, access


async def _check_write(scope: Scope | None, what: str) -> None:
    if scope is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no {what}")
    permissions = await caller_permissions()
    if not permissions.allows(PERMISSION, scope, write=True):
        raise ApiError(ErrorCode.NOT_ALLOWED)


async def _write_cluster(cluster_id: int, write: Callable[[CatalogService], Awaitable[R | None]]) -> R:
    """Check the caller may write the cluster, then run the write; its answer.

    The write answers None or False for a cluster gone since the check: 404 like an unknown one.
    """
    catalog = services().catalog_service
    await _check_write(await catalog.cluster_scope(cluster_id), f"cluster {cluster_id}")
    result = await write(catalog)
    if result is None or result is False:
        raise ApiError(ErrorCode.NOT_FOUND, f"no cluster {cluster_id}")
    return result


# reads ----------------------------------------------------------------------------------------


@bp.get("/clusters/areas")
@require_user
@tag(TAGS)
@validate_querystring(AreaQuery)
@validate_response(Data[list[ClusterOut]])
async def clusters_in_area(query_args: AreaQuery) -> Data[list[ClusterOut]]:
    """Return clusters accessible by the user on a given area."""
    area = query_args.area()
    svc = services()
    access = await caller_access()
    usable = _Usable(access, svc.catalog_service)
    lang = query_args.lang.lower()
    live = svc.stations.live
    return Data(data=[
        pick(ClusterOut, cluster_fields(c, live.cluster(c.id), lang), cluster_is_accessible=usable(c.network_id))
        for c in svc.catalog_service.clusters_in(area, svc.catalog_service.seen_networks(access))
    ])


@bp.get("/clusters/closests")
@require_user
@tag(TAGS)
@validate_querystring(ClosestQuery)
@validate_response(Data[list[ClosestClusterOut]])
async def closest_clusters(query_args: ClosestQuery) -> Data[list[ClosestClusterOut]]:
    """Return the 20 closest clusters the user sees, nearest first (``distance`` in metres)."""
    svc = services()
    access = await caller_access()
    usable = _Usable(access, svc.catalog_service)
    live = svc.stations.live
    found = svc.catalog_service.closest_clusters(
        svc.catalog_service.seen_networks(access), query_args.lat, query_args.lng
    )
    return Data(data=[
        pick(ClosestClusterOut, cluster_fields(c, live.cluster(c.id), "en"), distance=metres,
             cluster_is_accessible=usable(c.network_id))
        for metres, c in found
    ])


@bp.get("/clusters/areas/public")
@tag(TAGS)
@validate_querystring(PublicAreaQuery)
@validate_response(Data[list[PublicClusterOut]])
async def public_clusters_in_area(query_args: PublicAreaQuery) -> Data[list[PublicClusterOut]]:
    """Return clusters accessible by anyone on a given area (the public networks of the app label)."""
    area = query_args.area()
    svc = services()
    seen = svc.catalog_service.seen_networks(await label_access(query_args.app_label))
    if query_args.network_id is not None:
        seen &= {query_args.network_id}
    lang = query_args.lang.lower()
    live = svc.stations.live
    return Data(data=[
        pick(PublicClusterOut, cluster_fields(c, live.cluster(c.id), lang)) for c in svc.catalog_service.clusters_in(area, seen)
    ])


@bp.get("/clusters/<int:cluster_id>")
@require_user
@tag(TAGS)
@validate_querystring(LangQuery)
@validate_response(Data[ClusterOut])
async def cluster_details(cluster_id: int, query_args: LangQuery) -> Data[ClusterOut]:
    """Return the details of a cluster (404 for a cluster the user does not see)."""
    cluster, access = await _seen_cluster(cluster_id)
    svc = services()
    fields = cluster_fields(cluster, svc.stations.live.cluster(cluster.id), query_args.lang.lower())
    usable = _Usable(access, svc.catalog_service)
    return Data(data=pick(ClusterOut, fields, cluster_is_accessible=usable(cluster.network_id)))


@bp.get("/clusters/<int:cluster_id>/spots")
@require_user
@tag(TAGS)
@validate_response(Data[list[ClusterSpotOut]])
async def cluster_spots(cluster_id: int) -> Data[list[ClusterSpotOut]]:
    """Return the spots of a cluster, by station then number.

    ``is_accessible``: the spot is open to riders and the user may use the cluster's network.
    """
    cluster, access = await _seen_cluster(cluster_id)
    svc = services()
    usable = _Usable(access, svc.catalog_service)(cluster.network_id)
    spots = await svc.catalog_service.cluster_spots(cluster_id)
    return Data(data=[
        ClusterSpotOut(spot_id=s.spot_id, station_id=s.station_id, displayed_number=s.displayed_number,
                       in_maintenance=s.in_maintenance, is_accessible=s.is_accessible and usable)
        for s in spots
    ])


@bp.get("/clusters/<int:cluster_id>/vehicles")
@require_user
@tag(TAGS)
@validate_response(Data[list[ClusterVehicleOut]])
async def cluster_vehicles(cluster_id: int) -> Data[list[ClusterVehicleOut]]:
    """Return the vehicles docked in the cluster's stations now, by station then spot number.

    Occupancy, online state and batteries are the live ones (the station's views); a
    station without a live view (never connected since start) answers its last known
    state. Vehicles the catalog does not know (unreadable or unregistered ids) are left out.
    """
    # (The docstring is the OpenAPI description, kept as it was.) Where each vehicle is docked,
    # whether it is online and its battery are its live state (``svc.vehicles``): the vehicle
    # actors take a station's report before it is answered; the last saved state until then.
    cluster, access = await _seen_cluster(cluster_id)
    svc = services()
    usable = _Usable(access, svc.catalog_service)(cluster.network_id)
    spots = await svc.catalog_service.cluster_spots(cluster_id)
    docked: dict[int, dict[int, VehicleView]] = {}
    found: list[ClusterVehicleOut] = []
    for spot in spots:
        if spot.station_id not in docked:
            docked[spot.station_id] = svc.vehicles.docked_at(spot.station_id)
        state = docked[spot.station_id].get(spot.number)
        facts = svc.catalog_service.vehicle(state.vehicle_id) if state is not None else None
        if state is None or facts is None:
            continue
        found.append(ClusterVehicleOut(
            vehicle_id=facts.id, serial_number=facts.serial_number, battery_level=state.battery_level,
            avg_max_range=facts.avg_max_range, vehicle_type=facts.vehicle_type, vehicle_online=state.online,
            spot_id=spot.spot_id, station_id=spot.station_id, displayed_number=spot.displayed_number,
            in_maintenance=spot.in_maintenance, is_accessible=spot.is_accessible and usable,
            model_id=facts.model_id, model_name=facts.model_name, manufacturer=facts.manufacturer,
        ))
    return Data(data=found)


# writes ----------------------------------------------------------------------------------------


@bp.post("/clusters")
@require_user
@tag(TAGS)
@validate_request(CreateClusterBody)
@validate_response(Ok)
async def create_cluster(data: CreateClusterBody) -> Ok:
    """Create a new cluster (``perm:clusters`` write on the network)."""
    svc = services()
    scope = await svc.catalog_service.network_scope(data.network_id)
    await _check_write(scope, f"network {data.network_id}")
    await svc.catalog_service.create_cluster(data.network_id, data.name, data.lat, data.lng)
    return Ok()


@bp.put("/clusters/<int:cluster_id>/name")
@require_user
@tag(TAGS)
@validate_request(RenameClusterBody)
@validate_response(Ok)
async def rename_cluster(cluster_id: int, data: RenameClusterBody) -> Ok:
    """Update the cluster name (``perm:clusters`` write)."""
    await _write_cluster(cluster_id, lambda catalog: catalog.rename_cluster(cluster_id, data.name))
    return Ok()


@bp.put("/clusters/<int:cluster_id>/location")
@require_user
@tag(TAGS)
@validate_request(MoveClusterBody)
@validate_response(Data[MovedParkings])
async def move_cluster(cluster_id: int, data: MoveClusterBody) -> Data[MovedParkings]:
    """Move a cluster to a new location; the virtual parkings that follow it move by the same delta."""
    parkings = await _write_cluster(cluster_id, lambda catalog: catalog.move_cluster(cluster_id, data.lat, data.lng))
    return Data(data=MovedParkings(parkings=parkings))


@bp.put("/clusters/<int:cluster_id>/max-unlock-distance")
@require_user
@tag(TAGS)
@validate_request(MaxUnlockDistanceBody)
@validate_response(Ok)
async def set_max_unlock_distance(cluster_id: int, data: MaxUnlockDistanceBody) -> Ok:
    """Update the max unlock distance for a specific cluster (10 to 1000 metres, or null)."""
    await _write_cluster(cluster_id, lambda catalog: catalog.set_max_unlock_distance(cluster_id, data.new_distance))
    return Ok()
