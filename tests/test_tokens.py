"""Refresh tokens and logout (ROUTES rows 37 and 45)."""

from __future__ import annotations

from typing import Any

import pytest
from trio_websocket import ConnectionClosed

from tests.feed_client import open_feed
from tests.support import Harness, bearer

CHECK = "/api/application/login/check"
REFRESH = "/api/application/login/refresh"
LOGOUT = "/api/application/logout"
EMAIL = "rider@example.com"


async def rider(harness: Harness, *devices: str) -> list[dict[str, Any]]:
    """A confirmed rider logged in on each device: one login answer per device."""
    await harness.create_app_label()
    await harness.create_user(EMAIL)
    return [await harness.login(EMAIL, device_id=device) for device in devices]


async def refresh(harness: Harness, refresh_token: str) -> tuple[int, dict[str, Any]]:
    response = await harness.client.post(REFRESH, headers=bearer(refresh_token))
    return response.status_code, response.json()


async def works(harness: Harness, access_token: str) -> bool:
    response = await harness.client.post(CHECK, headers=bearer(access_token), json={})
    if response.status_code == 200:
        return True
    assert (response.status_code, response.json()["code"]) == (401, 3), response.text
    return False


async def test_refresh_rotates_the_refresh_token(harness: Harness) -> None:
    [session] = await rider(harness, "phone")

    status, first = await refresh(harness, session["refresh_token"])
    assert status == 200, first
    assert set(first) == {"code", "access_token", "refresh_token"}
    assert first["code"] == 0
    assert first["refresh_token"] != session["refresh_token"]
    assert await works(harness, first["access_token"])

    status, second = await refresh(harness, first["refresh_token"])
    assert status == 200, second
    assert await works(harness, second["access_token"])


async def test_a_reused_refresh_token_revokes_its_session(harness: Harness) -> None:
    [session, other] = await rider(harness, "phone", "laptop")
    _, rotated = await refresh(harness, session["refresh_token"])

    status, body = await refresh(harness, session["refresh_token"])

    assert (status, body["code"]) == (401, 14)
    assert not await works(harness, rotated["access_token"])
    assert not await works(harness, session["token"])
    status, body = await refresh(harness, rotated["refresh_token"])
    assert (status, body["code"]) == (401, 3)
    # Another device's session is another family: untouched.
    assert await works(harness, other["token"])
    assert (await refresh(harness, other["refresh_token"]))[0] == 200


async def test_only_a_known_refresh_token_refreshes(harness: Harness) -> None:
    [session] = await rider(harness, "phone")

    for presented in (session["token"], "made-up-token"):
        status, body = await refresh(harness, presented)
        assert (status, body["code"]) == (401, 3), presented
    response = await harness.client.post(REFRESH)
    assert (response.status_code, response.json()["code"]) == (401, 3)


async def test_a_refresh_token_is_not_an_access_token(harness: Harness) -> None:
    [session] = await rider(harness, "phone")

    assert not await works(harness, session["refresh_token"])


async def test_logout_of_one_device(harness: Harness) -> None:
    [phone, laptop] = await rider(harness, "phone", "laptop")

    response = await harness.client.post(LOGOUT, headers=bearer(laptop["token"]), json={"device_id": "phone"})

    assert response.json() == {"code": 0}
    assert not await works(harness, phone["token"])
    assert (await refresh(harness, phone["refresh_token"]))[1]["code"] == 3
    assert await works(harness, laptop["token"])
    assert (await refresh(harness, laptop["refresh_token"]))[0] == 200


async def test_logout_of_every_device(harness: Harness) -> None:
    sessions = await rider(harness, "phone", "laptop")

    response = await harness.client.post(LOGOUT, headers=bearer(sessions[0]["token"]), json={})

    assert response.json() == {"code": 0}
    for session in sessions:
        assert not await works(harness, session["token"])
        assert (await refresh(harness, session["refresh_token"]))[1]["code"] == 3


async def test_logout_without_a_body_ends_every_session(harness: Harness) -> None:
    [phone] = await rider(harness, "phone")

    response = await harness.client.post(LOGOUT, headers=bearer(phone["token"]))

    assert response.json() == {"code": 0}
    assert not await works(harness, phone["token"])


async def test_logout_touches_only_the_callers_sessions(harness: Harness) -> None:
    [mine] = await rider(harness, "phone")
    await harness.create_user("someone@example.com")
    theirs = await harness.login("someone@example.com", device_id="phone")

    await harness.client.post(LOGOUT, headers=bearer(theirs["token"]), json={})

    assert await works(harness, mine["token"])


async def test_logout_needs_a_token_and_a_valid_device_id(harness: Harness) -> None:
    [phone] = await rider(harness, "phone")

    response = await harness.client.post(LOGOUT, json={"device_id": "phone"})
    assert (response.status_code, response.json()["code"]) == (401, 3)
    for device_id in ("", "d" * 51, 7):
        response = await harness.client.post(LOGOUT, headers=bearer(phone["token"]), json={"device_id": device_id})
        assert (response.status_code, response.json()["code"]) == (400, 2), device_id
    assert await works(harness, phone["token"])


async def test_logout_closes_the_feed_of_the_device(harness: Harness) -> None:
    [phone, laptop] = await rider(harness, "phone", "laptop")
    async with open_feed(harness.base_url, phone["token"]) as feed, open_feed(harness.base_url, laptop["token"]) as other:
        assert (await feed.request({"type": "ping"}))["type"] == "pong"

        await harness.client.post(LOGOUT, headers=bearer(laptop["token"]), json={"device_id": "phone"})

        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
        assert closed.value.reason.code == 4401
        assert (await other.request({"type": "ping"}))["type"] == "pong"


async def test_a_reused_refresh_token_closes_the_feed_of_its_session(harness: Harness) -> None:
    [session] = await rider(harness, "phone")
    _, rotated = await refresh(harness, session["refresh_token"])
    async with open_feed(harness.base_url, rotated["access_token"]) as feed:
        assert (await feed.request({"type": "ping"}))["type"] == "pong"

        assert (await refresh(harness, session["refresh_token"]))[1]["code"] == 14

        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
        assert closed.value.reason.code == 4401
