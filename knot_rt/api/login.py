"""Login, tokens, second factor, social login and logout.

Every login route ends the same way (``admit``): an unconfirmed address answers
code 7 with a token that only resends the confirmation; the dashboard scope
needs at least one permission (13); an account with 2FA answers code 146 with a
five-minute token for ``/login/2fa``; otherwise a session opens.

Enabling 2FA and turning it off ask the caller to prove again who they are
(``confirm_identity``: the current password, or for a social-only account a
recent login); wrong codes lock that step for the user (``AccountService.guarded``).
The routes check the rate limits and the caller, then call ``AccountService``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, EmailStr, Field, StringConstraints, ValidationError
from quart import Blueprint, request
from quart_schema import (
    RequestSchemaValidationError,
    document_request,
    document_response,
    security_scheme,
    tag,
    validate_request,
    validate_response,
)

from ..accounts.store import Device
from ..context import services
from ..services.social import SocialIdentity
from ..services.tokens import PURPOSE_MFA
from ..web.auth import (
    BEARER,
    bearer_token,
    caller_permissions,
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
    IdentityBody,
    Lang,
    LoginDevice,
    LoginResponse,
    Ok,
    OtpCode,
    Password,
    PermissionOut,
    Scope,
)

bp = Blueprint("login", __name__, url_prefix="/api/application")

TAGS = ["Login"]

DeviceId = Annotated[str, StringConstraints(min_length=1, max_length=50)]
OpaqueToken = Annotated[str, StringConstraints(min_length=1, max_length=8192)]

M = TypeVar("M", bound=BaseModel)
R = TypeVar("R")


class LoginBody(Body):
    email: EmailStr
    password: Password
    scope: Scope = "app"
    device: LoginDevice | None = None
    app_label: AppLabelName


class SocialLoginBody(Body):
    token: OpaqueToken
    scope: Scope = "app"
    device: LoginDevice | None = None
    app_label: AppLabelName
    lang: Lang = "en"


class DeviceBody(Body):
    device: LoginDevice | None = None


class SecondFactorBody(Body):
    mfa_token: OtpCode
    device: LoginDevice | None = None


class TwoFactorVerifyBody(Body):
    token: OpaqueToken
    mfa_token: OtpCode


class TwoFactorBeginBody(IdentityBody):
    pass


class TwoFactorDisableBody(IdentityBody):
    mfa_token: OtpCode = Field(description="A current code of the OTP app.")


class LogoutBody(Body):
    device_id: DeviceId | None = None


class LoginRefusal(BaseModel):
    """A refused login; ``token`` comes with code 7 (resend the confirmation) and 146 (second factor)."""

    code: int
    message: str
    token: str | None = None


class PermissionsResponse(BaseModel):
    code: int = 0
    permissions: list[PermissionOut]


class RefreshResponse(BaseModel):
    code: int = 0
    access_token: str
    refresh_token: str


class TwoFactorKey(BaseModel):
    code: int = 0
    key: str
    key_url: str
    token: str


def device_of(given: LoginDevice | None) -> Device:
    return Device() if given is None else Device(**given.model_dump())


def answers_login(func: Callable[..., Awaitable[LoginResponse]]) -> Callable[..., Awaitable[LoginResponse]]:
    """What every login route answers: a session, or a refusal (documented)."""
    for status in (401, 403):
        func = document_response(LoginRefusal, status)(func)
    validated: Callable[..., Awaitable[LoginResponse]] = validate_response(LoginResponse)(func)
    return validated


def optional_body(model: type[M]) -> Callable[[Callable[..., Awaitable[R]]], Callable[..., Awaitable[R]]]:
    """Like ``validate_request``, but an empty body stands for ``{}``."""

    def decorator(func: Callable[..., Awaitable[R]]) -> Callable[..., Awaitable[R]]:
        @wraps(func)
        async def wrapper(*args: Any, **kwargs: Any) -> R:
            raw = await request.get_data(as_text=True)
            payload = await request.get_json(force=True) if raw.strip() else {}
            try:
                data = model.model_validate(payload)
            except ValidationError as exc:
                raise RequestSchemaValidationError(exc) from exc
            return await func(*args, data=data, **kwargs)

        documented: Callable[..., Awaitable[R]] = document_request(model)(wrapper)
        return documented

    return decorator


# -- email and password ----------------------------------------------------------------------------


@bp.post("/login")
@tag(TAGS)
@validate_request(LoginBody)
@answers_login
async def login(data: LoginBody) -> LoginResponse:
    """Log in a user with their Knot account."""
    svc = services()
    limits = svc.settings.rate_limits
    await svc.limiter.check(
        (limits.login_per_address, "login:address", data.email),
        (limits.login_per_client, "login:client", client_address()),
    )
    session = await svc.accounts.password_login(
        data.email, data.password, app_label=data.app_label, scope=data.scope, device=device_of(data.device)
    )
    return LoginResponse.model_validate(session)


# -- Apple, Google, Facebook -----------------------------------------------------------------------


async def social_login(identity: SocialIdentity, data: SocialLoginBody) -> LoginResponse:
    session = await services().accounts.social_login(
        identity, app_label=data.app_label, lang=data.lang, scope=data.scope, device=device_of(data.device)
    )
    return LoginResponse.model_validate(session)


@bp.post("/login/apple")
@tag(TAGS)
@validate_request(SocialLoginBody)
@answers_login
async def login_apple(data: SocialLoginBody) -> LoginResponse:
    """Log in with an Apple account (Apple's ID token)."""
    return await social_login(await services().social.apple(data.token), data)


@bp.post("/login/google")
@tag(TAGS)
@validate_request(SocialLoginBody)
@answers_login
async def login_google(data: SocialLoginBody) -> LoginResponse:
    """Log in with a Google account (Google's ID token)."""
    return await social_login(await services().social.google(data.token), data)


@bp.post("/login/facebook")
@tag(TAGS)
@validate_request(SocialLoginBody)
@answers_login
async def login_facebook(data: SocialLoginBody) -> LoginResponse:
    """Log in with a Facebook account (Facebook's access token)."""
    return await social_login(await services().social.facebook(data.token), data)


# -- second factor ---------------------------------------------------------------------------------


@bp.post("/login/2fa")
@tag(TAGS)
@require_purpose(PURPOSE_MFA)
@validate_request(SecondFactorBody)
@answers_login
async def second_factor(data: SecondFactorBody) -> LoginResponse:
    """Second factor of a login that answered code 146; its token is the Bearer."""
    svc = services()
    claims = purpose_claims()
    user_id = int(claims["user_id"])
    limits = svc.settings.rate_limits
    await svc.limiter.check(
        (limits.second_factor_per_user, "2fa:user", str(user_id)),
        (limits.second_factor_per_client, "2fa:client", client_address()),
    )
    session = await svc.accounts.second_factor_login(user_id, data.mfa_token, claims, device_of(data.device))
    return LoginResponse.model_validate(session)


@bp.post("/login/2fa/generate")
@tag(TAGS)
@require_user
@optional_body(TwoFactorBeginBody)
@validate_response(TwoFactorKey)
async def begin_two_factor(data: TwoFactorBeginBody) -> TwoFactorKey:
    """Begin enabling 2FA: a key for an OTP app, and the token for ``/login/2fa/verify``.

    Needs the current ``password`` (a social-only account: a login of the last 5 minutes).
    """
    svc = services()
    user_id = current_caller().user_id
    await confirm_identity(data.password, None)
    setup = await svc.accounts.begin_two_factor(user_id)
    return TwoFactorKey(key=setup.key, key_url=setup.key_url, token=setup.token)


@bp.post("/login/2fa/verify")
@tag(TAGS)
@require_user
@validate_request(TwoFactorVerifyBody)
@validate_response(Ok)
async def finish_two_factor(data: TwoFactorVerifyBody) -> Ok:
    """Finish enabling 2FA with one code from the OTP app (5 wrong codes lock this step 15 minutes: 429 code 9)."""
    svc = services()
    user_id = current_caller().user_id
    await svc.accounts.finish_two_factor(user_id, data.token, data.mfa_token)
    return Ok()


@bp.post("/login/2fa/disable")
@tag(TAGS)
@require_user
@validate_request(TwoFactorDisableBody)
@validate_response(Ok)
async def disable_two_factor(data: TwoFactorDisableBody) -> Ok:
    """Turn 2FA off with the current ``password`` and a current code of the OTP app.

    A social-only account (no password) gives the code alone. Wrong codes count
    with the login's second step: 5 lock both for 15 minutes (429 code 9).
    409 code 24 when 2FA is not enabled.
    """
    svc = services()
    user_id = current_caller().user_id
    await confirm_identity(data.password, None, code_checked_after=True)
    await svc.accounts.disable_two_factor(user_id, data.mfa_token)
    return Ok()


# -- tokens and sessions ---------------------------------------------------------------------------


@bp.post("/login/check")
@tag(TAGS)
@require_user
@optional_body(DeviceBody)
@validate_response(PermissionsResponse)
async def check_token(data: DeviceBody) -> PermissionsResponse:
    """Check the access token and get the user's permissions; ``device`` updates the session's device."""
    if data.device is not None:
        session_id, device = current_caller().session_id, device_of(data.device)
        await services().accounts.update_device(session_id, device)
    permissions = await caller_permissions()
    return PermissionsResponse.model_validate({"permissions": permissions.as_json()})


@bp.post("/login/refresh")
@tag(TAGS)
@security_scheme(BEARER)
@validate_response(RefreshResponse)
async def refresh() -> RefreshResponse:
    """New access and refresh tokens; the refresh token is the Bearer and is spent.

    A refresh token used twice revokes its whole session (code 14).
    """
    access_token, refresh_token = await services().accounts.refresh(bearer_token())
    return RefreshResponse(access_token=access_token, refresh_token=refresh_token)


@bp.post("/logout")
@tag(TAGS)
@require_user
@optional_body(LogoutBody)
@validate_response(Ok)
async def logout(data: LogoutBody) -> Ok:
    """Log out one device (``device_id``) or, without it, every device of the user.

    Logging out every device also cancels the pending email-change and password-reset
    links and any 2FA set-up in progress.
    """
    await services().accounts.logout(current_caller().user_id, data.device_id)  # their feed sockets close too
    return Ok()
