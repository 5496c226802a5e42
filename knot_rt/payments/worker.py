"""The payments worker: a supervised background loop that runs the due capture and release jobs.

Shape of the outbox's sender (``services/mail.py``): woken after a commit that wrote a job, and every
``poll_seconds`` anyway (a kept guarantee's release is due days later); a failure of the loop itself (the
database away) is logged once per streak and retried with ``Backoff`` (``db.attempt``), never ending it.

One job, one round:

1. Leased in its own transaction (``jobs.take_due``: ``FOR UPDATE SKIP LOCKED``, attempts + 1, not due
   again for ``lease_seconds``): two workers, in one process or two, never run one job at once.
2. The provider is called with the job's idempotency key: ``capture`` with ``amount_to_capture`` (Stripe
   releases the rest of the hold) or ``release`` (the PaymentIntent canceled).
3. Its answer is written in one unit of work: the job done, the guarantee ``captured`` / ``released`` with
   its ``captured_amount``, and ``guarantee.updated`` on the rider's ``user`` topic.

Failures, and why none charges twice:

- The provider unreachable, timing out, failing (5xx, 429): the job stays pending with ``last_error`` and is
  due again after ``retry_seconds`` doubling per attempt (capped by ``retry_cap_seconds``); it never gives up
  while the provider cannot answer (a capture not made is money not taken; the hold's own deadline ends it).
- A crash (or the database away) between the provider's answer and our commit: the lease runs out and the
  job runs again with the same key; Stripe answers a key it saw (24 h) with its first answer.
- The provider refusing the call (a capture of a PaymentIntent captured already, a key older than 24 h, a
  release of one canceled already): the PaymentIntent is read and decides. Captured (``succeeded``): the
  capture is done. Canceled: a release is done; a capture can no longer be made (the hold expired or the
  rider cancelled it) -> the job ``failed`` and its amount owed by the rent (``rents.amount_owed``). Any
  other state: retried later.
- A job done is never taken again, and marking it done is conditional on it being pending: a job two
  workers both finished (a lease that ran out while the first was still waiting) is applied once.

The lease must outlast one provider call (the SDK's timeout times its retries); 120 s by default.

Expiring holds (``warn_within``, 24 h by default): a hold still held by a riding rent whose provider deadline
(``capture_before``) comes within that window is not renewed -- Stripe cannot extend a card authorization's
deadline, and a new hold off-session may need the rider's 3-D Secure, which they cannot give mid-ride -- so the
rider is warned once: ``guarantee.updated`` with ``"warning": "expiring"`` (the guarantee's
``expiry_warned_at`` keeps it from being sent twice). If the rent outlives the hold, its capture finds the
PaymentIntent canceled and the price is owed (above).
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from decimal import Decimal

import trio

from protocols.feed import EventName, Topic

from ..db import Backoff, attempt
from ..uow import UnitOfWork, Work
from . import jobs
from .jobs import Job
from .provider import PaymentIntent, ProviderError, ProviderUnavailable, StripeProvider, from_minor, to_minor

log = logging.getLogger(__name__)


class PaymentWorker:
    """Runs the payment jobs (see the module's docstring). Without a provider (payments not configured) its
    loop only waits: no guarantee is ever taken then, so no job is written."""

    def __init__(
        self, work: Work, provider: StripeProvider | None, *, poll_seconds: float = 2.0,
        lease_seconds: float = 120.0, retry_seconds: float = 5.0, retry_cap_seconds: float = 900.0,
        warn_within: timedelta = timedelta(hours=24), batch: int = 20,
    ) -> None:
        self._work = work
        self._db = work.db
        self.provider = provider
        self._poll = poll_seconds
        self._lease = timedelta(seconds=lease_seconds)
        self._retry = retry_seconds
        self._retry_cap = retry_cap_seconds
        self._warn_within = warn_within
        self._batch = batch
        self._wake = trio.Event()
        self.settled = 0  # jobs done or failed by this worker (for logs and tests)

    def wake(self) -> None:
        """Tell the worker a job was just written."""
        self._wake.set()

    async def run(self) -> None:
        """Run due jobs when woken and every ``poll_seconds``, forever (a failure is retried with back-off)."""
        if self.provider is None:
            log.info("payments not configured: no capture or release job will run")
            await trio.sleep_forever()
        backoff = Backoff()
        wait = 0.0  # at start: the jobs left by a process that stopped
        while True:
            with trio.move_on_after(wait):
                await self._wake.wait()
            self._wake = trio.Event()
            done = await attempt("payments: running the capture and release jobs", self.run_due, backoff)
            wait = self._poll if done else backoff.next_delay()

    async def run_due(self) -> int:
        """Run every due job now (batch by batch), then warn of expiring holds; how many jobs were taken."""
        taken = 0
        while batch := await self._db.transaction(lambda conn: jobs.take_due(conn, self._lease, self._batch)):
            for job in batch:
                await self.settle(job)
            taken += len(batch)
        await self.warn_expiring()
        return taken

    # one job ---------------------------------------------------------------------------------------------------

    async def settle(self, job: Job) -> None:
        """Call the provider for a leased job and record the outcome (see the module's docstring)."""
        provider = self.provider
        assert provider is not None
        if job.payment_intent_id is None:  # never held at the provider: nothing to capture or release
            await self._record(job, None, f"guarantee {job.guarantee_id} has no PaymentIntent")
            return
        try:
            if job.kind == "capture":
                intent = await provider.capture(job.payment_intent_id, to_minor(job.amount, job.currency),
                                                job.idempotency_key)
            else:
                intent = await provider.release(job.payment_intent_id, job.idempotency_key)
        except ProviderUnavailable as exc:
            await self._retry_later(job, exc)
            return
        except ProviderError as exc:  # refused as sent: where the PaymentIntent is decides
            try:
                intent = await provider.payment_intent(job.payment_intent_id)
            except ProviderError as again:
                await self._retry_later(job, again)
                return
            log.info("payment job %s (%s): the provider refused (%s); the PaymentIntent is %s",
                     job.id, job.kind, exc.message, intent.status)
            await self._record(job, intent, f"{type(exc).__name__}: {exc.message}")
            return
        await self._record(job, intent, None)

    async def _record(self, job: Job, intent: PaymentIntent | None, error: str | None) -> None:
        """Write what the PaymentIntent says of the job, in one unit of work with its ``guarantee.updated``."""
        status = intent.status if intent is not None else "canceled"
        if status == "succeeded":  # captured (by this job, or before it)
            received = from_minor(intent.amount_received, job.currency) if intent and intent.amount_received else None
            outcome, captured = "captured", received if received is not None else job.amount
        elif status == "canceled":
            outcome, captured = ("lost" if job.kind == "capture" else "released"), Decimal(0)
        else:  # still held, or somewhere else: the same call later
            await self._retry_later(job, ProviderError(error or f"the PaymentIntent is {status}"))
            return
        topic = Topic.user(job.user_id)

        async def record(uow: UnitOfWork) -> None:
            if outcome == "lost":
                row = await jobs.lost(uow.conn, job, error or "the hold is gone at the provider")
                extra = {"trip_id": job.rent_id, "owed": f"{job.amount:.3f}"}
            else:
                row = await jobs.finish(uow.conn, job, status=outcome, captured=captured, error=error)
                extra = {"trip_id": job.rent_id}
            if row is not None:
                await uow.publish(topic, EventName.GUARANTEE_UPDATED, jobs.guarantee_data(row, **extra))

        await self._work.run(record, topics=[topic])
        self.settled += 1
        if outcome == "lost":
            log.warning("payment job %s: the hold of guarantee %s is gone; %s owed by rent %s",
                        job.id, job.guarantee_id, job.amount, job.rent_id)

    async def _retry_later(self, job: Job, exc: ProviderError) -> None:
        delay = min(self._retry_cap, self._retry * 2 ** max(0, job.attempts - 1)) * random.uniform(0.5, 1.0)
        log.warning("payment job %s (%s, attempt %s): %s; again in %.1f s", job.id, job.kind, job.attempts,
                    exc.message, delay)
        message = f"{type(exc).__name__}: {exc.message}"
        await self._db.transaction(lambda conn: jobs.retry_later(conn, job, timedelta(seconds=delay), message))

    # expiring holds ------------------------------------------------------------------------------------------

    async def warn_expiring(self) -> int:
        """Warn, once, each rider whose riding rent's hold ends within ``warn_within``; how many were warned."""
        candidates = await self._db.run(lambda conn: jobs.expiring(conn, self._warn_within))
        warned = 0
        for candidate in candidates:
            guarantee_id = candidate["id"]
            topic = Topic.user(candidate["user_id"])

            async def warn(uow: UnitOfWork, guarantee_id: int = guarantee_id, topic: Topic = topic) -> bool:
                row = await jobs.mark_warned(uow.conn, guarantee_id)
                if row is None:
                    return False
                trip = await jobs.rent_of_guarantee(uow.conn, guarantee_id)
                await uow.publish(topic, EventName.GUARANTEE_UPDATED,
                                  jobs.guarantee_data(row, trip_id=trip, warning="expiring"))
                return True

            warned += await self._work.run(warn, topics=[topic])
        return warned
