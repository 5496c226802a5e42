"""Who is calling: the user comes from the bearer token only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, ParamSpec, TypeVar

from quart import g, request
from quart_schema import security_scheme

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..services.access import UserAccess, anonymous, load_access
from ..services.accounts import app_label_id
from ..services.permissions import Permissions, load_permissions
from ..services.sessions import active_session_user

P = ParamSpec("P")
R = TypeVar("R")

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


@dataclass(frozen=True, slots=True)
class Caller:
    user_id: int
    session_id: Any


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(ErrorCode.INVALID_TOKEN, "missing bearer token")
    return token.strip()


async def authenticate(token: str) -> Caller:
    """Check an access token and that its session is still open."""
    svc = services()
    claims = svc.signer.read_access(token)
    user_id = await svc.db.run(lambda conn: active_session_user(conn, claims.session_id))
    if user_id is None or user_id != claims.user_id:
        raise ApiError(ErrorCode.INVALID_TOKEN, "session ended")
    return Caller(claims.user_id, claims.session_id)


def require_user(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The route needs a logged-in user; ``current_caller()`` gives it."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        g.caller = await authenticate(bearer_token())
        return await func(*args, **kwargs)

    return security_scheme(BEARER)(wrapper)


def require_purpose(purpose: str) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """The route takes a narrow purpose token (second factor, confirmation resend)."""

    def decorator(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            g.purpose_claims = services().signer.read_purpose(bearer_token(), purpose)
            return await func(*args, **kwargs)

        return security_scheme(BEARER)(wrapper)

    return decorator


def current_caller() -> Caller:
    caller: Caller = g.caller
    return caller


def purpose_claims() -> dict[str, Any]:
    claims: dict[str, Any] = g.purpose_claims
    return claims


async def caller_permissions() -> Permissions:
    """The caller's permissions, loaded once per request."""
    cached: Permissions | None = g.get("permissions")
    if cached is None:
        user_id = current_caller().user_id
        cached = await services().db.run(lambda conn: load_permissions(conn, user_id))
        g.permissions = cached
    return cached


async def caller_access() -> UserAccess:
    """What the caller sees and may use on the map (cached a short while)."""
    return await access_of(current_caller().user_id)


async def access_of(user_id: int) -> UserAccess:
    """What user ``user_id`` sees and may use (cached a short while); HTTP and the feed alike."""
    svc = services()
    access = svc.access.get(user_id)
    if access is None:
        access = await svc.db.run(lambda conn: load_access(conn, user_id, svc.catalog))
        svc.access.put(access)
    return access


async def label_access(name: str) -> UserAccess:
    """What an anonymous caller of app label ``name`` sees; unknown labels answer 404 + code 12.

    Labels are read from the catalog; one created since its last reload is looked
    up once in the database, then remembered.
    """
    svc = services()
    label = svc.catalog.app_label_id(name)
    if label is None:
        found = await svc.db.run(lambda conn: app_label_id(conn, name))
        assert found is not None  # app_label_id raises for an unknown name
        svc.catalog.remember_app_label(name, found)
        label = found
    return anonymous(label)


def client_address() -> str:
    return request.remote_addr or "unknown"
