"""Register an account and read one's profile (ROUTES: "Register an account", "The user's profile")."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

import pytest

from knot_rt.config import RateLimits
from knot_rt.services.tokens import PURPOSE_CONFIRM, PURPOSE_UNSUBSCRIBE
from tests.support import Harness, SmtpSink, bearer, body_of, open_test_session, token_in

USERS = "/api/application/users"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(register_per_client="6/hour")


def registration(email: str | None = "ada@example.com", **changes: Any) -> dict[str, Any]:
    """A registration body; a field given as None is left out."""
    body: dict[str, Any] = {"email": email, "password": "correct horse battery", "app_label": "knot", "lang": "en"}
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def test_register_creates_an_unconfirmed_account_and_mails_a_link(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    label = await harness.create_app_label("knot", "Knot City")
    response = await harness.client.post(USERS, json=registration("Ada@Example.com"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {"code": 0, "user_id": body["user_id"]}
    user = await harness.db.fetchrow("SELECT * FROM users WHERE id = $1", body["user_id"])
    assert user is not None
    assert (user["email"], user["email_confirmed_at"], user["lang"], user["app_label_id"]) == (
        "ada@example.com", None, "en", label
    )
    assert await harness.svc.accounts.passwords.verify(user["password_hash"], "correct horse battery")

    [mail] = await smtp_sink.wait_for("ada@example.com")
    assert "Knot City" in mail["Subject"]
    assert "http://knot.test/email/confirm?token=" in body_of(mail)
    token = token_in(mail)
    stored = await harness.db.fetchrow("SELECT * FROM email_tokens WHERE user_id = $1", body["user_id"])
    assert stored is not None
    assert stored["purpose"] == "confirm"
    assert bytes(stored["token_hash"]) == hashlib.sha256(token.encode()).digest()
    assert stored["used_at"] is None
    lifetime = stored["expires_at"] - stored["created_at"]
    assert lifetime == timedelta(hours=harness.svc.settings.email_token_hours)


async def test_every_mail_has_an_unsubscribe_link_for_its_user(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    user_id = (await harness.client.post(USERS, json=registration())).json()["user_id"]
    [mail] = await smtp_sink.wait_for("ada@example.com")
    lines = body_of(mail).splitlines()
    footer = " ".join(lines[lines.index("--") + 1:])
    link = next(word for word in footer.split() if word.startswith("http://knot.test/unsubscribe?token="))
    claims = harness.svc.signer.read_purpose(link.split("token=", 1)[1], PURPOSE_UNSUBSCRIBE)
    assert claims["user_id"] == user_id
    assert claims["exp"] - claims["iat"] == 365 * 86400


async def test_french_accounts_get_french_mail(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    response = await harness.client.post(USERS, json=registration(lang="FR"))
    assert response.status_code == 200
    assert await harness.db.fetchval("SELECT lang FROM users") == "fr"
    [mail] = await smtp_sink.wait_for("ada@example.com")
    assert mail["Subject"].startswith("Confirmez")
    token_in(mail)


async def test_an_address_in_use_is_refused_and_nothing_is_written(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user("ada@example.com")
    response = await harness.client.post(USERS, json=registration("ADA@example.com"))
    assert response.status_code == 409
    assert response.json()["code"] == 10
    assert await harness.db.fetchval("SELECT count(*) FROM users") == 1
    assert await harness.db.fetchval("SELECT count(*) FROM email_tokens") == 0
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_unknown_app_label_is_a_404(harness: Harness) -> None:
    response = await harness.client.post(USERS, json=registration(app_label="nope"))
    assert response.status_code == 404
    assert response.json()["code"] == 12
    assert await harness.db.fetchval("SELECT count(*) FROM users") == 0


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"email": None}, "email"),
        ({"email": "not-an-address"}, "email"),
        ({"password": None}, "password"),
        ({"password": "short77"}, "password"),
        ({"password": "x" * 256}, "password"),
        ({"app_label": None}, "app_label"),
        ({"app_label": ""}, "app_label"),
        ({"app_label": "x" * 21}, "app_label"),
        ({"lang": "eng"}, "lang"),
        ({"lang": "e1"}, "lang"),
    ],
)
async def test_bad_input_names_the_field(harness: Harness, changes: dict[str, Any], field: str) -> None:
    await harness.create_app_label()
    response = await harness.client.post(USERS, json=registration(**changes))
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert field in response.json()["message"]
    assert await harness.db.fetchval("SELECT count(*) FROM users") == 0


async def test_a_body_that_is_not_json_is_a_400(harness: Harness) -> None:
    response = await harness.client.post(USERS, content=b"email=ada", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["code"] == 2


async def test_registrations_are_rate_limited_per_client(harness: Harness) -> None:
    await harness.create_app_label()
    for n in range(6):
        response = await harness.client.post(USERS, json=registration(f"rider{n}@example.com"))
        assert response.status_code == 200
    response = await harness.client.post(USERS, json=registration("rider6@example.com"))
    assert response.status_code == 429
    assert response.json()["code"] == 9
    assert await harness.db.fetchval("SELECT count(*) FROM users") == 6


async def test_profile_comes_from_the_token(harness: Harness) -> None:
    label = await harness.create_app_label("citybike", "City Bike")
    ada = await harness.create_user("ada@example.com", app_label=label)
    bob = await harness.create_user("bob@example.com", confirmed=False)
    await harness.db.execute("UPDATE users SET totp_secret = 'sealed', lang = 'fr' WHERE id = $1", ada)

    response = await harness.client.get(USERS, headers=bearer(await open_test_session(harness, ada)))
    assert response.status_code == 200
    assert response.json() == {"code": 0, "data": {
        "user_id": ada, "email": "ada@example.com", "lang": "fr", "email_confirmed": True,
        "two_factor_enabled": True, "app_label": "citybike",
    }}
    bob_token = await open_test_session(harness, bob)
    response = await harness.client.get(USERS, params={"user_id": ada}, headers=bearer(bob_token))
    assert response.json()["data"] == {
        "user_id": bob, "email": "bob@example.com", "lang": "en", "email_confirmed": False,
        "two_factor_enabled": False, "app_label": None,
    }


async def test_profile_needs_an_access_token(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com")
    purpose_token = harness.svc.signer.purpose_token(PURPOSE_CONFIRM, user_id, 600)
    for headers in ({}, bearer("garbage"), bearer(purpose_token)):
        response = await harness.client.get(USERS, headers=headers)
        assert response.status_code == 401
        assert response.json()["code"] == 3


async def test_profile_refuses_a_revoked_session(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await open_test_session(harness, user_id)
    await harness.db.execute("UPDATE sessions SET revoked_at = now() WHERE user_id = $1", user_id)
    response = await harness.client.get(USERS, headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["code"] == 3


async def test_openapi_documents_the_account_routes(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    paths = document["paths"]
    expected = {
        ("/api/application/users", "post"), ("/api/application/users", "get"),
        ("/api/application/users/email/change", "post"), ("/api/application/users/email/change", "get"),
        ("/api/application/users/email", "put"), ("/api/application/users/email/confirmation", "post"),
        ("/api/application/users/email/confirmation", "put"), ("/api/application/login/password-reset", "post"),
        ("/api/application/users/password", "put"),
    }
    for path, method in expected:
        operation = paths[path][method]
        assert operation["tags"][0] in {"Users", "Email"}
        assert "200" in operation["responses"]
    register = paths["/api/application/users"]["post"]
    assert "requestBody" in register
    assert paths["/api/application/users"]["get"]["security"] == [{"bearer": []}]
    assert paths["/api/application/users/email/confirmation"]["post"]["security"] == [{"bearer": []}]
