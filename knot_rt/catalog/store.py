"""All of the catalog's SQL (called by ``service.py``, and by ``memory.py`` for a full read).

Each function is an asyncio-side unit of work given to ``Database.run`` whole, or
a step of one (``uow.conn``). The functions answer rows (``asyncpg.Record``) or
small row-shaped facts; turning rows into the in-memory catalog's objects is
``memory.py``'s (``network_of``, ``cluster_of``, ...), so this module imports
nothing of the memory and the memory reads through it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

import asyncpg

from protocols.errors import ErrorCode

from ..errors import ApiError
from ..services.permissions import Scope
from .countries import CountryInfo, all_countries, country_info
from .geo import translate_shape

# the catalog's rows, as the memory reads them -------------------------------------------------

# The columns of an exceptional out-of-order joined as ``o`` (networks, clusters, vehicles).
_OOO = "o.id AS ooo_id, o.type AS ooo_type, o.reason AS ooo_reason, o.custom_reason AS ooo_custom_reason"

# The columns ``memory.vehicle_facts`` reads besides ``vehicle_id`` and ``network_id``, from ``vehicles v
# LEFT JOIN vehicle_models m LEFT JOIN exceptional_out_of_orders o``.
VEHICLE_FACT_COLUMNS = f"""v.serial_number, v.model_id, v.avg_max_range, v.state, v.has_freefloat_to_station_reward,
    m.name AS model_name, m.manufacturer, m.vehicle_type, m.min_battery_to_slow_down, m.min_battery_to_auto_lock,
    {_OOO}"""

# A cluster's row as the catalog reads it (``WHERE c.id = $1`` may follow: one cluster).
CLUSTER_QUERY = f"""SELECT c.*, {_OOO} FROM clusters c
    LEFT JOIN exceptional_out_of_orders o ON o.id = c.exceptional_out_of_order_id"""

PARKING_COLUMNS = "id, network_id, cluster_id, shape"


@dataclass(frozen=True, slots=True)
class CatalogRows:
    """Everything the in-memory catalog holds, as rows read in one go."""

    networks: list[asyncpg.Record]
    clusters: list[asyncpg.Record]
    parkings: list[asyncpg.Record]
    speed_zones: list[asyncpg.Record]
    vehicles: list[asyncpg.Record]
    app_labels: list[asyncpg.Record]


async def load_all(conn: asyncpg.Connection) -> CatalogRows:
    """Every network (with its out-of-order and app labels), cluster, parking, speed zone, vehicle's facts and
    app label."""
    return CatalogRows(
        networks=await conn.fetch(
            f"""SELECT n.*, {_OOO},
                       ARRAY(SELECT app_label_id FROM network_app_labels l WHERE l.network_id = n.id) AS app_labels
                FROM networks n LEFT JOIN exceptional_out_of_orders o ON o.id = n.exceptional_out_of_order_id"""
        ),
        clusters=await conn.fetch(CLUSTER_QUERY),
        parkings=await conn.fetch("SELECT * FROM virtual_parkings"),
        speed_zones=await conn.fetch("SELECT * FROM speed_zones"),
        vehicles=await conn.fetch(
            f"""SELECT v.id AS vehicle_id, v.network_id, {VEHICLE_FACT_COLUMNS}
                FROM vehicles v LEFT JOIN vehicle_models m ON m.id = v.model_id
                LEFT JOIN exceptional_out_of_orders o ON o.id = v.exceptional_out_of_order_id"""
        ),
        app_labels=await conn.fetch("SELECT id, name FROM app_labels"),
    )


async def cluster_row(conn: asyncpg.Connection, cluster_id: int) -> asyncpg.Record | None:
    """One cluster's row as the memory reads it (``memory.cluster_of``)."""
    row: asyncpg.Record | None = await conn.fetchrow(CLUSTER_QUERY + " WHERE c.id = $1", cluster_id)
    return row


async def parking_rows(conn: asyncpg.Connection, parking_ids: list[int]) -> list[asyncpg.Record]:
    """Parkings' rows as the memory reads them (``memory.parking_of``)."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {PARKING_COLUMNS} FROM virtual_parkings WHERE id = ANY($1::int[])", parking_ids
    )
    return rows


# clusters: spots, scopes, writes ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpotFacts:
    """A spot of a cluster as the database knows it (flags are the durable truth; the rest is last known)."""

    spot_id: int
    station_id: int
    number: int
    displayed_number: int
    in_maintenance: bool
    is_accessible: bool
    vehicle_id: int | None
    station_online: bool


async def cluster_spots(conn: asyncpg.Connection, cluster_id: int) -> list[SpotFacts]:
    """The spots of every station of a cluster, by station then displayed number."""
    rows = await conn.fetch(
        """SELECT p.id, p.station_id, p.number, p.displayed_number, p.in_maintenance, p.is_accessible,
                  p.vehicle_id, s.online
           FROM spots p JOIN stations s ON s.id = p.station_id
           WHERE s.cluster_id = $1
           ORDER BY p.station_id, p.displayed_number, p.id""",
        cluster_id,
    )
    return [
        SpotFacts(r["id"], r["station_id"], r["number"], r["displayed_number"], r["in_maintenance"],
                  r["is_accessible"], r["vehicle_id"], r["online"])
        for r in rows
    ]


async def network_scope(conn: asyncpg.Connection, network_id: int) -> Scope | None:
    row = await conn.fetchrow("SELECT id, organization_id FROM networks WHERE id = $1", network_id)
    return None if row is None else Scope(network_id=row["id"], organization_id=row["organization_id"])


async def cluster_scope(conn: asyncpg.Connection, cluster_id: int) -> Scope | None:
    row = await conn.fetchrow(
        """SELECT c.id, c.network_id, n.organization_id FROM clusters c JOIN networks n ON n.id = c.network_id
           WHERE c.id = $1""",
        cluster_id,
    )
    if row is None:
        return None
    return Scope(network_id=row["network_id"], cluster_id=row["id"], organization_id=row["organization_id"])


async def create_cluster(conn: asyncpg.Connection, network_id: int, name: str, lat: float, lng: float) -> int:
    cluster_id: int = await conn.fetchval(
        "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, $2, $3, $4) RETURNING id",
        network_id, name, lat, lng,
    )
    return cluster_id


async def rename_cluster(conn: asyncpg.Connection, cluster_id: int, name: str) -> bool:
    status = await conn.execute("UPDATE clusters SET name = $2 WHERE id = $1", cluster_id, name)
    return not status.endswith(" 0")


async def set_max_unlock_distance(conn: asyncpg.Connection, cluster_id: int, distance: int | None) -> bool:
    status = await conn.execute("UPDATE clusters SET max_unlock_distance = $2 WHERE id = $1", cluster_id, distance)
    return not status.endswith(" 0")


async def move_cluster(conn: asyncpg.Connection, cluster_id: int, lat: float, lng: float) -> list[int] | None:
    """Move a cluster and the parkings that follow it (``virtual_parkings.cluster_id``: their shapes are
    translated by the cluster's latitude/longitude delta), inside a transaction; their ids, or None if unknown."""
    old = await conn.fetchrow("SELECT latitude, longitude FROM clusters WHERE id = $1 FOR UPDATE", cluster_id)
    if old is None:
        return None
    d_lat, d_lng = lat - old["latitude"], lng - old["longitude"]
    await conn.execute("UPDATE clusters SET latitude = $2, longitude = $3 WHERE id = $1", cluster_id, lat, lng)
    parkings = await conn.fetch(
        "SELECT id, shape FROM virtual_parkings WHERE cluster_id = $1 ORDER BY id FOR UPDATE", cluster_id
    )
    await conn.executemany(
        "UPDATE virtual_parkings SET shape = $2 WHERE id = $1",
        [(p["id"], translate_shape(p["shape"], d_lat, d_lng)) for p in parkings],
    )
    return [p["id"] for p in parkings]


# discounts (rules: the docstring of ``api/discounts.py``) ------------------------------------------

ADD_CREDIT = "add-credit"

DISCOUNT_COLUMNS = "d.id, d.name, d.discount_type, d.type, d.stop_date, d.code, d.data, d.currency, d.network_id"


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
    conn: asyncpg.Connection, user_id: int, network_id: int | None, on: date
) -> list[asyncpg.Record]:
    """The user's active shop discounts, valid on ``on`` and on ``network_id`` (the nearest network; None when
    there is no network: only discounts without a network then)."""
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
    conn: asyncpg.Connection, user_id: int, code: str, network_id: int | None, on: date
) -> asyncpg.Record:
    """Grant the discount of ``code`` to the user, crediting the wallet for add-credit; ``network_id`` is the
    nearest network (asyncio side, in a transaction: any error leaves nothing behind)."""
    discount = await conn.fetchrow(f"SELECT {DISCOUNT_COLUMNS} FROM discounts d WHERE d.code = $1", code)
    if discount is None:
        raise ApiError(ErrorCode.DISCOUNT_UNKNOWN)
    if discount["stop_date"] is not None and discount["stop_date"] < on:
        raise ApiError(ErrorCode.DISCOUNT_EXPIRED)
    if discount["network_id"] is not None and discount["network_id"] != network_id:
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
    "trip_auto_lock", "min_guarantee", "max_guarantee", "exceptional_out_of_order_id", "unlock_fee",
    "price_per_minute",
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
# countries (the rows: ``countries.py``) -----------------------------------------------------------

_INSERT_COUNTRIES = """
    INSERT INTO countries (iso_2, iso_3, name, phone_prefix)
    SELECT n.iso_2, n.iso_3, n.name, n.phone_prefix
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
         AS n(iso_2, iso_3, name, phone_prefix, position)
    WHERE NOT EXISTS (SELECT 1 FROM countries c WHERE c.iso_2 = n.iso_2)
    ORDER BY n.position
    ON CONFLICT (iso_2) DO NOTHING
"""


async def _insert_countries(conn: asyncpg.Connection, countries: tuple[CountryInfo, ...]) -> int:
    status: str = await conn.execute(
        _INSERT_COUNTRIES,
        [c.iso_2 for c in countries], [c.iso_3 for c in countries],
        [c.name for c in countries], [c.phone_prefix for c in countries],
    )
    return int(status.rsplit(" ", 1)[-1])


async def ensure_countries(conn: asyncpg.Connection) -> int:
    """Add the missing countries; existing rows are left as they are, so a country's id is stable for the life
    of the database. Returns how many were added (asyncio side; run at every start, after the migrations)."""
    return await _insert_countries(conn, all_countries())


COUNTRY_COLUMNS = "id, name, iso_2, iso_3, phone_prefix"


async def country_by_iso_2(conn: asyncpg.Connection, iso_2: str) -> asyncpg.Record | None:
    """The row of a country, added first if the table lacks it (a database seeded by an older release)."""
    sql = f"SELECT {COUNTRY_COLUMNS} FROM countries WHERE iso_2 = $1"
    row: asyncpg.Record | None = await conn.fetchrow(sql, iso_2)
    if row is None:
        info = country_info(iso_2)
        if info is None:
            return None
        await _insert_countries(conn, (info,))
        row = await conn.fetchrow(sql, iso_2)
    return row
