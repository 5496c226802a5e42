"""Two-factor authentication: enabling it, and the second step of a login (ROUTES rows 42-44)."""

from __future__ import annotations

import time
from typing import Any

import pyotp
import pytest

from knot_rt.config import RateLimits
from tests.support import Harness, bearer

LOGIN = "/api/application/login"
SECOND_FACTOR = "/api/application/login/2fa"
GENERATE = "/api/application/login/2fa/generate"
VERIFY = "/api/application/login/2fa/verify"
DISABLE = "/api/application/login/2fa/disable"
CHECK = "/api/application/login/check"
EMAIL = "rider@example.com"
CREDENTIALS = {"email": EMAIL, "password": "correct horse battery", "app_label": "knot"}
CURRENT = {"password": "correct horse battery"}  # enabling 2FA asks for the current password


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(second_factor_per_user="3/minute")


def code(key: str, steps_ahead: int = 0) -> str:
    """The code an OTP app shows, ``steps_ahead`` 30-second steps from now."""
    return pyotp.TOTP(key).at(time.time() + 30 * steps_ahead)


def wrong_code(key: str) -> str:
    valid = {code(key, step) for step in (-1, 0, 1)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in valid)


async def post(harness: Harness, path: str, token: str | None, body: Any = None) -> tuple[int, dict[str, Any]]:
    response = await harness.client.post(path, headers=bearer(token) if token else {}, json=body)
    return response.status_code, response.json()


async def rider(harness: Harness, email: str = EMAIL) -> str:
    """A confirmed rider's access token."""
    await harness.create_user(email)
    return str((await harness.login(email))["token"])


async def enable_two_factor(harness: Harness, access_token: str) -> str:
    """Turn 2FA on through the API with the current code; returns the key."""
    status, setup = await post(harness, GENERATE, access_token, CURRENT)
    assert status == 200, setup
    status, body = await post(harness, VERIFY, access_token, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body) == (200, {"code": 0})
    return str(setup["key"])


async def mfa_token(harness: Harness, **changes: Any) -> str:
    """The token of a login that answered 146."""
    status, body = await post(harness, LOGIN, None, {**CREDENTIALS, **changes})
    assert (status, body["code"]) == (401, 146), body
    return str(body["token"])


async def test_enable_then_log_in_with_a_second_factor(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    status, setup = await post(harness, GENERATE, access, CURRENT)
    assert status == 200, setup
    assert set(setup) == {"code", "key", "key_url", "token"}
    assert setup["key_url"].startswith("otpauth://totp/Knot:rider%40example.com?")
    assert f"secret={setup['key']}" in setup["key_url"]
    assert "issuer=Knot" in setup["key_url"]
    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body) == (200, {"code": 0})

    token = await mfa_token(harness)
    status, session = await post(harness, SECOND_FACTOR, token, {"mfa_token": code(setup["key"], 1),
                                                                 "device": {"id": "phone"}})

    assert status == 200, session
    assert set(session) == {"code", "token", "refresh_token", "user_id", "permissions"}
    assert (await post(harness, CHECK, session["token"]))[0] == 200


async def test_a_code_is_accepted_once(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    used = code(key, 1)
    assert (await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": used}))[0] == 200

    status, body = await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": used})

    assert (status, body["code"]) == (401, 15)


async def test_the_code_that_enabled_2fa_cannot_log_in(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    status, setup = await post(harness, GENERATE, access, CURRENT)
    enabling = code(setup["key"])
    await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": enabling})

    status, body = await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": enabling})

    assert (status, body["code"]) == (401, 15)


async def test_tokens_of_one_kind_do_not_serve_as_the_other(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    key = await enable_two_factor(harness, access)
    token = await mfa_token(harness)

    status, body = await post(harness, CHECK, token)
    assert (status, body["code"]) == (401, 3)
    status, body = await post(harness, SECOND_FACTOR, access, {"mfa_token": code(key, 1)})
    assert (status, body["code"]) == (401, 3)
    status, body = await post(harness, SECOND_FACTOR, None, {"mfa_token": code(key, 1)})
    assert (status, body["code"]) == (401, 3)
    # Neither attempt spent the code.
    assert (await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)}))[0] == 200


async def test_a_wrong_code_then_the_right_one(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    token = await mfa_token(harness)

    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)})
    assert (status, body["code"]) == (401, 15)
    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": "12345"})
    assert (status, body["code"]) == (400, 2)

    assert (await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)}))[0] == 200


async def test_a_login_token_opens_one_session_only(harness: Harness) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)
    key = pyotp.random_base32()
    # 2FA turned on with no code spent yet, so that two fresh codes are at hand.
    await harness.db.execute(
        "UPDATE users SET totp_secret = $2 WHERE id = $1", user_id, harness.svc.box.seal(key)
    )
    token = await mfa_token(harness)
    assert (await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key)}))[0] == 200

    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)})

    assert (status, body["code"]) == (401, 15)


async def test_too_many_codes_for_one_user(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    token = await mfa_token(harness)
    for _ in range(3):
        assert (await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)}))[1]["code"] == 15

    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)})

    assert (status, body["code"]) == (429, 9)


async def test_the_dashboard_scope_is_checked_before_the_second_factor(harness: Harness) -> None:
    await harness.create_app_label()
    await enable_two_factor(harness, await rider(harness))

    status, body = await post(harness, LOGIN, None, {**CREDENTIALS, "scope": "dashboard"})

    assert (status, body["code"]) == (403, 13)
    assert "token" not in body


async def test_generate_when_2fa_is_on(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    await enable_two_factor(harness, access)

    status, body = await post(harness, GENERATE, access, CURRENT)

    assert (status, body["code"]) == (409, 16)


async def test_a_set_up_belongs_to_its_user(harness: Harness) -> None:
    await harness.create_app_label()
    owner = await rider(harness)
    intruder = await rider(harness, "intruder@example.com")
    _, setup = await post(harness, GENERATE, owner, CURRENT)
    attempt = {"token": setup["token"], "mfa_token": code(setup["key"])}

    status, body = await post(harness, VERIFY, intruder, attempt)
    assert (status, body["code"]) == (400, 60)
    assert (await post(harness, GENERATE, intruder, CURRENT))[0] == 200  # the intruder's 2FA is still off

    assert await post(harness, VERIFY, owner, attempt) == (200, {"code": 0})


async def test_verify_refuses_bad_codes_and_stale_set_ups(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    _, first = await post(harness, GENERATE, access, CURRENT)
    _, setup = await post(harness, GENERATE, access, CURRENT)

    status, body = await post(harness, VERIFY, access, {"token": first["token"], "mfa_token": code(first["key"])})
    assert (status, body["code"]) == (400, 60)  # replaced by the second set-up
    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": wrong_code(setup["key"])})
    assert (status, body["code"]) == (401, 15)
    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": "abcdef"})
    assert (status, body["code"]) == (400, 2)
    await harness.db.execute("UPDATE totp_setups SET expires_at = now() - interval '1 second'")
    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body["code"]) == (400, 60)
    # 2FA stayed off: a password login still opens a session.
    assert (await post(harness, LOGIN, None, CREDENTIALS))[0] == 200


async def test_2fa_set_up_needs_a_user(harness: Harness) -> None:
    status, body = await post(harness, GENERATE, None, CURRENT)
    assert (status, body["code"]) == (401, 3)
    status, body = await post(harness, VERIFY, "not-a-token", {"token": "x", "mfa_token": "123456"})
    assert (status, body["code"]) == (401, 3)
