"""Discounts: the user's discounts, those usable in the shop, redeeming a code (ROUTES rows 25-27).

Rules:

- "Nearest network" is the network whose centre is the closest to the given
  position by great-circle distance (``services.geo.distance_m``); ties go to the
  lowest id. A discount without a network is valid on every network.
- A discount is valid through its ``stop_date`` (inclusive, UTC calendar date);
  one without a ``stop_date`` never expires.
- The shop lists the user's active discounts that are ``usable_in_shop``, not
  expired, and valid on the nearest network.
- A code is matched exactly (surrounding spaces removed). Checks, in order:
  unknown (26), expired (28), not valid on the nearest network (29), already used
  by this user (27). Using it grants the discount (``user_discounts``) and, for an
  ``add-credit`` discount, credits the wallet with ``data`` in ``currency``, in
  the same transaction. The primary key of ``user_discounts`` and the
  ``UNIQUE (user_id, discount_id)`` of ``wallet_entries`` make two concurrent uses
  credit once: the second waits for the first and gets 27.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

import asyncpg
from pydantic import BaseModel, Field, Strict, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from ..context import services
from ..services.geo import Latitude, Longitude
from ..web.auth import current_caller, require_user
from .models import Body, Data, PageQuery

bp = Blueprint("discounts", __name__, url_prefix="/api/application/discounts")


DiscountCode = Annotated[str, Strict(), StringConstraints(strip_whitespace=True, min_length=1)]


class ShopQuery(PageQuery):
    lat: Latitude = Field(description="Latitude of the user, to find the nearest network.")
    lng: Longitude = Field(description="Longitude of the user, to find the nearest network.")


class UseCodeBody(Body):
    lat: Annotated[Latitude, Strict()] = Field(description="Latitude of the user, to find the nearest network.")
    lng: Annotated[Longitude, Strict()] = Field(description="Longitude of the user, to find the nearest network.")
    code: DiscountCode = Field(description="Discount code to identify which discount we try to use.")


class Discount(BaseModel):
    discount_id: int
    name: str
    discount_type: str = Field(description="add-credit, percent, free-minutes, ...")
    type: int
    stop_date: date | None = Field(description="Last day the discount is valid (none: never expires).")
    code: str | None
    data: float = Field(description="Value of the discount: an amount for add-credit, a rate, minutes, ...")
    currency: str


class UserDiscount(Discount):
    active: bool


def discount_of(row: asyncpg.Record) -> Discount:
    return Discount(
        discount_id=row["id"], name=row["name"], discount_type=row["discount_type"], type=row["type"],
        stop_date=row["stop_date"], code=row["code"], data=float(row["data"]), currency=row["currency"],
    )


def today() -> date:
    return datetime.now(UTC).date()



@bp.get("")
@tag(["Discounts"])
@require_user
@validate_response(Data[list[UserDiscount]])
async def list_discounts() -> Data[list[UserDiscount]]:
    """The user's discounts."""
    user_id = current_caller().user_id
    rows = await services().catalog_service.user_discounts(user_id)
    return Data(data=[UserDiscount(**discount_of(row).model_dump(), active=row["active"]) for row in rows])


@bp.get("/shop")
@tag(["Discounts"])
@require_user
@validate_querystring(ShopQuery)
@validate_response(Data[list[Discount]])
async def shop(query_args: ShopQuery) -> Data[list[Discount]]:
    """Return discounts usable by the user for the shop, on the nearest network."""
    user_id = current_caller().user_id
    on = today()
    rows = await services().catalog_service.shop_discounts(user_id, query_args.lat, query_args.lng, on)
    return Data(data=[discount_of(row) for row in rows])


@bp.post("/code")
@tag(["Discounts"])
@require_user
@validate_request(UseCodeBody)
@validate_response(Data[Discount])
async def use(data: UseCodeBody) -> Data[Discount]:
    """Use a discount code. Attempts are rate limited per user (20 an hour by default): 429 code 9."""
    svc = services()
    user_id = current_caller().user_id
    rates = svc.settings.rate_limits
    await svc.limiter.check((rates.discount_code_per_user, "discount_code:user", str(user_id)))
    on = today()
    row = await svc.catalog_service.use_code(user_id, data.code, data.lat, data.lng, on)
    return Data(data=discount_of(row))
