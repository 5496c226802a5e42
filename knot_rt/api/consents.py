"""Consents: what the user agrees to receive (ROUTES rows 21-23)."""

from __future__ import annotations

from collections.abc import Mapping

import asyncpg
from pydantic import BaseModel, Field, StrictBool
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.content import localize
from ..services.tokens import PURPOSE_UNSUBSCRIBE
from ..web.auth import current_caller, require_user
from .models import Body, Data, LowercaseLang, Ok, PageQuery

bp = Blueprint("consents", __name__, url_prefix="/api/application")

ConsentValues = dict[str, StrictBool]


class ConsentsBody(Body):
    consents: ConsentValues = Field(description="New values by consent type, e.g. {\"emails.promotional\": false}.")


class UnsubscribeBody(ConsentsBody):
    token: str | None = Field(description="Unsubscribe token from a newsletter email.")


class ConsentTypesQuery(PageQuery):
    lang: LowercaseLang = Field(description="The language (ISO 639-1) of the consents names.")


class ConsentType(BaseModel):
    type: str
    name: str
    value: bool


async def update_consents(conn: asyncpg.Connection, user_id: int, consents: Mapping[str, bool]) -> None:
    """Set the user's consents; all or nothing: one unknown type changes none (asyncio side)."""
    known = await conn.fetch("SELECT key FROM consent_types WHERE key = ANY($1::text[])", list(consents))
    unknown = sorted(set(consents) - {row["key"] for row in known})
    if unknown:
        raise ApiError(ErrorCode.UNKNOWN_CONSENT_TYPE, f"unknown consent type: {', '.join(unknown)}")
    await conn.executemany(
        """INSERT INTO user_consents (user_id, type_key, value) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, type_key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
        [(user_id, key, value) for key, value in consents.items()],
    )


async def consent_types(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """Every consent type with the user's value, else its default (asyncio side)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT t.key, t.names, coalesce(c.value, t.default_value) AS value
           FROM consent_types t LEFT JOIN user_consents c ON c.type_key = t.key AND c.user_id = $1
           ORDER BY t.sort_order, t.key""",
        user_id,
    )
    return rows


@bp.post("/consents")
@tag(["Consents"])
@require_user
@validate_request(ConsentsBody)
@validate_response(Ok)
async def update(data: ConsentsBody) -> Ok:
    """Update the user's consents."""
    user_id = current_caller().user_id
    await services().db.transaction(lambda conn: update_consents(conn, user_id, data.consents))
    return Ok()


@bp.get("/consents/types")
@tag(["Consents"])
@require_user
@validate_querystring(ConsentTypesQuery)
@validate_response(Data[list[ConsentType]])
async def types(query_args: ConsentTypesQuery) -> Data[list[ConsentType]]:
    """Return all consents types, named in the asked language (English when not translated)."""
    user_id = current_caller().user_id
    rows = await services().db.run(lambda conn: consent_types(conn, user_id))
    return Data(data=[
        ConsentType(type=row["key"], name=localize(row["names"], query_args.lang).text, value=row["value"])
        for row in rows
    ])


@bp.post("/consents/unsubscribe")
@tag(["Consents"])
@validate_request(UnsubscribeBody)
@validate_response(Ok)
async def unsubscribe(data: UnsubscribeBody) -> Ok:
    """Update the user's consents from the unsubscribe token of a newsletter email."""
    if data.token is None:
        raise ApiError(ErrorCode.INVALID_TOKEN, "missing unsubscribe token")
    user_id = int(services().signer.read_purpose(data.token, PURPOSE_UNSUBSCRIBE)["user_id"])

    async def work(conn: asyncpg.Connection) -> None:
        if not await conn.fetchval("SELECT true FROM users WHERE id = $1 FOR SHARE", user_id):
            raise ApiError(ErrorCode.INVALID_TOKEN, "the account of this token no longer exists")
        await update_consents(conn, user_id, data.consents)

    await services().db.transaction(work)
    return Ok()
