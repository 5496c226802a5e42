"""App labels (white labels): store URLs."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from .models import Data, PageQuery

bp = Blueprint("app_labels", __name__, url_prefix="/api/application/app-labels")


class StoreUrlQuery(PageQuery):
    app_label: str


class StoreUrl(BaseModel):
    android_store_url: str | None
    ios_store_url: str | None


@bp.get("/store-url")
@tag(["App labels"])
@validate_querystring(StoreUrlQuery)
@validate_response(Data[list[StoreUrl]])
async def store_url(query_args: StoreUrlQuery) -> Data[list[StoreUrl]]:
    """Store URLs of an app label."""
    row = await services().db.fetchrow(
        "SELECT android_store_url, ios_store_url FROM app_labels WHERE name = $1", query_args.app_label
    )
    if row is None:
        raise ApiError(ErrorCode.UNKNOWN_APP_LABEL)
    return Data(data=[StoreUrl(**dict(row))])
