"""Two-factor authentication with time-based one-time passwords (RFC 6238).

A code is accepted within one 30-second step either side of now, and never
twice: the step it matched is recorded on the user (``totp_last_step``) and
only a later step is accepted afterwards. The record is one conditional
UPDATE, so two concurrent uses of one code cannot both pass.

Enabling 2FA takes two calls: a set-up stores the new secret (encrypted, behind
the hash of an opaque set-up token) for a few minutes; a valid code from the
user's app then moves the secret onto the account.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from datetime import timedelta

import asyncpg
import pyotp

from protocols.errors import ErrorCode

from ..errors import ApiError
from .secrets import SecretBox, new_opaque_token, token_hash

ISSUER = "Knot"
STEP_WINDOW = 1  # steps accepted either side of the current one
SETUP_LIFETIME = timedelta(minutes=15)


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
    row = await conn.fetchrow("SELECT totp_secret, totp_last_step FROM users WHERE id = $1", user_id)
    if row is None or row["totp_secret"] is None:
        return False
    key = box.open(row["totp_secret"])
    step = None if key is None else matching_step(key, code, after=int(row["totp_last_step"]))
    if step is None:
        return False
    spent = await conn.fetchval(
        """UPDATE users SET totp_last_step = $2
           WHERE id = $1 AND totp_secret IS NOT NULL AND totp_last_step < $2 AND totp_last_step <= $3
           RETURNING true""",
        user_id, step, last_step_seen,
    )
    return spent is True


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


async def finish_setup(conn: asyncpg.Connection, box: SecretBox, user_id: int, token: str, code: str) -> None:
    """Turn 2FA on when ``code`` comes from the set-up's secret; the set-up is then gone."""
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
        raise ApiError(ErrorCode.INVALID_2FA_CODE)
    enabled = await conn.fetchval(
        """UPDATE users SET totp_secret = $2, totp_last_step = $3
           WHERE id = $1 AND totp_secret IS NULL RETURNING true""",
        user_id, setup["secret"], step,
    )
    if enabled is not True:
        raise ApiError(ErrorCode.TWO_FACTOR_ALREADY_ENABLED)
    await conn.execute("DELETE FROM totp_setups WHERE user_id = $1", user_id)
