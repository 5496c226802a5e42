"""App labels (white labels): store URLs."""

from __future__ import annotations

from pydantic import BaseModel
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_response

from ..context import services
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
    row = await services().content.store_urls(query_args.app_label)
    return Data(data=[StoreUrl(**dict(row))])
