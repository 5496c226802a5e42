"""Log in with email and password, check a token (ROUTES rows 35 and 36)."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.config import RateLimits
from knot_rt.services.tokens import PURPOSE_CONFIRM
from tests.support import Harness, bearer

LOGIN = "/api/application/login"
CHECK = "/api/application/login/check"
EMAIL = "rider@example.com"
PASSWORD = "correct horse battery"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(login_per_address="3/minute", login_per_client="6/minute")


def credentials(email: str = EMAIL, password: str = PASSWORD, **changes: Any) -> dict[str, Any]:
    return {"email": email, "password": password, "app_label": "knot", **changes}


async def post_login(harness: Harness, body: Any) -> tuple[int, dict[str, Any]]:
    response = await harness.client.post(LOGIN, json=body)
    return response.status_code, response.json()


async def check(harness: Harness, token: str, body: Any = None) -> tuple[int, dict[str, Any]]:
    response = await harness.client.post(CHECK, headers=bearer(token), json=body)
    return response.status_code, response.json()


async def test_login_opens_a_session(harness: Harness) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)

    status, body = await post_login(harness, credentials(device={"id": "phone", "os": "Android"}))

    assert status == 200, body
    assert set(body) == {"code", "token", "refresh_token", "user_id", "permissions"}
    assert body["code"] == 0
    assert body["user_id"] == user_id
    assert body["permissions"] == []
    assert await check(harness, body["token"]) == (200, {"code": 0, "permissions": []})


async def test_email_is_matched_whatever_its_case(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)

    status, body = await post_login(harness, credentials(email="Rider@Example.COM"))

    assert status == 200, body


async def test_wrong_password_and_unknown_email_get_the_same_answer(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)

    wrong_password = await post_login(harness, credentials(password="not the password"))
    unknown_email = await post_login(harness, credentials(email="nobody@example.com"))

    assert wrong_password == unknown_email
    assert wrong_password[0] == 401
    assert wrong_password[1]["code"] == 8
    assert "token" not in wrong_password[1]


async def test_unknown_app_label_is_404(harness: Harness) -> None:
    await harness.create_user(EMAIL)

    status, body = await post_login(harness, credentials(app_label="nolabel"))

    assert (status, body["code"]) == (404, 12)


async def test_unconfirmed_email_gets_a_token_for_the_resend_only(harness: Harness) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL, confirmed=False)

    status, body = await post_login(harness, credentials())

    assert (status, body["code"]) == (403, 7)
    assert "refresh_token" not in body
    assert harness.svc.signer.read_purpose(body["token"], PURPOSE_CONFIRM)["user_id"] == user_id
    status, refused = await check(harness, body["token"])
    assert (status, refused["code"]) == (401, 3)


async def test_dashboard_needs_a_permission(harness: Harness) -> None:
    await harness.create_app_label()
    network_id = await harness.create_network()
    await harness.create_user(EMAIL)
    await harness.create_user("operator@example.com", perms=[("stations", False)], networks=[network_id])

    status, body = await post_login(harness, credentials(scope="dashboard"))
    assert (status, body["code"]) == (403, 13)

    status, body = await post_login(harness, credentials(email="operator@example.com", scope="dashboard"))
    assert status == 200, body
    assert [p["perm_key"] for p in body["permissions"]] == ["stations"]


async def test_check_returns_the_permissions(harness: Harness) -> None:
    await harness.create_app_label()
    network_id = await harness.create_network()
    await harness.create_user(EMAIL, perms=[("stations", True)], networks=[network_id])
    token = (await harness.login(EMAIL))["token"]

    status, body = await check(harness, token, {})

    assert status == 200, body
    [permission] = body["permissions"]
    assert permission["perm_key"] == "stations"
    assert permission["write"] is True
    assert permission["ou"]["networks"] == [network_id]
    assert permission["ou"]["clusters"] == []
    assert permission["ou"]["app_labels"] == []
    assert permission["ou"]["organizations"] == []


async def test_check_records_the_device_of_the_session(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)
    token = (await harness.login(EMAIL, device_id=None))["token"]

    status, body = await check(harness, token, {"device": {"id": "tablet", "os": "iOS", "app_version": "2.1"}})
    assert status == 200, body
    # The session now belongs to the device "tablet": logging that device out ends it.
    response = await harness.client.post("/api/application/logout", headers=bearer(token), json={"device_id": "tablet"})
    assert response.json() == {"code": 0}
    status, body = await check(harness, token)
    assert (status, body["code"]) == (401, 3)


async def test_check_without_a_body_or_a_token(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)
    token = (await harness.login(EMAIL))["token"]

    assert (await harness.client.post(CHECK, headers=bearer(token))).json()["code"] == 0
    response = await harness.client.post(CHECK)
    assert (response.status_code, response.json()["code"]) == (401, 3)
    status, body = await check(harness, token, {"device": "phone"})
    assert (status, body["code"]) == (400, 2)


async def test_too_many_attempts_for_one_address(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)

    for _ in range(3):
        assert (await post_login(harness, credentials(password="guessing again")))[0] == 401
    status, body = await post_login(harness, credentials())

    assert (status, body["code"]) == (429, 9)
    status, body = await post_login(harness, credentials(email="other@example.com"))
    assert (status, body["code"]) == (401, 8)


async def test_too_many_attempts_from_one_client(harness: Harness) -> None:
    await harness.create_app_label()

    for n in range(6):
        assert (await post_login(harness, credentials(email=f"guess{n}@example.com")))[0] == 401
    status, body = await post_login(harness, credentials(email="guess-last@example.com"))

    assert (status, body["code"]) == (429, 9)


BAD_BODIES: list[tuple[str, Any]] = [
    ("missing email", {"password": PASSWORD, "app_label": "knot"}),
    ("missing password", {"email": EMAIL, "app_label": "knot"}),
    ("missing app_label", {"email": EMAIL, "password": PASSWORD}),
    ("bad email", credentials(email="not-an-email")),
    ("short password", credentials(password="7 chars")),
    ("long password", credentials(password="p" * 256)),
    ("password not a string", credentials(password=12345678)),
    ("empty app_label", credentials(app_label="")),
    ("long app_label", credentials(app_label="l" * 21)),
    ("unknown scope", credentials(scope="admin")),
    ("device not an object", credentials(device="phone")),
    ("device id not a string", credentials(device={"id": 42})),
    ("empty device id", credentials(device={"id": ""})),
    ("device os not a string", credentials(device={"os": ["Android"]})),
    ("body not an object", [EMAIL, PASSWORD]),
    ("body null", None),
]


async def test_bad_input_is_a_json_400(harness: Harness) -> None:
    await harness.create_app_label()
    await harness.create_user(EMAIL)

    for case, body in BAD_BODIES:
        status, answer = await post_login(harness, body)
        assert (status, answer["code"]) == (400, 2), case
        assert answer["message"], case
    response = await harness.client.post(LOGIN, content=b"{not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["code"]) == (400, 2)


async def test_unknown_fields_are_ignored(harness: Harness) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user(EMAIL)

    status, body = await post_login(harness, credentials(user_id=1, is_admin=True, device={"id": "d", "x": 1}))

    assert status == 200, body
    assert body["user_id"] == user_id


async def test_openapi_documents_the_login_routes(harness: Harness) -> None:
    paths = (await harness.client.get("/openapi.json")).json()["paths"]

    login = paths[LOGIN]["post"]
    assert "Login" in login["tags"]
    assert "requestBody" in login
    assert {"200", "401", "403"} <= set(login["responses"])
    for path in ("/login/check", "/login/refresh", "/login/apple", "/login/google", "/login/facebook",
                 "/login/2fa", "/login/2fa/generate", "/login/2fa/verify", "/logout"):
        assert "post" in paths[f"/api/application{path}"], path
    assert "requestBody" in paths["/api/application/logout"]["post"]
    assert paths["/api/application/login/check"]["post"]["security"] == [{"bearer": []}]
