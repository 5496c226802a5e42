"""Resend the confirmation email and confirm the address (ROUTES rows 31 and 32)."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.config import RateLimits
from knot_rt.services.tokens import PURPOSE_CONFIRM, PURPOSE_MFA
from tests.support import Harness, SmtpSink, bearer, open_test_session, token_in

CONFIRMATION = "/api/application/users/email/confirmation"
PASSWORD = "correct horse battery"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(confirmation_per_address="2/hour", confirmation_per_client="3/hour")


async def register(harness: Harness, email: str = "ada@example.com") -> int:
    response = await harness.client.post(
        "/api/application/users", json={"email": email, "password": PASSWORD, "app_label": "knot"}
    )
    assert response.status_code == 200, response.text
    user_id: int = response.json()["user_id"]
    return user_id


def confirm_token(harness: Harness, user_id: int) -> dict[str, str]:
    """The header of the purpose token that a login answering code 7 hands out."""
    return bearer(harness.svc.signer.purpose_token(PURPOSE_CONFIRM, user_id, 600))


async def is_confirmed(harness: Harness, user_id: int) -> bool:
    confirmed: bool = await harness.db.fetchval(
        "SELECT email_confirmed_at IS NOT NULL FROM users WHERE id = $1", user_id
    )
    return confirmed


async def confirm(harness: Harness, token: str, **extra: Any) -> Any:
    return await harness.client.put(CONFIRMATION, json={"token": token, **extra})


async def test_confirming_answers_the_store_urls_of_the_app_label(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label("knot", "Knot City", android="https://play.example/k", ios="https://apps.example/k")
    user_id = await register(harness)
    token = token_in((await smtp_sink.wait_for("ada@example.com"))[0])

    response = await confirm(harness, token)
    assert response.status_code == 200
    assert response.json() == {
        "code": 0, "android_store_url": "https://play.example/k", "ios_store_url": "https://apps.example/k",
        "label_name": "Knot City", "email": "ada@example.com",
    }
    assert await is_confirmed(harness, user_id)
    access = await open_test_session(harness, user_id)
    profile = await harness.client.get("/api/application/users", headers=bearer(access))
    assert profile.json()["data"]["email_confirmed"] is True


async def test_a_confirmation_token_works_once(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    await register(harness)
    token = token_in((await smtp_sink.wait_for("ada@example.com"))[0])
    assert (await confirm(harness, token)).status_code == 200
    again = await confirm(harness, token)
    assert again.status_code == 400
    assert again.json()["code"] == 11


async def test_an_expired_token_is_refused(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    user_id = await register(harness)
    token = token_in((await smtp_sink.wait_for("ada@example.com"))[0])
    await harness.db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")
    response = await confirm(harness, token)
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert not await is_confirmed(harness, user_id)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [({"token": "AAAAAAAAAA"}, 400, 11), ({"token": "short"}, 400, 2), ({"token": "x" * 11}, 400, 2), ({}, 400, 2)],
)
async def test_unknown_or_malformed_tokens(harness: Harness, body: dict[str, Any], status: int, code: int) -> None:
    response = await harness.client.put(CONFIRMATION, json=body)
    assert response.status_code == status
    assert response.json()["code"] == code
    if code == 2:
        assert "token" in response.json()["message"]


async def test_a_token_confirms_only_its_own_account(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    ada = await register(harness, "ada@example.com")
    bob = await register(harness, "bob@example.com")
    token = token_in((await smtp_sink.wait_for("ada@example.com"))[0])
    response = await confirm(harness, token, user_id=bob, email="bob@example.com")
    assert response.json()["email"] == "ada@example.com"
    assert await is_confirmed(harness, ada)
    assert not await is_confirmed(harness, bob)


async def test_resending_replaces_the_earlier_token(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    user_id = await register(harness)
    first = token_in((await smtp_sink.wait_for("ada@example.com"))[0])

    response = await harness.client.post(CONFIRMATION, headers=confirm_token(harness, user_id))
    assert response.status_code == 200
    assert response.json() == {"code": 0}
    second = token_in((await smtp_sink.wait_for("ada@example.com", count=2))[1])
    assert second != first

    assert (await confirm(harness, first)).json()["code"] == 11
    assert (await confirm(harness, second)).status_code == 200
    assert await is_confirmed(harness, user_id)


async def test_resending_to_a_confirmed_address_is_a_409(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com", confirmed=True)
    response = await harness.client.post(CONFIRMATION, headers=confirm_token(harness, user_id))
    assert response.status_code == 409
    assert response.json()["code"] == 19
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_resending_needs_the_confirmation_purpose_token(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com", confirmed=False)
    access = await open_test_session(harness, user_id)
    mfa = harness.svc.signer.purpose_token(PURPOSE_MFA, user_id, 600)
    for headers in ({}, bearer("garbage"), bearer(access), bearer(mfa)):
        response = await harness.client.post(CONFIRMATION, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == 3
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_resending_mails_only_the_token_owner(harness: Harness, smtp_sink: SmtpSink) -> None:
    ada = await harness.create_user("ada@example.com", confirmed=False)
    bob = await harness.create_user("bob@example.com", confirmed=False)
    response = await harness.client.post(
        CONFIRMATION, headers=confirm_token(harness, ada), json={"user_id": bob, "email": "bob@example.com"}
    )
    assert response.status_code == 200
    await smtp_sink.wait_for("ada@example.com")
    assert await harness.db.fetchval("SELECT array_agg(to_addr) FROM outbox") == ["ada@example.com"]
    assert await harness.db.fetchval("SELECT array_agg(DISTINCT user_id) FROM email_tokens") == [ada]


async def test_resending_is_rate_limited_per_address(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com", confirmed=False)
    for _ in range(2):
        assert (await harness.client.post(CONFIRMATION, headers=confirm_token(harness, user_id))).status_code == 200
    response = await harness.client.post(CONFIRMATION, headers=confirm_token(harness, user_id))
    assert response.status_code == 429
    assert response.json()["code"] == 9
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_resending_is_rate_limited_per_client(harness: Harness) -> None:
    users = [await harness.create_user(f"rider{n}@example.com", confirmed=False) for n in range(4)]
    answers = [
        (await harness.client.post(CONFIRMATION, headers=confirm_token(harness, user_id))).status_code
        for user_id in users
    ]
    assert answers == [200, 200, 200, 429]


async def test_register_login_resend_confirm_login(harness: Harness, smtp_sink: SmtpSink) -> None:
    """The whole path of a new rider, through the login route."""
    await harness.create_app_label()
    await register(harness)
    await smtp_sink.wait_for("ada@example.com")
    login_body = {"email": "ada@example.com", "password": PASSWORD, "app_label": "knot", "scope": "app"}

    refused = await harness.client.post("/api/application/login", json=login_body)
    assert refused.json()["code"] == 7, refused.text
    resent = await harness.client.post(CONFIRMATION, headers=bearer(refused.json()["token"]))
    assert resent.status_code == 200, resent.text
    token = token_in((await smtp_sink.wait_for("ada@example.com", count=2))[1])
    assert (await confirm(harness, token)).status_code == 200

    logged_in = await harness.login("ada@example.com", PASSWORD)
    assert logged_in["code"] == 0
    profile = await harness.client.get("/api/application/users", headers=bearer(logged_in["token"]))
    assert profile.json()["data"]["email_confirmed"] is True
