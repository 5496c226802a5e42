"""Rents: unlock a vehicle, end, pause and resume a free-floating rent, the rider's rents (ROUTES.md;
DESIGN.md "Rents"). The rider is the token's; every check is the rent service's."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from ..context import services
from ..services.geo import Latitude, Longitude
from ..web.auth import caller_access, current_caller, require_user
from ..web.inputs import INT64_MAX
from .models import Body, Data, Ok, PageQuery, Positive
from .rent_models import ExternalLockOut, RentRecordOut

bp = Blueprint("rents", __name__, url_prefix="/api/application")

SerialNumber = Annotated[str, StringConstraints(min_length=1, max_length=64)]
#: A vehicle's id in a body: a JSON integer (not a string, not a boolean), within a bigint.
VehicleId = Annotated[int, Field(strict=True, ge=1, le=INT64_MAX)]


class UnlockBody(Body):
    serial_number: SerialNumber = Field(description="The serial number written on the vehicle.")
    lat: Latitude = Field(description="The rider's latitude.")
    lng: Longitude = Field(description="The rider's longitude.")


class UnlockOut(BaseModel):
    external_locks: list[ExternalLockOut]
    trip_id: int


@bp.post("/vehicles/unlock")
@require_user
@tag(["Rents"])
@validate_request(UnlockBody)
@validate_response(Data[UnlockOut])
async def unlock_vehicle(data: UnlockBody) -> Data[UnlockOut]:
    """Unlock a vehicle and start a rent: answers once its station (docked) or its own module
    (free-floating) accepted the unlock. The caller's paused rent of a free-floating vehicle is resumed.

    404 code 4 (no such vehicle), 403 code 13 (a network the caller may not use), 409 code 30 (not
    available: rented, out of order, not in an accessible spot, module not connected), 403 code 31 (too
    far: from the station's cluster, or more than 100 m from a free-floating vehicle), 409 code 32 (too
    many rents), 402 code 33 (a guarantee is required), 503 code 50 / 504 code 40 / 409 code 41 from the
    device. The rent starts when the device reports the vehicle out (``rent.started`` on the ``user``
    topic); after a 504 it may still start, or fail (``unlock.failed``).
    """
    access = await caller_access()
    unlocked = await services().rents.unlock(access, data.serial_number, data.lat, data.lng)
    return Data(data=UnlockOut(external_locks=[], trip_id=unlocked.trip_id))


class RentsQuery(PageQuery):
    before: Positive | None = Field(default=None, description="Only rents with a trip id below this one.")
    limit: Annotated[int, Field(ge=1, le=100)] = Field(default=30, description="At most this many rents.")


@bp.get("/users/rents")
@require_user
@tag(["Rents"])
@validate_querystring(RentsQuery)
@validate_response(Data[list[RentRecordOut]])
async def user_rents(query_args: RentsQuery) -> Data[list[RentRecordOut]]:
    """The caller's rents: current ones first, then past ones newest first, with their price."""
    rents: list[dict[str, Any]] = await services().rents.history(
        current_caller().user_id, query_args.before, query_args.limit
    )
    return Data(data=[RentRecordOut(**rent) for rent in rents])


class VehicleBody(Body):
    vehicle_id: VehicleId = Field(description="The free-floating vehicle the caller rides.")


@bp.post("/vehicles/freefloat/lock")
@require_user
@tag(["Rents"])
@validate_request(VehicleBody)
@validate_response(Ok)
async def end_free_floating_rent(data: VehicleBody) -> Ok:
    """End the caller's free-floating rent where the vehicle is: answers once the vehicle accepted its
    ``lock``; the rent ends when the vehicle reports itself locked (``vehicle.locked`` and ``rent.ended``
    with the price and the position on the ``user`` topic).

    404 code 4 (no such vehicle, or no rent of the caller on it), 409 code 36 (a docked vehicle), 409 code
    35 (still unlocking), 403 code 39 (outside the network's area or its parkings), 503 code 50 / 504 code
    40 / 409 code 41 from the vehicle.
    """
    await services().rents.end(current_caller().user_id, data.vehicle_id)
    return Ok()


@bp.post("/vehicles/freefloat/lock/temporary")
@require_user
@tag(["Rents"])
@validate_request(VehicleBody)
@validate_response(Ok)
async def pause_free_floating_rent(data: VehicleBody) -> Ok:
    """Pause the caller's ongoing free-floating rent (a temporary lock; the pause is billed like riding):
    answers once the vehicle accepted its ``lock``; the rent pauses when the vehicle reports itself locked
    (``rent.paused``).

    404 code 4 (no such vehicle, or no rent of the caller on it), 409 code 36 (a docked vehicle), 403 code
    34 (pauses not allowed on this network), 409 code 35 (paused already, a pause on its way, or still
    unlocking), 503 code 50 / 504 code 40 / 409 code 41 from the vehicle.
    """
    await services().rents.pause(current_caller().user_id, data.vehicle_id)
    return Ok()


@bp.put("/trips/<int:trip_id>/resume")
@require_user
@tag(["Rents"])
@validate_response(Ok)
async def resume_trip(trip_id: int) -> Ok:
    """Resume a paused rent: answers once the vehicle accepted its ``unlock``; the rent goes on when the
    vehicle reports itself unlocked (``rent.resumed``).

    Only its owner: another rider's trip answers like an unknown one, 404 code 4; a rent that is not
    paused 409 code 35; a docked rent 409 code 36; 503 code 50 / 504 code 40 / 409 code 41 from the vehicle.
    """
    await services().rents.resume(current_caller().user_id, trip_id)
    return Ok()
