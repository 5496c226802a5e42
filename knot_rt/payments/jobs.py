"""The money side of a rent, and the durable capture/release jobs: SQL run inside a unit of work.

A rent on a network whose ``min_guarantee`` > 0 holds one of the rider's guarantees (a manual-capture
PaymentIntent). What this module does, each step inside the transaction of the rent's own change
(``rents/book.py``), so a rent and its money never disagree after a crash:

- Unlock (``pick_guarantee`` then ``attach``): under the rider's row lock, the rider's usable guarantee for
  the network, of at least its ``min_guarantee``, whose hold lives at least ``margin`` longer
  (``capture_before``) and is not due for release (``keep_until``), largest amount first, then the longest-lived; it becomes ``in_use`` and the rent's
  ``guarantee_id``. A kept guarantee's pending release job is dropped: the new rent decides its fate.
- Failed unlock (``give_back``): ``in_use`` -> ``usable``; a kept one gets its release job back.
- End (``settle_rent``), from the price after wallet credit (``amount_due``):
  - > 0: a capture job of ``min(amount_due, amount)``; the rest, if any, is ``rents.amount_owed``. A
    partial capture releases the rest of the hold (Stripe's ``amount_to_capture``);
  - 0 with ``keep_after_trip``: ``usable`` again until ``keep_until = min(now + 3 days, capture_before)``,
    with a release job due then (taken over by the next rent that uses it);
  - 0 otherwise: a release job due now.
  The guarantee goes ``in_use`` -> ``settling`` while its job is pending, then ``captured`` / ``released``
  (``worker.py``). A guarantee no longer ``in_use`` at the end (the provider dropped the hold meanwhile) can
  capture nothing: the whole amount due is owed.

Jobs (``payment_jobs``): one row per capture or release, written with the change that needs it. Its
idempotency key is derived from the rent (``rent_job_key``): the table's unique key then also forbids a
second capture job for one rent, and the provider answers a retry with the same key as the first call.
The worker leases due jobs with ``FOR UPDATE SKIP LOCKED`` (two processes never take one job), and a lease
that runs out (a crash between the provider's answer and our commit) lets the job be taken again.

Lock order, everywhere: the rider's row, the rent, the guarantee, then its jobs; the worker's lease locks a
job and its guarantee together with ``SKIP LOCKED`` (it never waits), so no two of these deadlock.

Assumption: a guarantee is in its network's currency (the guarantee routes hold the network's amount in it),
the currency the rent is priced in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg

from .service import KEEP_AFTER_TRIP, guarantee_event  # kept three days after a free trip

JOB_KINDS = ("capture", "release")
#: The states a job's outcome may move a guarantee from (the others are final: never moved back).
OPEN_STATES = ("usable", "in_use", "settling")


def rent_job_key(rent_id: int, kind: str) -> str:
    """The idempotency key of a rent's capture or release: one of each per rent, ever."""
    if kind not in JOB_KINDS:
        raise ValueError(f"no job kind {kind!r}")
    return f"knot-rent-{rent_id}-{kind}"


def guarantee_data(row: asyncpg.Record, **extra: Any) -> dict[str, Any]:
    """``guarantee.updated``'s data: the guarantee routes' payload (row 4's fields and ``status``), with what
    was captured, its network, and ``extra`` (the trip that used it, a warning, what is owed)."""
    return {**guarantee_event(row), "captured_amount": f"{row['captured_amount']:.3f}",
            "network_id": row["network_id"], **extra}


# unlock ------------------------------------------------------------------------------------------------------


async def pick_guarantee(conn: asyncpg.Connection, user_id: int, network_id: int, minimum: Decimal,
                         margin: timedelta) -> int | None:
    """The rider's guarantee a new rent on ``network_id`` may hold, locked; None when there is none. A hold
    smaller than the network's ``minimum`` (raised since it was made) is not enough."""
    found: int | None = await conn.fetchval(
        """SELECT id FROM guarantees
           WHERE user_id = $1 AND network_id = $2 AND status = 'usable' AND amount >= $4
             AND capture_before > now() + $3::interval
             AND (keep_until IS NULL OR keep_until > now())
           ORDER BY amount DESC, capture_before DESC, id
           LIMIT 1 FOR UPDATE""",
        user_id, network_id, margin, minimum,
    )
    return found


async def attach(conn: asyncpg.Connection, guarantee_id: int, rent_id: int) -> None:
    """The guarantee becomes the rent's (``in_use``); a pending release of it (kept after a trip) is dropped."""
    await conn.execute(
        "UPDATE guarantees SET status = 'in_use', updated_at = now() WHERE id = $1 AND status = 'usable'",
        guarantee_id,
    )
    await conn.execute(
        "DELETE FROM payment_jobs WHERE guarantee_id = $1 AND kind = 'release' AND state = 'pending'", guarantee_id
    )
    await conn.execute("UPDATE rents SET guarantee_id = $2 WHERE id = $1", rent_id, guarantee_id)


async def give_back(conn: asyncpg.Connection, rent_id: int) -> asyncpg.Record | None:
    """A failed unlock: its guarantee is usable again (kept ones get their release job back); the row, or None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """UPDATE guarantees g SET status = 'usable', updated_at = now()
           FROM rents r WHERE r.id = $1 AND g.id = r.guarantee_id AND g.status = 'in_use'
           RETURNING g.*""",
        rent_id,
    )
    if row is not None and row["keep_until"] is not None:
        await _insert_job(conn, row["id"], rent_id, "release", Decimal(0), due=row["keep_until"])
    return row


# end ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a rent's end did with its guarantee: the guarantee as it is now, the job written, what is owed."""

    guarantee: asyncpg.Record
    job: str | None  # capture, release, or None (nothing to ask the provider)
    amount: Decimal  # to capture (0 for a release)
    owed: Decimal


async def settle_rent(conn: asyncpg.Connection, rent_id: int, amount_due: Decimal) -> Settlement | None:
    """The end of a rent for its guarantee (see the module's docstring); None for a rent without one."""
    guarantee = await conn.fetchrow(
        """SELECT g.* FROM guarantees g JOIN rents r ON r.guarantee_id = g.id WHERE r.id = $1 FOR UPDATE OF g""",
        rent_id,
    )
    if guarantee is None:
        return None
    if guarantee["status"] != "in_use":  # the hold is gone (canceled or expired at the provider): nothing to take
        await conn.execute("UPDATE rents SET amount_owed = $2 WHERE id = $1", rent_id, amount_due)
        return Settlement(guarantee, None, Decimal(0), amount_due)
    if amount_due > 0:
        capture = min(amount_due, guarantee["amount"])
        owed = amount_due - capture
        await conn.execute("UPDATE rents SET amount_owed = $2 WHERE id = $1", rent_id, owed)
        await _insert_job(conn, guarantee["id"], rent_id, "capture", capture)
        row = await _set_status(conn, guarantee["id"], "settling")
        return Settlement(row, "capture", capture, owed)
    await conn.execute("UPDATE rents SET amount_owed = 0 WHERE id = $1", rent_id)
    if guarantee["keep_after_trip"]:
        row = await conn.fetchrow(
            """UPDATE guarantees SET status = 'usable', updated_at = now(),
                      keep_until = least(now() + $2::interval, capture_before)
               WHERE id = $1 RETURNING *""",
            guarantee["id"], KEEP_AFTER_TRIP,
        )
        await _insert_job(conn, guarantee["id"], rent_id, "release", Decimal(0), due=row["keep_until"])
        return Settlement(row, "release", Decimal(0), Decimal(0))
    await _insert_job(conn, guarantee["id"], rent_id, "release", Decimal(0))
    row = await _set_status(conn, guarantee["id"], "settling")
    return Settlement(row, "release", Decimal(0), Decimal(0))


async def _set_status(conn: asyncpg.Connection, guarantee_id: int, status: str) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        "UPDATE guarantees SET status = $2, updated_at = now() WHERE id = $1 RETURNING *", guarantee_id, status
    )
    return row


async def _insert_job(conn: asyncpg.Connection, guarantee_id: int, rent_id: int, kind: str, amount: Decimal,
                      *, due: datetime | None = None) -> None:
    await conn.execute(
        """INSERT INTO payment_jobs (guarantee_id, rent_id, kind, amount, idempotency_key, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))""",
        guarantee_id, rent_id, kind, amount, rent_job_key(rent_id, kind), due,
    )


# the worker's side -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Job:
    """A leased job with what its provider call needs."""

    id: int
    kind: str
    amount: Decimal
    idempotency_key: str
    attempts: int  # this attempt included
    guarantee_id: int
    rent_id: int | None
    user_id: int
    payment_intent_id: str | None
    currency: str


async def take_due(conn: asyncpg.Connection, lease: timedelta, limit: int) -> list[Job]:
    """Lease up to ``limit`` due pending jobs (one attempt more, not due again before ``lease`` ends).

    A job and its guarantee are locked together, skipping locked ones: a job whose guarantee a rent is
    taking right now is left for the next round. A release due for a kept guarantee turns it ``settling``,
    so no rent takes it while it is being released."""
    rows = await conn.fetch(
        """WITH due AS (
               SELECT j.id FROM payment_jobs j JOIN guarantees g ON g.id = j.guarantee_id
               WHERE j.state = 'pending' AND j.next_attempt_at <= now()
               ORDER BY j.next_attempt_at, j.id LIMIT $2
               FOR UPDATE OF j, g SKIP LOCKED),
           leased AS (
               UPDATE payment_jobs j SET attempts = attempts + 1, next_attempt_at = now() + $1::interval
               FROM due WHERE j.id = due.id RETURNING j.*)
           SELECT l.*, g.user_id, g.payment_intent_id, g.currency
           FROM leased l JOIN guarantees g ON g.id = l.guarantee_id ORDER BY l.id""",
        lease, limit,
    )
    jobs = [Job(r["id"], r["kind"], r["amount"], r["idempotency_key"], r["attempts"], r["guarantee_id"],
                r["rent_id"], r["user_id"], r["payment_intent_id"], r["currency"]) for r in rows]
    releases = [job.guarantee_id for job in jobs if job.kind == "release"]
    if releases:
        await conn.execute(
            """UPDATE guarantees SET status = 'settling', updated_at = now()
               WHERE id = ANY($1::bigint[]) AND status = 'usable'""",
            releases,
        )
    return jobs


async def finish(conn: asyncpg.Connection, job: Job, *, status: str, captured: Decimal,
                 error: str | None = None) -> asyncpg.Record | None:
    """The job done (``status`` captured or released, ``captured`` taken) and its guarantee with it, unless the
    guarantee is final already (the rider's cancel, a webhook ahead of us: never moved back); the guarantee's
    row when it changed, else None (also when the job was finished already: nothing is applied twice)."""
    done = await conn.fetchval(
        """UPDATE payment_jobs SET state = 'done', done_at = now(), last_error = $2
           WHERE id = $1 AND state = 'pending' RETURNING true""",
        job.id, error,
    )
    if not done:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        """UPDATE guarantees SET status = $2, captured_amount = captured_amount + $3, keep_until = NULL,
                                 updated_at = now()
           WHERE id = $1 AND status = ANY($4::text[]) RETURNING *""",
        job.guarantee_id, status, captured, list(OPEN_STATES),
    )
    return row


async def lost(conn: asyncpg.Connection, job: Job, error: str) -> asyncpg.Record | None:
    """A capture the provider can no longer make (the hold expired or was canceled): the job failed, the
    guarantee released, its amount owed by the rent. None when the job was finished already."""
    done = await conn.fetchval(
        """UPDATE payment_jobs SET state = 'failed', done_at = now(), last_error = $2
           WHERE id = $1 AND state = 'pending' RETURNING true""",
        job.id, error[:500],
    )
    if not done:
        return None
    if job.rent_id is not None:
        await conn.execute("UPDATE rents SET amount_owed = coalesce(amount_owed, 0) + $2 WHERE id = $1",
                           job.rent_id, job.amount)
    row: asyncpg.Record | None = await conn.fetchrow(
        """UPDATE guarantees SET status = 'released', keep_until = NULL, updated_at = now()
           WHERE id = $1 AND status = ANY($2::text[]) RETURNING *""",
        job.guarantee_id, list(OPEN_STATES),
    )
    return row


async def retry_later(conn: asyncpg.Connection, job: Job, delay: timedelta, error: str) -> None:
    await conn.execute(
        """UPDATE payment_jobs SET next_attempt_at = now() + $2::interval, last_error = $3
           WHERE id = $1 AND state = 'pending'""",
        job.id, delay, error[:500],
    )


async def expiring(conn: asyncpg.Connection, within: timedelta, limit: int = 100) -> list[asyncpg.Record]:
    """The in-use guarantees whose hold ends within ``within`` and whose rider was not warned: id, user_id."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT id, user_id FROM guarantees
           WHERE status = 'in_use' AND expiry_warned_at IS NULL AND capture_before <= now() + $1::interval
           ORDER BY capture_before LIMIT $2""",
        within, limit,
    )
    return rows


async def mark_warned(conn: asyncpg.Connection, guarantee_id: int) -> asyncpg.Record | None:
    """Mark the expiry warning sent (once: None when it was, or the guarantee is no longer in use)."""
    row: asyncpg.Record | None = await conn.fetchrow(
        """UPDATE guarantees SET expiry_warned_at = now()
           WHERE id = $1 AND status = 'in_use' AND expiry_warned_at IS NULL RETURNING *""",
        guarantee_id,
    )
    return row


async def rent_of_guarantee(conn: asyncpg.Connection, guarantee_id: int) -> int | None:
    found: int | None = await conn.fetchval(
        """SELECT id FROM rents WHERE guarantee_id = $1 AND state IN ('unlocking', 'ongoing', 'paused')
           ORDER BY id DESC LIMIT 1""",
        guarantee_id,
    )
    return found
