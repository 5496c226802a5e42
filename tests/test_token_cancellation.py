"""A password reset and a logout of every device cancel the pending links that change the account.

Someone who took over an account (or a mailbox, for a moment) and asked for an
email change or a password reset loses those links once the owner resets the
password or logs out everywhere; a pending 2FA set-up goes too.
"""

from __future__ import annotations

from typing import Any

from tests.support import Harness, SmtpSink, bearer, token_in

EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"
NEW_EMAIL = "ada@new.example.org"


async def pending_links(harness: Harness, smtp_sink: SmtpSink, access: str) -> tuple[str, str]:
    """(email-change token, password-reset token), both mailed and unused."""
    response = await harness.client.post(
        "/api/application/users/email/change", headers=bearer(access), json={"email": NEW_EMAIL, "password": PASSWORD}
    )
    assert response.json() == {"code": 0}, response.text
    response = await harness.client.post(
        "/api/application/login/password-reset", json={"email": EMAIL, "app_label": "knot"}
    )
    assert response.json() == {"code": 0}, response.text
    change = token_in((await smtp_sink.wait_for(NEW_EMAIL))[0])
    reset = token_in((await smtp_sink.wait_for(EMAIL))[0])
    return change, reset


async def change_email(harness: Harness, token: str) -> tuple[int, Any]:
    response = await harness.client.put("/api/application/users/email", json={"email_token": token, "email": NEW_EMAIL})
    return response.status_code, response.json()["code"]


async def reset_password(harness: Harness, token: str) -> tuple[int, Any]:
    response = await harness.client.put("/api/application/users/password", json={"token": token, "password": "x" * 12})
    return response.status_code, response.json()["code"]


async def begin_two_factor(harness: Harness, access: str) -> dict[str, Any]:
    response = await harness.client.post(
        "/api/application/login/2fa/generate", headers=bearer(access), json={"password": PASSWORD}
    )
    assert response.status_code == 200, response.text
    setup: dict[str, Any] = response.json()
    return setup


async def logout(harness: Harness, access: str, body: dict[str, Any]) -> None:
    response = await harness.client.post("/api/application/logout", headers=bearer(access), json=body)
    assert response.json() == {"code": 0}


async def setups(harness: Harness) -> int:
    count: int = await harness.db.fetchval("SELECT count(*) FROM totp_setups")
    return count


async def account(harness: Harness) -> str:
    await harness.create_app_label()
    await harness.create_user(EMAIL, PASSWORD)
    return str((await harness.login(EMAIL, device_id="phone"))["token"])


async def test_a_password_reset_cancels_a_pending_email_change(harness: Harness, smtp_sink: SmtpSink) -> None:
    access = await account(harness)
    change, reset = await pending_links(harness, smtp_sink, access)
    await begin_two_factor(harness, access)

    assert await reset_password(harness, reset) == (200, 0)

    assert await change_email(harness, change) == (400, 11)
    checked = await harness.client.get("/api/application/users/email/change", params={"token": change})
    assert (checked.status_code, checked.json()["code"]) == (400, 11)
    assert await harness.db.fetchval("SELECT email FROM users") == EMAIL
    assert await setups(harness) == 0


async def test_logging_out_everywhere_cancels_both_links(harness: Harness, smtp_sink: SmtpSink) -> None:
    access = await account(harness)
    change, reset = await pending_links(harness, smtp_sink, access)
    await begin_two_factor(harness, access)

    await logout(harness, access, {})

    assert await change_email(harness, change) == (400, 11)
    assert await reset_password(harness, reset) == (400, 11)
    assert await harness.db.fetchval("SELECT email FROM users") == EMAIL
    assert await setups(harness) == 0
    # The owner can ask again, and the new links work.
    response = await harness.client.post(
        "/api/application/login/password-reset", json={"email": EMAIL, "app_label": "knot"}
    )
    assert response.json() == {"code": 0}
    assert await reset_password(harness, token_in((await smtp_sink.wait_for(EMAIL, count=2))[1])) == (200, 0)


async def test_logging_out_one_device_keeps_the_links(harness: Harness, smtp_sink: SmtpSink) -> None:
    access = await account(harness)
    other = str((await harness.login(EMAIL, device_id="tablet"))["token"])
    change, reset = await pending_links(harness, smtp_sink, access)

    await logout(harness, other, {"device_id": "tablet"})

    checked = await harness.client.get("/api/application/users/email/change", params={"token": change})
    assert checked.json()["code"] == 0
    assert await reset_password(harness, reset) == (200, 0)
