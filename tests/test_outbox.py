"""The mail outbox: kept until an SMTP server takes it, sent once, logged when no server is set.

The service here starts with ``smtp_url`` on a port where nothing listens yet.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import asyncpg
import pytest
import trio

from knot_rt.config import Settings
from knot_rt.services.mail import MailSender, enqueue
from tests.support import Harness, SmtpSink, _free_port, token_in


@pytest.fixture
def smtp_port() -> int:
    return _free_port()


@pytest.fixture
def settings(settings: Settings, smtp_port: int, request: pytest.FixtureRequest) -> Settings:
    """SMTP on a silent port; a test parametrizing ``settings`` indirectly gives its own ``smtp_url``."""
    return replace(settings, smtp_url=getattr(request, "param", f"smtp://127.0.0.1:{smtp_port}"))


async def first_row(harness: Harness, sql: str) -> asyncpg.Record:
    """The first row of ``sql``, once there is one (the sender works in the background)."""
    with trio.fail_after(30):
        while (row := await harness.db.fetchrow(sql)) is None:  # noqa: ASYNC110 - the state is in PostgreSQL
            await trio.sleep(0.05)
    return row


async def outbox_row(harness: Harness, condition: str) -> asyncpg.Record:
    return await first_row(harness, f"SELECT * FROM outbox WHERE {condition} ORDER BY id LIMIT 1")


async def register(harness: Harness) -> None:
    await harness.create_app_label()
    response = await harness.client.post(
        "/api/application/users",
        json={"email": "ada@example.com", "password": "correct horse battery", "app_label": "knot"},
    )
    assert response.status_code == 200, response.text


async def post_mail(harness: Harness, to_addr: str, subject: str = "Hello") -> None:
    await harness.db.run(lambda conn: enqueue(conn, to_addr, subject, "A mail body."))
    harness.svc.mail.wake()


async def test_mail_waits_until_the_server_listens_and_is_sent_once(harness: Harness, smtp_port: int) -> None:
    await register(harness)
    failed = await outbox_row(harness, "attempts >= 1 AND last_error IS NOT NULL")
    assert failed["to_addr"] == "ada@example.com"
    assert failed["sent_at"] is None

    sink = SmtpSink(port=smtp_port)
    sink.start()
    try:
        [mail] = await sink.wait_for("ada@example.com", timeout=30)
        assert "token=" in str(mail.get_body(preferencelist=("plain",)))
        sent = await outbox_row(harness, "sent_at IS NOT NULL")
        assert sent["id"] == failed["id"]
        assert sent["attempts"] >= 2
        assert sent["last_error"] is None
        # A later mail goes out alone: the first one is not sent again.
        await post_mail(harness, "later@example.com")
        await sink.wait_for("later@example.com")
        assert len(sink.messages("ada@example.com")) == 1
        assert len(sink.messages()) == 2
    finally:
        sink.stop()


async def test_two_senders_never_send_a_mail_twice(harness: Harness, smtp_port: int) -> None:
    sink = SmtpSink(port=smtp_port)
    sink.start()
    try:
        other = MailSender(harness.db, sink.url, "Knot <no-reply@knot.local>", retry_seconds=0.2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(other.run)
            for n in range(30):
                await post_mail(harness, f"rider{n}@example.com", f"Mail {n}")
                other.wake()
            await sink.wait_for("@example.com", count=30, timeout=30)
            await first_row(harness, "SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM outbox WHERE sent_at IS NULL)")
            nursery.cancel_scope.cancel()
        subjects = sorted(str(m["Subject"]) for m in sink.messages())
        assert subjects == sorted(f"Mail {n}" for n in range(30))
    finally:
        sink.stop()


@pytest.mark.parametrize("settings", [None], indirect=True)
async def test_without_smtp_url_mail_is_logged_and_kept(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="knot_rt.services.mail")
    await register(harness)
    kept = await outbox_row(harness, "last_error IS NOT NULL")
    assert (kept["to_addr"], kept["attempts"], kept["sent_at"], kept["last_error"]) == (
        "ada@example.com", 1, None, "SMTP_URL not set"
    )
    # The sender logs right after its update returns: wait for the line, bounded.
    with trio.move_on_after(10):
        while not any(kept["subject"] in record.getMessage() for record in caplog.records):  # noqa: ASYNC110
            await trio.sleep(0.01)
    assert any(kept["subject"] in record.getMessage() for record in caplog.records)


async def test_a_mail_that_cannot_be_written_does_not_stop_the_others(harness: Harness, smtp_port: int) -> None:
    sink = SmtpSink(port=smtp_port)
    sink.start()
    try:
        await post_mail(harness, "broken@example.com", "Two\nlines")
        await post_mail(harness, "fine@example.com")
        await sink.wait_for("fine@example.com", timeout=30)
        broken = await outbox_row(harness, "to_addr = 'broken@example.com' AND last_error IS NOT NULL")
        assert broken["sent_at"] is None
        assert broken["attempts"] == harness.svc.settings.mail_max_attempts  # given up, not retried
        assert (await harness.client.get("/health")).status_code == 200
    finally:
        sink.stop()


# -- mailed tokens are not kept readable -----------------------------------------------------------


async def register_and_token(harness: Harness) -> tuple[asyncpg.Record, str]:
    """Register; the confirmation mail's outbox row as written, and its token."""
    await register(harness)
    row = await outbox_row(harness, "to_addr = 'ada@example.com'")
    match = re.search(r"token=([A-Za-z0-9]{10})\b", row["body"])
    assert match, row["body"]
    return row, match.group(1)


async def test_a_sent_mail_keeps_no_usable_link(harness: Harness, smtp_port: int) -> None:
    sink = SmtpSink(port=smtp_port)
    sink.start()
    try:
        written, token = await register_and_token(harness)
        [mail] = await sink.wait_for("ada@example.com", timeout=30)
        assert token_in(mail) == token  # the user got the link

        sent = await outbox_row(harness, "sent_at IS NOT NULL")
        assert (sent["id"], sent["to_addr"], sent["subject"]) == (written["id"], "ada@example.com", written["subject"])
        assert token not in sent["body"]
        assert "token=" in sent["body"] and "token=[removed]" in sent["body"]
        assert not re.search(r"token=(?!\[removed\])", sent["body"])  # the unsubscribe link's token too
        # The link still works: only the copy in the outbox is gone.
        response = await harness.client.put("/api/application/users/email/confirmation", json={"token": token})
        assert response.status_code == 200, response.text
    finally:
        sink.stop()


@pytest.mark.parametrize("settings", [None], indirect=True)
async def test_without_smtp_url_the_log_shows_no_token(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kept, token = await register_and_token(harness)
    with trio.move_on_after(10):
        while not any(kept["subject"] in record.getMessage() for record in caplog.records):  # noqa: ASYNC110
            await trio.sleep(0.01)
    [line] = [record.getMessage() for record in caplog.records if kept["subject"] in record.getMessage()]
    assert "token=[removed]" in line
    assert token not in caplog.text
    assert not re.search(r"token=(?!\[removed\])", caplog.text)


async def test_a_mail_given_up_keeps_no_usable_link(harness: Harness) -> None:
    # Nothing listens on the SMTP port: every attempt fails until the last one.
    _, token = await register_and_token(harness)
    await harness.db.execute("UPDATE outbox SET attempts = $1 - 1, next_attempt_at = now()",
                             harness.svc.settings.mail_max_attempts)
    harness.svc.mail.wake()
    last = harness.svc.settings.mail_max_attempts
    given_up = await outbox_row(harness, f"attempts >= {last} AND body LIKE '%token=[removed]%'")
    assert given_up["sent_at"] is None
    assert token not in given_up["body"]
