"""PostgreSQL of the content domain: app labels, FAQ, announcements (SQL only, asyncio side)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


# operators' writes ----------------------------------------------------------------------------------------


async def create_app_label(
    conn: asyncpg.Connection, name: str, label_name: str, *, organization_id: int | None, android_store_url: str | None,
    ios_store_url: str | None,
) -> int:
    label_id: int = await conn.fetchval(
        """INSERT INTO app_labels (name, label_name, organization_id, android_store_url, ios_store_url)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        name, label_name, organization_id, android_store_url, ios_store_url,
    )
    return label_id


async def create_announcement(
    conn: asyncpg.Connection, texts: dict[str, str], *, app_label_id: int | None, starts_at: datetime,
    ends_at: datetime | None,
) -> int:
    announcement_id: int = await conn.fetchval(
        "INSERT INTO announcements (app_label_id, texts, starts_at, ends_at) VALUES ($1, $2, $3, $4) RETURNING id",
        app_label_id, texts, starts_at, ends_at,
    )
    return announcement_id


async def create_faq_category(
    conn: asyncpg.Connection, key: str, names: dict[str, str], *, app_label_id: int | None, sort_order: int
) -> None:
    await conn.execute(
        "INSERT INTO faq_categories (key, app_label_id, sort_order, names) VALUES ($1, $2, $3, $4)",
        key, app_label_id, sort_order, names,
    )


async def create_faq_sub_category(
    conn: asyncpg.Connection, key: str, category_key: str, names: dict[str, str], *, sort_order: int,
    is_spacer: bool, replacements: list[str],
) -> None:
    await conn.execute(
        """INSERT INTO faq_sub_categories (key, category_key, sort_order, is_spacer, replacements, names)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        key, category_key, sort_order, is_spacer, replacements, names,
    )


@dataclass(frozen=True, slots=True)
class FaqStyle:
    """How one FAQ entry is drawn."""

    type: str = "text"
    bold: bool = False
    margin: str | None = None  # CSS-like "top right bottom left"
    text_color: str | None = None
    bullet_color: str | None = None
    replacements: tuple[str, ...] = ()


async def create_faq_content(
    conn: asyncpg.Connection, key: str, sub_category_key: str, contents: dict[str, str], *, sort_order: int,
    style: FaqStyle,
) -> None:
    await conn.execute(
        """INSERT INTO faq_contents (key, sub_category_key, sort_order, type, bold, margin, text_color,
                                     bullet_color, replacements, contents)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        key, sub_category_key, sort_order, style.type, style.bold, style.margin, style.text_color,
        style.bullet_color, list(style.replacements), contents,
    )
