"""Apple, Google and Facebook login: verify the provider's token.

Apple and Google give an OpenID ID token (a JWT signed with RS256): its
signature is checked against the provider's JWKS (fetched, cached, fetched again
on an unknown key id), and so are its issuer, audience and expiry. Facebook gives
an access token: it is checked with the Graph API's token-debug endpoint, with
the app's credentials, then the account's email is read.

A verified identity logs into the account linked to it, else into the account
with its verified email address (linked from then on), else into a new
confirmed account without a password (``accounts/store.account_for``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx
import jwt

from protocols.errors import ErrorCode

from ..config import SocialConfig
from ..errors import ApiError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SocialIdentity:
    provider: str
    subject: str
    email: str | None
    email_verified: bool


class _JwksCache:
    def __init__(self, url: str, max_age: float) -> None:
        self.url = url
        self.max_age = max_age
        self._keys: jwt.PyJWKSet | None = None
        self._fetched = 0.0

    async def _fetch(self) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                response = await client.get(self.url)
                response.raise_for_status()
                self._keys = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS fetch from %s failed: %s", self.url, exc)
            raise ApiError(ErrorCode.PROVIDER_UNAVAILABLE) from exc
        self._fetched = time.monotonic()

    async def key(self, kid: str) -> jwt.PyJWK:
        now = time.monotonic()
        if self._keys is None or now - self._fetched > self.max_age:
            await self._fetch()
        found = self._find(kid)
        # An unknown key id may be a rotation: fetch again, at most every 60 s.
        if found is None and now - self._fetched > 60:
            await self._fetch()
            found = self._find(kid)
        if found is None:
            raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, "the token's signing key is unknown")
        return found

    def _find(self, kid: str) -> jwt.PyJWK | None:
        assert self._keys is not None
        for key in self._keys.keys:
            if key.key_id == kid:
                return key
        return None


class SocialVerifier:
    def __init__(self, config: SocialConfig) -> None:
        self._config = config
        self._jwks: dict[str, _JwksCache] = {}

    def _cache(self, url: str) -> _JwksCache:
        cache = self._jwks.get(url)
        if cache is None:
            cache = self._jwks[url] = _JwksCache(url, self._config.jwks_cache_seconds)
        return cache

    async def _verify_id_token(
        self, provider: str, token: str, jwks_url: str | None, audience: str | None, issuers: tuple[str, ...]
    ) -> SocialIdentity:
        if not jwks_url or not audience:
            raise ApiError(ErrorCode.PROVIDER_NOT_CONFIGURED, f"{provider} login is not configured")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN) from exc
        if header.get("alg") != "RS256" or not isinstance(header.get("kid"), str):
            raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, "unexpected token algorithm or key id")
        key = await self._cache(jwks_url).key(header["kid"])
        try:
            claims: dict[str, Any] = jwt.decode(
                token, key.key, algorithms=["RS256"], audience=audience, issuer=list(issuers),
                options={"require": ["exp", "iat", "iss", "aud", "sub"]}, leeway=30,
            )
        except jwt.PyJWTError as exc:
            raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, f"invalid {provider} token: {exc}") from exc
        verified = claims.get("email_verified")
        return SocialIdentity(
            provider=provider,
            subject=str(claims["sub"]),
            email=claims.get("email"),
            email_verified=verified is True or verified == "true",
        )

    async def apple(self, token: str) -> SocialIdentity:
        c = self._config
        return await self._verify_id_token("apple", token, c.apple_jwks_url, c.apple_audience, (c.apple_issuer,))

    async def google(self, token: str) -> SocialIdentity:
        c = self._config
        return await self._verify_id_token("google", token, c.google_jwks_url, c.google_audience, c.google_issuers)

    async def facebook(self, token: str) -> SocialIdentity:
        c = self._config
        if not c.facebook_graph_url or not c.facebook_app_id or not c.facebook_app_secret:
            raise ApiError(ErrorCode.PROVIDER_NOT_CONFIGURED, "facebook login is not configured")
        base = c.facebook_graph_url.rstrip("/")
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                debug = await client.get(
                    f"{base}/debug_token",
                    params={"input_token": token, "access_token": f"{c.facebook_app_id}|{c.facebook_app_secret}"},
                )
                if debug.status_code >= 500:
                    raise ApiError(ErrorCode.PROVIDER_UNAVAILABLE)
                data = debug.json().get("data") or {}
                if (
                    not data.get("is_valid")
                    or str(data.get("app_id")) != c.facebook_app_id
                    or not data.get("user_id")
                    or (data.get("expires_at") not in (None, 0) and int(data["expires_at"]) < time.time())
                ):
                    raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, "invalid facebook token")
                me = await client.get(f"{base}/me", params={"fields": "id,email", "access_token": token})
                profile = me.json() if me.status_code == 200 else {}
        except httpx.HTTPError as exc:
            raise ApiError(ErrorCode.PROVIDER_UNAVAILABLE) from exc
        except ValueError as exc:
            raise ApiError(ErrorCode.PROVIDER_UNAVAILABLE, "facebook answered no JSON") from exc
        if str(profile.get("id", data["user_id"])) != str(data["user_id"]):
            raise ApiError(ErrorCode.INVALID_PROVIDER_TOKEN, "facebook profile does not match the token")
        email = profile.get("email")
        # Facebook returns only addresses it has confirmed.
        return SocialIdentity("facebook", str(data["user_id"]), email, email is not None)
