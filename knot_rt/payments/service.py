"""The payments domain's one entry point (``PaymentService``): saved cards, bank guarantees, Stripe's webhook.

A bank guarantee is a hold on the rider's card for one network: a PaymentIntent with
``capture_method=manual`` for the network's ``min_guarantee``, confirmed with a saved card. Its states are
the migration's (090_payments.sql): pending -> requires_action -> usable -> in_use -> settling -> captured /
released; failed; canceled.

How a guarantee is made (row 5), and why in three steps:

1. One unit of work writes the guarantee ``pending`` (the user's customer row locked, so two taps of the
   same rider make one request). A pending one of the same card and amount that never heard from Stripe
   (an outage) is taken again instead: step 2 then sends the SAME idempotency key, so a hold Stripe did
   make the first time is found, not made twice.
2. The hold is asked of Stripe outside any transaction (a database transaction never waits on the
   network), with the idempotency key ``hold_key(guarantee.id)`` and ``knot_guarantee_id`` in its
   metadata, so the webhook finds the guarantee even before step 3 wrote the PaymentIntent's id.
3. A second unit of work writes the answer with its ``guarantee.updated`` event: held -> usable; 3-D Secure
   -> requires_action (402/43 with the client secret); declined -> failed (402/42); unreachable -> stays
   pending, 502/45 (the rider's retry reuses it, step 1).

Every change of a guarantee's status goes through ``_advance``: a status only moves forward (``FORWARD``),
and a provider event older than the newest applied one is ignored, so late or repeated events (a
``requires_action`` after ``usable``, a ``payment_failed`` after the hold) never move it back. Webhook
events are applied once: their ids are kept (``payment_events``) in the same transaction as their effect.

Unconfigured (no ``STRIPE_API_KEY``): every payment route answers 501 code 45; nothing else changes.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import asyncpg
import stripe

from protocols.errors import ErrorCode
from protocols.feed import EventName, Topic

from ..config import StripeConfig
from ..errors import ApiError
from ..uow import UnitOfWork, Work
from . import store
from .provider import (
    Card,
    CardDeclined,
    PaymentIntent,
    ProviderError,
    ProviderRejected,
    ProviderUnavailable,
    StripeProvider,
    cancel_key,
    card_from,
    from_minor,
    hold_key,
    payment_intent_from,
    setup_key,
    to_minor,
)

log = logging.getLogger(__name__)

#: Our payment methods (row 6's ``method_id``): one, cards through Stripe.
CARD_METHOD_ID = 1
CARD_METHOD = {"method_id": CARD_METHOD_ID, "type": "card", "provider": "stripe"}
#: What a guarantee's public id is made of (``secrets.token_urlsafe``); anything else is unknown.
PUBLIC_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: A webhook's signature older (or further in the future) than this is refused.
WEBHOOK_TOLERANCE_SECONDS = 300
#: How long a guarantee is kept after a trip when ``keep_after_trip`` (never beyond its capture_before).
KEEP_AFTER_TRIP = timedelta(days=3)

#: The statuses a guarantee may move to from each (nothing moves back; captured/released/canceled are final).
FORWARD: dict[str, frozenset[str]] = {
    "pending": frozenset({"requires_action", "usable", "failed", "released", "canceled"}),
    "requires_action": frozenset({"usable", "failed", "released", "canceled"}),
    "usable": frozenset({"in_use", "settling", "captured", "released", "canceled"}),
    # in_use -> usable is a failed unlock's only (payments/jobs.give_back), never a provider event's: a late
    # "held" webhook after the rider started riding must not free the guarantee for a second rent.
    "in_use": frozenset({"settling", "captured", "released"}),
    "settling": frozenset({"captured", "released"}),
    "failed": frozenset(),
    "captured": frozenset(),
    "released": frozenset(),
    "canceled": frozenset(),
}
#: The PaymentIntent's status -> the guarantee's, for the statuses that say something about the hold.
FROM_INTENT = {
    "requires_action": "requires_action",
    "requires_capture": "usable",
    "requires_payment_method": "failed",
    "canceled": "released",
    "succeeded": "captured",
}


class WebhookRefused(Exception):
    """A webhook request whose signature, age or body is not acceptable (400, nothing applied)."""


@dataclass(frozen=True, slots=True)
class Guarantee:
    id: int
    public_id: str
    user_id: int
    network_id: int
    amount: Decimal
    currency: str
    status: str
    payment_intent_id: str | None
    keep_after_trip: bool
    capture_before: datetime | None
    keep_until: datetime | None
    created_at: datetime

    @property
    def refund_date(self) -> datetime | None:
        """When the hold goes back to the rider at the latest: kept until, else the provider's deadline."""
        return self.keep_until or self.capture_before

    def as_json(self) -> dict[str, Any]:
        """Row 4's fields (and the ``guarantee.updated`` payload, with ``status``)."""
        return {
            "id": self.public_id, "amount": f"{self.amount:.3f}", "currency": self.currency,
            "date": self.created_at.isoformat(), "being_used": self.status == "in_use",
            "exp_date": self.capture_before.isoformat() if self.capture_before else None,
            "refund_date": self.refund_date.isoformat() if self.refund_date else None,
        }


def guarantee_of(row: asyncpg.Record) -> Guarantee:
    return Guarantee(
        id=row["id"], public_id=row["public_id"], user_id=row["user_id"], network_id=row["network_id"],
        amount=row["amount"], currency=row["currency"], status=row["status"],
        payment_intent_id=row["payment_intent_id"], keep_after_trip=row["keep_after_trip"],
        capture_before=row["capture_before"], keep_until=row["keep_until"], created_at=row["created_at"],
    )


def guarantee_event(row: asyncpg.Record | Guarantee) -> dict[str, Any]:
    """The ``guarantee.updated`` payload: row 4's fields and the guarantee's ``status``."""
    found = row if isinstance(row, Guarantee) else guarantee_of(row)
    return {**found.as_json(), "status": found.status}


async def publish_guarantee(uow: UnitOfWork, row: asyncpg.Record) -> None:
    """``guarantee.updated`` on the rider's ``user`` topic, in ``uow`` (which must name that topic)."""
    await uow.publish(Topic.user(row["user_id"]), EventName.GUARANTEE_UPDATED, guarantee_event(row))


@dataclass(frozen=True, slots=True)
class SavedCard:
    id: int
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    networks: list[str]
    preferred: str | None
    default: bool

    def as_json(self) -> dict[str, Any]:
        """Row 6's instance."""
        expiry = f"{self.exp_month:02d}{self.exp_year % 100:02d}" if self.exp_month and self.exp_year else ""
        return {
            "id": self.id,
            "details": {"alias": f"XXXX XXXX XXXX {self.last4 or '????'}", "expiration_date": expiry,
                        "card_provider": self.brand or "unknown",
                        "networks": {"available": self.networks, "preferred": self.preferred}},
            "default": self.default,
        }


def saved_card(row: asyncpg.Record) -> SavedCard:
    networks = row["card_networks"]
    parsed = json.loads(networks) if isinstance(networks, str) else networks
    return SavedCard(row["id"], row["card_brand"], row["last4"], row["exp_month"], row["exp_year"],
                     [str(n) for n in parsed or []], row["preferred_network"], row["is_default"])


@dataclass(frozen=True, slots=True)
class SetupStarted:
    setup_intent_id: str
    client_secret: str


def _unreachable(exc: ProviderError) -> ApiError:
    return ApiError(ErrorCode.PAYMENTS_UNAVAILABLE, f"the payment provider could not be reached: {exc.message}",
                    status=502)


class PaymentService:
    """Bank guarantees and saved cards for the routes; the webhook's events; the provider for the jobs."""

    def __init__(self, work: Work, config: StripeConfig) -> None:
        self.work = work
        self.db = work.db
        self.config = config
        #: The Stripe client, None when payments are not configured (the jobs check it too).
        self.provider: StripeProvider | None = StripeProvider(config) if config.configured else None

    async def aclose(self) -> None:
        if self.provider is not None:
            await self.provider.aclose()

    def _provider(self) -> StripeProvider:
        if self.provider is None:
            raise ApiError(ErrorCode.PAYMENTS_UNAVAILABLE, "payments are not configured on this server")
        return self.provider

    # customers ----------------------------------------------------------------------------------------------

    async def customer(self, user_id: int) -> str:
        """The user's Stripe customer, created on first need (its idempotency key is the user's id)."""
        provider = self._provider()
        found = await self.db.run(lambda conn: store.customer_of(conn, user_id))
        if found is not None:
            return found
        email = await self.db.run(lambda conn: store.email_of(conn, user_id))
        try:
            created = await provider.create_customer(user_id, email)
        except ProviderError as exc:
            raise _unreachable(exc) from exc
        return await self.work.run(lambda uow: store.save_customer(uow.conn, user_id, created))

    # saved cards (row 6, and the setup routes) --------------------------------------------------------------

    async def payment_methods(
        self, user_id: int, vehicle_id: int, may_use: Callable[[int], bool]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Row 6: the methods usable on the vehicle's network with the user's saved instances, and the
        providers' setup info. 404 (4) for an unknown vehicle or one of a network the user may not use.

        Every network takes cards through Stripe (method 1); the guarantee's amount and currency are the
        network's (row 5).
        """
        self._provider()
        network = await self.db.run(lambda conn: store.vehicle_network(conn, vehicle_id))
        if network is None or not may_use(network["network_id"]):
            raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle {vehicle_id}")
        rows = await self.db.run(lambda conn: store.instances_of(conn, user_id))
        cards = [saved_card(row).as_json() for row in rows if row["method_id"] == CARD_METHOD_ID]
        return [{**CARD_METHOD, "instances": cards}], {"stripe": {"public_key": self.config.public_key}}

    async def start_setup(self, user_id: int) -> SetupStarted:
        """A SetupIntent on the user's customer: the app confirms it with the card (Stripe SDK), then calls
        ``save_card`` (or the webhook ``setup_intent.succeeded`` records it)."""
        provider = self._provider()
        customer = await self.customer(user_id)
        try:
            intent = await provider.create_setup_intent(customer, user_id, setup_key(user_id, secrets.token_hex(8)))
        except ProviderError as exc:
            raise _unreachable(exc) from exc
        return SetupStarted(intent.id, intent.client_secret or "")

    async def save_card(self, user_id: int, setup_intent_id: str) -> SavedCard:
        """Record the card of the user's succeeded SetupIntent. Another customer's (or unknown) one: 404 code 4;
        not succeeded yet: 402 code 43 (3-D Secure to finish) or 409 code 24."""
        provider = self._provider()
        customer = await self.db.run(lambda conn: store.customer_of(conn, user_id))
        try:
            intent = await provider.setup_intent(setup_intent_id)
        except ProviderRejected:
            raise ApiError(ErrorCode.NOT_FOUND, f"no setup intent {setup_intent_id}") from None
        except ProviderError as exc:
            raise _unreachable(exc) from exc
        if customer is None or intent.customer_id != customer:
            raise ApiError(ErrorCode.NOT_FOUND, f"no setup intent {setup_intent_id}")
        if intent.status == "requires_action":
            raise ApiError(ErrorCode.PAYMENT_ACTION_REQUIRED, "the card needs 3-D Secure before it is saved")
        if intent.status != "succeeded" or intent.card is None:
            raise ApiError(ErrorCode.CONFLICT, f"the setup intent is {intent.status}, not succeeded")
        return await self._record_card(user_id, intent.card)

    async def _record_card(self, user_id: int, card: Card) -> SavedCard:
        async def change(uow: UnitOfWork) -> SavedCard:
            row, _ = await store.save_instance(
                uow.conn, user_id, CARD_METHOD_ID, card.payment_method_id, brand=card.brand, last4=card.last4,
                exp_month=card.exp_month, exp_year=card.exp_year, networks=list(card.networks),
                preferred=card.preferred_network,
            )
            if row["user_id"] != user_id:
                raise ApiError(ErrorCode.NOT_FOUND, "no such payment method")
            return saved_card(row)

        return await self.work.run(change)

    # guarantees (rows 4, 5, 7) ------------------------------------------------------------------------------

    async def guarantees(self, user_id: int) -> list[Guarantee]:
        self._provider()
        return [guarantee_of(r) for r in await self.db.run(lambda conn: store.listed_guarantees(conn, user_id))]

    async def create_guarantee(
        self, user_id: int, vehicle_id: int, *, instance_id: int | None, method_id: int | None,
        keep_after_trip: bool, network_choice: str | None, may_use: Callable[[int], bool],
    ) -> Guarantee:
        """Row 5 (see the module docstring). ``may_use(network_id)`` is the access policy's answer.

        Raises ``ApiError``: unknown/unusable vehicle or saved card 404 (4), a network that needs no
        guarantee or no saved card 409 (24), declined 402 (42), 3-D Secure 402 (43) with ``data.client_secret``,
        the provider unreachable 502 (45).
        """
        provider = self._provider()
        if method_id is not None and method_id != CARD_METHOD_ID:
            raise ApiError(ErrorCode.NOT_FOUND, f"no payment method {method_id}")
        network = await self.db.run(lambda conn: store.vehicle_network(conn, vehicle_id))
        if network is None or not may_use(network["network_id"]):
            raise ApiError(ErrorCode.NOT_FOUND, f"no vehicle {vehicle_id}")
        amount: Decimal = network["min_guarantee"]
        if amount <= 0:
            raise ApiError(ErrorCode.CONFLICT, "this network needs no bank guarantee")
        card = await self.db.run(lambda conn: store.instance(conn, user_id, instance_id))
        if card is None:
            if instance_id is not None:
                raise ApiError(ErrorCode.NOT_FOUND, f"no payment method instance {instance_id}")
            raise ApiError(ErrorCode.CONFLICT, "no saved card: save one first (POST "
                           "/api/application/bank-guarantees/payment-methods/setup)")
        customer = await self.customer(user_id)
        topic = Topic.user(user_id)

        async def begin(uow: UnitOfWork) -> asyncpg.Record:
            await store.lock_customer(uow.conn, user_id)
            found = await store.reusable_guarantee(uow.conn, user_id, network["network_id"], card["id"], amount)
            if found is not None:
                return found
            row = await store.insert_guarantee(
                uow.conn, secrets.token_urlsafe(12), user_id, network["network_id"], vehicle_id, card["id"], amount,
                network["currency"], keep_after_trip,
            )
            await publish_guarantee(uow, row)
            return row

        row = await self.work.run(begin, topics=[topic])
        if row["status"] == "usable":
            return guarantee_of(row)
        try:
            intent = await provider.hold(
                customer_id=customer, payment_method_id=card["provider_method_id"],
                amount=to_minor(amount, row["currency"]), currency=row["currency"], idempotency_key=hold_key(row["id"]),
                metadata={"knot_guarantee_id": str(row["id"]), "knot_user_id": str(user_id)}, network=network_choice,
            )
        except CardDeclined as exc:
            await self._advance(row["id"], "failed", payment_intent_id=exc.payment_intent_id)
            raise ApiError(ErrorCode.PAYMENT_DECLINED, f"the card was declined ({exc.code or exc.message})") from exc
        except ProviderUnavailable as exc:
            raise _unreachable(exc) from exc
        except ProviderRejected as exc:
            await self._advance(row["id"], "failed")
            raise ApiError(ErrorCode.PAYMENT_DECLINED, f"the payment provider refused the hold: {exc.message}") \
                from exc
        after = await self._apply_intent(row["id"], intent, event_at=None)
        if intent.status == "requires_action":
            raise ApiError(ErrorCode.PAYMENT_ACTION_REQUIRED, data={
                "id": row["public_id"], "client_secret": intent.client_secret, "payment_intent_id": intent.id})
        if after is None or after.status != "usable":
            raise ApiError(ErrorCode.PAYMENT_DECLINED, f"the hold was not made (provider status {intent.status})")
        return after

    async def cancel(self, user_id: int, public_id: str) -> None:
        """Row 7: release the hold. 404 (4) unknown or another user's; 409 (44) while a rent uses it.

        An unknown id answers 404 even when payments are not configured (nothing to release either way).
        """
        if not PUBLIC_ID.fullmatch(public_id) or \
                await self.db.run(lambda conn: store.guarantee_of_user(conn, user_id, public_id)) is None:
            raise ApiError(ErrorCode.NOT_FOUND, f"no bank guarantee {public_id}")
        provider = self._provider()
        topic = Topic.user(user_id)

        async def change(uow: UnitOfWork) -> tuple[asyncpg.Record, int | None]:
            row = await store.guarantee_of_user(uow.conn, user_id, public_id, lock=True)
            if row is None or row["status"] not in ("pending", "requires_action", "usable", "in_use", "settling"):
                raise ApiError(ErrorCode.NOT_FOUND, f"no bank guarantee {public_id}")
            if row["status"] in ("in_use", "settling") or await store.rent_using(uow.conn, row["id"]) is not None:
                raise ApiError(ErrorCode.GUARANTEE_IN_USE)
            job = None
            if row["payment_intent_id"] is not None:
                job = await store.insert_release_job(uow.conn, row["id"], cancel_key(row["id"]))
            updated = await store.set_intent_state(uow.conn, row["id"], status="canceled", payment_intent_id=None,
                                                   capture_before=None)
            await publish_guarantee(uow, updated)
            return updated, job

        row, job = await self.work.run(change, topics=[topic])
        if job is None:
            return
        # Released now when Stripe answers; else the payments worker retries the job (same idempotency key).
        try:
            await provider.release(row["payment_intent_id"], cancel_key(row["id"]))
        except ProviderError as exc:
            log.warning("guarantee %s: release left to the payments worker: %s", row["id"], exc.message)
            return
        await self.work.run(lambda uow: store.finish_job(uow.conn, job))

    # provider answers and events ----------------------------------------------------------------------------

    async def _advance(self, guarantee_id: int, status: str, *, payment_intent_id: str | None = None,
                       capture_before: datetime | None = None, event_at: datetime | None = None,
                       captured_amount: Decimal | None = None) -> Guarantee | None:
        """Move the guarantee to ``status`` if that is forward (and the event not older than the last one
        applied), with its ``guarantee.updated`` event; the guarantee as it is after."""
        user_id = await self.db.run(lambda conn: conn.fetchval("SELECT user_id FROM guarantees WHERE id = $1",
                                                               guarantee_id))
        if user_id is None:
            return None

        async def change(uow: UnitOfWork) -> Guarantee | None:
            return await advance_in(uow, guarantee_id, status, payment_intent_id=payment_intent_id,
                                    capture_before=capture_before, event_at=event_at,
                                    captured_amount=captured_amount)

        return await self.work.run(change, topics=[Topic.user(user_id)])

    async def _apply_intent(self, guarantee_id: int, intent: PaymentIntent, *,
                            event_at: datetime | None) -> Guarantee | None:
        status = FROM_INTENT.get(intent.status)
        if status is None:  # processing, requires_confirmation: nothing to say yet
            return None
        captured = from_minor(intent.amount_received, intent.currency) if status == "captured" else None
        return await self._advance(guarantee_id, status, payment_intent_id=intent.id,
                                   capture_before=intent.capture_before, event_at=event_at,
                                   captured_amount=captured)

    async def webhook(self, payload: bytes, signature: str | None) -> None:
        """Check ``Stripe-Signature`` over the raw body (before anything is parsed), then apply the event once.

        Raises ``WebhookRefused`` (400, nothing applied) for a bad, missing or stale signature or a body that
        is not an event; ``ApiError`` 501 (45) when payments are not configured.
        """
        provider = self._provider()
        secret = self.config.webhook_secret or ""
        try:
            stripe.WebhookSignature.verify_header(payload, signature, secret, WEBHOOK_TOLERANCE_SECONDS)
            stamp = int(str(signature).split("t=", 1)[1].split(",", 1)[0])
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError, IndexError) as exc:
            raise WebhookRefused(f"invalid Stripe-Signature: {exc}") from None
        if stamp > time.time() + WEBHOOK_TOLERANCE_SECONDS:
            raise WebhookRefused("invalid Stripe-Signature: timestamp in the future")
        try:
            event = json.loads(payload)
            event_id, event_type, created = event["id"], event["type"], event["created"]
            obj = event["data"]["object"]
            if not (isinstance(event_id, str) and isinstance(event_type, str) and isinstance(obj, dict)
                    and isinstance(created, int) and isinstance(obj.get("id"), str)):
                raise TypeError("not an event")
        except (ValueError, KeyError, TypeError) as exc:
            raise WebhookRefused(f"not a Stripe event: {exc}") from None
        event_at = datetime.fromtimestamp(created, UTC)
        if event_type.startswith("payment_intent."):
            await self._payment_intent_event(event_id, event_type, obj, event_at)
        elif event_type == "setup_intent.succeeded":
            await self._setup_event(provider, event_id, event_type, obj)
        else:
            await self.work.run(lambda uow: store.record_event(uow.conn, event_id, event_type))

    async def _payment_intent_event(self, event_id: str, event_type: str, obj: dict[str, Any],
                                    event_at: datetime) -> None:
        intent = payment_intent_from(obj)
        guarantee_id = await self._guarantee_of_intent(intent)
        status = {
            "payment_intent.amount_capturable_updated": "usable",
            "payment_intent.requires_action": "requires_action",
            "payment_intent.payment_failed": "failed",
            "payment_intent.canceled": "released",
            "payment_intent.succeeded": "captured",
        }.get(event_type) or FROM_INTENT.get(intent.status)
        if guarantee_id is None or status is None:
            await self.work.run(lambda uow: store.record_event(uow.conn, event_id, event_type))
            return
        user_id = await self.db.run(lambda conn: conn.fetchval("SELECT user_id FROM guarantees WHERE id = $1",
                                                               guarantee_id))
        captured = from_minor(intent.amount_received, intent.currency) if status == "captured" else None

        async def change(uow: UnitOfWork) -> None:
            if not await store.record_event(uow.conn, event_id, event_type):
                return  # applied before
            await advance_in(uow, guarantee_id, status, payment_intent_id=intent.id,
                             capture_before=intent.capture_before if status == "usable" else None,
                             event_at=event_at, captured_amount=captured)

        await self.work.run(change, topics=[Topic.user(user_id)])

    async def _guarantee_of_intent(self, intent: PaymentIntent) -> int | None:
        row = await self.db.run(lambda conn: store.guarantee_of_intent(conn, intent.id))
        if row is not None:
            return int(row["id"])
        # The event came before the answer of the hold was written: the metadata names the guarantee.
        raw = intent.metadata.get("knot_guarantee_id", "")
        if not raw.isdigit() or len(raw) > 18:
            return None
        found = await self.db.run(lambda conn: store.guarantee(conn, int(raw)))
        if found is None or found["payment_intent_id"] not in (None, intent.id):
            return None
        return int(found["id"])

    async def _setup_event(self, provider: StripeProvider, event_id: str, event_type: str,
                           obj: dict[str, Any]) -> None:
        customer = obj.get("customer")
        user_id = await self.db.run(lambda conn: store.user_of_customer(conn, customer)) \
            if isinstance(customer, str) else None
        method = obj.get("payment_method")
        card: Card | None = None
        if user_id is not None and isinstance(method, dict) and method.get("type") == "card":
            card = card_from(method)
        elif user_id is not None and isinstance(method, str):
            try:
                card = await provider.card(method)
            except ProviderRejected:
                card = None
            # ProviderUnavailable passes on: 502, Stripe sends the event again later.

        async def change(uow: UnitOfWork) -> None:
            if not await store.record_event(uow.conn, event_id, event_type) or card is None or user_id is None:
                return
            await store.save_instance(
                uow.conn, user_id, CARD_METHOD_ID, card.payment_method_id, brand=card.brand, last4=card.last4,
                exp_month=card.exp_month, exp_year=card.exp_year, networks=list(card.networks),
                preferred=card.preferred_network,
            )

        await self.work.run(change)


async def advance_in(
    uow: UnitOfWork, guarantee_id: int, status: str, *, payment_intent_id: str | None = None,
    capture_before: datetime | None = None, event_at: datetime | None = None, captured_amount: Decimal | None = None,
) -> Guarantee | None:
    """In ``uow`` (naming the rider's topic): move the guarantee to ``status`` when that is forward and the event
    (``event_at``) is not older than the newest applied; publish ``guarantee.updated`` when it moved.

    The one place a guarantee's status changes from the provider's side; the money jobs may call it too.
    Answers the guarantee as it is after (None when unknown).
    """
    row = await store.guarantee(uow.conn, guarantee_id, lock=True)
    if row is None:
        return None
    stale = event_at is not None and row["provider_event_at"] is not None and event_at < row["provider_event_at"]
    if stale or status not in FORWARD[row["status"]]:
        if payment_intent_id and row["payment_intent_id"] is None:  # still learn the PaymentIntent's id
            row = await store.set_intent_state(uow.conn, guarantee_id, status=row["status"],
                                               payment_intent_id=payment_intent_id, capture_before=None)
        return guarantee_of(row)
    updated = await store.set_intent_state(
        uow.conn, guarantee_id, status=status, payment_intent_id=payment_intent_id, capture_before=capture_before,
        event_at=event_at, captured_amount=captured_amount,
    )
    await publish_guarantee(uow, updated)
    return guarantee_of(updated)
