"""FAQ: categories, their sub-categories and contents, localized (ROUTES row 33)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import asyncpg
from pydantic import BaseModel, Field
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from ..content.store import FaqRows
from ..context import services
from ..services.content import localize
from .models import Data, Lang, PageQuery

bp = Blueprint("faq", __name__, url_prefix="/api/application")


class FaqQuery(PageQuery):
    lang: Lang = Field(description="The language in which to get the FAQ (English when not translated).")
    app_label: str | None = Field(default=None, description="The application white label calling the route.")


class FaqContent(BaseModel):
    key: str
    content: str
    translated: bool
    sort_order: int
    type: str
    bold: bool
    margin: str | None
    text_color: str | None
    bullet_color: str | None
    replacements: list[str]


class FaqSubCategory(BaseModel):
    key: str
    name: str
    translated: bool
    sort_order: int
    is_spacer: bool
    replacements: list[str]
    contents: list[FaqContent]


class FaqCategory(BaseModel):
    key: str
    name: str
    translated: bool
    sort_order: int
    sub_categories: list[FaqSubCategory]


def _by_parent(rows: Iterable[asyncpg.Record], parent: str) -> dict[str, list[asyncpg.Record]]:
    grouped: dict[str, list[asyncpg.Record]] = defaultdict(list)
    for row in rows:
        grouped[row[parent]].append(row)
    return grouped


def _content(row: asyncpg.Record, lang: str) -> FaqContent:
    text = localize(row["contents"], lang)
    return FaqContent(
        key=row["key"], content=text.text, translated=text.translated, sort_order=row["sort_order"],
        type=row["type"], bold=row["bold"], margin=row["margin"], text_color=row["text_color"],
        bullet_color=row["bullet_color"], replacements=list(row["replacements"]),
    )


def _sub_category(row: asyncpg.Record, contents: list[asyncpg.Record], lang: str) -> FaqSubCategory:
    name = localize(row["names"], lang)
    return FaqSubCategory(
        key=row["key"], name=name.text, translated=name.translated, sort_order=row["sort_order"],
        is_spacer=row["is_spacer"], replacements=list(row["replacements"]),
        contents=[_content(content, lang) for content in contents],
    )


def _category(row: asyncpg.Record, sub_categories: list[FaqSubCategory], lang: str) -> FaqCategory:
    name = localize(row["names"], lang)
    return FaqCategory(
        key=row["key"], name=name.text, translated=name.translated, sort_order=row["sort_order"],
        sub_categories=sub_categories,
    )


def _faq(rows: FaqRows, lang: str) -> list[FaqCategory]:
    """The stored FAQ shaped for the app, in ``lang``."""
    contents = _by_parent(rows.contents, "sub_category_key")
    subs_of = _by_parent(rows.sub_categories, "category_key")
    return [
        _category(row, [_sub_category(sub, contents[sub["key"]], lang) for sub in subs_of[row["key"]]], lang)
        for row in rows.categories
    ]


@bp.get("/faq")
@tag(["FAQ"])
@validate_querystring(FaqQuery)
@validate_response(Data[list[FaqCategory]])
async def faq(query_args: FaqQuery) -> Data[list[FaqCategory]]:
    """Get the content of the FAQ, localized; entries of other app labels are left out."""
    rows = await services().content.faq(query_args.app_label)
    return Data(data=_faq(rows, query_args.lang))
