"""A thin typed wrapper of Stripe's official SDK: the few calls the payments domain makes, and nothing else.

Every call is the SDK's ``*_async`` form through its ``HTTPXClient``, which runs natively on Trio (httpx
and anyio): no thread, no asyncio loop. What comes back is read into small frozen dataclasses here, so the
rest of the service never touches a ``StripeObject``.

Choices:

- Every create (customer, SetupIntent, PaymentIntent) and every capture and cancel carries an idempotency
  key that the CALLER derives from our own ids (``*_key`` below): the same key sent again after a crash, a
  timeout or an outage gets Stripe's first answer, so a retry never holds or charges twice. Stripe keeps keys
  24 hours; a job retried later than that must read the PaymentIntent before acting again (the jobs do).
- Errors become three exceptions: ``CardDeclined`` (402 from Stripe: declined, failed authentication),
  ``ProviderUnavailable`` (no connection, a timeout, a 5xx, rate limited: worth retrying; 502 code 45 to
  a rider), ``ProviderRejected`` (any other 4xx: a request Stripe will never accept as sent, such as an
  unknown payment method, a PaymentIntent in the wrong state or our key refused). The SDK retries
  connection errors itself ``max_network_retries`` times, with the same idempotency key.
- Amounts cross this boundary in the currency's minor unit (``to_minor``/``from_minor``): cents for EUR,
  whole yen for JPY, thousandths for the three-decimal currencies; our database keeps ``numeric(12, 3)``.
- ``capture_before``: the deadline for capturing a hold is the charge's
  ``payment_method_details.card.capture_before`` when Stripe gives it, else the PaymentIntent's creation
  plus 7 days (Stripe's default for online card payments); test servers give none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import stripe

from ..config import StripeConfig

log = logging.getLogger(__name__)

#: Without the provider's own deadline, an uncaptured hold is cancelled by Stripe this long after its creation.
DEFAULT_HOLD_DAYS = 7

#: ISO 4217 currencies whose Stripe amounts have no minor unit, and those with three decimals.
ZERO_DECIMAL = frozenset({"bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd",
                          "vuv", "xaf", "xof", "xpf"})
THREE_DECIMAL = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


class ProviderError(Exception):
    """A call to the payment provider that did not do what was asked."""

    def __init__(self, message: str, *, code: str | None = None, payment_intent_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.payment_intent_id = payment_intent_id


class ProviderUnavailable(ProviderError):
    """Stripe could not be reached or failed on its side (timeout, 5xx, 429): the same call may be retried."""


class CardDeclined(ProviderError):
    """The card was declined, or its authentication failed (Stripe's 402)."""


class ProviderRejected(ProviderError):
    """Stripe refused the request as sent (a 4xx other than 402 and 429): retrying it as is will not help."""


# amounts ---------------------------------------------------------------------------------------------------

def _exponent(currency: str) -> int:
    code = currency.lower()
    return 0 if code in ZERO_DECIMAL else 3 if code in THREE_DECIMAL else 2


def to_minor(amount: Decimal, currency: str) -> int:
    """``Decimal("350.000")``, "EUR" -> 35000 (rounded half up to the currency's minor unit)."""
    exponent = _exponent(currency)
    return int((amount * (10 ** exponent)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def from_minor(amount: int, currency: str) -> Decimal:
    """35000, "EUR" -> ``Decimal("350.000")`` (three decimals, as the database and the apps have them)."""
    return (Decimal(amount) / (10 ** _exponent(currency))).quantize(Decimal("0.001"))


# what the calls answer ----------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Card:
    """A saved card (a Stripe PaymentMethod of type card), as row 6 shows it."""

    payment_method_id: str
    customer_id: str | None
    brand: str | None
    last4: str | None
    exp_month: int | None
    exp_year: int | None
    networks: tuple[str, ...]
    preferred_network: str | None


@dataclass(frozen=True, slots=True)
class SetupIntent:
    id: str
    status: str  # requires_payment_method, requires_confirmation, requires_action, processing, canceled, succeeded
    customer_id: str | None
    client_secret: str | None
    payment_method_id: str | None
    card: Card | None  # when the payment method came expanded


@dataclass(frozen=True, slots=True)
class PaymentIntent:
    id: str
    status: str  # requires_payment_method, requires_confirmation, requires_action, processing, requires_capture,
    #              canceled, succeeded
    amount: int  # minor units
    amount_capturable: int
    amount_received: int
    currency: str
    customer_id: str | None
    payment_method_id: str | None
    client_secret: str | None
    created: datetime
    capture_before: datetime  # the provider's, else created + 7 days
    metadata: Mapping[str, str]
    error_code: str | None  # last_payment_error.code (decline_code when given)


def _id(value: Any) -> str | None:
    """An id field that may come expanded (an object) or not (a string)."""
    if isinstance(value, dict):
        found = value.get("id")
        return found if isinstance(found, str) else None
    return value if isinstance(value, str) else None


def _timestamp(value: Any) -> datetime | None:
    return datetime.fromtimestamp(value, UTC) if isinstance(value, int) and not isinstance(value, bool) else None


def card_from(data: Mapping[str, Any]) -> Card:
    """A PaymentMethod's JSON (SDK object's ``to_dict()`` or a webhook's ``data.object``) as a ``Card``."""
    card = data.get("card") or {}
    networks = card.get("networks") or {}
    available = tuple(n for n in networks.get("available") or () if isinstance(n, str))
    brand = card.get("brand") if isinstance(card.get("brand"), str) else None
    return Card(
        payment_method_id=str(data["id"]),
        customer_id=_id(data.get("customer")),
        brand=brand,
        last4=card.get("last4") if isinstance(card.get("last4"), str) else None,
        exp_month=card.get("exp_month") if isinstance(card.get("exp_month"), int) else None,
        exp_year=card.get("exp_year") if isinstance(card.get("exp_year"), int) else None,
        networks=available or ((brand,) if brand else ()),
        preferred_network=networks.get("preferred") if isinstance(networks.get("preferred"), str) else None,
    )


def setup_intent_from(data: Mapping[str, Any]) -> SetupIntent:
    method = data.get("payment_method")
    return SetupIntent(
        id=str(data["id"]),
        status=str(data.get("status")),
        customer_id=_id(data.get("customer")),
        client_secret=data.get("client_secret"),
        payment_method_id=_id(method),
        card=card_from(method) if isinstance(method, dict) and method.get("type") == "card" else None,
    )


def payment_intent_from(data: Mapping[str, Any]) -> PaymentIntent:
    """A PaymentIntent's JSON (from a call, or a webhook's ``data.object``) as a ``PaymentIntent``."""
    created = _timestamp(data.get("created")) or datetime.now(UTC)
    charge = data.get("latest_charge")
    deadline = None
    if isinstance(charge, dict):
        details = (charge.get("payment_method_details") or {}).get("card") or {}
        deadline = _timestamp(details.get("capture_before"))
    error = data.get("last_payment_error") or {}
    metadata = data.get("metadata") or {}
    return PaymentIntent(
        id=str(data["id"]),
        status=str(data.get("status")),
        amount=int(data.get("amount") or 0),
        amount_capturable=int(data.get("amount_capturable") or 0),
        amount_received=int(data.get("amount_received") or 0),
        currency=str(data.get("currency") or ""),
        customer_id=_id(data.get("customer")),
        payment_method_id=_id(data.get("payment_method")),
        client_secret=data.get("client_secret"),
        created=created,
        capture_before=deadline or created + timedelta(days=DEFAULT_HOLD_DAYS),
        metadata={str(k): str(v) for k, v in metadata.items()} if isinstance(metadata, dict) else {},
        error_code=error.get("decline_code") or error.get("code") if isinstance(error, dict) else None,
    )


# idempotency keys: derived from our ids, never random -------------------------------------------------------

def customer_key(user_id: int) -> str:
    return f"knot-customer-{user_id}"


def setup_key(user_id: int, nonce: str) -> str:
    """A SetupIntent's key: the user, and a nonce the caller keeps with its request."""
    return f"knot-setup-{user_id}-{nonce}"


def hold_key(guarantee_id: int) -> str:
    return f"knot-hold-{guarantee_id}"


def cancel_key(guarantee_id: int) -> str:
    """The rider's cancel of a guarantee (row 7)."""
    return f"knot-cancel-{guarantee_id}"


def job_key(job_id: int, kind: str) -> str:
    """A capture or release job's key (``payment_jobs.idempotency_key``): ``kind`` is capture or release."""
    return f"knot-{kind}-job-{job_id}"


# the client ----------------------------------------------------------------------------------------------------

def _translate(exc: stripe.StripeError) -> ProviderError:
    error = exc.error
    pi: Any = getattr(error, "payment_intent", None) if error is not None else None
    pi_id = _id(pi.to_dict() if pi is not None and hasattr(pi, "to_dict") else pi)
    message = exc.user_message or str(exc) or type(exc).__name__
    code = exc.code
    if isinstance(exc, stripe.CardError):
        decline = getattr(error, "decline_code", None) if error is not None else None
        return CardDeclined(message, code=decline or code, payment_intent_id=pi_id)
    if isinstance(exc, stripe.APIConnectionError | stripe.RateLimitError | stripe.APIError):
        return ProviderUnavailable(message, code=code, payment_intent_id=pi_id)
    status = exc.http_status or 0
    if status >= 500 or status in (0, 409):  # 409: the same idempotency key still in flight
        return ProviderUnavailable(message, code=code, payment_intent_id=pi_id)
    return ProviderRejected(message, code=code, payment_intent_id=pi_id)


class StripeProvider:
    """The calls to Stripe of this service (see the module's docstring for the choices)."""

    def __init__(self, config: StripeConfig) -> None:
        if not config.api_key:
            raise ValueError("StripeProvider needs an API key (payments not configured)")
        self.config = config
        self._http = stripe.HTTPXClient(timeout=config.timeout)
        base = {"api": config.api_base} if config.api_base else None
        self._client = stripe.StripeClient(
            config.api_key, base_addresses=base,  # type: ignore[arg-type]
            http_client=self._http, max_network_retries=config.max_network_retries,
        )

    async def aclose(self) -> None:
        await self._http.close_async()

    async def _call(self, what: str, call: Any) -> dict[str, Any]:
        try:
            found = await call
        except stripe.StripeError as exc:
            translated = _translate(exc)
            log.info("stripe %s: %s (%s)", what, translated.message, type(translated).__name__)
            raise translated from exc
        result: dict[str, Any] = found.to_dict()
        return result

    # customers and saved cards ------------------------------------------------------------------------------

    async def create_customer(self, user_id: int, email: str | None) -> str:
        """A Customer for the user (the key makes a retry return the same one); its id."""
        params: dict[str, Any] = {"metadata": {"knot_user_id": str(user_id)}}
        if email:
            params["email"] = email
        found = await self._call("create customer", self._client.v1.customers.create_async(
            params, {"idempotency_key": customer_key(user_id)}))  # type: ignore[arg-type]
        return str(found["id"])

    async def create_setup_intent(self, customer_id: str, user_id: int, idempotency_key: str) -> SetupIntent:
        """A SetupIntent that saves a card on the customer for later holds (usage off_session)."""
        params: dict[str, Any] = {"customer": customer_id, "usage": "off_session", "payment_method_types": ["card"],
                                  "metadata": {"knot_user_id": str(user_id)}}
        found = await self._call("create setup intent", self._client.v1.setup_intents.create_async(
            params, {"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return setup_intent_from(found)

    async def setup_intent(self, setup_intent_id: str) -> SetupIntent:
        """The SetupIntent, with its payment method expanded (its card)."""
        found = await self._call("retrieve setup intent", self._client.v1.setup_intents.retrieve_async(
            setup_intent_id, {"expand": ["payment_method"]}))
        intent = setup_intent_from(found)
        if intent.card is None and intent.payment_method_id:
            return SetupIntent(intent.id, intent.status, intent.customer_id, intent.client_secret,
                               intent.payment_method_id, await self.card(intent.payment_method_id))
        return intent

    async def card(self, payment_method_id: str) -> Card:
        found = await self._call("retrieve payment method",
                                 self._client.v1.payment_methods.retrieve_async(payment_method_id))
        return card_from(found)

    # holds --------------------------------------------------------------------------------------------------

    async def hold(
        self, *, customer_id: str, payment_method_id: str, amount: int, currency: str, idempotency_key: str,
        metadata: Mapping[str, str], network: str | None = None,
    ) -> PaymentIntent:
        """Create and confirm a manual-capture PaymentIntent of ``amount`` (minor units) with the saved card.

        Answers the PaymentIntent: ``requires_capture`` (held), ``requires_action`` (3-D Secure: the app
        finishes it with ``client_secret``), or another status. A decline raises ``CardDeclined``.
        ``network`` asks for a card network (``cartes_bancaires``) where the card has several.
        """
        params: dict[str, Any] = {
            "amount": amount, "currency": currency.lower(), "customer": customer_id,
            "payment_method": payment_method_id, "payment_method_types": ["card"], "capture_method": "manual",
            "confirm": True, "metadata": dict(metadata), "expand": ["latest_charge"],
        }
        if network:
            params["payment_method_options"] = {"card": {"network": network}}
        found = await self._call("hold", self._client.v1.payment_intents.create_async(
            params, {"idempotency_key": idempotency_key}))  # type: ignore[arg-type]
        return payment_intent_from(found)

    async def payment_intent(self, payment_intent_id: str) -> PaymentIntent:
        found = await self._call("retrieve payment intent", self._client.v1.payment_intents.retrieve_async(
            payment_intent_id, {"expand": ["latest_charge"]}))
        return payment_intent_from(found)

    async def capture(self, payment_intent_id: str, amount: int, idempotency_key: str) -> PaymentIntent:
        """Capture ``amount`` (minor units, at most the amount held) of a held PaymentIntent; Stripe releases
        the rest of the hold at once (a partial capture is final)."""
        found = await self._call("capture", self._client.v1.payment_intents.capture_async(
            payment_intent_id, {"amount_to_capture": amount, "expand": ["latest_charge"]},
            {"idempotency_key": idempotency_key}))
        return payment_intent_from(found)

    async def release(self, payment_intent_id: str, idempotency_key: str) -> PaymentIntent:
        """Cancel the PaymentIntent: the hold is released. One already canceled is answered as it is."""
        try:
            found = await self._call("release", self._client.v1.payment_intents.cancel_async(
                payment_intent_id, {}, {"idempotency_key": idempotency_key}))
        except ProviderRejected:
            current = await self.payment_intent(payment_intent_id)
            if current.status == "canceled":
                return current
            raise
        return payment_intent_from(found)
