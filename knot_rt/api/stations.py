"""Operator routes of stations: live state and remote commands (``perm:stations``)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import trio
from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_request, validate_response

from actors import ActorError, AskTimeout
from actors.station import Command, CommandFailed, Failure, GetView, PendingCommand, StationView, UnlockSpot
from protocols import station as wire
from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.permissions import STATION_READERS, station_scope
from ..web.auth import caller_permissions, require_user
from .models import Body, Data, Ok, Positive

bp = Blueprint("stations", __name__, url_prefix="/api/application")

SpotNumber = Annotated[int, Field(ge=1, le=32)]

_FAILURES: dict[Failure, ErrorCode] = {
    Failure.OFFLINE: ErrorCode.DEVICE_OFFLINE,
    Failure.TIMEOUT: ErrorCode.DEVICE_TIMEOUT,
    Failure.REJECTED: ErrorCode.DEVICE_REJECTED,
    Failure.INVALID: ErrorCode.INVALID_INPUT,
    Failure.UNAVAILABLE: ErrorCode.SERVICE_UNAVAILABLE,
}


async def _check(station_id: int, keys: tuple[str, ...], *, write: bool) -> None:
    """The caller holds one of ``keys`` on the station's network (404 first: unknown ids tell nothing more)."""
    scope = await services().db.run(lambda conn: station_scope(conn, station_id))
    if scope is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    permissions = await caller_permissions()
    if not permissions.allows_any(keys, scope, write=write):
        raise ApiError(ErrorCode.NOT_ALLOWED)


async def _send(station_id: int, message: Command | UnlockSpot) -> tuple[PendingCommand, dict[str, Any]]:
    """Send a command through the station's actor and wait for the station's answer."""
    svc = services()
    actor = svc.stations.running_actor(station_id)
    if actor is None:
        raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is offline")
    try:
        reply = await actor.ask(message, timeout=svc.settings.station_call_timeout)
    except AskTimeout as exc:
        raise ApiError(ErrorCode.DEVICE_TIMEOUT, f"station {station_id} is busy") from exc
    except ActorError as exc:  # crashed or stopping: it restarts on its own
        raise ApiError(ErrorCode.DEVICE_OFFLINE, f"station {station_id} is restarting") from exc
    if isinstance(reply, PendingCommand):
        try:  # the actor settles it within its call timeout; this bound only guards against a lost reply
            outcome = await reply.wait_within(svc.settings.station_call_timeout + 5)
        except trio.TooSlowError:
            outcome = CommandFailed(Failure.TIMEOUT, f"station {station_id} did not answer")
        if isinstance(outcome, dict):
            return reply, outcome
        reply_failed: CommandFailed = outcome
    elif isinstance(reply, CommandFailed):
        reply_failed = reply
    else:  # pragma: no cover - the actor answers one of the two
        raise ApiError(ErrorCode.INTERNAL)
    raise ApiError(_FAILURES[reply_failed.failure], reply_failed.message)


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
    pending, _ = await _send(data.station_id, UnlockSpot(data.spot))
    assert pending.unlock_id is not None
    return Data(data=UnlockAnswer(station_id=data.station_id, spot=data.spot, unlock=pending.unlock_id))


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
    svc = services()
    actor = svc.stations.running_actor(station_id)
    view = await actor.ask(GetView()) if actor is not None else await svc.stations.store.load(station_id)
    if not isinstance(view, StationView):
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    return Data(data=station_out(view))


# commands -----------------------------------------------------------------------


@bp.post("/stations/<int:station_id>/ping")
@require_user
@tag(["Stations"])
@validate_response(Ok)
async def ping_station(station_id: int) -> Ok:
    """Operator: ping a station (it answers, then reports its state)."""
    await _check(station_id, ("stations",), write=True)
    await _send(station_id, Command(wire.Action.PING, wire.PingPayload()))
    return Ok()


@bp.post("/stations/<int:station_id>/reboot")
@require_user
@tag(["Stations"])
@validate_response(Ok)
async def reboot_station(station_id: int) -> Ok:
    """Operator: reboot a station."""
    await _check(station_id, ("stations",), write=True)
    await _send(station_id, Command(wire.Action.REBOOT, wire.RebootPayload()))
    return Ok()


class RefreshBody(Body):
    spot: SpotNumber | None = None


@bp.post("/stations/<int:station_id>/refresh")
@require_user
@tag(["Stations"])
@validate_request(RefreshBody)
@validate_response(Ok)
async def refresh_station(station_id: int, data: RefreshBody) -> Ok:
    """Operator: ask a station to report ``locked`` again for every occupied spot (or one)."""
    await _check(station_id, ("stations",), write=True)
    await _send(station_id, Command(wire.Action.REFRESH, wire.RefreshPayload(spot=data.spot)))
    return Ok()


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
    await _check(station_id, ("stations",), write=True)
    payload = wire.ConfigPayload(config=wire.ConfigType(data.config), value=data.value)
    await _send(station_id, Command(wire.Action.CONFIG, payload))
    return Ok()
