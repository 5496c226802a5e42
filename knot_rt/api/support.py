"""Support agents: the reports of their networks; assign, resolve, reopen (ROUTES' support rows).

Chatting itself goes through the report routes (``api/reports.py``), which serve the author and the
support agents of the report's network alike. See ``support/agents.py`` for the rules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from ..context import services
from ..web.auth import current_caller, require_user
from .models import Body, Data, Ok, PageQuery, Positive

bp = Blueprint("support", __name__, url_prefix="/api/application/support")


class ReportsQuery(PageQuery):
    status: Literal["open", "resolved", "all"] = Field(default="open", description="Which reports.")
    network_id: Positive | None = Field(default=None, description="Only this network's (one the agent serves).")
    before: Positive | None = Field(default=None, description="Reports with an id below this one (paging).")
    limit: int = Field(default=30, ge=1, le=100, description="At most this many (1 to 100).")


class AssignBody(Body):
    agent_id: Positive | None = Field(
        default=None, description="The support agent (of the report's network) to assign; null releases it."
    )


class AuthorOut(BaseModel):
    user_id: int
    email: str


class SupportReportOut(BaseModel):
    """The spec's report (rows 8-9) from the support side, with its author and handling."""

    report_id: int
    message: str = Field(description="A preview of the last message (`[image]` for an image).")
    sender: Literal["user", "support"] = Field(description="Which side wrote the last message.")
    date: datetime = Field(description="When the last message was written (the report's date before any).")
    report_date: datetime = Field(description="When the report was opened.")
    resolved: bool
    unread: bool = Field(description="Whether support has rider messages to read.")
    allow_reopen: bool = Field(description="Whether a message may be written (open, or resolved < 7 days ago).")
    unread_count: int = Field(description="The rider's messages the support side has not read.")
    network_id: int | None
    status: Literal["open", "resolved"]
    assigned_to: int | None = Field(description="The agent in charge, or null.")
    author: AuthorOut
    resolved_at: datetime | None


@bp.get("/reports")
@tag(["Support"])
@require_user
@validate_querystring(ReportsQuery)
@validate_response(Data[list[SupportReportOut]])
async def support_reports(query_args: ReportsQuery) -> Data[list[SupportReportOut]]:
    """The reports of the networks the caller is a support agent of (permission `support`), newest first.

    Page with `before` (the last report id of the previous page). 403 code 13 for a caller with no `support`
    permission, or on `network_id`.
    """
    found = await services().agents.reports(
        current_caller().user_id, status=query_args.status, network_id=query_args.network_id,
        before=query_args.before, limit=query_args.limit,
    )
    return Data(data=[SupportReportOut.model_validate(r.as_json()) for r in found])


@bp.put("/reports/<int:report_id>/assign")
@tag(["Support"])
@require_user
@validate_request(AssignBody)
@validate_response(Ok)
async def assign_report(report_id: int, data: AssignBody) -> Ok:
    """Assign a report to a support agent of its network, or release it (`agent_id` null).

    Needs `support` with write on the report's network; a report of another network answers 404 code 4 as an
    unknown one; an `agent_id` who is no agent of that network, 400 code 2. Seen live as `report.assigned` on
    `report:<id>` and `report.updated` on `support:<network_id>`.
    """
    await services().agents.assign(current_caller().user_id, report_id, data.agent_id)
    return Ok()


@bp.put("/reports/<int:report_id>/resolve")
@tag(["Support"])
@require_user
@validate_response(Ok)
async def resolve_report(report_id: int) -> Ok:
    """Mark a report resolved (the rider may reopen it by writing for 7 days). 404 code 4 as for assign."""
    await services().agents.resolve(current_caller().user_id, report_id)
    return Ok()


@bp.put("/reports/<int:report_id>/reopen")
@tag(["Support"])
@require_user
@validate_response(Ok)
async def reopen_report(report_id: int) -> Ok:
    """Reopen a resolved report. 404 code 4 as for assign."""
    await services().agents.reopen(current_caller().user_id, report_id)
    return Ok()
