"""Rents: unlock a vehicle, the rider's rents (ROUTES.md; DESIGN.md "Rents")."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from ..context import services
from ..services.geo import Latitude, Longitude
from ..web.auth import caller_access, current_caller, require_user
from .models import Body, Data, Ok, PageQuery, Positive
from .rent_models import ExternalLockOut, RentRecordOut

bp = Blueprint("rents", __name__, url_prefix="/api/application")

SerialNumber = Annotated[str, StringConstraints(min_length=1, max_length=64)]


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
    """Unlock a docked vehicle and start a rent: answers once the station accepted the unlock.

    409 code 30 (not available), 403 code 31 (too far), 409 code 32 (too many rents), 402 code 33
    (a guarantee is required), 503 code 50 / 504 code 40 / 409 code 41 from the station. The rent
    starts when the station reports the vehicle out (``rent.started`` on the ``user`` topic).
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


@bp.put("/trips/<int:trip_id>/resume")
@require_user
@tag(["Rents"])
@validate_response(Ok)
async def resume_trip(trip_id: int) -> Ok:
    """Resume a paused rent (only its owner: another rider's trip answers 404 code 4; a rent that is
    not paused, 409 code 35)."""
    await services().rents.resume(current_caller().user_id, trip_id)
    return Ok()
