"""Shapes of clusters and networks as the spec returns them, built from the catalog and live state.

Each route of the spec returns a slightly different set of cluster fields; the
models below are those sets, and ``cluster_fields`` fills any of them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from protocols.errors import ErrorCode

from ..catalog.memory import Area, Cluster, Network, OutOfOrder
from ..errors import ApiError
from ..services.geo import Latitude, Longitude
from ..stations.live import ClusterAvailability
from .models import PageQuery

Shape = list[list[float]]

MAX_AREA_DEGREES = 2.0  # a bigger box is refused: ask for a smaller area or zoom in

Degrees = Annotated[
    float,
    Field(allow_inf_nan=False, json_schema_extra={"minimum": 0},
          description="Size of the area in degrees (>= 0, at most 2)."),
]


class OutOfOrderOut(BaseModel):
    exceptional_out_of_order_id: int
    type: str
    reason: str
    custom_reason: str | None


def out_of_order(value: OutOfOrder | None) -> OutOfOrderOut | None:
    return None if value is None else OutOfOrderOut(**value.as_json())


class _ClusterCore(BaseModel):
    """The fields every cluster shape has."""

    model_config = ConfigDict(extra="forbid")

    cluster_id: int
    latitude: float
    longitude: float
    name: str
    available_vehicles: int
    total_spots: int
    free_spots: int
    cluster_is_down: bool
    network_id: int


class PublicClusterOut(_ClusterCore):
    """Clusters of the public routes (public areas, public map)."""

    soon_to_be_available: bool
    commissioning_date: datetime | None
    exceptional_out_of_order: OutOfOrderOut | None
    description: str | None


class MapClusterOut(PublicClusterOut):
    """Clusters of the logged-in map."""

    cluster_is_accessible: bool
    has_badge_reader: bool


class ClusterOut(MapClusterOut):
    """Clusters in an area, and cluster details."""

    balancing_type: str


class ClosestClusterOut(_ClusterCore):
    cluster_is_accessible: bool
    distance: int = Field(description="metres")
    has_badge_reader: bool


def cluster_fields(cluster: Cluster, live: ClusterAvailability, lang: str) -> dict[str, Any]:
    """Every field any cluster shape may need (models keep the ones they declare)."""
    return {
        "cluster_id": cluster.id,
        "latitude": cluster.latitude,
        "longitude": cluster.longitude,
        "name": cluster.name,
        **live.as_json(),
        "network_id": cluster.network_id,
        "soon_to_be_available": cluster.soon_to_be_available,
        "commissioning_date": cluster.commissioning_date,
        "exceptional_out_of_order": out_of_order(cluster.out_of_order),
        "description": cluster.describe(lang),
        "has_badge_reader": cluster.has_badge_reader,
        "balancing_type": cluster.balancing_type,
    }


def pick(model: type[BaseModel], fields: dict[str, Any], **extra: Any) -> Any:
    """Build ``model`` from the fields it declares."""
    merged = {**fields, **extra}
    return model(**{name: merged[name] for name in model.model_fields if name in merged})


class NetworkOut(BaseModel):
    network_id: int
    name: str
    shape: Shape
    center_latitude: float
    center_longitude: float
    currency: str
    max_simultaneous_rented_vehicle: int


class ClosestNetworkOut(NetworkOut):
    distance: int = Field(description="metres")
    min_guarantee: float
    max_guarantee: float
    exceptional_out_of_order: OutOfOrderOut | None


def network_fields(network: Network) -> dict[str, Any]:
    return {
        "network_id": network.id,
        "name": network.name,
        "shape": network.shape,
        "center_latitude": network.center_latitude,
        "center_longitude": network.center_longitude,
        "currency": network.currency,
        "max_simultaneous_rented_vehicle": network.max_simultaneous_rented_vehicle,
        "min_guarantee": network.min_guarantee,
        "max_guarantee": network.max_guarantee,
        "exceptional_out_of_order": out_of_order(network.out_of_order),
    }


class AreaQuery(PageQuery):
    """An area as the spec's cluster routes give it (``latDeg``/``lngDeg``)."""

    lat: Latitude
    lng: Longitude
    latDeg: Annotated[float, Field(ge=-90, le=90)]
    lngDeg: Annotated[float, Field(ge=-180, le=180)]
    lang: Annotated[str, Field(pattern=r"^[a-zA-Z]{2}$")] = "en"

    def area(self) -> Area:
        return checked_area(self.lat, self.lng, self.latDeg, self.lngDeg)


def checked_area(lat: float, lng: float, lat_deg: float, lng_deg: float) -> Area:
    """An area, refusing reversed (negative) and oversized boxes with a clear message."""
    if lat_deg < 0 or lng_deg < 0:
        raise ApiError(ErrorCode.INVALID_INPUT, "invalid input: latDeg and lngDeg are sizes and cannot be negative")
    if lat_deg > MAX_AREA_DEGREES or lng_deg > MAX_AREA_DEGREES:
        raise ApiError(
            ErrorCode.INVALID_INPUT,
            f"invalid input: the area is too large (at most {MAX_AREA_DEGREES} degrees each way)",
        )
    return Area(lat, lng, lat_deg, lng_deg)
