"""The catalog's SQL for the reads its routes make beyond the in-memory catalog (called by ``catalog_service.py``).

Each function is an asyncio-side unit of work given to ``Database.run`` whole.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from decimal import Decimal

import asyncpg

from protocols.errors import ErrorCode

from .catalog import VEHICLE_FACT_COLUMNS
from .errors import ApiError
from .services.geo import distance_m

# The caller's open rents (with their vehicle's facts and spot) and current passes, for the map.
RENTS_AND_PASSES = f"""
SELECT 'rent' AS kind, r.id, r.vehicle_id, r.network_id, r.free_floating, r.time_start, r.billing_time_stop,
       r.on_hold_since, NULL::timestamptz AS end_date, NULL::boolean AS in_use,
       {VEHICLE_FACT_COLUMNS},
       s.station_id, s.number AS spot_number, s.displayed_number, s.lock_status
FROM rents r
JOIN vehicles v ON v.id = r.vehicle_id
LEFT JOIN vehicle_models m ON m.id = v.model_id
LEFT JOIN exceptional_out_of_orders o ON o.id = v.exceptional_out_of_order_id
LEFT JOIN spots s ON s.id = v.spot_id
WHERE r.user_id = $1 AND r.ended_at IS NULL
UNION ALL
SELECT 'pass', p.id, NULL, p.network_id, NULL, NULL, NULL, NULL, p.end_date, p.start_date <= now(),
       {", ".join(["NULL"] * (VEHICLE_FACT_COLUMNS.count(",") + 1))}, NULL, NULL, NULL, NULL
FROM passes p
WHERE p.user_id = $1 AND p.end_date > now()
ORDER BY kind DESC, id
"""


async def rents_and_passes(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(RENTS_AND_PASSES, user_id)
    return rows


# discounts (rules: the docstring of ``api/discounts.py``) ------------------------------------------

ADD_CREDIT = "add-credit"

DISCOUNT_COLUMNS = "d.id, d.name, d.discount_type, d.type, d.stop_date, d.code, d.data, d.currency, d.network_id"


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


# operators' writes: networks, their app labels, out-of-order notices, parkings, speed zones ---------------

# The network rules an operator sets (columns of ``networks``); names outside this list are refused, so
# the column names put in the SQL come from here only.
NETWORK_RULES = frozenset({
    "max_simultaneous_rented_vehicle", "allow_trip_on_hold", "trip_too_long", "trip_auto_pause", "trip_max_pause",
    "trip_auto_lock", "min_guarantee", "max_guarantee", "exceptional_out_of_order_id",
})


async def create_network(
    conn: asyncpg.Connection, name: str, *, organization_id: int | None, public: bool, organization_only: bool,
    shape: list[list[float]], center: tuple[float, float], currency: str, rules: Mapping[str, object],
) -> int:
    unknown = set(rules) - NETWORK_RULES
    if unknown:
        raise ApiError(ErrorCode.INVALID_INPUT, f"unknown network rules: {sorted(unknown)}")
    columns = ["name", "organization_id", "is_public", "organization_only", "shape", "center_latitude",
               "center_longitude", "currency", *rules]
    values = [name, organization_id, public, organization_only, shape, center[0], center[1], currency,
              *rules.values()]
    placeholders = ", ".join(f"${i}" for i in range(1, len(values) + 1))
    network_id: int = await conn.fetchval(
        f"INSERT INTO networks ({', '.join(columns)}) VALUES ({placeholders}) RETURNING id", *values
    )
    return network_id


async def link_app_label(conn: asyncpg.Connection, network_id: int, app_label_id: int) -> None:
    """Show the network in the app of ``app_label_id`` (linking twice is one link)."""
    await conn.execute("INSERT INTO network_app_labels VALUES ($1, $2) ON CONFLICT DO NOTHING", network_id,
                       app_label_id)


async def create_out_of_order(conn: asyncpg.Connection, kind: str, reason: str, custom_reason: str | None) -> int:
    out_of_order_id: int = await conn.fetchval(
        "INSERT INTO exceptional_out_of_orders (type, reason, custom_reason) VALUES ($1, $2, $3) RETURNING id",
        kind, reason, custom_reason,
    )
    return out_of_order_id


async def create_parking(
    conn: asyncpg.Connection, network_id: int, cluster_id: int | None, shape: list[list[float]]
) -> int:
    parking_id: int = await conn.fetchval(
        "INSERT INTO virtual_parkings (network_id, cluster_id, shape) VALUES ($1, $2, $3) RETURNING id",
        network_id, cluster_id, shape,
    )
    return parking_id


async def create_speed_zone(conn: asyncpg.Connection, network_id: int, shape: list[list[float]], max_speed: int) -> int:
    zone_id: int = await conn.fetchval(
        "INSERT INTO speed_zones (network_id, shape, max_speed) VALUES ($1, $2, $3) RETURNING id",
        network_id, shape, max_speed,
    )
    return zone_id


async def create_discount(
    conn: asyncpg.Connection, name: str, discount_type: str, *, kind: int, stop_date: date | None,
    code: str | None, data: Decimal, currency: str, network_id: int | None, usable_in_shop: bool,
) -> int:
    discount_id: int = await conn.fetchval(
        """INSERT INTO discounts (name, discount_type, type, stop_date, code, data, currency, network_id,
                                  usable_in_shop)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id""",
        name, discount_type, kind, stop_date, code, data, currency, network_id, usable_in_shop,
    )
    return discount_id


# A cluster's details beyond its name and place, as an operator sets them (columns of ``clusters``).
CLUSTER_DETAILS = frozenset({
    "description", "commissioning_date", "soon_to_be_available", "exceptional_out_of_order_id", "has_badge_reader",
    "balancing_type", "max_unlock_distance",
})


async def set_cluster_details(conn: asyncpg.Connection, cluster_id: int, details: Mapping[str, object]) -> None:
    unknown = set(details) - CLUSTER_DETAILS
    if unknown:
        raise ApiError(ErrorCode.INVALID_INPUT, f"unknown cluster details: {sorted(unknown)}")
    if details:
        assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(details, start=2))
        await conn.execute(f"UPDATE clusters SET {assignments} WHERE id = $1", cluster_id, *details.values())


async def grant_discount(conn: asyncpg.Connection, user_id: int, discount_id: int, *, active: bool) -> None:
    await conn.execute(
        "INSERT INTO user_discounts (user_id, discount_id, active) VALUES ($1, $2, $3)", user_id, discount_id, active
    )
