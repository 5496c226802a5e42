"""PostgreSQL of the accounts domain (SQL only, asyncio side; the service opens the transactions).

Users and their credentials, provider identities, sessions and their rotating
refresh tokens, the tokens mailed to a user, the second factor (its codes,
set-ups and wrong-code locks), consents.

Sessions: a session is one device's login. Its refresh tokens form one family:
each use marks the token used and issues the next; presenting a used token
again means it leaked, so the whole session is revoked. Revoking a session ends
its access tokens at once, since every request checks the session.

Mailed tokens (10 characters: confirmation, email change, password reset):
only a token's SHA-256 is stored. A token is valid until it expires, is used,
or a newer token of the same purpose supersedes it. Using one marks it used in
the caller's transaction, so a token works once even under concurrent use.

Second-factor codes: a code is never accepted twice; the step it matched is
recorded on the user (``totp_last_step``) by one conditional UPDATE, so two
concurrent uses of one code cannot both pass (see ``totp.py`` for the lock).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum
from typing import Any

import asyncpg
import pyotp

from protocols.errors import ErrorCode

from ..errors import ApiError
from ..services.permissions import load_permissions
from ..services.secrets import SecretBox, new_email_token, new_opaque_token, token_hash
from ..services.social import SocialIdentity
from ..services.tokens import TokenSigner
from .totp import (
    LOCK_DURATION,
    MAX_WRONG_CODES,
    SETUP_LIFETIME,
    Step,
    TotpSetup,
    locked_error,
    matching_step,
    provisioning_uri,
)

log = logging.getLogger(__name__)


# -- users ------------------------------------------------------------------------------------------


def normalize_email(email: str) -> str:
    return email.strip().lower()


async def find_user_by_email(conn: asyncpg.Connection, email: str) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM users WHERE lower(email) = $1", normalize_email(email)
    )
    return row


async def lock_user(conn: asyncpg.Connection, user_id: int) -> asyncpg.Record | None:
    """The user's row, locked against changes until the transaction ends (None when it is gone)."""
    row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM users WHERE id = $1 FOR SHARE", user_id)
    return row


async def insert_user(
    conn: asyncpg.Connection,
    email: str,
    password_hash: str | None,
    *,
    confirmed: bool,
    lang: str = "en",
    app_label: int | None = None,
) -> int:
    try:
        user_id: int = await conn.fetchval(
            """INSERT INTO users (email, password_hash, email_confirmed_at, lang, app_label_id)
               VALUES ($1, $2, CASE WHEN $3 THEN now() END, $4, $5) RETURNING id""",
            normalize_email(email), password_hash, confirmed, lang.lower(), app_label,
        )
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(ErrorCode.EMAIL_ALREADY_USED) from exc
    return user_id


@dataclass(frozen=True, slots=True)
class Account:
    """A user as the account routes and mails see it, with its app label."""

    user_id: int
    email: str
    lang: str
    email_confirmed: bool
    two_factor_enabled: bool
    app_label: str | None
    label_name: str | None
    android_store_url: str | None
    ios_store_url: str | None


_ACCOUNT_SQL = """
    SELECT u.id AS user_id, u.email, u.lang, u.email_confirmed_at IS NOT NULL AS email_confirmed,
           u.totp_secret IS NOT NULL AS two_factor_enabled, l.name AS app_label, l.label_name,
           l.android_store_url, l.ios_store_url
    FROM users u LEFT JOIN app_labels l ON l.id = u.app_label_id
"""


async def load_account(conn: asyncpg.Connection, user_id: int) -> Account | None:
    row = await conn.fetchrow(_ACCOUNT_SQL + " WHERE u.id = $1", user_id)
    return None if row is None else Account(**dict(row))


async def account_by_email(conn: asyncpg.Connection, email: str) -> Account | None:
    row = await conn.fetchrow(_ACCOUNT_SQL + " WHERE lower(u.email) = $1", normalize_email(email))
    return None if row is None else Account(**dict(row))


async def organization_name(conn: asyncpg.Connection, email: str) -> str | None:
    """The organisation whose ``email_domain`` is the address's domain, if any."""
    domain = normalize_email(email).rpartition("@")[2]
    name: str | None = await conn.fetchval(
        "SELECT name FROM organizations WHERE lower(email_domain) = $1", domain
    )
    return name


async def mark_email_confirmed(conn: asyncpg.Connection, user_id: int) -> None:
    await conn.execute(
        "UPDATE users SET email_confirmed_at = COALESCE(email_confirmed_at, now()) WHERE id = $1", user_id
    )


async def change_email(conn: asyncpg.Connection, user_id: int, email: str) -> None:
    """Give the account a new address, confirmed (the user proved they read it)."""
    try:
        await conn.execute(
            "UPDATE users SET email = $2, email_confirmed_at = now() WHERE id = $1", user_id, normalize_email(email)
        )
    except asyncpg.UniqueViolationError as exc:
        raise ApiError(ErrorCode.EMAIL_ALREADY_USED) from exc


async def set_password_hash(conn: asyncpg.Connection, user_id: int, password_hash: str) -> None:
    await conn.execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)


@dataclass(frozen=True, slots=True)
class Credentials:
    """What re-authenticating a logged-in user checks: the password, or for a social-only account
    (no password) a current second-factor code or a login of the last few minutes."""

    email: str
    password_hash: str | None
    two_factor_enabled: bool
    recent_login: bool  # the caller's session opened within the window asked for


async def load_credentials(
    conn: asyncpg.Connection, user_id: int, session_id: object, recent: timedelta
) -> Credentials | None:
    row = await conn.fetchrow(
        """SELECT u.email, u.password_hash, u.totp_secret IS NOT NULL AS two_factor_enabled,
                  COALESCE(s.created_at > now() - $3::interval, false) AS recent_login
           FROM users u LEFT JOIN sessions s ON s.id = $2 AND s.user_id = u.id AND s.revoked_at IS NULL
           WHERE u.id = $1""",
        user_id, session_id, recent,
    )
    return None if row is None else Credentials(**dict(row))


# -- provider identities (social login) ------------------------------------------------------


async def account_for(
    conn: asyncpg.Connection, identity: SocialIdentity, *, lang: str, app_label_id: int | None
) -> asyncpg.Record:
    """The users row a provider identity logs into (run in a transaction)."""
    linked: asyncpg.Record | None = await conn.fetchrow(
        """SELECT u.* FROM user_identities i JOIN users u ON u.id = i.user_id
           WHERE i.provider = $1 AND i.subject = $2""",
        identity.provider, identity.subject,
    )
    if linked is not None:
        return linked
    if not identity.email or not identity.email_verified:
        raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, f"{identity.provider} gave no verified email address")
    found = await find_user_by_email(conn, identity.email)
    if found is None:
        user_id = await insert_user(conn, identity.email, None, confirmed=True, lang=lang, app_label=app_label_id)
    else:
        user_id = int(found["id"])
        await _trust_provider_email(conn, user_id)
    await conn.execute(
        "INSERT INTO user_identities (provider, subject, user_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        identity.provider, identity.subject, user_id,
    )
    account: asyncpg.Record = await conn.fetchrow("SELECT * FROM users WHERE id = $1", user_id)
    return account


async def _trust_provider_email(conn: asyncpg.Connection, user_id: int) -> None:
    """The provider proved the address: an unconfirmed account becomes confirmed.

    Its password is dropped, since nobody proved it was set by the address's
    owner (else whoever pre-registered the address would share the account).
    """
    await conn.execute(
        "UPDATE users SET email_confirmed_at = now(), password_hash = NULL WHERE id = $1 AND email_confirmed_at IS NULL",
        user_id,
    )


# -- sessions and refresh tokens ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Device:
    id: str | None = None
    os: str | None = None
    model: str | None = None
    app_version: str | None = None


async def _new_refresh_token(conn: asyncpg.Connection, session_id: uuid.UUID, days: int) -> str:
    token = new_opaque_token()
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, now() + $3::interval)",
        token_hash(token), session_id, timedelta(days=days),
    )
    return token


async def open_session(
    conn: asyncpg.Connection,
    signer: TokenSigner,
    user_id: int,
    *,
    scope: str,
    device: Device,
    app_label_id: int | None,
    refresh_days: int,
) -> dict[str, Any]:
    """Create a session and answer as the login routes do."""
    session_id = uuid.uuid4()
    await conn.execute(
        """INSERT INTO sessions (id, user_id, scope, device_id, device_os, device_model, app_version, app_label_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        session_id, user_id, scope, device.id, device.os, device.model, device.app_version, app_label_id,
    )
    refresh = await _new_refresh_token(conn, session_id, refresh_days)
    permissions = await load_permissions(conn, user_id)
    return {
        "token": signer.access_token(user_id, session_id),
        "refresh_token": refresh,
        "user_id": user_id,
        "permissions": permissions.as_json(),
    }


async def active_session_user(conn: asyncpg.Connection, session_id: uuid.UUID) -> int | None:
    row = await conn.fetchrow(
        "SELECT user_id FROM sessions WHERE id = $1 AND revoked_at IS NULL", session_id
    )
    return None if row is None else int(row["user_id"])


async def rotate_refresh_token(
    conn: asyncpg.Connection, signer: TokenSigner, presented: str, *, refresh_days: int
) -> tuple[str, str] | uuid.UUID:
    """(access token, next refresh token); or, for a token used before, the id of its session, now revoked.

    Must run inside a transaction: the token row is locked while it is rotated.
    """
    row = await conn.fetchrow(
        """SELECT r.session_id, r.used_at, r.expires_at < now() AS expired, s.user_id, s.revoked_at
           FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id
           WHERE r.token_hash = $1 FOR UPDATE OF r""",
        token_hash(presented),
    )
    if row is None or row["revoked_at"] is not None or row["expired"]:
        raise ApiError(ErrorCode.INVALID_TOKEN)
    if row["used_at"] is not None:
        await conn.execute(
            "UPDATE sessions SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", row["session_id"]
        )
        revoked: uuid.UUID = row["session_id"]
        return revoked
    await conn.execute("UPDATE refresh_tokens SET used_at = now() WHERE token_hash = $1", token_hash(presented))
    await conn.execute("UPDATE sessions SET last_seen_at = now() WHERE id = $1", row["session_id"])
    refresh = await _new_refresh_token(conn, row["session_id"], refresh_days)
    return signer.access_token(int(row["user_id"]), row["session_id"]), refresh


async def revoke_sessions(conn: asyncpg.Connection, user_id: int, device_id: str | None = None) -> list[uuid.UUID]:
    """Revoke one device's sessions, or every session of the user."""
    if device_id is None:
        rows = await conn.fetch(
            "UPDATE sessions SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL RETURNING id",
            user_id,
        )
    else:
        rows = await conn.fetch(
            """UPDATE sessions SET revoked_at = now()
               WHERE user_id = $1 AND device_id = $2 AND revoked_at IS NULL RETURNING id""",
            user_id, device_id,
        )
    return [r["id"] for r in rows]


async def update_device(conn: asyncpg.Connection, session_id: uuid.UUID, device: Device) -> None:
    """Record what a session's device now reports; fields it leaves out keep their value."""
    await conn.execute(
        """UPDATE sessions SET device_id = COALESCE($2, device_id), device_os = COALESCE($3, device_os),
                  device_model = COALESCE($4, device_model), app_version = COALESCE($5, app_version),
                  last_seen_at = now()
           WHERE id = $1""",
        session_id, device.id, device.os, device.model, device.app_version,
    )


# -- tokens mailed to the user ---------------------------------------------------------------------


class Purpose(StrEnum):
    CONFIRM = "confirm"
    EMAIL_CHANGE = "email_change"
    PASSWORD_RESET = "password_reset"


# What a password reset or a logout of every device cancels: links that change the account.
# (A pending confirmation link stays: it only proves the user reads the address.)
ACCOUNT_CHANGES = (Purpose.EMAIL_CHANGE, Purpose.PASSWORD_RESET)


@dataclass(frozen=True, slots=True)
class EmailToken:
    user_id: int
    new_email: str | None


_VALID = "token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now()"


async def issue_email_token(
    conn: asyncpg.Connection, user_id: int, purpose: Purpose, *, hours: int, new_email: str | None = None
) -> str:
    """A new token for the user; earlier unused tokens of the purpose stop working."""
    await revoke_email_tokens(conn, user_id, purpose)
    token = new_email_token()
    await conn.execute(
        """INSERT INTO email_tokens (token_hash, user_id, purpose, new_email, expires_at)
           VALUES ($1, $2, $3, $4, now() + $5::interval)""",
        token_hash(token), user_id, purpose.value, new_email, timedelta(hours=hours),
    )
    return token


async def revoke_email_tokens(conn: asyncpg.Connection, user_id: int, *purposes: Purpose) -> None:
    """End the user's unused tokens of these purposes (of every purpose when none is given)."""
    names = [p.value for p in purposes or tuple(Purpose)]
    await conn.execute(
        "UPDATE email_tokens SET used_at = now() WHERE user_id = $1 AND purpose = ANY($2) AND used_at IS NULL",
        user_id, names,
    )


async def peek_email_token(conn: asyncpg.Connection, token: str, purpose: Purpose) -> EmailToken:
    """A valid token's content, leaving it unused; 400 code 11 otherwise."""
    row = await conn.fetchrow(
        f"SELECT user_id, new_email FROM email_tokens WHERE {_VALID}", token_hash(token), purpose.value
    )
    return _found(row)


async def use_email_token(conn: asyncpg.Connection, token: str, purpose: Purpose, *, new_email: str | None = None) -> EmailToken:
    """Mark a valid token used and return its content; 400 code 11 otherwise.

    With ``new_email``, only a token made for that address qualifies (and a
    mismatch leaves the token unused).
    """
    row = await conn.fetchrow(
        f"""UPDATE email_tokens SET used_at = now()
            WHERE {_VALID} AND ($3::text IS NULL OR new_email = $3)
            RETURNING user_id, new_email""",
        token_hash(token), purpose.value, new_email,
    )
    return _found(row)


def _found(row: asyncpg.Record | None) -> EmailToken:
    if row is None:
        raise ApiError(ErrorCode.INVALID_EMAIL_TOKEN)
    return EmailToken(int(row["user_id"]), row["new_email"])


# -- second factor ---------------------------------------------------------------------------------


async def disable_two_factor(conn: asyncpg.Connection, box: SecretBox, user_id: int, code: str) -> bool:
    """Turn 2FA off when ``code`` is a current code of the account's secret; 409 when 2FA is off."""
    enabled = await conn.fetchval("SELECT totp_secret IS NOT NULL FROM users WHERE id = $1 FOR UPDATE", user_id)
    if not enabled:
        raise ApiError(ErrorCode.CONFLICT, "two-factor authentication is not enabled")
    return await spend_code(conn, box, user_id, code, last_step_seen=None, disable=True)


async def spend_code(
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
        raise locked_error()


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


# -- consents --------------------------------------------------------------------------------------


async def update_consents(conn: asyncpg.Connection, user_id: int, consents: Mapping[str, bool]) -> None:
    """Set the user's consents; all or nothing: one unknown type changes none."""
    known = await conn.fetch("SELECT key FROM consent_types WHERE key = ANY($1::text[])", list(consents))
    unknown = sorted(set(consents) - {row["key"] for row in known})
    if unknown:
        raise ApiError(ErrorCode.UNKNOWN_CONSENT_TYPE, f"unknown consent type: {', '.join(unknown)}")
    await conn.executemany(
        """INSERT INTO user_consents (user_id, type_key, value) VALUES ($1, $2, $3)
           ON CONFLICT (user_id, type_key) DO UPDATE SET value = EXCLUDED.value, updated_at = now()""",
        [(user_id, key, value) for key, value in consents.items()],
    )


async def consent_types(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """Every consent type with the user's value, else its default."""
    rows: list[asyncpg.Record] = await conn.fetch(
        """SELECT t.key, t.names, coalesce(c.value, t.default_value) AS value
           FROM consent_types t LEFT JOIN user_consents c ON c.type_key = t.key AND c.user_id = $1
           ORDER BY t.sort_order, t.key""",
        user_id,
    )
    return rows


async def user_exists(conn: asyncpg.Connection, user_id: int) -> bool:
    """Whether the account exists, held (``FOR SHARE``) until the transaction ends."""
    found = await conn.fetchval("SELECT true FROM users WHERE id = $1 FOR SHARE", user_id)
    return found is True


async def insert_organization(conn: asyncpg.Connection, name: str, email_domain: str | None) -> int:
    """An organization; accounts whose email is of ``email_domain`` belong to it."""
    organization_id: int = await conn.fetchval(
        "INSERT INTO organizations (name, email_domain) VALUES ($1, $2) RETURNING id", name, email_domain
    )
    return organization_id


async def insert_consent_type(
    conn: asyncpg.Connection, key: str, names: dict[str, str], *, default_value: bool, sort_order: int
) -> None:
    """A kind of consent users give or refuse (``names`` by language)."""
    await conn.execute(
        "INSERT INTO consent_types (key, names, default_value, sort_order) VALUES ($1, $2, $3, $4)",
        key, names, default_value, sort_order,
    )
