"""Mail: written to the outbox in the transaction of the change that needs it,
then sent over SMTP by a background task, with retries and backoff.

Without ``SMTP_URL`` a mail is logged and stays in the outbox.

Mailed links carry tokens (``?token=…``) that act on the account: the log shows
a mail with its token values removed (``redact``), and once a mail is sent (or
given up) its body in the outbox is replaced by the redacted one, so the outbox
keeps what was sent to whom, never a usable link. TLS to the SMTP server
(``smtps://``, ``smtp+starttls://``) verifies the certificate and the host name
against the system's CAs plus ``SMTP_CA_FILE`` when set.
"""

from __future__ import annotations

import logging
import re
import smtplib
from dataclasses import dataclass
from datetime import timedelta
from email.message import EmailMessage
from ssl import SSLContext, create_default_context
from urllib.parse import unquote, urlsplit

import asyncpg
import trio

from ..db import Backoff, Database, attempt

log = logging.getLogger(__name__)

_TOKEN_VALUE = re.compile(r"([?&;]token=)[^\s&#;]+", re.IGNORECASE)
REDACTED = "[removed]"


def redact(body: str) -> str:
    """The body with the value of every ``token=`` link parameter removed."""
    return _TOKEN_VALUE.sub(lambda m: m.group(1) + REDACTED, body)


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
    ca_file: str | None = None

    @classmethod
    def parse(cls, url: str, *, ca_file: str | None = None) -> SmtpTarget:
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
            ca_file=ca_file,
        )

    def tls_context(self) -> SSLContext:
        """Verifies the server's certificate and host name (smtplib's own default verifies neither)."""
        context = create_default_context()
        if self.ca_file:
            context.load_verify_locations(cafile=self.ca_file)
        return context

    def send(self, message: EmailMessage) -> None:
        client: smtplib.SMTP
        client = smtplib.SMTP_SSL(
            self.host, self.port, timeout=20, context=self.tls_context()
        ) if self.ssl else smtplib.SMTP(self.host, self.port, timeout=20)
        with client:
            if self.starttls:
                client.starttls(context=self.tls_context())
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(message)


class MailSender:
    """The background task that drains the outbox."""

    def __init__(
        self, db: Database, smtp_url: str | None, mail_from: str, *, retry_seconds: float = 5.0,
        max_attempts: int = 8, poll_seconds: float = 2.0, ca_file: str | None = None,
    ) -> None:
        self._db = db
        self._target = SmtpTarget.parse(smtp_url, ca_file=ca_file) if smtp_url else None
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
            drained = await attempt("mail: draining the outbox", self._drain, backoff)
            wait = self._poll if drained else backoff.next_delay()

    async def _drain(self) -> None:
        if self._target is None:
            await self._log_unsent()
        else:
            while await self._send_batch():
                pass

    async def _log_unsent(self) -> None:
        rows = await self._db.fetch(
            """UPDATE outbox SET attempts = attempts + 1, last_error = 'SMTP_URL not set'
               WHERE sent_at IS NULL AND attempts = 0 RETURNING to_addr, subject, body"""
        )
        for row in rows:
            log.info(
                "mail to %s (not sent, no SMTP_URL): %s\n%s", row["to_addr"], row["subject"], redact(row["body"])
            )

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
                "UPDATE outbox SET attempts = $2, last_error = $3, body = $4 WHERE id = $1",
                row["id"], self._max_attempts, str(exc)[:500], redact(row["body"]),
            )
            return
        try:
            await trio.to_thread.run_sync(self._target.send, message)
        except (OSError, smtplib.SMTPException, UnicodeError) as exc:
            delay = timedelta(seconds=self._retry * 2 ** (row["attempts"] - 1))
            log.warning("mail %s to %s failed (attempt %s): %s", row["id"], row["to_addr"], row["attempts"], exc)
            # The last attempt keeps no usable link: nothing will send it any more.
            given_up = row["attempts"] >= self._max_attempts
            await self._db.execute(
                """UPDATE outbox SET next_attempt_at = now() + $2::interval, last_error = $3,
                          body = CASE WHEN $4 THEN $5 ELSE body END
                   WHERE id = $1""",
                row["id"], delay, str(exc)[:500], given_up, redact(row["body"]),
            )
            return
        await self._db.execute(
            "UPDATE outbox SET sent_at = now(), last_error = NULL, body = $2 WHERE id = $1",
            row["id"], redact(row["body"]),
        )
        self.sent += 1
