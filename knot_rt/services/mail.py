"""Mail: written to the outbox in the transaction of the change that needs it,
then sent over SMTP by a background task, with retries and backoff.

Without ``SMTP_URL`` a mail is logged and stays in the outbox.
"""

from __future__ import annotations

import logging
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from urllib.parse import unquote, urlsplit

import asyncpg
import trio

from ..db import Backoff, Database, DatabaseUnavailable

log = logging.getLogger(__name__)


async def enqueue(conn: asyncpg.Connection, to_addr: str, subject: str, body: str) -> int:
    """Write a mail into the outbox (call inside the change's transaction)."""
    mail_id: int = await conn.fetchval(
        "INSERT INTO outbox (to_addr, subject, body) VALUES ($1, $2, $3) RETURNING id", to_addr, subject, body
    )
    return mail_id


@dataclass(frozen=True)
class SmtpTarget:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    starttls: bool = False
    ssl: bool = False

    @classmethod
    def parse(cls, url: str) -> SmtpTarget:
        """``smtp://[user:pass@]host[:port]``, ``smtp+starttls://…`` or ``smtps://…``."""
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps", "smtp+starttls"} or not parts.hostname:
            raise ValueError(f"SMTP_URL must be smtp://host:port, smtps:// or smtp+starttls://, not {url!r}")
        ssl = parts.scheme == "smtps"
        return cls(
            host=parts.hostname,
            port=parts.port or (465 if ssl else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            starttls=parts.scheme == "smtp+starttls",
            ssl=ssl,
        )

    def send(self, message: EmailMessage) -> None:
        client: smtplib.SMTP
        client = smtplib.SMTP_SSL(self.host, self.port, timeout=20) if self.ssl else smtplib.SMTP(
            self.host, self.port, timeout=20
        )
        with client:
            if self.starttls:
                client.starttls()
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(message)


class MailSender:
    """The background task that drains the outbox."""

    def __init__(
        self, db: Database, smtp_url: str | None, mail_from: str, *, retry_seconds: float = 5.0,
        max_attempts: int = 8, poll_seconds: float = 2.0,
    ) -> None:
        self._db = db
        self._target = SmtpTarget.parse(smtp_url) if smtp_url else None
        self._from = mail_from
        self._retry = retry_seconds
        self._max_attempts = max_attempts
        self._poll = poll_seconds
        self._wake = trio.Event()
        self.sent = 0

    def wake(self) -> None:
        """Tell the sender that mail was just written."""
        self._wake.set()

    async def run(self) -> None:
        """Drain the outbox when woken, and every ``poll_seconds`` anyway.

        A failure never ends the loop: while the database is away the mail waits in
        the outbox and the loop retries with back-off (capped at 4 s, so sending
        resumes within seconds of PostgreSQL coming back); the first failure of a
        streak is logged, and the recovery.
        """
        if self._target is None:
            log.warning("SMTP_URL not set: mail is logged and kept in the outbox, not sent")
        backoff = Backoff()
        wait = self._poll
        while True:
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()
            try:
                if self._target is None:
                    await self._log_unsent()
                else:
                    while await self._send_batch():
                        pass
            except DatabaseUnavailable as exc:
                if backoff.failures == 0:
                    log.warning("mail: outbox not reachable (%s); retrying", exc)
                wait = backoff.next_delay()
                continue
            except Exception:
                if backoff.failures == 0:
                    log.exception("mail: draining the outbox failed; retrying")
                wait = backoff.next_delay()
                continue
            if backoff.failures:
                log.info("mail: outbox reachable again")
                backoff.reset()
            wait = self._poll

    async def _log_unsent(self) -> None:
        rows = await self._db.fetch(
            """UPDATE outbox SET attempts = attempts + 1, last_error = 'SMTP_URL not set'
               WHERE sent_at IS NULL AND attempts = 0 RETURNING to_addr, subject, body"""
        )
        for row in rows:
            log.info("mail to %s (not sent, no SMTP_URL): %s\n%s", row["to_addr"], row["subject"], row["body"])

    async def _send_batch(self) -> int:
        # Lease the due mail for a minute, so that another process does not send it too.
        rows = await self._db.fetch(
            """UPDATE outbox SET next_attempt_at = now() + interval '60 seconds', attempts = attempts + 1
               WHERE id IN (SELECT id FROM outbox
                            WHERE sent_at IS NULL AND next_attempt_at <= now() AND attempts < $1
                            ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED)
               RETURNING id, to_addr, subject, body, attempts""",
            self._max_attempts,
        )
        for row in rows:
            await self._deliver(row)
        return len(rows)

    def _message(self, row: asyncpg.Record) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self._from
        message["To"] = row["to_addr"]
        message["Subject"] = row["subject"]
        message.set_content(row["body"])
        return message

    async def _deliver(self, row: asyncpg.Record) -> None:
        assert self._target is not None
        try:
            message = self._message(row)
        except ValueError as exc:  # e.g. a line break in a header: no retry can help
            log.error("mail %s to %s cannot be written, given up: %s", row["id"], row["to_addr"], exc)
            await self._db.execute(
                "UPDATE outbox SET attempts = $2, last_error = $3 WHERE id = $1",
                row["id"], self._max_attempts, str(exc)[:500],
            )
            return
        try:
            await trio.to_thread.run_sync(self._target.send, message)
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            delay = timedelta(seconds=self._retry * 2 ** (row["attempts"] - 1))
            log.warning("mail %s to %s failed (attempt %s): %s", row["id"], row["to_addr"], row["attempts"], exc)
            await self._db.execute(
                "UPDATE outbox SET next_attempt_at = now() + $2::interval, last_error = $3 WHERE id = $1",
                row["id"], delay, str(exc)[:500],
            )
            return
        await self._db.execute("UPDATE outbox SET sent_at = now(), last_error = NULL WHERE id = $1", row["id"])
        self.sent += 1
