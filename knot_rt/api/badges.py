"""Badges: link a badge at a station's reader, list, rename, delete (ROUTES rows 2 and 3, and the list/delete row)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.access import unknown_cluster
from ..web.auth import caller_access, current_caller, require_user
from .models import Body, Data, Ok, PageQuery, Positive

bp = Blueprint("badges", __name__, url_prefix="/api/application")

BadgeName = Annotated[str, StringConstraints(min_length=1, max_length=30)]


class LinkBadgeBody(Body):
    cluster_id: Positive = Field(description="The cluster on which the user will put the badge to link it.")
    name: BadgeName = Field(description="The display name for this badge (1 to 30 characters).")
    spot_id: Positive | None = Field(
        default=None,
        description="The spot at whose reader the user will put the badge. Only for v6 stations (one reader per "
        "spot), where it is required (409 code 37 without it).",
    )


class RenameBadgeBody(Body):
    badge_id: Positive = Field(description="The badge to rename.")
    name: BadgeName = Field(description="The new display name of the badge (1 to 30 characters).")


class BadgeQuery(PageQuery):
    badge_id: Positive = Field(description="The badge to delete.")


class BadgeOut(BaseModel):
    badge_id: int = Field(description="The badge's identifier.")
    name: str = Field(description="Its display name.")
    masked_uid: str = Field(
        description="The badge's UID, masked: its last 4 hex digits (the UID itself is never stored in clear)."
    )
    created_at: datetime = Field(description="When it was linked.")


@bp.post("/badges/link")
@tag(["Badges"])
@require_user
@validate_request(LinkBadgeBody)
@validate_response(Ok)
async def link_badge(data: LinkBadgeBody) -> Ok:
    """Begin linking a new badge: answers once the station shows the rider to put the badge on its reader.

    The link then waits 60 s at that reader; the outcome arrives on the `user` feed topic (`badge.linked`, or
    `badge.link_failed` with a `reason`: `timeout`, `taken` by another account, `unavailable`). Errors: 404 code 4
    (cluster not seen, spot not in the cluster), 409 code 37 (no badge reader there), 409 code 38 (a link already
    waits at that reader), 503 code 50 (station offline), 504 code 40 (no answer), 409 code 41 (refused).
    """
    user_id = current_caller().user_id
    cluster = services().catalog_service.seen_cluster(await caller_access(), data.cluster_id)
    if cluster is None:
        raise ApiError(ErrorCode.NOT_FOUND, unknown_cluster(data.cluster_id))
    await services().badges.start_link(user_id, cluster, data.name, data.spot_id)
    return Ok()


@bp.put("/badges/name")
@tag(["Badges"])
@require_user
@validate_request(RenameBadgeBody)
@validate_response(Ok)
async def rename_badge(data: RenameBadgeBody) -> Ok:
    """Update the name of a badge of the user (another user's answers 404 code 4, as an unknown one)."""
    await services().badges.rename(current_caller().user_id, data.badge_id, data.name)
    return Ok()


@bp.get("/badges")
@tag(["Badges"])
@require_user
@validate_response(Data[list[BadgeOut]])
async def list_badges() -> Data[list[BadgeOut]]:
    """The user's badges, oldest first, each with its masked UID (never the UID)."""
    found = await services().badges.badges(current_caller().user_id)
    return Data(data=[
        BadgeOut(badge_id=b.badge_id, name=b.name, masked_uid=b.masked_uid, created_at=b.created_at) for b in found
    ])


@bp.delete("/badges")
@tag(["Badges"])
@require_user
@validate_querystring(BadgeQuery)
@validate_response(Ok)
async def delete_badge(query_args: BadgeQuery) -> Ok:
    """Delete a badge of the user (another user's answers 404 code 4, as an unknown one)."""
    await services().badges.delete(current_caller().user_id, query_args.badge_id)
    return Ok()
