"""A fake identity provider over real HTTP, for the social-login tests.

It plays Apple and Google (a JWKS of one RSA key, and ID tokens signed with it,
RS256) and Facebook (the Graph API's ``/debug_token`` and ``/me`` for access
tokens it issued). It runs on loopback, port 0, in a thread of its own, like the
SMTP sink.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from knot_rt.config import SocialConfig

APPLE_ISSUER = "https://appleid.apple.com"
APPLE_AUDIENCE = "com.knot.rider"
GOOGLE_ISSUER = "https://accounts.google.com"
GOOGLE_AUDIENCE = "knot-rider.apps.googleusercontent.com"
FACEBOOK_APP_ID = "424242"
FACEBOOK_APP_SECRET = "facebook-app-secret"


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    @classmethod
    def generate(cls, kid: str) -> SigningKey:
        return cls(kid, rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def jwk(self) -> dict[str, Any]:
        public: dict[str, Any] = RSAAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {**public, "kid": self.kid, "use": "sig", "alg": "RS256"}

    def sign(self, claims: dict[str, Any]) -> str:
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers={"kid": self.kid})


@dataclass(frozen=True)
class FacebookGrant:
    """What Facebook knows of one access token it issued."""

    app_id: str
    user_id: str
    email: str | None
    expires_at: int


class IdentityProvider:
    def __init__(self) -> None:
        self.key = SigningKey.generate("knot-test-key")
        self._facebook: dict[str, FacebookGrant] = {}
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="identity-provider", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def social_config(self) -> SocialConfig:
        return SocialConfig(
            apple_jwks_url=f"{self.url}/apple/auth/keys",
            apple_audience=APPLE_AUDIENCE,
            apple_issuer=APPLE_ISSUER,
            google_jwks_url=f"{self.url}/google/oauth2/v3/certs",
            google_audience=GOOGLE_AUDIENCE,
            facebook_graph_url=f"{self.url}/graph",
            facebook_app_id=FACEBOOK_APP_ID,
            facebook_app_secret=FACEBOOK_APP_SECRET,
        )

    # -- Apple and Google ----------------------------------------------------------------------

    def id_token(
        self, *, issuer: str, audience: str, subject: str, email: str | None, email_verified: bool = True,
        expires_in: int = 600, key: SigningKey | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer, "aud": audience, "sub": subject, "iat": now - 5, "exp": now + expires_in,
        }
        if email is not None:
            claims["email"] = email
            claims["email_verified"] = email_verified
        return (key or self.key).sign(claims)

    def apple_token(self, subject: str, email: str | None, **changes: Any) -> str:
        return self.id_token(**{"issuer": APPLE_ISSUER, "audience": APPLE_AUDIENCE, "subject": subject,
                                "email": email, **changes})

    def google_token(self, subject: str, email: str | None, **changes: Any) -> str:
        return self.id_token(**{"issuer": GOOGLE_ISSUER, "audience": GOOGLE_AUDIENCE, "subject": subject,
                                "email": email, **changes})

    # -- Facebook --------------------------------------------------------------------------------

    def facebook_token(self, user_id: str, email: str | None, *, app_id: str = FACEBOOK_APP_ID) -> str:
        token = "EAA" + secrets.token_urlsafe(24)
        self._facebook[token] = FacebookGrant(app_id, user_id, email, int(time.time()) + 3600)
        return token

    def debug_token(self, input_token: str, app_token: str) -> tuple[int, dict[str, Any]]:
        if app_token != f"{FACEBOOK_APP_ID}|{FACEBOOK_APP_SECRET}":
            return 400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
        grant = self._facebook.get(input_token)
        if grant is None:
            return 200, {"data": {"is_valid": False, "error": {"code": 190, "message": "Invalid token"}}}
        return 200, {"data": {"is_valid": True, "app_id": grant.app_id, "user_id": grant.user_id,
                              "expires_at": grant.expires_at, "type": "USER"}}

    def me(self, access_token: str) -> tuple[int, dict[str, Any]]:
        grant = self._facebook.get(access_token)
        if grant is None:
            return 400, {"error": {"message": "Invalid OAuth access token.", "type": "OAuthException", "code": 190}}
        profile: dict[str, Any] = {"id": grant.user_id}
        if grant.email is not None:
            profile["email"] = grant.email
        return 200, profile

    def answer(self, path: str, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        if path in ("/apple/auth/keys", "/google/oauth2/v3/certs"):
            return 200, {"keys": [self.key.jwk()]}
        if path == "/graph/debug_token":
            return self.debug_token(query.get("input_token", ""), query.get("access_token", ""))
        if path == "/graph/me":
            return self.me(query.get("access_token", ""))
        return 404, {"error": "not found"}


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, provider: IdentityProvider) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.provider = provider


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        url = urlparse(self.path)
        query = {name: values[0] for name, values in parse_qs(url.query).items()}
        status, body = self.server.provider.answer(url.path, query)
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests' output is theirs."""
