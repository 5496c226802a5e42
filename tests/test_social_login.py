"""Log in with Apple, Google and Facebook (ROUTES rows 38-40), against a fake identity provider."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pyotp
import pytest

from knot_rt.config import Settings, SocialConfig
from tests.identity_provider import APPLE_AUDIENCE, GOOGLE_ISSUER, IdentityProvider, SigningKey
from tests.support import Harness, bearer, running

EMAIL = "rider@example.com"


@pytest.fixture(scope="module")
def identity_provider() -> Iterator[IdentityProvider]:
    with running(IdentityProvider()) as provider:
        yield provider


@pytest.fixture
def social_config(identity_provider: IdentityProvider) -> SocialConfig:
    return identity_provider.social_config()


@pytest.fixture
def settings(settings: Settings, social_config: SocialConfig) -> Settings:
    return replace(settings, social=social_config)


async def social_login(harness: Harness, provider: str, token: str, /, **changes: Any) -> tuple[int, dict[str, Any]]:
    body = {"token": token, "app_label": "knot", "device": {"id": "phone"}, **changes}
    response = await harness.client.post(f"/api/application/login/{provider}", json=body)
    return response.status_code, response.json()


async def logged_in(harness: Harness, provider: str, token: str) -> int:
    """The user id of a successful login, after checking that its token works."""
    status, body = await social_login(harness, provider, token)
    assert status == 200, body
    assert set(body) == {"code", "token", "refresh_token", "user_id", "permissions"}
    check = await harness.client.post("/api/application/login/check", headers=bearer(body["token"]), json={})
    assert check.status_code == 200
    return int(body["user_id"])


async def password_login_status(harness: Harness, email: str, password: str = "correct horse battery") -> int:
    body = {"email": email, "password": password, "app_label": "knot"}
    return (await harness.client.post("/api/application/login", json=body)).status_code


async def test_apple_creates_an_account_then_finds_it(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()

    user_id = await logged_in(harness, "apple", identity_provider.apple_token("apple-1", "new@example.com"))

    assert await logged_in(harness, "apple", identity_provider.apple_token("apple-1", "new@example.com")) == user_id
    # The new account has no password.
    assert await password_login_status(harness, "new@example.com") == 401


async def test_google_matches_an_account_by_verified_email(
    harness: Harness, identity_provider: IdentityProvider
) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)

    assert await logged_in(harness, "google", identity_provider.google_token("google-1", "Rider@Example.com")) == user_id
    # Linked from now on: found by its subject even with another address at Google.
    assert await logged_in(harness, "google", identity_provider.google_token("google-1", "renamed@example.com")) == user_id
    assert await password_login_status(harness, EMAIL) == 200


async def test_an_unconfirmed_account_is_confirmed_and_loses_its_password(
    harness: Harness, identity_provider: IdentityProvider
) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL, confirmed=False)

    assert await logged_in(harness, "google", identity_provider.google_token("google-1", EMAIL)) == user_id
    # Whoever set that password never proved the address was theirs.
    assert await password_login_status(harness, EMAIL) == 401


async def test_no_verified_email_and_no_linked_account(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)

    attempts = [
        ("google", identity_provider.google_token("google-1", EMAIL, email_verified=False)),
        ("apple", identity_provider.apple_token("apple-1", None)),
    ]

    for provider, token in attempts:
        status, body = await social_login(harness, provider, token)
        assert (status, body["code"]) == (401, 18), provider


async def test_unverifiable_id_tokens(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    impostor = SigningKey.generate(identity_provider.key.kid)
    cases = {
        "wrong audience": identity_provider.google_token("google-1", EMAIL, audience=APPLE_AUDIENCE),
        "wrong issuer": identity_provider.google_token("google-1", EMAIL, issuer="https://evil.example"),
        "apple token at google": identity_provider.apple_token("apple-1", EMAIL),
        "expired": identity_provider.google_token("google-1", EMAIL, expires_in=-300),
        "signed by another key": identity_provider.google_token("google-1", EMAIL, key=impostor),
        "unknown key id": identity_provider.google_token("google-1", EMAIL, key=SigningKey("rogue", impostor.private_key)),
        "not a token": "not-a-jwt",
    }

    for case, token in cases.items():
        status, body = await social_login(harness, "google", token)
        assert (status, body["code"]) == (401, 18), case
    assert await logged_in(harness, "google", identity_provider.google_token("google-1", EMAIL, issuer=GOOGLE_ISSUER))


async def test_facebook_login(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)

    assert await logged_in(harness, "facebook", identity_provider.facebook_token("fb-1", EMAIL)) == user_id
    new_user = await logged_in(harness, "facebook", identity_provider.facebook_token("fb-2", "fan@example.com"))
    assert new_user != user_id


async def test_unverifiable_facebook_tokens(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    cases = {
        "unknown token": "EAA-made-up",
        "another app's token": identity_provider.facebook_token("fb-1", EMAIL, app_id="999"),
        "no email": identity_provider.facebook_token("fb-3", None),
    }

    for case, token in cases.items():
        status, body = await social_login(harness, "facebook", token)
        assert (status, body["code"]) == (401, 18), case


@pytest.mark.parametrize("social_config", [SocialConfig()])
async def test_providers_not_configured(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    tokens = {
        "apple": identity_provider.apple_token("apple-1", EMAIL),
        "google": identity_provider.google_token("google-1", EMAIL),
        "facebook": identity_provider.facebook_token("fb-1", EMAIL),
    }

    for provider, token in tokens.items():
        status, body = await social_login(harness, provider, token)
        assert (status, body["code"]) == (501, 17), provider


async def test_the_login_rules_still_apply(harness: Harness, identity_provider: IdentityProvider) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)
    await harness.db.execute(
        "UPDATE users SET totp_secret = $2 WHERE id = $1", user_id, harness.svc.box.seal(pyotp.random_base32())
    )

    status, body = await social_login(harness, "google", identity_provider.google_token("google-1", EMAIL))
    assert (status, body["code"]) == (401, 146)
    assert body["token"]
    status, body = await social_login(harness, "apple", identity_provider.apple_token("apple-1", "new@example.com"),
                                      scope="dashboard")
    assert (status, body["code"]) == (403, 13)
    status, body = await social_login(harness, "apple", identity_provider.apple_token("apple-2", "x@example.com"),
                                      app_label="nolabel")
    assert (status, body["code"]) == (404, 12)


async def test_bad_input(harness: Harness, identity_provider: IdentityProvider) -> None:
    token = identity_provider.google_token("google-1", EMAIL)
    cases: dict[str, dict[str, Any]] = {
        "empty token": {"token": ""},
        "long lang": {"lang": "eng"},
        "lang not letters": {"lang": "e1"},
        "unknown scope": {"scope": "root"},
        "device not an object": {"device": ["phone"]},
    }

    for case, changes in cases.items():
        status, body = await social_login(harness, "google", token, **changes)
        assert (status, body["code"]) == (400, 2), case
    response = await harness.client.post("/api/application/login/apple", json={"app_label": "knot"})
    assert (response.status_code, response.json()["code"]) == (400, 2)
