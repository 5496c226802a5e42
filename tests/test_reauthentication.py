"""Sensitive account changes ask the caller to prove again who they are (issue 7, "Accounts").

Asking for an email change and enabling 2FA need the current password; a
social-only account (no password) gives a current 2FA code or calls within 5
minutes of its login. 2FA goes off with the password and a current code.
"""

from __future__ import annotations

from typing import Any

import pyotp

from knot_rt.accounts.store import insert_user
from tests.support import Harness, SmtpSink, bearer, open_test_session
from tests.test_two_factor import (
    CREDENTIALS,
    CURRENT,
    DISABLE,
    GENERATE,
    LOGIN,
    SECOND_FACTOR,
    code,
    enable_two_factor,
    mfa_token,
    post,
    rider,
    wrong_code,
)

ASK_EMAIL_CHANGE = "/api/application/users/email/change"
PROFILE = "/api/application/users"


async def two_factor_on(harness: Harness) -> bool:
    enabled: bool = await harness.db.fetchval("SELECT totp_secret IS NOT NULL FROM users WHERE email = $1",
                                              CREDENTIALS["email"])
    return enabled


async def outbox_size(harness: Harness) -> int:
    size: int = await harness.db.fetchval("SELECT count(*) FROM outbox")
    return size


async def social_rider(harness: Harness, email: str = "social@example.com", *, key: str | None = None) -> str:
    """A social-only account (no password), 2FA on with ``key`` when given; an access token of a fresh login."""
    box = harness.svc.box

    async def work(conn: Any) -> int:
        user_id: int = await insert_user(conn, email, None, confirmed=True)
        if key is not None:
            await conn.execute("UPDATE users SET totp_secret = $2 WHERE id = $1", user_id, box.seal(key))
        return user_id

    return await open_test_session(harness, await harness.db.transaction(work))


async def login_long_ago(harness: Harness) -> None:
    """Every session opened more than 5 minutes ago."""
    await harness.db.execute("UPDATE sessions SET created_at = now() - interval '6 minutes'")


# -- turning 2FA off -------------------------------------------------------------------------------


async def test_2fa_goes_off_with_the_password_and_a_code(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    key = await enable_two_factor(harness, access)

    status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": code(key, 1)})

    assert (status, body) == (200, {"code": 0})
    assert (await harness.client.get(PROFILE, headers=bearer(access))).json()["data"]["two_factor_enabled"] is False
    status, session = await post(harness, LOGIN, None, CREDENTIALS)  # no second step any more
    assert (status, session["code"]) == (200, 0)
    # It can be turned on again, with a new key.
    assert await enable_two_factor(harness, access) != key


async def test_2fa_stays_on_without_the_right_password_or_code(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    key = await enable_two_factor(harness, access)
    attempts = [
        ({"password": "wrong password!", "mfa_token": code(key, 1)}, 401, 8),
        ({"mfa_token": code(key, 1)}, 400, 2),
        ({**CURRENT, "mfa_token": wrong_code(key)}, 401, 15),
        ({**CURRENT}, 400, 2),
        ({**CURRENT, "mfa_token": "12345"}, 400, 2),
    ]
    for body, status, error in attempts:
        answer = await post(harness, DISABLE, access, body)
        assert (answer[0], answer[1]["code"]) == (status, error), body
    assert await two_factor_on(harness)
    # None of these spent the code: it still logs in.
    status, _ = await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": code(key, 1)})
    assert status == 200


async def test_a_code_already_used_does_not_turn_2fa_off(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    key = await enable_two_factor(harness, access)
    used = code(key, 1)
    assert (await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": used}))[0] == 200

    status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": used})

    assert (status, body["code"]) == (401, 15)
    assert await two_factor_on(harness)


async def test_turning_off_2fa_that_is_off(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": "123456"})
    assert (status, body["code"]) == (409, 24)
    status, body = await post(harness, DISABLE, None, {**CURRENT, "mfa_token": "123456"})
    assert (status, body["code"]) == (401, 3)


async def test_a_social_account_turns_2fa_off_with_a_code_alone(harness: Harness) -> None:
    key = pyotp.random_base32()
    access = await social_rider(harness, key=key)
    await login_long_ago(harness)
    status, body = await post(harness, DISABLE, access, {"mfa_token": code(key)})
    assert (status, body) == (200, {"code": 0})


# -- enabling 2FA ----------------------------------------------------------------------------------


async def test_enabling_2fa_needs_the_current_password(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    status, body = await post(harness, GENERATE, access)
    assert (status, body["code"]) == (400, 2)
    assert "password" in body["message"]
    status, body = await post(harness, GENERATE, access, {"password": "not the password"})
    assert (status, body["code"]) == (401, 8)
    assert await harness.db.fetchval("SELECT count(*) FROM totp_setups") == 0


async def test_a_social_account_enables_2fa_soon_after_its_login_only(harness: Harness) -> None:
    access = await social_rider(harness)
    status, setup = await post(harness, GENERATE, access)
    assert status == 200, setup

    await login_long_ago(harness)
    status, body = await post(harness, GENERATE, access)
    assert (status, body["code"]) == (403, 13)
    assert "log in again" in body["message"]


# -- asking for an email change --------------------------------------------------------------------


async def test_an_email_change_needs_the_current_password(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    headers = bearer(access)
    ask = {"email": "new@example.org"}
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json=ask)
    assert (response.status_code, response.json()["code"]) == (400, 2)
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json={**ask, "password": "guess guess"})
    assert (response.status_code, response.json()["code"]) == (401, 8)
    assert await outbox_size(harness) == 0

    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json={**ask, **CURRENT})
    assert response.json() == {"code": 0}
    await smtp_sink.wait_for("new@example.org")


async def test_a_social_account_asks_soon_after_its_login_or_with_a_code(harness: Harness) -> None:
    key = pyotp.random_base32()
    headers = bearer(await social_rider(harness, key=key))
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json={"email": "first@example.org"})
    assert response.json() == {"code": 0}

    await login_long_ago(harness)
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json={"email": "second@example.org"})
    assert (response.status_code, response.json()["code"]) == (403, 13)
    wrong = {"email": "second@example.org", "mfa_token": wrong_code(key)}
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json=wrong)
    assert (response.status_code, response.json()["code"]) == (401, 15)
    right = {"email": "second@example.org", "mfa_token": code(key)}
    response = await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json=right)
    assert response.json() == {"code": 0}
    assert await harness.db.fetchval("SELECT array_agg(to_addr ORDER BY id) FROM outbox") == [
        "first@example.org", "second@example.org"
    ]


async def test_a_social_account_without_2fa_cannot_use_a_code(harness: Harness) -> None:
    headers = bearer(await social_rider(harness))
    await login_long_ago(harness)
    response = await harness.client.post(
        ASK_EMAIL_CHANGE, headers=headers, json={"email": "new@example.org", "mfa_token": "123456"}
    )
    assert (response.status_code, response.json()["code"]) == (403, 13)


async def test_password_guesses_count_with_the_logins_of_the_account(harness: Harness) -> None:
    await harness.create_app_label()
    headers = bearer(await rider(harness))  # one login: 1 of the 10 a minute
    guess = {"email": "new@example.org", "password": "guess guess"}
    codes = [(await harness.client.post(ASK_EMAIL_CHANGE, headers=headers, json=guess)).json()["code"]
             for _ in range(10)]
    assert codes == [8] * 9 + [9]
    # The thief's guesses spent the account's login budget, not a budget of their own.
    status, body = await post(harness, LOGIN, None, CREDENTIALS)
    assert (status, body["code"]) == (429, 9)


# -- the contract ----------------------------------------------------------------------------------


async def test_openapi_documents_the_new_route_and_fields(harness: Harness) -> None:
    document = (await harness.client.get("/openapi.json")).json()
    paths = document["paths"]
    schemas = document.get("components", {}).get("schemas", {})

    def request_schema(path: str) -> dict[str, Any]:
        found: dict[str, Any] = paths[path]["post"]["requestBody"]["content"]["application/json"]["schema"]
        if "$ref" in found:
            found = schemas[found["$ref"].rpartition("/")[2]]
        return found

    disable = request_schema("/api/application/login/2fa/disable")
    assert set(disable["properties"]) == {"password", "mfa_token"}
    assert disable["required"] == ["mfa_token"]
    assert "bearer" in str(paths["/api/application/login/2fa/disable"]["post"]["security"])
    generate = request_schema("/api/application/login/2fa/generate")
    assert "password" in generate["properties"]
    change = request_schema(ASK_EMAIL_CHANGE)
    assert {"email", "password", "mfa_token"} <= set(change["properties"])
    assert change["required"] == ["email"]  # the contract's clients send only the email
    assert "Required when the account has one" in str(change["properties"]["password"])
