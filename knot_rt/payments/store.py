"""PostgreSQL of the payments domain (SQL only, asyncio side): customers, saved cards, guarantees, events."""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal

import asyncpg

GUARANTEE_COLUMNS = """g.id, g.public_id, g.user_id, g.network_id, g.vehicle_id, g.instance_id, g.amount, g.currency,
    g.status, g.payment_intent_id, g.keep_after_trip, g.capture_before, g.keep_until, g.captured_amount,
    g.provider_event_at, g.created_at, g.updated_at"""
INSTANCE_COLUMNS = """id, user_id, method_id, provider_method_id, card_brand, last4, exp_month, exp_year, card_networks,
    preferred_network, is_default, created_at"""
#: A guarantee that may still become usable (a hold asked for, not yet answered or authenticated).
OPEN_STATUSES = ("pending", "requires_action")
#: A rent's guarantee is tied while the rent is one of these.
CURRENT_RENT_STATES = ("unlocking", "ongoing", "paused")


# customers -------------------------------------------------------------------------------------------------

async def customer_of(conn: asyncpg.Connection, user_id: int) -> str | None:
    found: str | None = await conn.fetchval("SELECT customer_id FROM payment_customers WHERE user_id = $1", user_id)
    return found


async def lock_customer(conn: asyncpg.Connection, user_id: int) -> str | None:
    """The user's customer id, its row locked to the end of the transaction (one guarantee created at a time)."""
    found: str | None = await conn.fetchval(
        "SELECT customer_id FROM payment_customers WHERE user_id = $1 FOR UPDATE", user_id
    )
    return found


async def user_of_customer(conn: asyncpg.Connection, customer_id: str) -> int | None:
    found: int | None = await conn.fetchval("SELECT user_id FROM payment_customers WHERE customer_id = $1", customer_id)
    return found


async def save_customer(conn: asyncpg.Connection, user_id: int, customer_id: str) -> str:
    """Keep the user's customer; when one was kept meanwhile, that one wins and is returned."""
    found: str = await conn.fetchval(
        """INSERT INTO payment_customers (user_id, customer_id) VALUES ($1, $2)
           ON CONFLICT (user_id) DO UPDATE SET user_id = EXCLUDED.user_id
           RETURNING customer_id""",
        user_id, customer_id,
    )
    return found


async def email_of(conn: asyncpg.Connection, user_id: int) -> str | None:
    found: str | None = await conn.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    return found


# saved cards ---------------------------------------------------------------------------------------------------

async def instances_of(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        f"SELECT {INSTANCE_COLUMNS} FROM payment_instances WHERE user_id = $1 ORDER BY is_default DESC, id", user_id
    )
    return rows


async def instance(conn: asyncpg.Connection, user_id: int, instance_id: int | None) -> asyncpg.Record | None:
    """The user's saved method ``instance_id``, or their default one (else their newest) when None."""
    if instance_id is not None:
        row: asyncpg.Record | None = await conn.fetchrow(
            f"SELECT {INSTANCE_COLUMNS} FROM payment_instances WHERE id = $1 AND user_id = $2", instance_id, user_id
        )
        return row
    row = await conn.fetchrow(
        f"SELECT {INSTANCE_COLUMNS} FROM payment_instances WHERE user_id = $1 ORDER BY is_default DESC, id DESC LIMIT 1",
        user_id,
    )
    return row


async def save_instance(
    conn: asyncpg.Connection, user_id: int, method_id: int, provider_method_id: str, *, brand: str | None,
    last4: str | None, exp_month: int | None, exp_year: int | None, networks: list[str], preferred: str | None,
) -> tuple[asyncpg.Record, bool]:
    """Record a saved card (the user's first becomes the default); the same card again updates its row.

    Returns the row and whether it is new. A card recorded for another user is never moved (None-like: the
    caller checked the provider's customer first).
    """
    existing = await conn.fetchrow(
        f"SELECT {INSTANCE_COLUMNS} FROM payment_instances WHERE provider_method_id = $1", provider_method_id
    )
    if existing is not None:
        return existing, False
    has_default = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM payment_instances WHERE user_id = $1 AND is_default)", user_id
    )
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO payment_instances (user_id, method_id, provider_method_id, card_brand, last4, exp_month,
                exp_year, card_networks, preferred_network, is_default)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10)
            RETURNING {INSTANCE_COLUMNS}""",
        user_id, method_id, provider_method_id, brand, last4, exp_month, exp_year,
        _json_list(networks), preferred, not has_default,
    )
    return row, True


def _json_list(values: list[str]) -> str:
    return json.dumps(values)


# guarantees -------------------------------------------------------------------------------------------------

async def vehicle_network(conn: asyncpg.Connection, vehicle_id: int) -> asyncpg.Record | None:
    """The vehicle's network with its guarantee amount and currency (exact, from the database)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """SELECT v.id AS vehicle_id, n.id AS network_id, n.min_guarantee, n.currency
           FROM vehicles v JOIN networks n ON n.id = v.network_id WHERE v.id = $1""",
        vehicle_id,
    )
    return row


async def reusable_guarantee(
    conn: asyncpg.Connection, user_id: int, network_id: int, instance_id: int, amount: Decimal
) -> asyncpg.Record | None:
    """A guarantee of the user for that network already held, or asked for with the same card and amount.

    Usable: the new request is answered with it (no second hold). Pending without a PaymentIntent: an earlier
    request that did not hear from the provider; it is asked again with the same idempotency key, so a hold
    made then is found rather than made twice.
    """
    row: asyncpg.Record | None = await conn.fetchrow(
        f"""SELECT {GUARANTEE_COLUMNS} FROM guarantees g
            WHERE g.user_id = $1 AND g.network_id = $2
              AND (g.status = 'usable'
                   OR (g.status = 'pending' AND g.payment_intent_id IS NULL AND g.instance_id = $3 AND g.amount = $4
                       AND g.created_at > now() - interval '23 hours'))
            ORDER BY (g.status = 'usable') DESC, g.id DESC LIMIT 1""",
        user_id, network_id, instance_id, amount,
    )
    return row


async def insert_guarantee(
    conn: asyncpg.Connection, public_id: str, user_id: int, network_id: int, vehicle_id: int, instance_id: int,
    amount: Decimal, currency: str, keep_after_trip: bool,
) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        f"""INSERT INTO guarantees AS g (public_id, user_id, network_id, vehicle_id, instance_id, amount, currency,
                status, keep_after_trip)
            VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $8)
            RETURNING {GUARANTEE_COLUMNS}""",
        public_id, user_id, network_id, vehicle_id, instance_id, amount, currency, keep_after_trip,
    )
    return row


async def guarantee(conn: asyncpg.Connection, guarantee_id: int, *, lock: bool = False) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {GUARANTEE_COLUMNS} FROM guarantees g WHERE g.id = $1" + (" FOR UPDATE" if lock else ""),
        guarantee_id,
    )
    return row


async def guarantee_of_user(
    conn: asyncpg.Connection, user_id: int, public_id: str, *, lock: bool = False
) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {GUARANTEE_COLUMNS} FROM guarantees g WHERE g.public_id = $1 AND g.user_id = $2"
        + (" FOR UPDATE" if lock else ""),
        public_id, user_id,
    )
    return row


async def guarantee_of_intent(conn: asyncpg.Connection, payment_intent_id: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT {GUARANTEE_COLUMNS} FROM guarantees g WHERE g.payment_intent_id = $1", payment_intent_id
    )
    return row


async def listed_guarantees(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """Row 4: the user's usable and in-use holds, newest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {GUARANTEE_COLUMNS} FROM guarantees g
            WHERE g.user_id = $1 AND g.status IN ('usable', 'in_use') ORDER BY g.id DESC""",
        user_id,
    )
    return rows


async def set_intent_state(
    conn: asyncpg.Connection, guarantee_id: int, *, status: str, payment_intent_id: str | None,
    capture_before: datetime | None, event_at: datetime | None = None, captured_amount: Decimal | None = None,
) -> asyncpg.Record:
    """Write what the provider said of the guarantee's PaymentIntent (the caller decided it moves forward)."""
    row: asyncpg.Record = await conn.fetchrow(
        f"""UPDATE guarantees AS g SET status = $2,
                payment_intent_id = coalesce(g.payment_intent_id, $3),
                capture_before = coalesce($4, g.capture_before),
                provider_event_at = greatest(g.provider_event_at, $5),
                captured_amount = coalesce($6, g.captured_amount),
                updated_at = now()
            WHERE g.id = $1 RETURNING {GUARANTEE_COLUMNS}""",
        guarantee_id, status, payment_intent_id, capture_before, event_at, captured_amount,
    )
    return row


async def rent_using(conn: asyncpg.Connection, guarantee_id: int) -> int | None:
    """The current rent tied to the guarantee, if any."""
    found: int | None = await conn.fetchval(
        "SELECT id FROM rents WHERE guarantee_id = $1 AND state = ANY($2::text[]) LIMIT 1",
        guarantee_id, list(CURRENT_RENT_STATES),
    )
    return found


async def insert_release_job(conn: asyncpg.Connection, guarantee_id: int, idempotency_key: str) -> int:
    """A release of the hold for the payments worker (``payment_jobs``), unless that key is queued already."""
    found: int = await conn.fetchval(
        """INSERT INTO payment_jobs (guarantee_id, kind, amount, idempotency_key)
           VALUES ($1, 'release', 0, $2)
           ON CONFLICT (idempotency_key) DO UPDATE SET idempotency_key = EXCLUDED.idempotency_key
           RETURNING id""",
        guarantee_id, idempotency_key,
    )
    return found


async def finish_job(conn: asyncpg.Connection, job_id: int) -> None:
    await conn.execute(
        "UPDATE payment_jobs SET state = 'done', done_at = now(), attempts = attempts + 1 "
        "WHERE id = $1 AND state = 'pending'",
        job_id,
    )


# provider events -------------------------------------------------------------------------------------------

async def record_event(conn: asyncpg.Connection, event_id: str, event_type: str) -> bool:
    """Keep the event's id; False when it was applied before (the same event again)."""
    found = await conn.fetchval(
        "INSERT INTO payment_events (event_id, type) VALUES ($1, $2) ON CONFLICT DO NOTHING RETURNING true",
        event_id, event_type,
    )
    return bool(found)
