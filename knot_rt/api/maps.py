"""Map: everything a rider's map shows in an area, for a logged-in user or publicly (ROUTES rows 61-62).

The hottest read path of the API, so it is answered from memory: clusters,
networks, parkings and speed zones from the catalog (through
``svc.catalog_service``, which answers them from its memory), availability from the
station actors' live views, free-floating vehicles (with their static facts,
through the catalog) and the batteries of rented vehicles from the vehicles'
live state (``vehicles.service``, its one owner, fed by the vehicle actors).
Per request, the logged-in map reads the
database once (the caller's ongoing rents and current passes, in one query);
the caller's access comes from the access cache. Nothing is read per cluster
or per vehicle.

The body is built as plain dicts and encoded with pydantic-core's encoder:
building and validating a model per cluster and vehicle would cost more than
the rest of the request. The response models below document the shapes
(OpenAPI) and the tests hold the answers to them, field for field.

Who sees what (``services.access``): the logged-in map shows the networks the
user sees, and marks what the user may use (``cluster_is_accessible``,
``is_accessible``); the public map shows the public networks of the app label.
Privacy: a vehicle in state ``rented`` is someone's ride, so its position is
shown to its rider only; the public map shows available vehicles only (its
shape has no state).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_querystring

from actors.vehicle import VehicleView

from ..catalog.memory import Area, VehicleFacts
from ..context import services
from ..services.access import UserAccess
from ..services.geo import Latitude, Longitude
from ..web.auth import caller_access, current_caller, label_access, require_user
from .catalog_models import (
    Degrees,
    MapClusterOut,
    NetworkOut,
    OutOfOrderOut,
    PublicClusterOut,
    Shape,
    checked_area,
    cluster_fields,
    network_fields,
    out_of_order,
)
from .models import Lang, PageQuery, Positive
from .rent_models import RentOut

bp = Blueprint("maps", __name__, url_prefix="/api/application")

TAGS = ["Map"]


# inputs ------------------------------------------------------------------------------


class MapQuery(PageQuery):
    lat: Latitude
    lng: Longitude
    latdeg: Degrees
    lngdeg: Degrees
    lang: Lang = Field(default="en", description="ISO 639-1 language of the descriptions (English by default).")

    def area(self) -> Area:
        return checked_area(self.lat, self.lng, self.latdeg, self.lngdeg)


class PublicMapQuery(PageQuery):
    lat: Latitude
    lng: Longitude
    latDeg: Degrees
    lngDeg: Degrees
    network_id: Positive | None = Field(default=None, description="Only what belongs to this network.")
    lang: Lang = Field(default="en", description="ISO 639-1 language of the descriptions (English by default).")
    app_label: str = Field(description="The name of the application white label calling the route.")

    def area(self) -> Area:
        return checked_area(self.lat, self.lng, self.latDeg, self.lngDeg)


# outputs -----------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PublicVehicleOut(_Strict):
    vehicle_id: int
    serial_number: str
    latitude: float
    longitude: float
    connected: bool
    network_id: int
    battery_level: int | None = Field(description="percent; null while no reading is known")
    vehicle_type: str
    model_id: int | None
    model_name: str | None
    manufacturer: str | None


class MapVehicleOut(PublicVehicleOut):
    state: str
    is_accessible: bool
    is_available: bool
    exceptional_out_of_order: OutOfOrderOut | None
    has_freefloat_to_station_reward: bool


class PublicParkingOut(_Strict):
    virtual_parking_id: int
    cluster_id: int | None
    network_id: int
    shape: Shape = Field(description="[[longitude, latitude], ...]")


class MapParkingOut(PublicParkingOut):
    is_accessible: bool


class PassOut(_Strict):
    pass_id: int
    end_date: datetime
    in_use: bool = Field(description="the pass has started (a pass bought in advance is not in use yet)")


class SpeedZoneOut(_Strict):
    speed_zone_id: int
    shape: Shape = Field(description="[[longitude, latitude], ...]")
    max_speed: int = Field(description="km/h")


class MapOut(_Strict):
    code: int = 0
    clusters: list[MapClusterOut]
    vehicles: list[MapVehicleOut]
    parkings: list[MapParkingOut]
    rents: list[RentOut]
    passes: list[PassOut]
    networks: list[NetworkOut]
    speed_zones: list[SpeedZoneOut]


class PublicMapOut(_Strict):
    code: int = 0
    clusters: list[PublicClusterOut]
    vehicle: list[PublicVehicleOut] = Field(description="free-floating vehicles (the key is singular)")
    parkings: list[PublicParkingOut]
    networks: list[NetworkOut]
    speed_zones: list[SpeedZoneOut]


MAP_CLUSTER_KEYS = tuple(MapClusterOut.model_fields)
PUBLIC_CLUSTER_KEYS = tuple(PublicClusterOut.model_fields)
NETWORK_KEYS = tuple(NetworkOut.model_fields)


# the layers --------------------------------------------------------------------------


class _Layers:
    """What the catalog and the live views hold in one area, of the networks ``seen``.

    Clusters, vehicles, parkings and zones are filtered by the networks seen (not
    only those whose shape overlaps the area: a network's shape may be rough).
    """

    def __init__(self, area: Area, seen: set[int], lang: str, usable: set[int]) -> None:
        self.area = area
        self.ids = seen
        self.networks = services().catalog_service.networks_in(area, seen)
        self.lang = lang
        self.usable = usable

    def clusters(self, keys: tuple[str, ...], with_access: bool) -> list[dict[str, Any]]:
        svc = services()
        live = svc.stations.live
        found = []
        for cluster in svc.catalog_service.clusters_in(self.area, self.ids):
            fields = cluster_fields(cluster, live.cluster(cluster.id), self.lang)
            item = {key: fields[key] for key in keys if key in fields}
            if with_access:
                item["cluster_is_accessible"] = cluster.network_id in self.usable
            found.append(item)
        return found

    def vehicles(self) -> list[tuple[VehicleFacts, VehicleView]]:
        """Free-floating vehicles of the networks seen, by id, with their live state."""
        return services().catalog_service.free_floating_in(self.area, self.ids)

    def parkings(self, with_access: bool) -> list[dict[str, Any]]:
        found = []
        for parking in services().catalog_service.parkings_in(self.area, self.ids):  # by id
            item: dict[str, Any] = {"virtual_parking_id": parking.id, "cluster_id": parking.cluster_id,
                                    "network_id": parking.network_id, "shape": parking.shape}
            if with_access:
                item["is_accessible"] = parking.network_id in self.usable
            found.append(item)
        return found

    def speed_zones(self) -> list[dict[str, Any]]:
        return [
            {"speed_zone_id": zone.id, "shape": zone.shape, "max_speed": zone.max_speed}
            for zone in services().catalog_service.speed_zones_in(self.area, self.ids)  # by id
        ]

    def network_list(self) -> list[dict[str, Any]]:
        found = []
        for network in self.networks:
            fields = network_fields(network)
            found.append({key: fields[key] for key in NETWORK_KEYS})
        return found


def _state(facts: VehicleFacts, state: VehicleView) -> str:
    """The vehicle's state as a map shows it: ``rented`` while its actor holds a rent (live), else its row's."""
    return "rented" if state.rented else facts.state


def _is_available(facts: VehicleFacts, state: VehicleView, in_maintenance: Callable[[int], bool]) -> bool:
    """Ready to be rented: available and not rented now, not exceptionally out of order nor out of rent for
    an open ``high`` maintenance (``in_maintenance``: the vehicles service's, looked up once a request),
    battery above the auto-lock level, and for a vehicle with its own module, connected (else it cannot be
    unlocked)."""
    return (
        _state(facts, state) == "available" and facts.out_of_order is None
        and not in_maintenance(facts.id)
        and (state.battery_level is None or state.battery_level > facts.min_battery_to_auto_lock)
        and (state.connected or not state.has_module)
    )


def _public_vehicle(facts: VehicleFacts, state: VehicleView) -> dict[str, Any]:
    return {
        "vehicle_id": facts.id,
        "serial_number": facts.serial_number,
        "latitude": state.latitude,
        "longitude": state.longitude,
        "connected": state.online,
        "network_id": facts.network_id,
        "battery_level": state.battery_level,
        "vehicle_type": facts.vehicle_type,
        "model_id": facts.model_id,
        "model_name": facts.model_name,
        "manufacturer": facts.manufacturer,
    }


def _map_vehicle(facts: VehicleFacts, state: VehicleView, usable: set[int],
                 in_maintenance: Callable[[int], bool]) -> dict[str, Any]:
    return {
        **_public_vehicle(facts, state),
        "state": _state(facts, state),
        "is_accessible": facts.network_id in usable,
        "is_available": _is_available(facts, state, in_maintenance),
        "exceptional_out_of_order": out_of_order(facts.out_of_order),
        "has_freefloat_to_station_reward": facts.has_freefloat_to_station_reward,
    }


def _json(body: dict[str, Any]) -> Response:
    return Response(to_json(body), mimetype="application/json")


def _usable(access: UserAccess, seen: set[int]) -> set[int]:
    catalog = services().catalog_service
    return {n for n in seen if (network := catalog.network(n)) is not None and access.may_use(network)}


# routes ------------------------------------------------------------------------------


@bp.get("/map")
@require_user
@tag(TAGS)
@validate_querystring(MapQuery)
@document_response(MapOut)
async def user_map(query_args: MapQuery) -> Response:
    """Return clusters, free floating vehicles, user's rents and passes and virtual parking."""
    area = query_args.area()
    svc = services()
    access = await caller_access()
    user_id = current_caller().user_id
    rents, passes = await svc.rents.for_map(user_id)
    mine = {rent["vehicle_id"] for rent in rents}
    seen = svc.catalog_service.seen_networks(access)
    layers = _Layers(area, seen, query_args.lang.lower(), _usable(access, seen))
    in_maintenance = svc.vehicles.in_maintenance
    return _json({
        "code": 0,
        "clusters": layers.clusters(MAP_CLUSTER_KEYS, with_access=True),
        "vehicles": [
            _map_vehicle(facts, state, layers.usable, in_maintenance) for facts, state in layers.vehicles()
            if _state(facts, state) != "rented" or facts.id in mine
        ],
        "parkings": layers.parkings(with_access=True),
        "rents": rents,
        "passes": passes,
        "networks": layers.network_list(),
        "speed_zones": layers.speed_zones(),
    })


@bp.get("/map/public")
@tag(TAGS)
@validate_querystring(PublicMapQuery)
@document_response(PublicMapOut)
async def public_map(query_args: PublicMapQuery) -> Response:
    """Return clusters, free floating vehicles and virtual parking publicly visible."""
    area = query_args.area()
    access = await label_access(query_args.app_label)
    seen = services().catalog_service.seen_networks(access)
    if query_args.network_id is not None:
        seen &= {query_args.network_id}
    layers = _Layers(area, seen, query_args.lang.lower(), set())
    in_maintenance = services().vehicles.in_maintenance
    return _json({
        "code": 0,
        "clusters": layers.clusters(PUBLIC_CLUSTER_KEYS, with_access=False),
        "vehicle": [_public_vehicle(facts, state) for facts, state in layers.vehicles()
                    if _is_available(facts, state, in_maintenance)],
        "parkings": layers.parkings(with_access=False),
        "networks": layers.network_list(),
        "speed_zones": layers.speed_zones(),
    })
