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

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.geo import Latitude, Longitude, distance_m
from ..web.auth import current_caller, require_user
from .models import Body, Data, PageQuery

bp = Blueprint("discounts", __name__, url_prefix="/api/application/discounts")

ADD_CREDIT = "add-credit"

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


DISCOUNT_COLUMNS = "d.id, d.name, d.discount_type, d.type, d.stop_date, d.code, d.data, d.currency, d.network_id"


def discount_of(row: asyncpg.Record) -> Discount:
    return Discount(
        discount_id=row["id"], name=row["name"], discount_type=row["discount_type"], type=row["type"],
        stop_date=row["stop_date"], code=row["code"], data=float(row["data"]), currency=row["currency"],
    )


def today() -> date:
    return datetime.now(UTC).date()


async def nearest_network_id(conn: asyncpg.Connection, lat: float, lng: float) -> int | None:
    """The network whose centre is the closest to (lat, lng); None when there is none (asyncio side)."""
    rows = await conn.fetch("SELECT id, center_latitude, center_longitude FROM networks")
    if not rows:
        return None
    nearest = min(
        rows, key=lambda r: (distance_m(lat, lng, r["center_latitude"], r["center_longitude"]), r["id"])
    )
    network_id: int = nearest["id"]
    return network_id


async def user_discounts(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {DISCOUNT_COLUMNS}, ud.active
            FROM user_discounts ud JOIN discounts d ON d.id = ud.discount_id
            WHERE ud.user_id = $1
            ORDER BY ud.granted_at, d.id""",
        user_id,
    )
    return rows


async def shop_discounts(
    conn: asyncpg.Connection, user_id: int, lat: float, lng: float, on: date
) -> list[asyncpg.Record]:
    """The user's active shop discounts, valid on ``on`` and on the nearest network (asyncio side)."""
    network_id = await nearest_network_id(conn, lat, lng)
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {DISCOUNT_COLUMNS}
            FROM user_discounts ud JOIN discounts d ON d.id = ud.discount_id
            WHERE ud.user_id = $1 AND ud.active AND d.usable_in_shop
              AND (d.stop_date IS NULL OR d.stop_date >= $2)
              AND (d.network_id IS NULL OR d.network_id = $3::bigint)
            ORDER BY ud.granted_at, d.id""",
        user_id, on, network_id,
    )
    return rows


async def use_code(
    conn: asyncpg.Connection, user_id: int, code: str, lat: float, lng: float, on: date
) -> asyncpg.Record:
    """Grant the discount of ``code`` to the user, crediting the wallet for add-credit (asyncio side, in a
    transaction: any error leaves nothing behind)."""
    discount = await conn.fetchrow(f"SELECT {DISCOUNT_COLUMNS} FROM discounts d WHERE d.code = $1", code)
    if discount is None:
        raise ApiError(ErrorCode.DISCOUNT_UNKNOWN)
    if discount["stop_date"] is not None and discount["stop_date"] < on:
        raise ApiError(ErrorCode.DISCOUNT_EXPIRED)
    if discount["network_id"] is not None and discount["network_id"] != await nearest_network_id(conn, lat, lng):
        raise ApiError(ErrorCode.DISCOUNT_NOT_AVAILABLE_HERE)
    # Waits for a concurrent use of the same code by the same user, then sees its row.
    granted = await conn.fetchval(
        """INSERT INTO user_discounts (user_id, discount_id) VALUES ($1, $2)
           ON CONFLICT (user_id, discount_id) DO NOTHING RETURNING true""",
        user_id, discount["id"],
    )
    if not granted:
        raise ApiError(ErrorCode.DISCOUNT_ALREADY_USED)
    if discount["discount_type"] == ADD_CREDIT:
        credited = await conn.fetchval(
            """INSERT INTO wallet_entries (user_id, amount, currency, discount_id) VALUES ($1, $2, $3, $4)
               ON CONFLICT (user_id, discount_id) DO NOTHING RETURNING id""",
            user_id, discount["data"], discount["currency"], discount["id"],
        )
        if credited is None:
            raise ApiError(ErrorCode.DISCOUNT_ALREADY_USED)
    return discount


@bp.get("")
@tag(["Discounts"])
@require_user
@validate_response(Data[list[UserDiscount]])
async def list_discounts() -> Data[list[UserDiscount]]:
    """The user's discounts."""
    user_id = current_caller().user_id
    rows = await services().db.run(lambda conn: user_discounts(conn, user_id))
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
    rows = await services().db.run(
        lambda conn: shop_discounts(conn, user_id, query_args.lat, query_args.lng, on)
    )
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
    svc.limiter.check((rates.discount_code_per_user, "discount_code:user", str(user_id)))
    on = today()
    row = await svc.db.transaction(lambda conn: use_code(conn, user_id, data.code, data.lat, data.lng, on))
    return Data(data=discount_of(row))
