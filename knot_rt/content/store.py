"""PostgreSQL of the content domain: app labels, FAQ, announcements (SQL only, asyncio side)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from protocols.errors import ErrorCode

from ..errors import ApiError


async def app_label_id(conn: asyncpg.Connection, name: str | None) -> int | None:
    """The id of an app label by its name; unknown names are an error, None stays None."""
    if name is None:
        return None
    found: int | None = await conn.fetchval("SELECT id FROM app_labels WHERE name = $1", name)
    if found is None:
        raise ApiError(ErrorCode.UNKNOWN_APP_LABEL)
    return found


async def store_urls(conn: asyncpg.Connection, name: str) -> asyncpg.Record:
    """An app label's store URLs; 404 code 12 for an unknown label."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT android_store_url, ios_store_url FROM app_labels WHERE name = $1", name
    )
    if row is None:
        raise ApiError(ErrorCode.UNKNOWN_APP_LABEL)
    return row


@dataclass(frozen=True, slots=True)
class FaqRows:
    """The FAQ one app label sees, as stored, each level in order."""

    categories: list[asyncpg.Record]
    sub_categories: list[asyncpg.Record]
    contents: list[asyncpg.Record]


async def faq_rows(conn: asyncpg.Connection, label: int | None) -> FaqRows:
    """The FAQ seen by one app label (entries without a label are for every app)."""
    categories = await conn.fetch(
        """SELECT key, names, sort_order FROM faq_categories
           WHERE app_label_id IS NULL OR app_label_id = $1 ORDER BY sort_order, key""",
        label,
    )
    subs = await conn.fetch(
        "SELECT * FROM faq_sub_categories WHERE category_key = ANY($1::text[]) ORDER BY sort_order, key",
        [row["key"] for row in categories],
    )
    contents = await conn.fetch(
        "SELECT * FROM faq_contents WHERE sub_category_key = ANY($1::text[]) ORDER BY sort_order, key",
        [row["key"] for row in subs],
    )
    return FaqRows(list(categories), list(subs), list(contents))


async def ongoing_announcement(conn: asyncpg.Connection, label: int | None) -> dict[str, Any] | None:
    """The texts of the ongoing announcement: the label's own before one for every label."""
    texts: dict[str, Any] | None = await conn.fetchval(
        """SELECT texts FROM announcements
           WHERE (app_label_id = $1 OR app_label_id IS NULL)
             AND starts_at <= now() AND (ends_at IS NULL OR ends_at > now())
           ORDER BY app_label_id IS NULL, starts_at DESC, id DESC LIMIT 1""",
        label,
    )
    return texts
