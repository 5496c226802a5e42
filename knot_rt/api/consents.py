"""Consents: what the user agrees to receive (ROUTES rows 21-23)."""

from __future__ import annotations

from pydantic import BaseModel, Field, StrictBool
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.content import localize
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


@bp.post("/consents")
@tag(["Consents"])
@require_user
@validate_request(ConsentsBody)
@validate_response(Ok)
async def update(data: ConsentsBody) -> Ok:
    """Update the user's consents."""
    user_id = current_caller().user_id
    await services().accounts.update_consents(user_id, data.consents)
    return Ok()


@bp.get("/consents/types")
@tag(["Consents"])
@require_user
@validate_querystring(ConsentTypesQuery)
@validate_response(Data[list[ConsentType]])
async def types(query_args: ConsentTypesQuery) -> Data[list[ConsentType]]:
    """Return all consents types, named in the asked language (English when not translated)."""
    user_id = current_caller().user_id
    rows = await services().accounts.consents(user_id)
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
    await services().accounts.unsubscribe(data.token, data.consents)
    return Ok()
