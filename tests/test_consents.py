"""Consents (ROUTES rows 21-23)."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.services.tokens import PURPOSE_CONFIRM, PURPOSE_UNSUBSCRIBE
from tests.support import Harness, bearer, open_test_session

CONSENTS = "/api/application/consents"
TYPES = "/api/application/consents/types"
UNSUBSCRIBE = "/api/application/consents/unsubscribe"


async def access_token(harness: Harness, user_id: int) -> str:
    """An access token of a fresh session, without going through the login route."""
    return await open_test_session(harness, user_id, "d1")


async def add_consent_types(harness: Harness) -> None:
    await harness.make.consent_type("emails.promotional", {"en": "Promotional emails", "fr": "E-mails promotionnels"},
                                    default_value=False, sort_order=2)
    await harness.make.consent_type("emails.networkstatus",
                                    {"en": "Network status emails", "de": "E-Mails zum Netzstatus"},
                                    default_value=True, sort_order=1)


async def stored_consents(harness: Harness, user_id: int) -> dict[str, bool]:
    rows = await harness.db.fetch("SELECT type_key, value FROM user_consents WHERE user_id = $1", user_id)
    return {row["type_key"]: row["value"] for row in rows}


@pytest.fixture
async def rider(harness: Harness) -> tuple[int, dict[str, str]]:
    await add_consent_types(harness)
    user_id = await harness.create_user("rider@example.com")
    return user_id, bearer(await access_token(harness, user_id))


async def types_of(harness: Harness, headers: dict[str, str], lang: str) -> list[dict[str, Any]]:
    response = await harness.client.get(TYPES, params={"lang": lang}, headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0
    data: list[dict[str, Any]] = body["data"]
    return data


async def test_types_give_defaults_in_order_with_english_fallback(
    harness: Harness, rider: tuple[int, dict[str, str]]
) -> None:
    _, headers = rider
    assert await types_of(harness, headers, "fr") == [
        {"type": "emails.networkstatus", "name": "Network status emails", "value": True},
        {"type": "emails.promotional", "name": "E-mails promotionnels", "value": False},
    ]
    assert [t["name"] for t in await types_of(harness, headers, "de")] == [
        "E-Mails zum Netzstatus", "Promotional emails",
    ]


async def test_update_then_read_back(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, headers = rider
    response = await harness.client.post(
        CONSENTS, json={"consents": {"emails.networkstatus": False, "emails.promotional": True}}, headers=headers
    )
    assert response.status_code == 200
    assert response.json() == {"code": 0}
    assert await stored_consents(harness, user_id) == {"emails.networkstatus": False, "emails.promotional": True}
    assert [t["value"] for t in await types_of(harness, headers, "en")] == [False, True]

    response = await harness.client.post(CONSENTS, json={"consents": {"emails.promotional": False}}, headers=headers)
    assert response.json() == {"code": 0}
    assert await stored_consents(harness, user_id) == {"emails.networkstatus": False, "emails.promotional": False}


async def test_unknown_type_changes_nothing(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, headers = rider
    response = await harness.client.post(
        CONSENTS, json={"consents": {"emails.promotional": True, "sms.spam": True}}, headers=headers
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 21
    assert "sms.spam" in body["message"]
    assert await stored_consents(harness, user_id) == {}


@pytest.mark.parametrize("body", [
    {},
    {"consents": []},
    {"consents": {"emails.promotional": "yes"}},
    {"consents": {"emails.promotional": None}},
    ["consents"],
])
async def test_bad_input(harness: Harness, rider: tuple[int, dict[str, str]], body: Any) -> None:
    user_id, headers = rider
    response = await harness.client.post(CONSENTS, json=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert await stored_consents(harness, user_id) == {}


@pytest.mark.parametrize("lang", [None, "", "fra", "FR", "f1"])
async def test_types_need_a_lowercase_iso_language(
    harness: Harness, rider: tuple[int, dict[str, str]], lang: str | None
) -> None:
    _, headers = rider
    params = {} if lang is None else {"lang": lang}
    response = await harness.client.get(TYPES, params=params, headers=headers)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert "lang" in response.json()["message"]


@pytest.mark.parametrize(("method", "path"), [("POST", CONSENTS), ("GET", TYPES)])
async def test_routes_need_a_token(harness: Harness, rider: tuple[int, dict[str, str]], method: str,
                                   path: str) -> None:
    for headers in ({}, bearer("not-a-jwt")):
        response = await harness.client.request(
            method, path, params={"lang": "en"}, json={"consents": {"emails.promotional": True}}, headers=headers
        )
        assert response.status_code == 401
        assert response.json()["code"] == 3


async def test_revoked_session_is_refused(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, headers = rider
    await harness.db.execute("UPDATE sessions SET revoked_at = now() WHERE user_id = $1", user_id)
    response = await harness.client.post(CONSENTS, json={"consents": {"emails.promotional": True}}, headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == 3


async def test_other_users_consents_unchanged(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, headers = rider
    other = await harness.create_user("other@example.com")
    other_headers = bearer(await access_token(harness, other))
    await harness.client.post(CONSENTS, json={"consents": {"emails.promotional": True}}, headers=other_headers)

    response = await harness.client.post(
        CONSENTS, json={"consents": {"emails.promotional": False, "emails.networkstatus": False}}, headers=headers
    )
    assert response.json() == {"code": 0}
    assert await stored_consents(harness, other) == {"emails.promotional": True}
    assert [t["value"] for t in await types_of(harness, other_headers, "en")] == [True, True]
    assert await stored_consents(harness, user_id) == {"emails.promotional": False, "emails.networkstatus": False}


async def test_unsubscribe_with_a_newsletter_token(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, _ = rider
    token = harness.svc.signer.purpose_token(PURPOSE_UNSUBSCRIBE, user_id, 3600)
    response = await harness.client.post(UNSUBSCRIBE, json={"consents": {"emails.promotional": False}, "token": token})
    assert response.status_code == 200
    assert response.json() == {"code": 0}
    assert await stored_consents(harness, user_id) == {"emails.promotional": False}


async def test_unsubscribe_checks_types(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, _ = rider
    token = harness.svc.signer.purpose_token(PURPOSE_UNSUBSCRIBE, user_id, 3600)
    response = await harness.client.post(UNSUBSCRIBE, json={"consents": {"nope": False}, "token": token})
    assert response.status_code == 400
    assert response.json()["code"] == 21


async def test_unsubscribe_refuses_other_tokens(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    user_id, headers = rider
    signer = harness.svc.signer
    refused = [
        headers["Authorization"].removeprefix("Bearer "),  # an access token: wrong purpose
        signer.purpose_token(PURPOSE_CONFIRM, user_id, 3600),  # another purpose
        signer.purpose_token(PURPOSE_UNSUBSCRIBE, user_id, -10),  # expired
        "garbage",
        "",
        None,
    ]
    for token in refused:
        response = await harness.client.post(
            UNSUBSCRIBE, json={"consents": {"emails.promotional": True}, "token": token}
        )
        assert response.status_code == 401, token
        assert response.json()["code"] == 3
    assert await stored_consents(harness, user_id) == {}


async def test_unsubscribe_token_of_a_deleted_account(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    gone = await harness.create_user("gone@example.com")
    token = harness.svc.signer.purpose_token(PURPOSE_UNSUBSCRIBE, gone, 3600)
    await harness.db.execute("DELETE FROM users WHERE id = $1", gone)
    response = await harness.client.post(UNSUBSCRIBE, json={"consents": {"emails.promotional": True}, "token": token})
    assert response.status_code == 401
    assert response.json()["code"] == 3


async def test_unsubscribe_needs_the_token_field(harness: Harness, rider: tuple[int, dict[str, str]]) -> None:
    response = await harness.client.post(UNSUBSCRIBE, json={"consents": {"emails.promotional": True}})
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert "token" in response.json()["message"]
