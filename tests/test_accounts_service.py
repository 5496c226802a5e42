"""The accounts domain on the unit of work: what must follow a commit does (mail sent at once, revoked sessions'
feed sockets closed), and the routes leave those effects, the transactions and the SQL to the service."""

from __future__ import annotations

import ast
from dataclasses import replace
from pathlib import Path

import pytest
from trio_websocket import ConnectionClosed

from knot_rt.config import Settings
from tests.feed_client import FeedClient, open_feed
from tests.support import Harness, SmtpSink, body_of, token_in

ROOT = Path(__file__).resolve().parent.parent / "knot_rt"
# The route modules of the accounts and content domains, and the access policy that HTTP and the feed share.
ACCOUNT_ROUTES = [
    "api/users.py", "api/login.py", "api/consents.py", "api/faq.py", "api/announcements.py", "api/app_labels.py",
    "web/auth.py",
]


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # The mail sender polls the outbox only once an hour: a mail arrives in time only if its commit woke the sender.
    return replace(settings, mail_poll_seconds=3600.0, mail_retry_seconds=3600.0)


async def assert_closed_for_auth(feed: FeedClient) -> None:
    with pytest.raises(ConnectionClosed) as closed:
        await feed.receive()
    assert closed.value.reason.code == 4401


async def test_a_registration_mail_is_sent_once_its_change_commits(harness: Harness, smtp_sink: SmtpSink) -> None:
    await harness.create_app_label("knot")
    response = await harness.client.post(
        "/api/application/users", json={"email": "ada@example.com", "password": "correct horse", "app_label": "knot"}
    )
    assert response.status_code == 200, response.text
    [mail] = await smtp_sink.wait_for("ada@example.com")
    assert "/email/confirm?token=" in body_of(mail)


async def test_a_password_reset_mails_at_once_and_its_use_closes_every_feed_socket(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    await harness.create_app_label("knot")
    user = await harness.create_user("bob@example.com")
    phone = await harness.login("bob@example.com", device_id="phone")
    laptop = await harness.login("bob@example.com", device_id="laptop")
    assert user == phone["user_id"] == laptop["user_id"]
    async with open_feed(harness.base_url, phone["token"]) as on_phone, \
            open_feed(harness.base_url, laptop["token"]) as on_laptop:
        assert (await on_phone.request({"type": "ping"}))["type"] == "pong"
        assert (await on_laptop.request({"type": "ping"}))["type"] == "pong"
        asked = await harness.client.post(
            "/api/application/login/password-reset", json={"email": "bob@example.com", "app_label": "knot"}
        )
        assert asked.status_code == 200, asked.text
        token = token_in((await smtp_sink.wait_for("bob@example.com"))[0])
        done = await harness.client.put(
            "/api/application/users/password", json={"token": token, "password": "a brand new one"}
        )
        assert done.status_code == 200, done.text
        await assert_closed_for_auth(on_phone)
        await assert_closed_for_auth(on_laptop)


async def test_a_reused_refresh_token_closes_the_feed_socket_of_its_session(harness: Harness) -> None:
    await harness.create_app_label("knot")
    await harness.create_user("eve@example.com")
    session = await harness.login("eve@example.com", device_id="phone")
    other = await harness.login("eve@example.com", device_id="laptop")
    refresh = "/api/application/login/refresh"
    async with open_feed(harness.base_url, session["token"]) as leaked, \
            open_feed(harness.base_url, other["token"]) as untouched:
        assert (await leaked.request({"type": "ping"}))["type"] == "pong"
        first = await harness.client.post(refresh, headers={"Authorization": f"Bearer {session['refresh_token']}"})
        assert first.status_code == 200, first.text
        again = await harness.client.post(refresh, headers={"Authorization": f"Bearer {session['refresh_token']}"})
        assert (again.status_code, again.json()["code"]) == (401, 14)
        await assert_closed_for_auth(leaked)
        # Another device's session stays open, its socket too.
        assert (await untouched.request({"type": "ping"}))["type"] == "pong"


def _calls(path: Path) -> set[str]:
    """Dotted names of what a module calls (``svc.db.transaction``, ``services().mail.wake`` as ``.mail.wake``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            parts: list[str] = []
            target: ast.expr = node.func
            while isinstance(target, ast.Attribute):
                parts.append(target.attr)
                target = target.value
            found.add("." + ".".join(reversed(parts)))
    return found


def _sql(path: Path) -> list[str]:
    words = ("SELECT ", "INSERT INTO", "UPDATE ", "DELETE FROM")
    return [
        node.value for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and any(w in node.value for w in words)
    ]


@pytest.mark.parametrize("module", ACCOUNT_ROUTES)
def test_account_routes_leave_transactions_effects_and_sql_to_the_services(module: str) -> None:
    calls = _calls(ROOT / module)
    forbidden = {".mail.wake", ".hub.sessions_revoked", ".db.transaction", ".work.run", ".work.publish"}
    assert not {call for call in calls if any(call.endswith(name) for name in forbidden)}, module
    assert _sql(ROOT / module) == [], module


def test_no_route_or_feed_module_wakes_the_mailer_or_closes_sessions() -> None:
    for path in sorted((ROOT / "api").glob("*.py")) + sorted((ROOT / "web").glob("*.py")):
        calls = _calls(path)
        assert not {c for c in calls if c.endswith((".mail.wake", ".hub.sessions_revoked"))}, path.name
