"""Who is calling: the user comes from the bearer token only; the client address (for rate-limit keys)
from the direct peer, or from ``X-Forwarded-For`` only when that peer is a configured trusted proxy."""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable
from datetime import timedelta
from functools import cache, wraps
from typing import Any, ParamSpec, TypeVar

from quart import g, request
from quart_schema import security_scheme

from protocols.errors import ErrorCode

from ..accounts.service import Caller
from ..context import services
from ..errors import ApiError
from ..services.access import UserAccess, anonymous
from ..services.permissions import Permissions

P = ParamSpec("P")
R = TypeVar("R")

BEARER: list[dict[str, list[str]]] = [{"bearer": []}]


def bearer_token() -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(ErrorCode.INVALID_TOKEN, "missing bearer token")
    return token.strip()


async def authenticate(token: str) -> Caller:
    """Check an access token and that its session is still open (HTTP and the feed alike)."""
    return await services().accounts.authenticate(token)


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
    """The caller's permissions (from memory: ``services/access.AccessCache``)."""
    svc = services()
    return await svc.access.permissions(svc.db, current_caller().user_id)


async def caller_access() -> UserAccess:
    """What the caller sees and may use on the map (from memory, forgotten when it changes)."""
    return await access_of(current_caller().user_id)


async def access_of(user_id: int) -> UserAccess:
    """What user ``user_id`` sees and may use (from memory); HTTP and the feed alike."""
    svc = services()
    return await svc.access.of(svc.db, svc.catalog, user_id)


async def label_access(name: str) -> UserAccess:
    """What an anonymous caller of app label ``name`` sees; unknown labels answer 404 + code 12.

    Labels are read from the catalog; one created since its last reload is looked
    up once in the database, then remembered.
    """
    svc = services()
    label = svc.catalog.app_label_id(name)
    if label is None:
        found = await svc.content.app_label_id(name)
        svc.catalog.remember_app_label(name, found)
        label = found
    return anonymous(label)


IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# A social-only account (no password) re-authenticates by a login this recent, or a current 2FA code.
RECENT_LOGIN = timedelta(minutes=5)


@cache
def _networks(trusted: tuple[str, ...]) -> tuple[IpNetwork, ...]:
    return tuple(ipaddress.ip_network(entry, strict=False) for entry in trusted)


def _address(text: str) -> IpAddress | None:
    """An address as proxies write it: ``1.2.3.4``, ``1.2.3.4:5678``, ``::1`` or ``[::1]:5678``."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        found = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(found, ipaddress.IPv6Address) and found.ipv4_mapped is not None:
        return found.ipv4_mapped
    return found


def resolve_client(peer: str | None, forwarded_for: list[str], trusted: tuple[str, ...]) -> str:
    """The client address for rate-limit keys.

    ``X-Forwarded-For`` is read only when the direct peer is a trusted proxy;
    then the chain is walked from the right (the hops our proxies appended) and
    the first address that is not a trusted proxy is the client. An entry that
    is not an address ends the walk at the last trusted hop: only a trusted
    proxy's word is taken, never a value the client wrote.
    """
    peer_address = _address(peer or "")
    if peer_address is None:
        return peer or "unknown"
    networks = _networks(trusted)

    def is_trusted(address: IpAddress) -> bool:
        return any(address in network for network in networks)

    if not is_trusted(peer_address):
        return str(peer_address)
    hops = [hop for value in forwarded_for for hop in value.split(",") if hop.strip()]
    client = peer_address
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        client = address
        if not is_trusted(address):
            break
    return str(client)


def client_address() -> str:
    return resolve_client(
        request.remote_addr, request.headers.getlist("X-Forwarded-For"), services().settings.trusted_proxies
    )


async def confirm_identity(password: str | None, code: str | None, *, code_checked_after: bool = False) -> None:
    """The caller proves again that they own the account before a sensitive change.

    An account with a password gives its current password (400 code 2 when
    missing, 401 code 8 when wrong; attempts count against the login limit of
    the account's address). A social-only account gives a current second-factor
    code (under the wrong-code lock), or calls within ``RECENT_LOGIN`` of its
    login (the session's creation; a token refresh does not renew it), or
    ``code_checked_after`` says the route itself checks a code next; otherwise
    403 code 13.
    """
    svc = services()
    caller = current_caller()
    found = await svc.accounts.credentials(caller.user_id, caller.session_id, RECENT_LOGIN)
    if found is None:
        raise ApiError(ErrorCode.INVALID_TOKEN, "account not found")
    if found.password_hash is not None:
        if password is None:
            raise ApiError(ErrorCode.INVALID_INPUT, "password: the current password is required")
        await svc.limiter.check((svc.settings.rate_limits.login_per_address, "login:address", found.email))
        if not await svc.accounts.passwords.verify(found.password_hash, password):
            raise ApiError(ErrorCode.WRONG_CREDENTIALS, "the current password is wrong")
        return
    if code_checked_after:
        return
    if code is not None and found.two_factor_enabled:
        await svc.accounts.check_code(caller.user_id, code)
        return
    if found.recent_login:
        return
    minutes = int(RECENT_LOGIN.total_seconds() // 60)
    raise ApiError(
        ErrorCode.NOT_ALLOWED,
        f"confirm it is you: log in again and retry within {minutes} minutes, or give a current 2FA code",
    )
