"""Global announcement: the one ongoing message shown by an app (ROUTES row 34)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from ..context import services
from ..services.content import localize
from .models import Data, Lang, PageQuery

bp = Blueprint("announcements", __name__, url_prefix="/api/application")


class AnnouncementQuery(PageQuery):
    lang: Lang = Field(description="The language in which to get the announcement (English when not translated).")
    app_label: str = Field(description="The application white label calling the route.")


class Announcement(BaseModel):
    announcement: str | None


@bp.get("/announcements/global")
@tag(["Announcements"])
@validate_querystring(AnnouncementQuery)
@validate_response(Data[Announcement])
async def global_announcement(query_args: AnnouncementQuery) -> Data[Announcement]:
    """Get the ongoing global announcement in the language requested if available (else English)."""
    texts = await services().content.announcement(query_args.app_label)
    return Data(data=Announcement(announcement=localize(texts, query_args.lang).text or None))
