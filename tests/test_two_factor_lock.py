"""Wrong second-factor codes lock that step for the user (issue 7, "Accounts").

Five wrong codes lock the login's second step (and turning 2FA off, which checks
the same secret) for 15 minutes: even the right code then answers 429 code 9.
Enabling 2FA counts apart. The in-memory per-user limit is loosened here so that
what answers 429 is the lock kept in PostgreSQL.
"""

from __future__ import annotations

import pytest
import trio

from knot_rt.config import RateLimits
from tests.support import Harness
from tests.test_two_factor import (
    CURRENT,
    DISABLE,
    GENERATE,
    SECOND_FACTOR,
    VERIFY,
    code,
    enable_two_factor,
    mfa_token,
    post,
    rider,
    wrong_code,
)


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(second_factor_per_user="1000/minute", second_factor_per_client="1000/minute",
                      login_per_address="1000/minute", login_per_client="1000/minute")


async def unlock_now(harness: Harness) -> None:
    """The 15 minutes of the lock are over."""
    await harness.db.execute("UPDATE second_factor_attempts SET locked_until = now() - interval '1 second'")


async def test_five_wrong_codes_lock_the_second_step_even_for_the_right_code(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    token = await mfa_token(harness)
    answers = [await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)}) for _ in range(5)]
    assert [(status, body["code"]) for status, body in answers] == [(401, 15)] * 4 + [(429, 9)]

    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)})
    assert (status, body["code"]) == (429, 9)
    # A new login does not escape the lock: it belongs to the user.
    status, body = await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": code(key, 1)})
    assert (status, body["code"]) == (429, 9)
    assert "minutes" in body["message"]

    await unlock_now(harness)
    status, body = await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)})
    assert status == 200, body


async def test_a_right_code_clears_the_count(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    for _ in range(4):
        await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": wrong_code(key)})
    assert (await post(harness, SECOND_FACTOR, await mfa_token(harness), {"mfa_token": code(key, 1)}))[0] == 200

    token = await mfa_token(harness)
    answers = [await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)}) for _ in range(4)]
    assert [body["code"] for _, body in answers] == [15] * 4  # counting starts again


async def test_concurrent_wrong_codes_cannot_pass_the_count(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    token = await mfa_token(harness)
    answers: list[int] = []

    async def guess() -> None:
        answers.append((await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)}))[1]["code"])

    async with trio.open_nursery() as nursery:
        for _ in range(12):
            nursery.start_soon(guess)

    assert answers.count(15) <= 4  # at most five codes were checked; the fifth locked
    assert answers.count(9) >= 8
    assert (await post(harness, SECOND_FACTOR, token, {"mfa_token": code(key, 1)}))[1]["code"] == 9


async def test_the_lock_is_per_user(harness: Harness) -> None:
    await harness.create_app_label()
    key = await enable_two_factor(harness, await rider(harness))
    other_key = await enable_two_factor(harness, await rider(harness, "other@example.com"))
    token = await mfa_token(harness)
    for _ in range(5):
        await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)})

    other = await mfa_token(harness, email="other@example.com")
    assert (await post(harness, SECOND_FACTOR, other, {"mfa_token": code(other_key, 1)}))[0] == 200


async def test_wrong_codes_while_enabling_lock_that_step(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    _, setup = await post(harness, GENERATE, access, CURRENT)
    attempt = {"token": setup["token"], "mfa_token": wrong_code(setup["key"])}
    answers = [await post(harness, VERIFY, access, attempt) for _ in range(5)]
    assert [(status, body["code"]) for status, body in answers] == [(401, 15)] * 4 + [(429, 9)]

    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body["code"]) == (429, 9)
    assert (await harness.client.get("/api/application/users", headers={"Authorization": f"Bearer {access}"})
            ).json()["data"]["two_factor_enabled"] is False

    await unlock_now(harness)
    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body) == (200, {"code": 0})


async def test_turning_2fa_off_shares_the_lock_of_the_login_code(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    key = await enable_two_factor(harness, access)
    for _ in range(3):
        status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": wrong_code(key)})
        assert (status, body["code"]) == (401, 15)
    token = await mfa_token(harness)
    for _ in range(2):
        await post(harness, SECOND_FACTOR, token, {"mfa_token": wrong_code(key)})

    status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": code(key, 1)})
    assert (status, body["code"]) == (429, 9)
    assert await harness.db.fetchval("SELECT totp_secret IS NOT NULL FROM users") is True



async def test_refusals_that_judge_no_code_do_not_count(harness: Harness) -> None:
    await harness.create_app_label()
    access = await rider(harness)
    _, setup = await post(harness, GENERATE, access, CURRENT)
    for _ in range(6):  # a stale set-up token: 400 code 60, whatever the code
        status, body = await post(harness, VERIFY, access, {"token": "stale", "mfa_token": code(setup["key"])})
        assert (status, body["code"]) == (400, 60)
    for _ in range(6):  # 2FA is off: 409 code 24
        status, body = await post(harness, DISABLE, access, {**CURRENT, "mfa_token": "123456"})
        assert (status, body["code"]) == (409, 24)

    status, body = await post(harness, VERIFY, access, {"token": setup["token"], "mfa_token": code(setup["key"])})
    assert (status, body) == (200, {"code": 0})
