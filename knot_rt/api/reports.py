"""Support reports (chat channels): rows 8-9 of the spec and the report routes of ``ROUTES.md``.

The same routes serve the report's author (side ``user``) and the support agents of its network (side
``support``, permission ``support``; ``write`` to post and mark read). Anyone else, and an unknown report,
get 404 code 4 alike. Live updates come over the feed (``report:<id>``, ``user``, ``support:<network_id>``).

Message text: 1 to 2,000 characters, not only blanks; NUL and control characters are refused (400 code 2)
except newline and tab. Writing into a resolved report reopens it while ``allow_reopen`` holds (7 days after
its resolution), else 409 code 46. Rate limits per user (429 code 9): new reports
(``rate_limits.report_per_user``) and messages (``rate_limits.report_message_per_user``).
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, Field, StringConstraints, field_validator
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from actors.chat import MAX_BODY, Side
from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..support import store
from ..support.store import ReportContext
from ..web.auth import current_caller, require_user
from .models import Body, Data, PageQuery, Positive

bp = Blueprint("reports", __name__, url_prefix="/api/application")

#: Control characters a message may hold.
ALLOWED_CONTROLS = frozenset("\n\t")


def text_fault(text: str) -> str | None:
    """Why ``text`` is no message text, or None."""
    if not text.strip():
        return "the message is empty"
    for char in text:
        if char not in ALLOWED_CONTROLS and unicodedata.category(char) == "Cc":
            return f"control character U+{ord(char):04X} is not allowed"
    return None


MessageText = Annotated[str, StringConstraints(min_length=1, max_length=MAX_BODY)]


class _TextBody(Body):
    message: MessageText = Field(description="The text: 1 to 2,000 characters; no control character but "
                                             "newline and tab.")

    @field_validator("message")
    @classmethod
    def _text(cls, value: str) -> str:
        fault = text_fault(value)
        if fault is not None:
            raise ValueError(fault)
        return value


class MessageBody(_TextBody):
    pass


class OpenReportBody(_TextBody):
    vehicle_id: Positive | None = Field(default=None, description="The vehicle the report is about.")
    serial_number: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = Field(
        default=None, description="Or the vehicle's serial number.")
    station_id: Positive | None = None
    spot_id: Positive | None = None
    cluster_id: Positive | None = None
    trip_id: Positive | None = Field(default=None, description="One of the rider's own trips (rents).")
    lat: float | None = Field(default=None, ge=-90, le=90)
    lng: float | None = Field(default=None, ge=-180, le=180)


class ReadBody(Body):
    message_id: Positive = Field(description="Messages up to this one are read.")


class HistoryQuery(PageQuery):
    before: Positive | None = Field(default=None, description="Only messages with a smaller id (the next page).")
    limit: int = Field(default=30, ge=1, le=100)


class ReportOut(BaseModel):
    report_id: int
    message: str = Field(description="The last message's text (its first 100 characters; `[image]` for an image).")
    sender: str = Field(description="Who wrote the last message: `user` or `support`.")
    date: datetime = Field(description="The last message's date.")
    report_date: datetime
    resolved: bool
    unread: bool = Field(description="The caller's side has unread messages.")
    allow_reopen: bool = Field(description="A message may be written: open, or resolved less than 7 days ago.")
    unread_count: int
    network_id: int | None
    status: str
    assigned_to: int | None


class ImageRef(BaseModel):
    id: str
    url: str


class MessageOut(BaseModel):
    message_id: int
    report_id: int
    side: str
    author_id: int | None
    message: str | None
    image: ImageRef | None
    date: datetime


class ReadOut(BaseModel):
    report_id: int
    side: str
    read_up_to: int
    unread_count: int


def _report_out(report: store.Report, side: Side) -> ReportOut:
    return ReportOut.model_validate(store.report_json(report, side))


async def _rate(kind: str) -> None:
    svc = services()
    rates = svc.settings.rate_limits
    rate = rates.report_per_user if kind == "report" else rates.report_message_per_user
    await svc.limiter.check((rate, f"{kind}:user", str(current_caller().user_id)))


@bp.get("/reports")
@tag(["Reports"])
@require_user
@validate_response(Data[list[ReportOut]])
async def list_reports() -> Data[list[ReportOut]]:
    """Row 8: the caller's reports (chat channels), newest first (at most 100)."""
    user_id = current_caller().user_id
    found = await services().db.run(lambda conn: store.user_reports(conn, user_id))
    return Data(data=[_report_out(r, Side.USER) for r in found])


@bp.get("/reports/<int:report_id>")
@tag(["Reports"])
@require_user
@validate_response(Data[ReportOut])
async def get_report(report_id: int) -> Data[ReportOut]:
    """Row 9: one chat channel, as the caller's side sees it. 404 code 4: unknown or not the caller's."""
    report, side = await services().support.access(current_caller().user_id, report_id)
    return Data(data=_report_out(report, side))


@bp.post("/reports")
@tag(["Reports"])
@require_user
@validate_request(OpenReportBody)
@validate_response(Data[ReportOut])
async def open_report(data: OpenReportBody) -> Data[ReportOut]:
    """Open a report with its first message and what it is about (each piece optional). A vehicle, station,
    spot, cluster or trip the rider does not see answers 404 code 4 like an unknown one; pieces of several
    networks 400 code 2. The report's network (whose support agents answer) is theirs, else that of the
    rider's ongoing rent, else none."""
    await _rate("report")
    context = ReportContext(
        vehicle_id=data.vehicle_id, serial_number=data.serial_number, station_id=data.station_id,
        spot_id=data.spot_id, cluster_id=data.cluster_id, trip_id=data.trip_id, latitude=data.lat,
        longitude=data.lng,
    )
    report = await services().support.open_report(current_caller().user_id, data.message, context)
    return Data(data=_report_out(report, Side.USER))


@bp.post("/reports/<int:report_id>/messages")
@tag(["Reports"])
@require_user
@validate_request(MessageBody)
@validate_response(Data[MessageOut])
async def post_message(report_id: int, data: MessageBody) -> Data[MessageOut]:
    """Post a text message, on the caller's side. 409 code 46: resolved more than 7 days ago (within them, the
    message reopens the report)."""
    svc = services()
    report, side = await svc.support.access(current_caller().user_id, report_id, write=True)
    await _rate("report_message")
    written = await svc.support.post_message(report, side, current_caller().user_id, body=data.message)
    return Data(data=MessageOut.model_validate(written))


@bp.get("/reports/<int:report_id>/messages")
@tag(["Reports"])
@require_user
@validate_querystring(HistoryQuery)
@validate_response(Data[list[MessageOut]])
async def history(report_id: int, query_args: HistoryQuery) -> Data[list[MessageOut]]:
    """A page of the conversation, NEWEST FIRST: up to `limit` messages with an id below `before` (the
    oldest id of the previous page); an empty page is the beginning."""
    svc = services()
    await svc.support.access(current_caller().user_id, report_id)
    rows: list[dict[str, Any]] = await svc.db.run(
        lambda conn: store.history(conn, report_id, before=query_args.before, limit=query_args.limit))
    return Data(data=[MessageOut.model_validate(row) for row in rows])


@bp.post("/reports/<int:report_id>/read")
@tag(["Reports"])
@require_user
@validate_request(ReadBody)
@validate_response(Data[ReadOut])
async def mark_read(report_id: int, data: ReadBody) -> Data[ReadOut]:
    """Mark the messages up to `message_id` read for the caller's side (never backwards; an id beyond the last
    message counts as the last). The other side gets `message.read` on the report's topic."""
    svc = services()
    report, side = await svc.support.access(current_caller().user_id, report_id)
    view = await svc.support.mark_read(report, side, data.message_id)
    if view.report_id != report_id:  # pragma: no cover - the actor is the report's
        raise ApiError(ErrorCode.INTERNAL)
    return Data(data=ReadOut(report_id=report_id, side=str(side), read_up_to=view.read_up_to[side],
                             unread_count=view.unread[side]))
