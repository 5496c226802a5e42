"""Operator routes of stations: live state and remote commands (``perm:stations``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from actors.station import StationView
from protocols import station as wire
from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.permissions import STATION_READERS
from ..web.auth import caller_permissions, require_user
from .models import Body, Data, Ok, Positive

bp = Blueprint("stations", __name__, url_prefix="/api/application")

SpotNumber = Annotated[int, Field(ge=1, le=32)]

async def _check(station_id: int, keys: tuple[str, ...], *, write: bool) -> None:
    """The caller holds one of ``keys`` on the station's network (404 first: unknown ids tell nothing more)."""
    scope = await services().stations.scope(station_id)
    if scope is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    permissions = await caller_permissions()
    if not permissions.allows_any(keys, scope, write=write):
        raise ApiError(ErrorCode.NOT_ALLOWED)


# unlock ----------------------------------------------------------------------


class AdminUnlockBody(Body):
    station_id: Positive
    spot: SpotNumber


class UnlockAnswer(BaseModel):
    station_id: int
    spot: int
    unlock: int


@bp.post("/spots/unlock/admin")
@require_user
@tag(["Stations"])
@validate_request(AdminUnlockBody)
@validate_response(Data[UnlockAnswer])
async def unlock_spot(data: AdminUnlockBody) -> Data[UnlockAnswer]:
    """Operator: unlock a spot; answers when the station accepted, with the ``unlock`` id."""
    await _check(data.station_id, ("stations",), write=True)
    unlock = await services().stations.unlock(data.station_id, data.spot)
    return Data(data=UnlockAnswer(station_id=data.station_id, spot=data.spot, unlock=unlock))


# live state ---------------------------------------------------------------------


class SpotOut(BaseModel):
    spot_id: int
    spot: int
    vehicle: int | None
    lock: int | None
    in_maintenance: bool
    is_accessible: bool


class VehicleOut(BaseModel):
    vehicle: int
    voltage: int
    battery: int | None


class StationOut(BaseModel):
    station_id: int
    cluster_id: int
    enabled: bool
    online: bool
    last_seen: int | None = Field(description="epoch milliseconds")
    mainboard: dict[str, Any] | None
    connectivity: dict[str, Any] | None
    firmware: dict[str, Any] | None
    spots: list[SpotOut]
    vehicles: list[VehicleOut]


def station_out(view: StationView) -> StationOut:
    return StationOut(
        station_id=view.station_id, cluster_id=view.cluster_id, enabled=view.enabled, online=view.online,
        last_seen=view.last_seen_ms, mainboard=view.mainboard, connectivity=view.connectivity,
        firmware=view.firmware,
        spots=[SpotOut(spot_id=s.spot_id, spot=s.number, vehicle=s.vehicle, lock=s.lock,
                       in_maintenance=s.in_maintenance, is_accessible=s.is_accessible) for s in view.spots],
        vehicles=[VehicleOut(vehicle=v.vehicle, voltage=v.voltage, battery=v.battery) for v in view.vehicles],
    )


@bp.get("/stations/<int:station_id>")
@require_user
@tag(["Stations"])
@validate_response(Data[StationOut])
async def station_details(station_id: int) -> Data[StationOut]:
    """Operator: a station with its live state."""
    await _check(station_id, STATION_READERS, write=False)
    view = await services().stations.view(station_id)
    if view is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    return Data(data=station_out(view))


# commands -----------------------------------------------------------------------


async def _command(station_id: int, action: wire.Action, payload: wire.Payload) -> Ok:
    """Send an operator's command to a station, once the caller may write its stations."""
    await _check(station_id, ("stations",), write=True)
    await services().stations.command(station_id, action, payload)
    return Ok()


@bp.post("/stations/<int:station_id>/ping")
@require_user
@tag(["Stations"])
@validate_response(Ok)
async def ping_station(station_id: int) -> Ok:
    """Operator: ping a station (it answers, then reports its state)."""
    return await _command(station_id, wire.Action.PING, wire.PingPayload())


@bp.post("/stations/<int:station_id>/reboot")
@require_user
@tag(["Stations"])
@validate_response(Ok)
async def reboot_station(station_id: int) -> Ok:
    """Operator: reboot a station."""
    return await _command(station_id, wire.Action.REBOOT, wire.RebootPayload())


class RefreshBody(Body):
    spot: SpotNumber | None = None


@bp.post("/stations/<int:station_id>/refresh")
@require_user
@tag(["Stations"])
@validate_request(RefreshBody)
@validate_response(Ok)
async def refresh_station(station_id: int, data: RefreshBody) -> Ok:
    """Operator: ask a station to report ``locked`` again for every occupied spot (or one)."""
    return await _command(station_id, wire.Action.REFRESH, wire.RefreshPayload(spot=data.spot))


class ConfigBody(Body):
    config: Literal["volume", "alarm-threshold"]
    value: Annotated[int, Field(ge=0, le=100)]


@bp.put("/stations/<int:station_id>/config")
@require_user
@tag(["Stations"])
@validate_request(ConfigBody)
@validate_response(Ok)
async def configure_station(station_id: int, data: ConfigBody) -> Ok:
    """Operator: set a station's volume or alarm threshold (0..100)."""
    payload = wire.ConfigPayload(config=wire.ConfigType(data.config), value=data.value)
    return await _command(station_id, wire.Action.CONFIG, payload)
