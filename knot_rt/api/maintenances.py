"""Maintenance routes (ROUTES rows 46-55, 58-59): types, ongoing, create, history, update, resolve or delete.

Every route needs the ``maintenance`` permission on an OU covering the object (its network, cluster or
organisation): any for reading, one with ``write`` for writing. The order of the answers: an unknown object
first (404/4, also for one the caller may not see: an unknown id tells nothing more), then the rights
(403/13), then the type (400/47 for an unknown or deleted type, or one of another target). A ``report_id``
must name a support report the caller may read (``SupportService.access``), else 404/4.

The writes go through :class:`~knot_rt.maintenance.service.MaintenanceService` (one unit of work, events on
``maintenance:<network_id>`` and ``station:<station_id>``, then the after-change hooks).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints, model_validator
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..maintenance.service import UnknownMaintenance, WrongType, scope_of
from ..maintenance.store import Maintenance, Target
from ..services.access import MAINTENANCE
from ..web.auth import caller_permissions, current_caller, require_user
from ..web.inputs import INT64_MAX
from .models import Body, Data, Lang, Ok, PageQuery, Positive

bp = Blueprint("maintenances", __name__, url_prefix="/api/application/maintenances")

SeverityIn = Literal["info", "low", "high"]
TypeKey = Annotated[str, StringConstraints(min_length=1, max_length=50)]
Comment = Annotated[str, StringConstraints(min_length=1, max_length=1024)]
Serial = Annotated[str, StringConstraints(min_length=6, max_length=10)]
NonNegative = Annotated[int, Field(ge=0, le=INT64_MAX)]
LANG_FIELD = Field(description="The language (ISO 639-1) of the types' names (English when not translated).")


# models -----------------------------------------------------------------------------------------------------


class LangQuery(PageQuery):
    lang: Lang = LANG_FIELD


class HistoryQuery(LangQuery):
    last_maintenance_id: Positive | None = Field(
        default=None, description="The last maintenance of the previous page: the page continues after it."
    )
    direction: Literal["ASC", "DESC"] = Field(default="DESC", description="DESC: newest first (default).")


class VehicleQuery(LangQuery):
    vehicle_id: Positive | None = None
    serial_number: Serial | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VehicleQuery:
        if self.vehicle_id is None and self.serial_number is None:
            raise ValueError("give vehicle_id or serial_number")
        return self


class VehicleHistoryQuery(HistoryQuery, VehicleQuery):
    pass


class ResolveQuery(PageQuery):
    delete_from_history: bool = Field(
        default=False, description="true: delete it from the history; otherwise it is marked resolved."
    )


class CreateBody(Body):
    maintenance_type: TypeKey = Field(description="The type's key (`type_key` of the types route).")
    comment: Comment | None = None
    severity: SeverityIn | None = Field(default=None, description="Defaults to the type's severity.")
    report_id: Positive | None = Field(default=None, description="A support report the caller may read.")


class SpotBody(CreateBody):
    spot_id: NonNegative


class StationBody(CreateBody):
    station_id: NonNegative


class VehicleBody(CreateBody):
    vehicle_id: Positive | None = None
    serial_number: Serial | None = None

    @model_validator(mode="after")
    def _one_of(self) -> VehicleBody:
        if self.vehicle_id is None and self.serial_number is None:
            raise ValueError("give vehicle_id or serial_number")
        return self


class UpdateBody(Body):
    comment: Comment | None = None
    severity: SeverityIn | None = None

    @model_validator(mode="after")
    def _something(self) -> UpdateBody:
        if self.comment is None and self.severity is None:
            raise ValueError("give comment or severity")
        return self


class TypeOut(BaseModel):
    type_key: str
    target_type: Literal["station", "spot", "vehicle"]
    severity: SeverityIn
    type_name: str
    deletion_date: str | None
    creation_date: str


class MaintenanceOut(BaseModel):
    maintenance_id: int
    spot_id: int | None
    vehicle_id: int | None
    station_id: int | None
    maintenance_type: str = Field(description="The type's key.")
    type_name: str = Field(description="The type's name in `lang`.")
    target_type: Literal["station", "spot", "vehicle"]
    comment: str | None
    start_date: str
    started_by: Literal["user", "automatic"]
    started_by_uid: int | None
    severity: SeverityIn
    automatic_code_description: str | None
    report_id: int | None


class ResolvedMaintenanceOut(MaintenanceOut):
    stop_date: str
    stopped_by: Literal["user", "automatic"]
    stopped_by_uid: int | None


# checks -----------------------------------------------------------------------------------------------------


async def _allowed(target: Target, *, write: bool) -> None:
    permissions = await caller_permissions()
    if not permissions.allows(MAINTENANCE, scope_of(target), write=write):
        raise ApiError(ErrorCode.NOT_ALLOWED, "no maintenance permission here")


async def _station(station_id: int, *, write: bool) -> Target:
    target = await services().maintenance.station(station_id) if station_id >= 1 else None
    if target is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no station {station_id}")
    await _allowed(target, write=write)
    return target


async def _spot(spot_id: int, *, write: bool) -> Target:
    target = await services().maintenance.spot(spot_id) if spot_id >= 1 else None
    if target is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no spot {spot_id}")
    await _allowed(target, write=write)
    return target


async def _vehicle(vehicle_id: int | None, serial_number: str | None, *, write: bool) -> Target:
    target = await services().maintenance.vehicle(vehicle_id, serial_number)
    if target is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no such vehicle")
    await _allowed(target, write=write)
    return target


async def _maintenance(maintenance_id: int, *, write: bool) -> Maintenance:
    svc = services().maintenance
    found = await svc.get(maintenance_id)
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no maintenance {maintenance_id}")
    await _allowed(await svc.target_of(found), write=write)
    return found


def _out(found: list[Maintenance], lang: str) -> list[MaintenanceOut]:
    return [MaintenanceOut.model_validate(m.as_json(lang.lower())) for m in found]


def _resolved_out(found: list[Maintenance], lang: str) -> list[ResolvedMaintenanceOut]:
    return [ResolvedMaintenanceOut.model_validate(m.as_json(lang.lower())) for m in found]


async def _open(target: Target, data: CreateBody) -> Data[MaintenanceOut]:
    svc = services()
    user_id = current_caller().user_id
    if data.report_id is not None:
        await svc.support.access(user_id, data.report_id)  # 404/4 unless the caller may read it
    try:
        opened = await svc.maintenance.open(
            target, data.maintenance_type, severity=data.severity, comment=data.comment,
            report_id=data.report_id, by_user_id=user_id,
        )
    except WrongType as e:
        raise ApiError(ErrorCode.MAINTENANCE_TYPE, str(e)) from e
    assert opened is not None  # a user's maintenance always opens
    return Data(data=MaintenanceOut.model_validate(opened.as_json()))


# types ------------------------------------------------------------------------------------------------------


@bp.get("/types")
@tag(["Maintenance"])
@require_user
@validate_querystring(LangQuery)
@validate_response(Data[list[TypeOut]])
async def maintenance_types(query_args: LangQuery) -> Data[list[TypeOut]]:
    """Every maintenance type (deleted ones with their `deletion_date`), named in `lang`. 403 code 13 for a
    caller with no `maintenance` permission anywhere."""
    permissions = await caller_permissions()
    if not any(p.perm_key == MAINTENANCE for p in permissions.items):
        raise ApiError(ErrorCode.NOT_ALLOWED, "no maintenance permission")
    kinds = await services().maintenance.types()
    return Data(data=[TypeOut.model_validate(k.as_json(query_args.lang.lower())) for k in kinds])


# spots ------------------------------------------------------------------------------------------------------


@bp.get("/spots/<int:spot_id>")
@tag(["Maintenance"])
@require_user
@validate_querystring(LangQuery)
@validate_response(Data[list[MaintenanceOut]])
async def spot_ongoing(spot_id: int, query_args: LangQuery) -> Data[list[MaintenanceOut]]:
    """The ongoing maintenances of a spot, oldest first."""
    target = await _spot(spot_id, write=False)
    return Data(data=_out(await services().maintenance.ongoing_of(target), query_args.lang))


@bp.post("/spots")
@tag(["Maintenance"])
@require_user
@validate_request(SpotBody)
@validate_response(Data[MaintenanceOut])
async def spot_create(data: SpotBody) -> Data[MaintenanceOut]:
    """Open a maintenance on a spot (a `high` one takes the spot out of service until resolved)."""
    return await _open(await _spot(data.spot_id, write=True), data)


@bp.get("/spots/<int:spot_id>/history")
@tag(["Maintenance"])
@require_user
@validate_querystring(HistoryQuery)
@validate_response(Data[list[ResolvedMaintenanceOut]])
async def spot_history(spot_id: int, query_args: HistoryQuery) -> Data[list[ResolvedMaintenanceOut]]:
    """The resolved maintenances of a spot, paged by `last_maintenance_id` in `direction` (50 a page)."""
    target = await _spot(spot_id, write=False)
    found = await services().maintenance.history(
        target, last_id=query_args.last_maintenance_id, direction=query_args.direction
    )
    return Data(data=_resolved_out(found, query_args.lang))


# vehicles ---------------------------------------------------------------------------------------------------


@bp.get("/vehicles")
@tag(["Maintenance"])
@require_user
@validate_querystring(VehicleQuery)
@validate_response(Data[list[MaintenanceOut]])
async def vehicle_ongoing(query_args: VehicleQuery) -> Data[list[MaintenanceOut]]:
    """The ongoing maintenances of a vehicle (by `vehicle_id` or `serial_number`)."""
    target = await _vehicle(query_args.vehicle_id, query_args.serial_number, write=False)
    return Data(data=_out(await services().maintenance.ongoing_of(target), query_args.lang))


@bp.post("/vehicles")
@tag(["Maintenance"])
@require_user
@validate_request(VehicleBody)
@validate_response(Data[MaintenanceOut])
async def vehicle_create(data: VehicleBody) -> Data[MaintenanceOut]:
    """Open a maintenance on a vehicle (a `high` one takes it out of rent until resolved)."""
    return await _open(await _vehicle(data.vehicle_id, data.serial_number, write=True), data)


@bp.get("/vehicles/history")
@tag(["Maintenance"])
@require_user
@validate_querystring(VehicleHistoryQuery)
@validate_response(Data[list[ResolvedMaintenanceOut]])
async def vehicle_history(query_args: VehicleHistoryQuery) -> Data[list[ResolvedMaintenanceOut]]:
    """The resolved maintenances of a vehicle, paged by `last_maintenance_id` in `direction` (50 a page)."""
    target = await _vehicle(query_args.vehicle_id, query_args.serial_number, write=False)
    found = await services().maintenance.history(
        target, last_id=query_args.last_maintenance_id, direction=query_args.direction
    )
    return Data(data=_resolved_out(found, query_args.lang))


# stations ---------------------------------------------------------------------------------------------------


@bp.get("/stations/<int:station_id>")
@tag(["Maintenance"])
@require_user
@validate_querystring(LangQuery)
@validate_response(Data[list[MaintenanceOut]])
async def station_ongoing(station_id: int, query_args: LangQuery) -> Data[list[MaintenanceOut]]:
    """The ongoing maintenances of a station as a whole (not of its spots nor its vehicles)."""
    target = await _station(station_id, write=False)
    return Data(data=_out(await services().maintenance.ongoing_of(target), query_args.lang))


@bp.post("/stations")
@tag(["Maintenance"])
@require_user
@validate_request(StationBody)
@validate_response(Data[MaintenanceOut])
async def station_create(data: StationBody) -> Data[MaintenanceOut]:
    """Open a maintenance on a station (a `high` one takes all its spots out of service until resolved)."""
    return await _open(await _station(data.station_id, write=True), data)


@bp.get("/stations/<int:station_id>/history")
@tag(["Maintenance"])
@require_user
@validate_querystring(HistoryQuery)
@validate_response(Data[list[ResolvedMaintenanceOut]])
async def station_history(station_id: int, query_args: HistoryQuery) -> Data[list[ResolvedMaintenanceOut]]:
    """The resolved maintenances of a station as a whole, paged by `last_maintenance_id` in `direction`."""
    target = await _station(station_id, write=False)
    found = await services().maintenance.history(
        target, last_id=query_args.last_maintenance_id, direction=query_args.direction
    )
    return Data(data=_resolved_out(found, query_args.lang))


# one maintenance --------------------------------------------------------------------------------------------


@bp.put("/<int:maintenance_id>")
@tag(["Maintenance"])
@require_user
@validate_request(UpdateBody)
@validate_response(Ok)
async def update_maintenance(maintenance_id: int, data: UpdateBody) -> Ok:
    """Change a maintenance's comment and/or severity (what is absent is kept)."""
    await _maintenance(maintenance_id, write=True)
    try:
        await services().maintenance.update(maintenance_id, comment=data.comment, severity=data.severity)
    except UnknownMaintenance as e:  # deleted from history meanwhile
        raise ApiError(ErrorCode.NOT_FOUND, f"no maintenance {maintenance_id}") from e
    return Ok()


@bp.delete("/<int:maintenance_id>")
@tag(["Maintenance"])
@require_user
@validate_querystring(ResolveQuery)
@validate_response(Ok)
async def resolve_maintenance(maintenance_id: int, query_args: ResolveQuery) -> Ok:
    """Mark a maintenance resolved (resolving a resolved one changes nothing), or with `delete_from_history`
    delete it from the history (an open one is resolved and deleted). A deleted one answers 404 code 4."""
    await _maintenance(maintenance_id, write=True)
    try:
        await services().maintenance.resolve(
            maintenance_id, by_user_id=current_caller().user_id, delete_from_history=query_args.delete_from_history
        )
    except UnknownMaintenance as e:
        raise ApiError(ErrorCode.NOT_FOUND, f"no maintenance {maintenance_id}") from e
    return Ok()
