"""Two-factor authentication with time-based one-time passwords (RFC 6238).

A code is accepted within one 30-second step either side of now, and never
twice: the step it matched is recorded on the user (``totp_last_step``) and
only a later step is accepted afterwards. The record is one conditional
UPDATE, so two concurrent uses of one code cannot both pass.

Enabling 2FA takes two calls: a set-up stores the new secret (encrypted, behind
the hash of an opaque set-up token) for a few minutes; a valid code from the
user's app then moves the secret onto the account. Turning 2FA off takes a
current code of the account's secret (the route adds the password).

Wrong codes lock the step for the user: every code checked first claims an
attempt in its own committed transaction (``second_factor_attempts``), so
concurrent guesses cannot slip past the count; the ``MAX_WRONG_CODES``-th wrong
code locks the step for ``LOCK_DURATION`` (429 code 9), a right code clears the
count, and attempts older than ``LOCK_DURATION`` are forgotten. Two steps count
apart: ``code`` (the account's own secret: a login's second step, turning 2FA
off, re-authenticating a social-only account) and ``setup`` (the code proving a
new secret). The cost: whoever holds the password can lock the owner's second
step for a while; the owner still gets in after the lock ends.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import TypeVar

import asyncpg
import pyotp

from protocols.errors import ErrorCode

from ..db import Database
from ..errors import ApiError
from .secrets import SecretBox, new_opaque_token, token_hash

log = logging.getLogger(__name__)

T = TypeVar("T")

ISSUER = "Knot"
STEP_WINDOW = 1  # steps accepted either side of the current one
SETUP_LIFETIME = timedelta(minutes=15)
MAX_WRONG_CODES = 5
LOCK_DURATION = timedelta(minutes=15)


class Step(StrEnum):
    """What a code is checked for; each counts its wrong codes apart."""

    CODE = "code"  # a code of the account's own secret
    SETUP = "setup"  # the code that proves a new secret


@dataclass(frozen=True, slots=True)
class TotpSetup:
    key: str  # base32 secret for the OTP app
    key_url: str  # otpauth:// URI (QR code)
    token: str  # proves the set-up to the verify call


def provisioning_uri(key: str, email: str) -> str:
    return pyotp.TOTP(key).provisioning_uri(name=email, issuer_name=ISSUER)


def matching_step(key: str, code: str, *, after: int, now: float | None = None) -> int | None:
    """The latest step in the window, later than ``after``, whose code is ``code``.

    Every candidate is compared, each in constant time.
    """
    totp = pyotp.TOTP(key)
    current = totp.timecode(time.time() if now is None else now)
    found: int | None = None
    for step in range(current - STEP_WINDOW, current + STEP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code) and step > after:
            found = step
    return found


async def accept_login_code(
    conn: asyncpg.Connection, box: SecretBox, user_id: int, code: str, *, last_step_seen: int
) -> bool:
    """Check a login's second factor and spend its step.

    ``last_step_seen`` is the user's last accepted step when the login asked for
    the second factor: once any code was accepted since, that login is spent.
    """
    return await _spend_code(conn, box, user_id, code, last_step_seen=last_step_seen, disable=False)


async def accept_code(conn: asyncpg.Connection, box: SecretBox, user_id: int, code: str) -> bool:
    """Check a current code of the account's secret (re-authentication) and spend its step."""
    return await _spend_code(conn, box, user_id, code, last_step_seen=None, disable=False)


async def disable(conn: asyncpg.Connection, box: SecretBox, user_id: int, code: str) -> bool:
    """Turn 2FA off when ``code`` is a current code of the account's secret; 409 when 2FA is off."""
    enabled = await conn.fetchval("SELECT totp_secret IS NOT NULL FROM users WHERE id = $1 FOR UPDATE", user_id)
    if not enabled:
        raise ApiError(ErrorCode.CONFLICT, "two-factor authentication is not enabled")
    return await _spend_code(conn, box, user_id, code, last_step_seen=None, disable=True)


async def _spend_code(
    conn: asyncpg.Connection, box: SecretBox, user_id: int, code: str, *, last_step_seen: int | None, disable: bool
) -> bool:
    row = await conn.fetchrow("SELECT totp_secret, totp_last_step FROM users WHERE id = $1", user_id)
    if row is None or row["totp_secret"] is None:
        return False
    key = box.open(row["totp_secret"])
    step = None if key is None else matching_step(key, code, after=int(row["totp_last_step"]))
    if step is None:
        return False
    # The step stays recorded when 2FA goes off: a code seen once never works again.
    spent = await conn.fetchval(
        """UPDATE users SET totp_last_step = $2, totp_secret = CASE WHEN $4 THEN NULL ELSE totp_secret END
           WHERE id = $1 AND totp_secret IS NOT NULL AND totp_last_step < $2
             AND ($3::bigint IS NULL OR totp_last_step <= $3)
           RETURNING true""",
        user_id, step, last_step_seen, disable,
    )
    return spent is True


# -- wrong codes lock the step ---------------------------------------------------------------------


def _locked() -> ApiError:
    minutes = int(LOCK_DURATION.total_seconds() // 60)
    return ApiError(
        ErrorCode.RATE_LIMITED, f"too many wrong second-factor codes: try again in up to {minutes} minutes"
    )


async def claim_attempt(conn: asyncpg.Connection, user_id: int, step: Step) -> None:
    """Count one attempt before a code is checked; 429 code 9 while the step is locked.

    Run it in a transaction of its own that commits before the code is checked.
    """
    row = await conn.fetchrow(
        """INSERT INTO second_factor_attempts AS a (user_id, step, attempts) VALUES ($1, $2, 1)
           ON CONFLICT (user_id, step) DO UPDATE SET
               attempts = CASE WHEN a.locked_until > now() THEN a.attempts
                               WHEN a.locked_until IS NOT NULL OR a.last_attempt < now() - $3::interval THEN 1
                               ELSE a.attempts + 1 END,
               last_attempt = CASE WHEN a.locked_until > now() THEN a.last_attempt ELSE now() END,
               locked_until = CASE WHEN a.locked_until > now() THEN a.locked_until END
           RETURNING attempts, locked_until""",
        user_id, step.value, LOCK_DURATION,
    )
    # More attempts than allowed can only be in flight at once: refuse the extra ones.
    if row["locked_until"] is not None or int(row["attempts"]) > MAX_WRONG_CODES:
        raise _locked()


async def record_failure(conn: asyncpg.Connection, user_id: int, step: Step) -> bool:
    """After a wrong code: lock the step once the attempts reached the maximum; True when it locked now."""
    locked = await conn.fetchval(
        """UPDATE second_factor_attempts SET locked_until = now() + $3::interval
           WHERE user_id = $1 AND step = $2 AND attempts >= $4 AND locked_until IS NULL RETURNING true""",
        user_id, step.value, LOCK_DURATION, MAX_WRONG_CODES,
    )
    if locked:
        log.warning("second factor (%s) of user %s locked after %s wrong codes", step.value, user_id, MAX_WRONG_CODES)
    return locked is True


async def release_attempt(conn: asyncpg.Connection, user_id: int, step: Step) -> None:
    """Give back an attempt claimed for a check that ended without judging a code."""
    await conn.execute(
        """UPDATE second_factor_attempts SET attempts = GREATEST(attempts - 1, 0)
           WHERE user_id = $1 AND step = $2 AND locked_until IS NULL""",
        user_id, step.value,
    )


async def clear_attempts(conn: asyncpg.Connection, user_id: int, step: Step) -> None:
    await conn.execute("DELETE FROM second_factor_attempts WHERE user_id = $1 AND step = $2", user_id, step.value)


async def guarded(
    db: Database, user_id: int, step: Step, check: Callable[[asyncpg.Connection], Awaitable[T | None]]
) -> T:
    """Check a code under the lock: ``check`` runs in one transaction and answers None for a wrong code.

    A wrong code answers 401 code 15 (or 429 code 9 from the attempt that locks
    the step); a right one clears the count in ``check``'s transaction; an
    ``ApiError`` from ``check`` gives the attempt back and passes on.
    """
    await db.transaction(lambda conn: claim_attempt(conn, user_id, step))

    async def work(conn: asyncpg.Connection) -> T | None:
        result = await check(conn)
        if result is not None:
            await clear_attempts(conn, user_id, step)
        return result

    try:
        result = await db.transaction(work)
    except ApiError:
        # Refused for another reason (a stale set-up, 2FA already off): no code was wrong.
        await db.transaction(lambda conn: release_attempt(conn, user_id, step))
        raise
    if result is None:
        if await db.transaction(lambda conn: record_failure(conn, user_id, step)):
            raise _locked()
        raise ApiError(ErrorCode.INVALID_2FA_CODE)
    return result


async def begin_setup(conn: asyncpg.Connection, box: SecretBox, user_id: int) -> TotpSetup:
    """A new secret for the user's OTP app; it replaces any set-up still pending."""
    user = await conn.fetchrow("SELECT email, totp_secret FROM users WHERE id = $1 FOR UPDATE", user_id)
    if user is None:
        raise ApiError(ErrorCode.INVALID_TOKEN)
    if user["totp_secret"] is not None:
        raise ApiError(ErrorCode.TWO_FACTOR_ALREADY_ENABLED)
    key = pyotp.random_base32()
    token = new_opaque_token()
    await conn.execute("DELETE FROM totp_setups WHERE user_id = $1", user_id)
    await conn.execute(
        "INSERT INTO totp_setups (token_hash, user_id, secret, expires_at) VALUES ($1, $2, $3, now() + $4::interval)",
        token_hash(token), user_id, box.seal(key), SETUP_LIFETIME,
    )
    return TotpSetup(key=key, key_url=provisioning_uri(key, user["email"]), token=token)


async def finish_setup(conn: asyncpg.Connection, box: SecretBox, user_id: int, token: str, code: str) -> bool | None:
    """Turn 2FA on when ``code`` comes from the set-up's secret (True); None for a wrong code.

    The set-up is then gone.
    """
    setup = await conn.fetchrow(
        """SELECT secret FROM totp_setups
           WHERE token_hash = $1 AND user_id = $2 AND expires_at > now() FOR UPDATE""",
        token_hash(token), user_id,
    )
    key = None if setup is None else box.open(setup["secret"])
    if setup is None or key is None:
        raise ApiError(ErrorCode.INVALID_2FA_SETUP)
    step = matching_step(key, code, after=0)
    if step is None:
        return None
    enabled = await conn.fetchval(
        """UPDATE users SET totp_secret = $2, totp_last_step = GREATEST(totp_last_step, $3)
           WHERE id = $1 AND totp_secret IS NULL RETURNING true""",
        user_id, setup["secret"], step,
    )
    if enabled is not True:
        raise ApiError(ErrorCode.TWO_FACTOR_ALREADY_ENABLED)
    await conn.execute("DELETE FROM totp_setups WHERE user_id = $1", user_id)
    return True


async def cancel_setups(conn: asyncpg.Connection, user_id: int) -> None:
    """Forget the user's pending set-ups (a password reset, a logout of every device)."""
    await conn.execute("DELETE FROM totp_setups WHERE user_id = $1", user_id)
