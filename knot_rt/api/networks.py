"""Networks: all or in an area, public ones of an app label, by distance, details (ROUTES rows 63-66).

Answered from the in-memory catalog (through ``svc.catalog_service``); what a caller sees is decided by
``services.access`` only. A network the caller does not see answers 404, as an
unknown id does: its existence is not leaked.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from protocols.errors import ErrorCode

from ..catalog.memory import Area, Network
from ..context import services
from ..errors import ApiError
from ..services.access import UserAccess
from ..services.geo import Latitude, Longitude, distance_m
from ..web.auth import caller_access, label_access, require_user
from .catalog_models import ClosestNetworkOut, Degrees, NetworkOut, checked_area, network_fields, pick
from .models import Data, Lang, PageQuery

bp = Blueprint("networks", __name__, url_prefix="/api/application")

TAGS = ["Networks"]

# inputs ------------------------------------------------------------------------------


class OptionalAreaQuery(PageQuery):
    """An area given by its centre and size (``latdeg``/``lngdeg``): all four, or none."""

    lat: Latitude | None = None
    lng: Longitude | None = None
    latdeg: Degrees | None = None
    lngdeg: Degrees | None = None

    def area(self) -> Area | None:
        given = (self.lat, self.lng, self.latdeg, self.lngdeg)
        if all(value is None for value in given):
            return None
        if self.lat is None or self.lng is None or self.latdeg is None or self.lngdeg is None:
            raise ApiError(ErrorCode.INVALID_INPUT,
                           "invalid input: give lat, lng, latdeg and lngdeg together, or none of them")
        return checked_area(self.lat, self.lng, self.latdeg, self.lngdeg)


class PublicNetworksQuery(OptionalAreaQuery):
    app_label: str = Field(description="The name of the application white label calling the route.")


class ClosestNetworksQuery(PageQuery):
    lat: Latitude
    lng: Longitude
    lang: Lang = Field(description="ISO 639-1 language of the answer.")


# outputs -----------------------------------------------------------------------------


class NetworkDetailsOut(BaseModel):
    allow_trip_on_hold: bool
    max_simultaneous_rented_vehicle: int
    trip_too_long: int = Field(description="seconds")
    trip_auto_pause: int = Field(description="seconds")
    trip_max_pause: int = Field(description="seconds")
    trip_auto_lock: int = Field(description="seconds")


# helpers -----------------------------------------------------------------------------


def seen_networks(access: UserAccess, area: Area | None) -> list[Network]:
    catalog = services().catalog_service
    return catalog.networks_in(area, catalog.seen_networks(access))


def network_out(network: Network) -> NetworkOut:
    out: NetworkOut = pick(NetworkOut, network_fields(network))
    return out


# routes ------------------------------------------------------------------------------


@bp.get("/networks")
@require_user
@tag(TAGS)
@validate_querystring(OptionalAreaQuery)
@validate_response(Data[list[NetworkOut]])
async def networks(query_args: OptionalAreaQuery) -> Data[list[NetworkOut]]:
    """Return the networks the user sees: all, or those overlapping the area when one is given."""
    area = query_args.area()
    access = await caller_access()
    return Data(data=[network_out(n) for n in seen_networks(access, area)])


@bp.get("/networks/public")
@tag(TAGS)
@validate_querystring(PublicNetworksQuery)
@validate_response(Data[list[NetworkOut]])
async def public_networks(query_args: PublicNetworksQuery) -> Data[list[NetworkOut]]:
    """Return the public networks of the app label: all, or those overlapping the area when one is given."""
    area = query_args.area()
    access = await label_access(query_args.app_label)
    return Data(data=[network_out(n) for n in seen_networks(access, area)])


@bp.get("/networks/closests")
@require_user
@tag(TAGS)
@validate_querystring(ClosestNetworksQuery)
@validate_response(Data[list[ClosestNetworkOut]])
async def closest_networks(query_args: ClosestNetworksQuery) -> Data[list[ClosestNetworkOut]]:
    """Return the networks the user sees, nearest first (``distance`` in metres from the network's centre)."""
    access = await caller_access()
    placed = sorted(
        (round(distance_m(query_args.lat, query_args.lng, n.center_latitude, n.center_longitude)), n.id, n)
        for n in seen_networks(access, None)
    )
    return Data(data=[pick(ClosestNetworkOut, network_fields(n), distance=metres) for metres, _, n in placed])


@bp.get("/networks/<int:network_id>")
@require_user
@tag(TAGS)
@validate_response(Data[NetworkDetailsOut])
async def network_details(network_id: int) -> Data[NetworkDetailsOut]:
    """Return the trip rules of a network the user sees."""
    access = await caller_access()
    network = services().catalog_service.network(network_id)
    if network is None or not access.sees(network):
        raise ApiError(ErrorCode.NOT_FOUND, f"no network {network_id}")
    return Data(data=NetworkDetailsOut(
        allow_trip_on_hold=network.allow_trip_on_hold,
        max_simultaneous_rented_vehicle=network.max_simultaneous_rented_vehicle,
        trip_too_long=network.trip_too_long, trip_auto_pause=network.trip_auto_pause,
        trip_max_pause=network.trip_max_pause, trip_auto_lock=network.trip_auto_lock,
    ))
