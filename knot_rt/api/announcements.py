"""Global announcement: the one ongoing message shown by an app (ROUTES row 34)."""

from __future__ import annotations

from typing import Any

import asyncpg
from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from ..context import services
from ..services.accounts import app_label_id
from ..services.content import localize
from .models import Data, Lang, PageQuery

bp = Blueprint("announcements", __name__, url_prefix="/api/application")


class AnnouncementQuery(PageQuery):
    lang: Lang = Field(description="The language in which to get the announcement (English when not translated).")
    app_label: str = Field(description="The application white label calling the route.")


class Announcement(BaseModel):
    announcement: str | None


async def ongoing_texts(conn: asyncpg.Connection, label_name: str) -> dict[str, Any] | None:
    """The texts of the ongoing announcement: the label's own before one for every label (asyncio side)."""
    label = await app_label_id(conn, label_name)
    texts: dict[str, Any] | None = await conn.fetchval(
        """SELECT texts FROM announcements
           WHERE (app_label_id = $1 OR app_label_id IS NULL)
             AND starts_at <= now() AND (ends_at IS NULL OR ends_at > now())
           ORDER BY app_label_id IS NULL, starts_at DESC, id DESC LIMIT 1""",
        label,
    )
    return texts


@bp.get("/announcements/global")
@tag(["Announcements"])
@validate_querystring(AnnouncementQuery)
@validate_response(Data[Announcement])
async def global_announcement(query_args: AnnouncementQuery) -> Data[Announcement]:
    """Get the ongoing global announcement in the language requested if available (else English)."""
    texts = await services().db.run(lambda conn: ongoing_texts(conn, query_args.app_label))
    return Data(data=Announcement(announcement=localize(texts, query_args.lang).text or None))
