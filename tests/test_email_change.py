"""Change the email address through a link mailed to the new one (ROUTES rows 28, 29 and 30)."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.accounts.store import Purpose
from tests.support import Harness, SmtpSink, bearer, body_of, open_test_session, token_in

ASK = "/api/application/users/email/change"
CHANGE = "/api/application/users/email"


async def ask(harness: Harness, user_id: int, new_email: str, extra: dict[str, Any] | None = None) -> Any:
    headers = bearer(await open_test_session(harness, user_id))
    body = {"email": new_email, "password": "correct horse battery", **(extra or {})}
    return await harness.client.post(ASK, json=body, headers=headers)


async def asked_token(harness: Harness, smtp_sink: SmtpSink, user_id: int, new_email: str, count: int = 1) -> str:
    response = await ask(harness, user_id, new_email)
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 0}
    return token_in((await smtp_sink.wait_for(new_email, count=count))[count - 1])


async def change(harness: Harness, token: str, new_email: str) -> Any:
    return await harness.client.put(CHANGE, json={"email_token": token, "email": new_email})


async def email_of(harness: Harness, user_id: int) -> str:
    found: str = await harness.db.fetchval("SELECT email FROM users WHERE id = $1", user_id)
    return found


async def test_the_link_goes_to_the_new_address_only(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    await asked_token(harness, smtp_sink, user_id, "ada@new.example.org")
    [mail] = smtp_sink.messages("ada@new.example.org")
    assert "http://knot.test/email/change?token=" in body_of(mail)
    assert await harness.db.fetchval("SELECT array_agg(to_addr) FROM outbox") == ["ada@new.example.org"]
    assert await email_of(harness, user_id) == "ada@example.com"


async def test_checking_a_token_shows_both_addresses_and_their_organizations(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    old_org = await harness.make.organization("Old Corp", "example.com")
    await harness.make.organization("New Corp", "new.example.org")
    label = await harness.create_app_label("citybike", "City Bike", organization=old_org)
    user_id = await harness.create_user("ada@example.com", app_label=label)
    token = await asked_token(harness, smtp_sink, user_id, "Ada@New.Example.org")

    response = await harness.client.get(ASK, params={"token": token})
    assert response.status_code == 200
    assert response.json() == {"code": 0, "data": {
        "email": "ada@example.com", "new_email": "ada@new.example.org", "current_organization_name": "Old Corp",
        "new_organization_name": "New Corp", "label_name": "City Bike",
    }}
    assert await harness.db.fetchval("SELECT used_at FROM email_tokens") is None


async def test_checking_without_organizations_or_label_gives_nulls(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    data = (await harness.client.get(ASK, params={"token": token})).json()["data"]
    assert data == {
        "email": "ada@example.com", "new_email": "ada@example.org", "current_organization_name": None,
        "new_organization_name": None, "label_name": None,
    }


async def test_changing_the_address_confirms_it_and_tells_the_old_one(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com", confirmed=False)
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")

    response = await change(harness, token, "ada@example.org")
    assert response.status_code == 200
    assert response.json() == {"code": 0}
    row = await harness.db.fetchrow("SELECT email, email_confirmed_at FROM users WHERE id = $1", user_id)
    assert row is not None
    assert row["email"] == "ada@example.org"
    assert row["email_confirmed_at"] is not None
    [notice] = await smtp_sink.wait_for("ada@example.com")
    assert "ada@example.org" in body_of(notice)
    assert "unsubscribe?token=" in body_of(notice)


async def test_a_change_token_works_once(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    body = {"email_token": token, "email": "ada@example.org"}
    assert (await harness.client.put(CHANGE, json=body)).status_code == 200
    changed_again = await harness.client.put(CHANGE, json=body)
    checked = await harness.client.get(ASK, params={"token": token})
    for response in (changed_again, checked):
        assert response.status_code == 400
        assert response.json()["code"] == 11


async def test_expired_change_tokens_are_refused(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    await harness.db.execute("UPDATE email_tokens SET expires_at = now() - interval '1 second'")
    checked = await harness.client.get(ASK, params={"token": token})
    changed = await change(harness, token, "ada@example.org")
    for response in (checked, changed):
        assert response.status_code == 400
        assert response.json()["code"] == 11
    assert await email_of(harness, user_id) == "ada@example.com"


async def test_another_address_than_the_tokens_is_refused_and_keeps_the_token(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    response = await change(harness, token, "evil@example.org")
    assert response.status_code == 400
    assert response.json()["code"] == 11
    assert await email_of(harness, user_id) == "ada@example.com"
    response = await change(harness, token, "ADA@example.org")
    assert response.status_code == 200
    assert await email_of(harness, user_id) == "ada@example.org"


async def test_asking_for_the_current_address_is_a_400(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com")
    response = await ask(harness, user_id, "ADA@example.com")
    assert response.status_code == 400
    assert response.json()["code"] == 20
    assert await harness.db.fetchval("SELECT count(*) FROM email_tokens") == 0


async def test_asking_for_an_address_of_another_account_is_a_409(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com")
    await harness.create_user("bob@example.com")
    response = await ask(harness, user_id, "Bob@example.com")
    assert response.status_code == 409
    assert response.json()["code"] == 10
    assert await harness.db.fetchval("SELECT count(*) FROM outbox") == 0


async def test_an_address_taken_meanwhile_is_a_409_and_the_token_stays(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    other = await harness.create_user("ada@example.org")
    response = await change(harness, token, "ada@example.org")
    assert response.status_code == 409
    assert response.json()["code"] == 10
    assert await email_of(harness, user_id) == "ada@example.com"
    assert await harness.db.fetchval("SELECT used_at FROM email_tokens") is None
    assert await harness.db.fetchval("SELECT count(*) FROM outbox WHERE to_addr = 'ada@example.com'") == 0
    await harness.db.execute("DELETE FROM users WHERE id = $1", other)
    assert (await change(harness, token, "ada@example.org")).status_code == 200


async def test_a_new_request_supersedes_the_earlier_link(harness: Harness, smtp_sink: SmtpSink) -> None:
    user_id = await harness.create_user("ada@example.com")
    first = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    second = await asked_token(harness, smtp_sink, user_id, "ada@example.net")
    stale = await change(harness, first, "ada@example.org")
    assert stale.json()["code"] == 11
    fresh = await change(harness, second, "ada@example.net")
    assert fresh.status_code == 200


async def test_links_mailed_to_the_old_address_stop_working(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user("ada@example.com")
    await harness.client.post(
        "/api/application/login/password-reset", json={"email": "ada@example.com", "app_label": "knot"}
    )
    reset = token_in((await smtp_sink.wait_for("ada@example.com"))[0])
    token = await asked_token(harness, smtp_sink, user_id, "ada@example.org")
    assert (await change(harness, token, "ada@example.org")).status_code == 200
    response = await harness.client.put(
        "/api/application/users/password", json={"token": reset, "password": "a brand new secret"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == 11


async def test_the_change_is_for_the_caller_only(harness: Harness, smtp_sink: SmtpSink) -> None:
    ada = await harness.create_user("ada@example.com")
    bob = await harness.create_user("bob@example.com")
    response = await ask(harness, ada, "ada@example.org", {"user_id": bob})
    assert response.status_code == 200
    token = token_in((await smtp_sink.wait_for("ada@example.org"))[0])
    assert await harness.db.fetchval("SELECT array_agg(user_id) FROM email_tokens") == [ada]
    await harness.client.put(CHANGE, json={"email_token": token, "email": "ada@example.org", "user_id": bob})
    assert await email_of(harness, ada) == "ada@example.org"
    assert await email_of(harness, bob) == "bob@example.com"


async def test_asking_needs_an_access_token(harness: Harness) -> None:
    response = await harness.client.post(ASK, json={"email": "ada@example.org"})
    assert response.status_code == 401
    assert response.json()["code"] == 3


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "field"),
    [
        ("POST", ASK, {"json": {"email": "nope"}}, "email"),
        ("POST", ASK, {"json": {}}, "email"),
        ("GET", ASK, {}, "token"),
        ("PUT", CHANGE, {"json": {"email_token": "123456789", "email": "ada@example.org"}}, "email_token"),
        ("PUT", CHANGE, {"json": {"email_token": "1234567890"}}, "email"),
        ("PUT", CHANGE, {"json": {"email_token": "1234567890", "email": "ada@"}}, "email"),
    ],
)
async def test_bad_input_names_the_field(
    harness: Harness, method: str, path: str, kwargs: dict[str, Any], field: str
) -> None:
    user_id = await harness.create_user("ada@example.com")
    headers = bearer(await open_test_session(harness, user_id))
    response = await harness.client.request(method, path, headers=headers, **kwargs)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert field in response.json()["message"]


async def test_an_unknown_token_is_refused(harness: Harness) -> None:
    user_id = await harness.create_user("ada@example.com")
    checked = await harness.client.get(ASK, params={"token": "AAAAAAAAAA"})
    changed = await change(harness, "AAAAAAAAAA", "ada@example.org")
    for response in (checked, changed):
        assert response.status_code == 400
        assert response.json()["code"] == 11
    assert await email_of(harness, user_id) == "ada@example.com"


async def test_a_token_of_another_purpose_is_refused(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label()
    user_id = await harness.create_user("ada@example.com", confirmed=False)
    await harness.client.post(
        "/api/application/login/password-reset", json={"email": "ada@example.com", "app_label": "knot"}
    )
    reset = token_in((await smtp_sink.wait_for("ada@example.com"))[0])
    assert await harness.db.fetchval("SELECT purpose FROM email_tokens") == Purpose.PASSWORD_RESET
    response = await harness.client.get(ASK, params={"token": reset})
    assert response.json()["code"] == 11
    assert await email_of(harness, user_id) == "ada@example.com"
