"""Accounts: registration, profile, email confirmation and change, password reset.

Every mail is written to the outbox in the transaction of the change that needs
it; the mail sender is woken once that transaction committed.

Asking for an email change needs the current password (a social-only account: a
current 2FA code or a login of the last 5 minutes). Setting a new password from
a reset link cancels the other pending links that change the account.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import asyncpg
from pydantic import BaseModel, EmailStr, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services import email_tokens, totp
from ..services.accounts import (
    Account,
    account_by_email,
    app_label_id,
    change_email,
    find_user_by_email,
    insert_user,
    load_account,
    mark_email_confirmed,
    normalize_email,
    organization_name,
    set_password_hash,
)
from ..services.email_tokens import Purpose
from ..services.notifications import Notifications
from ..services.sessions import revoke_sessions
from ..services.tokens import PURPOSE_CONFIRM
from ..web.auth import (
    client_address,
    confirm_identity,
    current_caller,
    purpose_claims,
    require_purpose,
    require_user,
)
from .models import (
    CURRENT_PASSWORD_FIELD,
    AppLabelName,
    Body,
    CurrentPassword,
    Data,
    Lang,
    Ok,
    OtpCode,
    PageQuery,
    Password,
)

bp = Blueprint("users", __name__, url_prefix="/api/application")

T = TypeVar("T")

MailedToken = Annotated[str, StringConstraints(min_length=10, max_length=10)]


class RegisterBody(Body):
    email: EmailStr
    password: Password
    app_label: AppLabelName
    lang: Lang = "en"


class Registered(BaseModel):
    code: int = 0
    user_id: int


class Profile(BaseModel):
    user_id: int
    email: str
    lang: str
    email_confirmed: bool
    two_factor_enabled: bool
    app_label: str | None


class EmailBody(Body):
    email: EmailStr
    password: CurrentPassword | None = CURRENT_PASSWORD_FIELD
    mfa_token: OtpCode | None = Field(
        default=None,
        description="A current 2FA code: how a social-only account with 2FA proves it is the caller "
        "(instead of a login of the last 5 minutes).",
    )


class TokenQuery(PageQuery):
    token: str


class EmailChange(BaseModel):
    email: str
    new_email: str
    current_organization_name: str | None
    new_organization_name: str | None
    label_name: str | None


class EmailChangeBody(Body):
    email_token: MailedToken
    email: EmailStr


class TokenBody(Body):
    token: MailedToken


class EmailConfirmed(BaseModel):
    code: int = 0
    android_store_url: str | None
    ios_store_url: str | None
    label_name: str | None
    email: str


class PasswordResetBody(Body):
    email: EmailStr
    app_label: AppLabelName


class NewPasswordBody(Body):
    token: MailedToken
    password: Password


def _notifications() -> Notifications:
    """Built in the handler: the database work functions never reach for the app's context."""
    svc = services()
    return Notifications(svc.settings.public_url, svc.signer, token_hours=svc.settings.email_token_hours)


async def _commit(work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    """Run ``work`` in one transaction, then wake the mail sender for what it wrote."""
    svc = services()
    result = await svc.db.transaction(work)
    svc.mail.wake()
    return result


async def _account(conn: asyncpg.Connection, user_id: int) -> Account:
    """The account a token names; a token of a deleted account is no longer valid."""
    account = await load_account(conn, user_id)
    if account is None:
        raise ApiError(ErrorCode.INVALID_TOKEN, "account not found")
    return account


async def _mail_confirmation(conn: asyncpg.Connection, letters: Notifications, account: Account) -> None:
    """A new confirmation token (earlier ones stop working) and the mail that carries it."""
    token = await email_tokens.issue(conn, account.user_id, Purpose.CONFIRM, hours=letters.token_hours)
    await letters.confirmation(account, token).post(conn)


@bp.post("/users")
@tag(["Users"])
@validate_request(RegisterBody)
@validate_response(Registered)
async def register(data: RegisterBody) -> Registered:
    """Register an account; sends the confirmation email."""
    svc = services()
    rates = svc.settings.rate_limits
    svc.limiter.check((rates.register_per_client, "register_per_client", client_address()))
    password_hash = await svc.passwords.hash(data.password)
    letters = _notifications()

    async def work(conn: asyncpg.Connection) -> int:
        label = await app_label_id(conn, data.app_label)
        user_id = await insert_user(conn, data.email, password_hash, confirmed=False, lang=data.lang, app_label=label)
        await _mail_confirmation(conn, letters, await _account(conn, user_id))
        return user_id

    return Registered(user_id=await _commit(work))


@bp.get("/users")
@tag(["Users"])
@require_user
@validate_response(Data[Profile])
async def profile() -> Data[Profile]:
    """The caller's profile, from the access token only."""
    user_id = current_caller().user_id
    account = await services().db.run(lambda conn: _account(conn, user_id))
    return Data(data=Profile.model_validate(account, from_attributes=True))


@bp.post("/users/email/change")
@tag(["Email"])
@require_user
@validate_request(EmailBody)
@validate_response(Ok)
async def ask_email_change(data: EmailBody) -> Ok:
    """Send an email containing a confirmation link to change the user's email address to a new one.

    Needs the current ``password``; a social-only account gives a current 2FA code
    (``mfa_token``) or asks within 5 minutes of its login.
    """
    svc = services()
    rates = svc.settings.rate_limits
    user_id = current_caller().user_id
    new_email = normalize_email(data.email)
    await confirm_identity(data.password, data.mfa_token)  # guesses count against the account's logins
    svc.limiter.check(
        (rates.confirmation_per_address, "email_change_per_address", new_email),
        (rates.confirmation_per_client, "email_change_per_client", client_address()),
    )
    letters = _notifications()

    async def work(conn: asyncpg.Connection) -> None:
        account = await _account(conn, user_id)
        if normalize_email(account.email) == new_email:
            raise ApiError(ErrorCode.SAME_EMAIL)
        if await find_user_by_email(conn, new_email) is not None:
            raise ApiError(ErrorCode.EMAIL_ALREADY_USED)
        token = await email_tokens.issue(
            conn, user_id, Purpose.EMAIL_CHANGE, hours=letters.token_hours, new_email=new_email
        )
        await letters.email_change(account, new_email, token).post(conn)

    await _commit(work)
    return Ok()


@bp.get("/users/email/change")
@tag(["Email"])
@validate_querystring(TokenQuery)
@validate_response(Data[EmailChange])
async def check_email_change(query_args: TokenQuery) -> Data[EmailChange]:
    """Check email change token and retrieve email change data."""

    async def work(conn: asyncpg.Connection) -> EmailChange:
        found = await email_tokens.peek(conn, query_args.token, Purpose.EMAIL_CHANGE)
        account = await _account(conn, found.user_id)
        new_email = found.new_email or ""
        return EmailChange(
            email=account.email,
            new_email=new_email,
            current_organization_name=await organization_name(conn, account.email),
            new_organization_name=await organization_name(conn, new_email),
            label_name=account.label_name,
        )

    return Data(data=await services().db.run(work))


@bp.put("/users/email")
@tag(["Email"])
@validate_request(EmailChangeBody)
@validate_response(Ok)
async def change_email_address(data: EmailChangeBody) -> Ok:
    """Change the user's email by the new specified one; the old address gets a notice."""
    letters = _notifications()

    async def work(conn: asyncpg.Connection) -> None:
        found = await email_tokens.use(
            conn, data.email_token, Purpose.EMAIL_CHANGE, new_email=normalize_email(data.email)
        )
        old = await _account(conn, found.user_id)
        new_email = found.new_email or ""
        await change_email(conn, old.user_id, new_email)
        # Links mailed to the old address must not act on the account any more.
        await email_tokens.revoke(conn, old.user_id)
        await letters.email_changed(old, new_email).post(conn)

    await _commit(work)
    return Ok()


@bp.post("/users/email/confirmation")
@tag(["Email"])
@require_purpose(PURPOSE_CONFIRM)
@validate_response(Ok)
async def resend_confirmation() -> Ok:
    """Send again the confirmation email; authenticated by the token of the login that answered code 7."""
    svc = services()
    rates = svc.settings.rate_limits
    user_id = int(purpose_claims()["user_id"])
    account = await svc.db.run(lambda conn: _account(conn, user_id))
    svc.limiter.check(
        (rates.confirmation_per_address, "confirmation_per_address", normalize_email(account.email)),
        (rates.confirmation_per_client, "confirmation_per_client", client_address()),
    )
    if account.email_confirmed:
        raise ApiError(ErrorCode.EMAIL_ALREADY_CONFIRMED)

    letters = _notifications()
    await _commit(lambda conn: _mail_confirmation(conn, letters, account))
    return Ok()


@bp.put("/users/email/confirmation")
@tag(["Email"])
@validate_request(TokenBody)
@validate_response(EmailConfirmed)
async def confirm_email(data: TokenBody) -> EmailConfirmed:
    """Confirm the email of the user using the validation token."""

    async def work(conn: asyncpg.Connection) -> Account:
        found = await email_tokens.use(conn, data.token, Purpose.CONFIRM)
        await mark_email_confirmed(conn, found.user_id)
        return await _account(conn, found.user_id)

    account = await services().db.transaction(work)
    return EmailConfirmed.model_validate(account, from_attributes=True)


@bp.post("/login/password-reset")
@tag(["Users"])
@validate_request(PasswordResetBody)
@validate_response(Ok)
async def ask_password_reset(data: PasswordResetBody) -> Ok:
    """Send an email to reset a user's password. Answers the same whether or not the account exists."""
    svc = services()
    rates = svc.settings.rate_limits
    svc.limiter.check(
        (rates.password_reset_per_address, "password_reset_per_address", normalize_email(data.email)),
        (rates.password_reset_per_client, "password_reset_per_client", client_address()),
    )
    letters = _notifications()

    async def work(conn: asyncpg.Connection) -> None:
        await app_label_id(conn, data.app_label)
        account = await account_by_email(conn, data.email)
        if account is not None:
            token = await email_tokens.issue(conn, account.user_id, Purpose.PASSWORD_RESET, hours=letters.token_hours)
            await letters.password_reset(account, token).post(conn)

    await _commit(work)
    return Ok()


@bp.put("/users/password")
@tag(["Users"])
@validate_request(NewPasswordBody)
@validate_response(Ok)
async def set_new_password(data: NewPasswordBody) -> Ok:
    """Set a new password from a reset email; every session of the account ends, and the pending
    email-change and password-reset links and 2FA set-ups are cancelled."""
    svc = services()
    # A cheap look first, so that a wrong token costs no password hashing.
    await svc.db.run(lambda conn: email_tokens.peek(conn, data.token, Purpose.PASSWORD_RESET))
    password_hash = await svc.passwords.hash(data.password)

    async def work(conn: asyncpg.Connection) -> list[uuid.UUID]:
        found = await email_tokens.use(conn, data.token, Purpose.PASSWORD_RESET)
        await set_password_hash(conn, found.user_id, password_hash)
        await email_tokens.revoke(conn, found.user_id, *email_tokens.ACCOUNT_CHANGES)
        await totp.cancel_setups(conn, found.user_id)
        return await revoke_sessions(conn, found.user_id)

    revoked = await svc.db.transaction(work)
    svc.hub.sessions_revoked(revoked)  # their feed sockets close at once
    return Ok()
