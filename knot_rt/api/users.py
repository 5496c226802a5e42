"""Accounts: registration, profile, email confirmation and change, password reset.

The routes check the rate limits and the caller, then call ``AccountService``:
every mail is written to the outbox in the unit of work of the change that needs
it; the mail sender is woken once that unit of work committed.

Asking for an email change needs the current password (a social-only account: a
current 2FA code or a login of the last 5 minutes). Setting a new password from
a reset link cancels the other pending links that change the account.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, EmailStr, Field, StringConstraints
from quart import Blueprint
from quart_schema import tag, validate_querystring, validate_request, validate_response

from ..accounts.store import normalize_email
from ..context import services
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
    AppLabelName,
    Body,
    Data,
    IdentityBody,
    Lang,
    Ok,
    OtpCode,
    PageQuery,
    Password,
)

bp = Blueprint("users", __name__, url_prefix="/api/application")

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


class EmailBody(IdentityBody):
    email: EmailStr
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


@bp.post("/users")
@tag(["Users"])
@validate_request(RegisterBody)
@validate_response(Registered)
async def register(data: RegisterBody) -> Registered:
    """Register an account; sends the confirmation email."""
    svc = services()
    rates = svc.settings.rate_limits
    await svc.limiter.check((rates.register_per_client, "register_per_client", client_address()))
    user_id = await svc.accounts.register(data.email, data.password, app_label=data.app_label, lang=data.lang)
    return Registered(user_id=user_id)


@bp.get("/users")
@tag(["Users"])
@require_user
@validate_response(Data[Profile])
async def profile() -> Data[Profile]:
    """The caller's profile, from the access token only."""
    account = await services().accounts.account(current_caller().user_id)
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
    await svc.limiter.check(
        (rates.confirmation_per_address, "email_change_per_address", new_email),
        (rates.confirmation_per_client, "email_change_per_client", client_address()),
    )
    await svc.accounts.ask_email_change(user_id, new_email)
    return Ok()


@bp.get("/users/email/change")
@tag(["Email"])
@validate_querystring(TokenQuery)
@validate_response(Data[EmailChange])
async def check_email_change(query_args: TokenQuery) -> Data[EmailChange]:
    """Check email change token and retrieve email change data."""
    found = await services().accounts.email_change(query_args.token)
    return Data(data=EmailChange(
        email=found.account.email,
        new_email=found.new_email,
        current_organization_name=found.current_organization_name,
        new_organization_name=found.new_organization_name,
        label_name=found.account.label_name,
    ))


@bp.put("/users/email")
@tag(["Email"])
@validate_request(EmailChangeBody)
@validate_response(Ok)
async def change_email_address(data: EmailChangeBody) -> Ok:
    """Change the user's email by the new specified one; the old address gets a notice."""
    await services().accounts.change_email(data.email_token, data.email)
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
    account = await svc.accounts.account(user_id)
    await svc.limiter.check(
        (rates.confirmation_per_address, "confirmation_per_address", normalize_email(account.email)),
        (rates.confirmation_per_client, "confirmation_per_client", client_address()),
    )
    await svc.accounts.send_confirmation(account)
    return Ok()


@bp.put("/users/email/confirmation")
@tag(["Email"])
@validate_request(TokenBody)
@validate_response(EmailConfirmed)
async def confirm_email(data: TokenBody) -> EmailConfirmed:
    """Confirm the email of the user using the validation token."""
    account = await services().accounts.confirm_email(data.token)
    return EmailConfirmed.model_validate(account, from_attributes=True)


@bp.post("/login/password-reset")
@tag(["Users"])
@validate_request(PasswordResetBody)
@validate_response(Ok)
async def ask_password_reset(data: PasswordResetBody) -> Ok:
    """Send an email to reset a user's password. Answers the same whether or not the account exists."""
    svc = services()
    rates = svc.settings.rate_limits
    await svc.limiter.check(
        (rates.password_reset_per_address, "password_reset_per_address", normalize_email(data.email)),
        (rates.password_reset_per_client, "password_reset_per_client", client_address()),
    )
    await svc.accounts.ask_password_reset(data.email, data.app_label)
    return Ok()


@bp.put("/users/password")
@tag(["Users"])
@validate_request(NewPasswordBody)
@validate_response(Ok)
async def set_new_password(data: NewPasswordBody) -> Ok:
    """Set a new password from a reset email; every session of the account ends, and the pending
    email-change and password-reset links and 2FA set-ups are cancelled."""
    await services().accounts.set_new_password(data.token, data.password)  # their feed sockets close at once
    return Ok()
