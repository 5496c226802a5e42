"""Two-factor authentication with time-based one-time passwords (RFC 6238): the pure part and the lock's rule.

The SQL is in ``store.py``; ``AccountService`` runs the checks under the lock (``guarded``).

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
import time
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import pyotp

from protocols.errors import ErrorCode

from ..errors import ApiError

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


def locked_error() -> ApiError:
    minutes = int(LOCK_DURATION.total_seconds() // 60)
    return ApiError(
        ErrorCode.RATE_LIMITED, f"too many wrong second-factor codes: try again in up to {minutes} minutes"
    )
