"""Password reset: the mail (ROUTES row 41) and the new password (ROUTES: "Set a new password from a reset email")."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.config import RateLimits
from tests.support import Harness, SmtpSink, bearer, body_of, open_test_session, token_in

ASK = "/api/application/login/password-reset"
SET = "/api/application/users/password"
OLD_PASSWORD = "correct horse battery"
NEW_PASSWORD = "a brand new secret"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(password_reset_per_address="2/hour", password_reset_per_client="8/hour")


async def ask(harness: Harness, email: str = "ada@example.com", app_label: str = "knot") -> Any:
    return await harness.client.post(ASK, json={"email": email, "app_label": app_label})


async def reset_token(harness: Harness, smtp_sink: SmtpSink, email: str = "ada@example.com", count: int = 1) -> str:
    response = await ask(harness, email)
    assert response.status_code == 200, response.text
    return token_in((await smtp_sink.wait_for(email, count=count))[count - 1])


async def password_is(harness: Harness, user_id: int, password: str) -> bool:
    stored = await harness.db.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    return await harness.svc.accounts.passwords.verify(stored, password)


async def profile_status(harness: Harness, access_token: str) -> int:
    return (await harness.client.get("/api/application/users", headers=bearer(access_token))).status_code


@pytest.fixture
async def ada(harness: Harness) -> int:
    await harness.create_app_label()
    return await harness.create_user("ada@example.com", OLD_PASSWORD)


async def test_a_reset_mails_a_link(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    response = await ask(harness, "Ada@Example.com")
    assert response.json() == {"code": 0}
    [mail] = await smtp_sink.wait_for("ada@example.com")
    assert "http://knot.test/password/reset?token=" in body_of(mail)
    assert await harness.db.fetchval("SELECT purpose FROM email_tokens WHERE user_id = $1", ada) == "password_reset"


async def test_an_unknown_address_gets_the_same_answer_and_no_mail(harness: Harness, ada: int) -> None:
    known = await ask(harness, "ada@example.com")
    unknown = await ask(harness, "nobody@example.com")
    assert (unknown.status_code, unknown.json()) == (known.status_code, known.json()) == (200, {"code": 0})
    assert await harness.db.fetchval("SELECT array_agg(to_addr) FROM outbox") == ["ada@example.com"]


async def test_an_unknown_app_label_is_a_404(harness: Harness, ada: int) -> None:
    response = await ask(harness, app_label="nope")
    assert response.status_code == 404
    assert response.json()["code"] == 12
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_a_new_password_works_and_ends_every_session(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    bob = await harness.create_user("bob@example.com")
    phone = await open_test_session(harness, ada, "phone")
    tablet = await open_test_session(harness, ada, "tablet")
    bobs = await open_test_session(harness, bob, "phone")
    assert await profile_status(harness, phone) == 200
    token = await reset_token(harness, smtp_sink)

    response = await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 200
    assert response.json() == {"code": 0}
    assert await password_is(harness, ada, NEW_PASSWORD)
    assert not await password_is(harness, ada, OLD_PASSWORD)
    for access in (phone, tablet):
        refused = await harness.client.get("/api/application/users", headers=bearer(access))
        assert refused.status_code == 401
        assert refused.json()["code"] == 3
    assert await profile_status(harness, bobs) == 200
    open_sessions = "SELECT count(*) FROM sessions WHERE user_id = $1 AND revoked_at IS NULL"
    assert await harness.db.fetchval(open_sessions, ada) == 0


async def test_a_reset_token_works_once(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    token = await reset_token(harness, smtp_sink)
    assert (await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD})).status_code == 200
    again = await harness.client.put(SET, json={"token": token, "password": "yet another secret"})
    assert again.status_code == 400
    assert again.json()["code"] == 11
    assert await password_is(harness, ada, NEW_PASSWORD)


async def test_an_expired_reset_token_is_refused(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    token = await reset_token(harness, smtp_sink)
    await harness.db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")
    response = await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD})
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert await password_is(harness, ada, OLD_PASSWORD)


async def test_a_new_request_supersedes_the_earlier_link(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    first = await reset_token(harness, smtp_sink)
    second = await reset_token(harness, smtp_sink, count=2)
    assert (await harness.client.put(SET, json={"token": first, "password": NEW_PASSWORD})).json()["code"] == 11
    assert (await harness.client.put(SET, json={"token": second, "password": NEW_PASSWORD})).status_code == 200


async def test_a_token_changes_only_its_own_account(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    bob = await harness.create_user("bob@example.com", OLD_PASSWORD)
    token = await reset_token(harness, smtp_sink)
    response = await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD, "user_id": bob})
    assert response.status_code == 200
    assert await password_is(harness, ada, NEW_PASSWORD)
    assert await password_is(harness, bob, OLD_PASSWORD)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": NEW_PASSWORD}, "token"),
        ({"token": "123456789", "password": NEW_PASSWORD}, "token"),
        ({"token": "1234567890"}, "password"),
        ({"token": "1234567890", "password": "seven77"}, "password"),
        ({"token": "1234567890", "password": "x" * 256}, "password"),
    ],
)
async def test_bad_new_password_input_names_the_field(harness: Harness, body: dict[str, Any], field: str) -> None:
    response = await harness.client.put(SET, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert field in response.json()["message"]


async def test_a_too_short_password_keeps_the_token(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    token = await reset_token(harness, smtp_sink)
    assert (await harness.client.put(SET, json={"token": token, "password": "short"})).json()["code"] == 2
    assert (await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD})).status_code == 200


async def test_an_unknown_token_is_refused(harness: Harness, ada: int) -> None:
    response = await harness.client.put(SET, json={"token": "AAAAAAAAAA", "password": NEW_PASSWORD})
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert await password_is(harness, ada, OLD_PASSWORD)


@pytest.mark.parametrize(
    ("body", "field"),
    [({"app_label": "knot"}, "email"), ({"email": "ada@", "app_label": "knot"}, "email"),
     ({"email": "ada@example.com"}, "app_label"), ({"email": "ada@example.com", "app_label": "x" * 21}, "app_label")],
)
async def test_bad_reset_request_input_names_the_field(harness: Harness, body: dict[str, Any], field: str) -> None:
    response = await harness.client.post(ASK, json=body)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert field in response.json()["message"]


async def test_requests_are_rate_limited_per_address_known_or_not(harness: Harness, ada: int) -> None:
    for email in ("ada@example.com", "nobody@example.com"):
        answers = [(await ask(harness, email)).status_code for _ in range(3)]
        assert answers == [200, 200, 429]
    assert (await ask(harness, "ADA@example.com")).json()["code"] == 9
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 2


async def test_requests_are_rate_limited_per_client(harness: Harness, ada: int) -> None:
    answers = [(await ask(harness, f"rider{n}@example.com")).status_code for n in range(9)]
    assert answers == [200] * 8 + [429]


async def test_reset_then_log_in_with_the_new_password(harness: Harness, smtp_sink: SmtpSink, ada: int) -> None:
    """Through the login route: the old password fails, the new one opens a session."""
    session = await harness.login("ada@example.com", OLD_PASSWORD)
    token = await reset_token(harness, smtp_sink)
    assert (await harness.client.put(SET, json={"token": token, "password": NEW_PASSWORD})).status_code == 200

    assert await profile_status(harness, session["token"]) == 401
    old = await harness.client.post(
        "/api/application/login",
        json={"email": "ada@example.com", "password": OLD_PASSWORD, "app_label": "knot", "scope": "app"},
    )
    assert old.status_code == 401
    assert old.json()["code"] == 8
    fresh = await harness.login("ada@example.com", NEW_PASSWORD)
    assert await profile_status(harness, fresh["token"]) == 200
