"""The rents' SQL, and nothing else: each function runs on the connection of a unit of work.

The feed events of a transition are published by ``book.py`` in the same
unit of work; the pricing rule is ``pricing.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import asyncpg

from actors.rent import CommandKind, EndedBy, Rent, RentRequest, RentState, Return, TripRules

from ..catalog.store import VEHICLE_FACT_COLUMNS

CURRENT_STATES = ("unlocking", "ongoing", "paused")
RIDING_STATES = ("ongoing", "paused")

# A rent's row with what its network rules of it (the too-long warning, the trip timers): every ``Rent``
# is read through one of these, so a value the actor holds always carries its network's rules as they are.
_NETWORK_COLUMNS = "n.trip_too_long, n.allow_trip_on_hold, n.trip_auto_pause, n.trip_max_pause, n.trip_auto_lock"
_RENT = f"SELECT r.*, {_NETWORK_COLUMNS} FROM rents r JOIN networks n ON n.id = r.network_id"


def _returning(update: str) -> str:
    """``update`` (an UPDATE or INSERT ... RETURNING *) with the network's columns of its rent."""
    return f"WITH r AS ({update}) SELECT r.*, {_NETWORK_COLUMNS} FROM r JOIN networks n ON n.id = r.network_id"


def _seconds(value: int | None) -> int | None:
    """A network's timer: seconds, or None (never) for 0 or less."""
    return value if value is not None and value > 0 else None


def _epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def rules_of(row: asyncpg.Record) -> TripRules:
    """The network's trip timers (spec row 66); 0 or less: that timer never fires."""
    return TripRules(
        allow_pause=row["allow_trip_on_hold"], auto_pause=_seconds(row["trip_auto_pause"]),
        max_pause=_seconds(row["trip_max_pause"]), auto_lock=_seconds(row["trip_auto_lock"]),
    )


def rent_of(row: asyncpg.Record) -> Rent:
    state = RentState(row["state"])
    return Rent(
        rent_id=row["id"], user_id=row["user_id"], vehicle_id=row["vehicle_id"], network_id=row["network_id"],
        state=state, requested_at=row["requested_at"].timestamp(), unlock_id=row["unlock_id"],
        station_id=row["station_id"], spot=row["spot"],
        time_start=row["time_start"].timestamp() if state is not RentState.UNLOCKING else None,
        too_long_after=row["trip_too_long"] or None, too_long_warned=row["too_long_warned"],
        free_floating=row["free_floating"], rules=rules_of(row),
        paused_at=_epoch(row["on_hold_since"]) if state is RentState.PAUSED else None,
        moved_at=_epoch(row["moved_at"]),
        command=CommandKind(row["command"]) if row["command"] is not None else None,
        command_id=row["command_id"], command_at=_epoch(row["command_at"]),
    )


async def current_rent(conn: asyncpg.Connection, vehicle_id: int) -> Rent | None:
    row = await conn.fetchrow(_RENT + " WHERE r.vehicle_id = $1 AND r.state = ANY($2::text[])",
                              vehicle_id, list(CURRENT_STATES))
    return None if row is None else rent_of(row)


async def vehicles_with_current_rents(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch("SELECT vehicle_id FROM rents WHERE state = ANY($1::text[])", list(CURRENT_STATES))
    return [row["vehicle_id"] for row in rows]


# reserving ---------------------------------------------------------------------------------


async def lock_rider(conn: asyncpg.Connection, user_id: int) -> bool:
    """Serialize a rider's reservations and wallet spending (the row lock lasts the transaction)."""
    found: bool = await conn.fetchval("SELECT true FROM users WHERE id = $1 FOR UPDATE", user_id) or False
    return found


async def network_rules(conn: asyncpg.Connection, network_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT max_simultaneous_rented_vehicle, min_guarantee, trip_too_long, currency, unlock_fee,
                  price_per_minute
           FROM networks WHERE id = $1""",
        network_id,
    )
    return row


async def current_rents_of(conn: asyncpg.Connection, user_id: int, network_id: int) -> int:
    count: int = await conn.fetchval(
        "SELECT count(*) FROM rents WHERE user_id = $1 AND network_id = $2 AND state = ANY($3::text[])",
        user_id, network_id, list(CURRENT_STATES),
    )
    return count


async def insert_unlocking(conn: asyncpg.Connection, vehicle_id: int, request: RentRequest) -> Rent | None:
    """The new rent, or None when the vehicle already has a current one (the unique index says so).

    A request without a station is a free-floating rent (the vehicle's own module unlocks it)."""
    row = await conn.fetchrow(
        _returning("""
            INSERT INTO rents (user_id, vehicle_id, network_id, state, unlock_id, via, station_id, spot,
                               free_floating)
            VALUES ($1, $2, $3, 'unlocking', nextval('station_unlock_ids'), $4, $5, $6, $5::bigint IS NULL)
            ON CONFLICT (vehicle_id) WHERE state IN ('unlocking', 'ongoing', 'paused') DO NOTHING
            RETURNING *"""),
        request.user_id, vehicle_id, request.network_id, request.via.value, request.station_id, request.spot,
    )
    return None if row is None else rent_of(row)


# transitions --------------------------------------------------------------------------------


async def mark_started(conn: asyncpg.Connection, rent_id: int) -> Rent | None:
    row = await conn.fetchrow(
        _returning("UPDATE rents SET state = 'ongoing', time_start = now() WHERE id = $1 AND state = 'unlocking'"
                   " RETURNING *"),
        rent_id,
    )
    if row is not None:
        await conn.execute("UPDATE vehicles SET state = 'rented' WHERE id = $1", row["vehicle_id"])
    return None if row is None else rent_of(row)


async def mark_failed(conn: asyncpg.Connection, rent_id: int, reason: str) -> bool:
    done = await conn.fetchval(
        """UPDATE rents SET state = 'failed', failure = $2, ended_at = now()
           WHERE id = $1 AND state = 'unlocking' RETURNING true""",
        rent_id, reason,
    )
    return bool(done)


async def riding_rent(conn: asyncpg.Connection, rent_id: int) -> asyncpg.Record | None:
    """The rent, locked for its end, if it is still riding."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM rents WHERE id = $1 AND state IN ('ongoing', 'paused') FOR UPDATE", rent_id
    )
    return row


async def billing_stop(conn: asyncpg.Connection, rent_id: int, at_ms: int) -> datetime:
    """The station's time of the return, kept between the rent's start and now (a station's clock may be off)."""
    stop: datetime = await conn.fetchval(
        """SELECT least(greatest(to_timestamp($2::double precision / 1000), time_start), now())
           FROM rents WHERE id = $1""",
        rent_id, at_ms,
    )
    return stop


async def wallet_balance(conn: asyncpg.Connection, user_id: int, currency: str) -> Decimal:
    balance: Decimal = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM wallet_entries WHERE user_id = $1 AND currency = $2", user_id, currency
    )
    return balance


async def spend_wallet(conn: asyncpg.Connection, user_id: int, rent_id: int, amount: Decimal, currency: str) -> None:
    await conn.execute(
        "INSERT INTO wallet_entries (user_id, amount, currency, rent_id) VALUES ($1, $2, $3, $4)",
        user_id, -amount, currency, rent_id,
    )


async def mark_ended(
    conn: asyncpg.Connection, rent_id: int, stop: datetime, returned: Return, *, currency: str, price: Decimal,
    paid_by_wallet: Decimal, amount_due: Decimal,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """UPDATE rents SET state = 'ended', billing_time_stop = $2, ended_at = now(), end_station_id = $3,
                            end_spot = $4, currency = $5, price = $6, paid_by_wallet = $7, amount_due = $8,
                            end_latitude = $9, end_longitude = $10, ended_by = $11,
                            command = NULL, command_id = NULL, command_at = NULL
           WHERE id = $1 RETURNING *""",
        rent_id, stop, returned.station_id, returned.spot, currency, price, paid_by_wallet, amount_due,
        returned.latitude, returned.longitude, returned.ended_by.value,
    )
    await conn.execute("UPDATE vehicles SET state = 'available' WHERE id = $1 AND state = 'rented'", row["vehicle_id"])
    return row


async def mark_warned(conn: asyncpg.Connection, rent_id: int) -> Rent | None:
    row = await conn.fetchrow(
        _returning("UPDATE rents SET too_long_warned = true WHERE id = $1 AND state = 'ongoing' RETURNING *"),
        rent_id,
    )
    return None if row is None else rent_of(row)


async def record_command(conn: asyncpg.Connection, rent_id: int, kind: CommandKind) -> Rent | None:
    """A fresh command id (the stations' sequence: one id space for every device command) for a riding rent,
    replacing an earlier command; None when the rent is not riding."""
    row = await conn.fetchrow(
        _returning("""UPDATE rents SET command = $2, command_id = nextval('station_unlock_ids'), command_at = now()
                      WHERE id = $1 AND state = ANY($3::text[]) RETURNING *"""),
        rent_id, kind.value, list(RIDING_STATES),
    )
    return None if row is None else rent_of(row)


async def mark_paused(conn: asyncpg.Connection, rent_id: int, at_ms: int) -> Rent | None:
    """ongoing -> paused, on hold from the vehicle's time (kept between the start and now); the command is
    done. None when the rent is not ongoing."""
    row = await conn.fetchrow(
        _returning("""UPDATE rents SET state = 'paused',
                          on_hold_since = least(greatest(to_timestamp($2::double precision / 1000), time_start), now()),
                          command = NULL, command_id = NULL, command_at = NULL
                      WHERE id = $1 AND state = 'ongoing' RETURNING *"""),
        rent_id, at_ms,
    )
    return None if row is None else rent_of(row)


async def mark_resumed(conn: asyncpg.Connection, rent_id: int) -> Rent | None:
    """paused -> ongoing; the command is done. None when the rent is not paused."""
    row = await conn.fetchrow(
        _returning("""UPDATE rents SET state = 'ongoing', on_hold_since = NULL,
                          command = NULL, command_id = NULL, command_at = NULL
                      WHERE id = $1 AND state = 'paused' RETURNING *"""),
        rent_id,
    )
    return None if row is None else rent_of(row)


async def mark_moved(conn: asyncpg.Connection, rent_id: int, at: float) -> Rent | None:
    row = await conn.fetchrow(
        _returning("""UPDATE rents SET moved_at = to_timestamp($2::double precision)
                      WHERE id = $1 AND state = ANY($3::text[]) RETURNING *"""),
        rent_id, at, list(RIDING_STATES),
    )
    return None if row is None else rent_of(row)


# reconciliation (what the stations recorded while no actor was there to hear it) -------------


async def unlocked_recorded(conn: asyncpg.Connection, unlock_id: int) -> bool:
    found = await conn.fetchval(
        "SELECT true FROM station_messages WHERE action = 'unlocked' AND payload ->> 'unlock' = $1 LIMIT 1",
        str(unlock_id),
    )
    return bool(found)


async def locked_recorded(conn: asyncpg.Connection, rent: Rent) -> Return | None:
    """The first accepted ``locked`` of the rent's vehicle at a station of its network since it started."""
    assert rent.time_start is not None
    row = await conn.fetchrow(
        """SELECT m.station_id, (m.payload ->> 'spot')::int AS spot, (m.payload ->> 'time')::bigint AS at_ms
           FROM station_messages m
           JOIN stations s ON s.id = m.station_id
           JOIN clusters c ON c.id = s.cluster_id
           WHERE m.action = 'locked' AND m.payload ->> 'vehicle' = $1
             AND m.received_at >= to_timestamp($2) AND c.network_id = $3
             AND (m.result ->> 'accepted')::int <> 2
           ORDER BY m.received_at LIMIT 1""",
        str(rent.vehicle_id), rent.time_start, rent.network_id,
    )
    return None if row is None else Return(row["at_ms"], row["station_id"], row["spot"])


async def vehicle_unlocked(conn: asyncpg.Connection, vehicle_id: int, unlock_id: int) -> bool:
    """Has the vehicle's module recorded an ``unlocked`` echoing ``unlock_id``?"""
    found = await conn.fetchval(
        """SELECT true FROM vehicle_messages
           WHERE vehicle_id = $1 AND action = 'unlocked' AND payload ->> 'unlock' = $2 LIMIT 1""",
        vehicle_id, str(unlock_id),
    )
    return bool(found)


async def vehicle_locked(conn: asyncpg.Connection, vehicle_id: int, lock_id: int) -> Return | None:
    """The vehicle module's first recorded ``locked`` echoing ``lock_id``: its time and position."""
    row = await conn.fetchrow(
        """SELECT (payload ->> 'time')::bigint AS at_ms, (payload ->> 'lat')::double precision AS lat,
                  (payload ->> 'lng')::double precision AS lng
           FROM vehicle_messages
           WHERE vehicle_id = $1 AND action = 'locked' AND payload ->> 'lock' = $2
           ORDER BY received_at LIMIT 1""",
        vehicle_id, str(lock_id),
    )
    if row is None:
        return None
    return Return(row["at_ms"], latitude=row["lat"], longitude=row["lng"], ended_by=EndedBy.RIDER)


# reads ---------------------------------------------------------------------------------------

# A rent with its vehicle's facts and, while docked, its spot (the shape of the map's and the history's rents).
RENT_VIEW = f"""
SELECT r.id, r.user_id, r.vehicle_id, r.network_id, r.free_floating, r.state AS rent_state, r.time_start, r.billing_time_stop,
       r.on_hold_since, r.ended_at, r.currency, r.price, r.paid_by_wallet, r.amount_due, r.via,
       r.end_latitude, r.end_longitude, r.ended_by,
       {VEHICLE_FACT_COLUMNS},
       s.station_id, s.number AS spot_number, s.displayed_number, s.lock_status
FROM rents r
JOIN vehicles v ON v.id = r.vehicle_id
LEFT JOIN vehicle_models m ON m.id = v.model_id
LEFT JOIN exceptional_out_of_orders o ON o.id = v.exceptional_out_of_order_id
LEFT JOIN spots s ON s.id = v.spot_id
"""


async def history(conn: asyncpg.Connection, user_id: int, before: int | None, limit: int) -> list[asyncpg.Record]:
    """The rider's rents (failed unlocks left out): current ones first, then the others newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        RENT_VIEW + """WHERE r.user_id = $1 AND r.state <> 'failed' AND ($2::bigint IS NULL OR r.id < $2)
                       ORDER BY (r.state = ANY($4::text[])) DESC, r.id DESC LIMIT $3""",
        user_id, before, limit, list(CURRENT_STATES),
    )
    return rows


# The rider's current rents and passes not over yet, in one statement (the logged-in map's one query beyond
# the session check): rent rows (``kind`` 'rent', the ``RENT_VIEW`` columns), then pass rows (``kind`` 'pass':
# ``id``, ``end_date``, ``in_use``; the rent columns NULL).
_RENT_COLUMNS = RENT_VIEW.count(",")  # the columns after ``r.id`` in its select list (no comma elsewhere)
RENTS_AND_PASSES = f"""
SELECT * FROM (
    SELECT 'rent' AS kind, NULL::timestamptz AS end_date, NULL::boolean AS in_use, x.*
    FROM ({RENT_VIEW} WHERE r.user_id = $1 AND r.state = ANY($2::text[])) x
    UNION ALL
    SELECT 'pass', p.end_date, p.start_date <= now(), p.id, {", ".join(["NULL"] * _RENT_COLUMNS)}
    FROM passes p WHERE p.user_id = $1 AND p.end_date > now()
) both_kinds ORDER BY kind DESC, id
"""


async def rents_and_passes(conn: asyncpg.Connection, user_id: int) -> tuple[list[asyncpg.Record], list[asyncpg.Record]]:
    rows = await conn.fetch(RENTS_AND_PASSES, user_id, list(CURRENT_STATES))
    return [row for row in rows if row["kind"] == "rent"], [row for row in rows if row["kind"] == "pass"]


async def rent_of_user(conn: asyncpg.Connection, user_id: int, rent_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(RENT_VIEW + "WHERE r.id = $1 AND r.user_id = $2",
                                                     rent_id, user_id)
    return row


@dataclass(frozen=True, slots=True)
class VehicleToRent:
    """What the rent service checks of a vehicle before its actor is asked (the static side)."""

    vehicle_id: int
    network_id: int | None
    state: str
    out_of_order: bool
    free_floating: bool = False  # it has its own module (``vehicle-protocol.md``)


_VEHICLE_TO_RENT = """SELECT id, network_id, state, exceptional_out_of_order_id IS NOT NULL AS ooo, free_floating
                      FROM vehicles"""


def _to_rent(row: asyncpg.Record) -> VehicleToRent:
    return VehicleToRent(row["id"], row["network_id"], row["state"], row["ooo"], row["free_floating"])


async def vehicle_by_id(conn: asyncpg.Connection, vehicle_id: int) -> VehicleToRent | None:
    row = await conn.fetchrow(_VEHICLE_TO_RENT + " WHERE id = $1", vehicle_id)
    return None if row is None else _to_rent(row)


async def vehicle_by_serial(conn: asyncpg.Connection, serial_number: str) -> VehicleToRent | None:
    row = await conn.fetchrow(_VEHICLE_TO_RENT + " WHERE serial_number = $1", serial_number)
    return None if row is None else _to_rent(row)


async def vehicles_by_id(conn: asyncpg.Connection, vehicle_ids: list[int]) -> dict[int, VehicleToRent]:
    rows = await conn.fetch(_VEHICLE_TO_RENT + " WHERE id = ANY($1::bigint[])", vehicle_ids)
    return {row["id"]: _to_rent(row) for row in rows}


async def vehicle_station(conn: asyncpg.Connection, vehicle_id: int) -> int | None:
    """The station where the vehicle is docked, as recorded; None when it is not docked."""
    found: int | None = await conn.fetchval(
        "SELECT sp.station_id FROM vehicles v JOIN spots sp ON sp.id = v.spot_id WHERE v.id = $1", vehicle_id
    )
    return found
