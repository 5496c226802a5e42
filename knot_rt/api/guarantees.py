"""Bank guarantees (ROUTES rows 4-7), saving a card for them, and Stripe's webhook.

How an app pays, in the order of the calls:

1. ``GET /bank-guarantees/payment-methods?vehicle_id=`` (row 6): the methods of the vehicle's network (a card
   through Stripe), the rider's saved cards (``instances``), and Stripe's publishable key.
2. No saved card yet: ``POST /bank-guarantees/payment-methods/setup`` gives a SetupIntent's ``client_secret``;
   the app confirms it with Stripe's SDK (the card never reaches us), then ``POST
   /bank-guarantees/payment-methods`` with its ``setup_intent_id`` records the card (the webhook
   ``setup_intent.succeeded`` records it too, should the app stop in between).
3. ``POST /bank-guarantees`` (row 5) holds the network's guarantee amount on a saved card. 402 code 43: the
   bank asks for 3-D Secure; the app finishes it with Stripe's SDK and ``data.client_secret``, and the
   guarantee becomes usable when Stripe's webhook says so (``guarantee.updated`` on the ``user`` topic).
4. ``GET /bank-guarantees`` (row 4) lists usable and in-use holds; ``DELETE /bank-guarantees/{id}`` (row 7)
   releases one.

Every route answers 501 code 45 when payments are not configured, 502 code 45 when Stripe cannot be reached.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from quart import Blueprint, request
from quart_schema import tag, validate_querystring, validate_request, validate_response

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..payments.service import WebhookRefused
from ..web.auth import caller_access, current_caller, require_user
from .models import Body, Data, Ok, PageQuery, Positive

bp = Blueprint("guarantees", __name__, url_prefix="/api/application")
webhook_bp = Blueprint("payments_webhook", __name__, url_prefix="/api/payments")

GuaranteeId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
SetupIntentId = Annotated[str, StringConstraints(pattern=r"^seti_[A-Za-z0-9_]{1,250}$")]
ShortText = Annotated[str, StringConstraints(max_length=255)]


class VehicleQuery(PageQuery):
    vehicle_id: Positive = Field(description="The vehicle to make a bank guarantee for (its network decides).")


class PaymentMethodParameters(BaseModel):
    """Row 5's ``UsePaymentMethodParameters``. Only ``networks`` is used (a card's network, where it has several)."""

    model_config = ConfigDict(extra="ignore")

    name: ShortText | None = None
    return_url: ShortText | None = None
    networks: Literal["cartes_bancaires", "mastercard", "visa"] | None = Field(
        default=None, description="The card network to use, for a card that has several.")
    bank: ShortText | None = None


class CreateGuaranteeBody(Body):
    vehicle_id: Positive = Field(description="The vehicle the guarantee is for: its network sets amount and currency.")
    payment_method_id: Positive | None = Field(default=None, description="Our payment method: 1, a card (Stripe).")
    user_payment_method_id: Positive | None = Field(
        default=None, description="The saved card (row 6's instance `id`) to hold on; the default card without it.")
    keep_after_trip: bool = Field(
        default=False, description="Kept three days after the trip (never beyond the provider's deadline), "
        "else released when the trip ends.")
    payment_method_parameters: PaymentMethodParameters | None = None


class SaveCardBody(Body):
    setup_intent_id: SetupIntentId = Field(description="The SetupIntent of `POST .../payment-methods/setup`, "
                                                       "confirmed by the app with Stripe.")


class GuaranteeOut(BaseModel):
    id: str = Field(description="The guarantee's identifier (a string).")
    amount: str = Field(description="The amount held, three decimals: \"350.000\".")
    currency: str
    date: datetime = Field(description="When it was made.")
    being_used: bool = Field(description="A current rent uses it.")
    exp_date: datetime | None = Field(description="The provider's deadline to capture it (then released).")
    refund_date: datetime | None = Field(description="When the hold goes back to the rider at the latest.")


class CardNetworks(BaseModel):
    available: list[str]
    preferred: str | None


class CardDetails(BaseModel):
    alias: str = Field(description="The masked card number: \"XXXX XXXX XXXX 4242\".")
    expiration_date: str = Field(description="MMYY.")
    card_provider: str
    networks: CardNetworks


class InstanceOut(BaseModel):
    id: int = Field(description="The saved card's id (`user_payment_method_id` of row 5).")
    details: CardDetails
    default: bool


class MethodOut(BaseModel):
    method_id: int
    type: str
    provider: str
    instances: list[InstanceOut]


class StripeSetupInfo(BaseModel):
    public_key: str | None


class ProvidersSetupInfo(BaseModel):
    stripe: StripeSetupInfo


class PaymentMethodsOut(BaseModel):
    code: int = 0
    data: list[MethodOut]
    providers_setup_info: ProvidersSetupInfo


class SetupOut(BaseModel):
    setup_intent_id: str
    client_secret: str = Field(description="For the app's Stripe SDK: confirm the SetupIntent with the card.")


async def _network_policy() -> Callable[[int], bool]:
    """The access policy's answer for the caller: may they use network ``network_id``."""
    access = await caller_access()
    catalog = services().catalog

    def may_use(network_id: int) -> bool:
        network = catalog.networks.get(network_id)
        return network is not None and access.may_use(network)

    return may_use


@bp.get("/bank-guarantees/payment-methods")
@tag(["Bank guarantees"])
@require_user
@validate_querystring(VehicleQuery)
@validate_response(PaymentMethodsOut)
async def payment_methods(query_args: VehicleQuery) -> PaymentMethodsOut:
    """Row 6: the payment methods usable for a guarantee on the vehicle's network, with the rider's saved cards.

    `providers_setup_info.stripe.public_key` is what the app's Stripe SDK needs to save a card (see
    `POST /bank-guarantees/payment-methods/setup`). 404 code 4: unknown vehicle, or one of a network the rider
    may not use. 501 code 45: payments not configured.
    """
    methods, setup = await services().payments.payment_methods(
        current_caller().user_id, query_args.vehicle_id, await _network_policy())
    return PaymentMethodsOut.model_validate({"data": methods, "providers_setup_info": setup})


@bp.post("/bank-guarantees/payment-methods/setup")
@tag(["Bank guarantees"])
@require_user
@validate_response(Data[SetupOut])
async def start_card_setup() -> Data[SetupOut]:
    """Begin saving a card (before row 5): a Stripe SetupIntent for the rider, and its `client_secret`.

    The app confirms it with Stripe's SDK and the publishable key of row 6 (the card number goes to Stripe,
    never here; 3-D Secure happens there), then calls `POST /bank-guarantees/payment-methods` with
    `setup_intent_id`. The saved card then appears in row 6's `instances`, and its `id` is row 5's
    `user_payment_method_id`.
    """
    started = await services().payments.start_setup(current_caller().user_id)
    return Data(data=SetupOut(setup_intent_id=started.setup_intent_id, client_secret=started.client_secret))


@bp.post("/bank-guarantees/payment-methods")
@tag(["Bank guarantees"])
@require_user
@validate_request(SaveCardBody)
@validate_response(Data[InstanceOut])
async def save_card(data: SaveCardBody) -> Data[InstanceOut]:
    """Record the card of a SetupIntent the app confirmed with Stripe (row 6's instance, as answered there).

    Only the rider's own SetupIntents (404 code 4 for another's or an unknown one); 402 code 43 while its
    3-D Secure is not done; 409 code 24 when it did not succeed. Saving the same card again answers it again.
    """
    card = await services().payments.save_card(current_caller().user_id, data.setup_intent_id)
    return Data(data=InstanceOut.model_validate(card.as_json()))


@bp.post("/bank-guarantees")
@tag(["Bank guarantees"])
@require_user
@validate_request(CreateGuaranteeBody)
@validate_response(Ok)
async def create_guarantee(data: CreateGuaranteeBody) -> Ok:
    """Row 5: hold the network's guarantee amount on a saved card (a manual-capture Stripe PaymentIntent).

    `{"code":0}`: held, the guarantee is usable (one already usable on that network answers so, without a
    second hold). 402 code 42: declined. 402 code 43: 3-D Secure needed; `data.client_secret` (and `data.id`,
    the guarantee) let the app finish it with Stripe's SDK; the guarantee becomes usable when Stripe tells us
    (`guarantee.updated` on the `user` topic). 409 code 24: the network needs no guarantee (its amount is 0:
    nothing is held), or no saved card. 404 code 4: unknown vehicle or saved card. 502 code 45: Stripe
    unreachable (the same request again never holds twice).
    """
    may_use = await _network_policy()
    params = data.payment_method_parameters
    await services().payments.create_guarantee(
        current_caller().user_id, data.vehicle_id, instance_id=data.user_payment_method_id,
        method_id=data.payment_method_id, keep_after_trip=data.keep_after_trip,
        network_choice=params.networks if params else None, may_use=may_use,
    )
    return Ok()


@bp.get("/bank-guarantees")
@tag(["Bank guarantees"])
@require_user
@validate_response(Data[list[GuaranteeOut]])
async def list_guarantees() -> Data[list[GuaranteeOut]]:
    """Row 4: the rider's usable and in-use guarantees, newest first."""
    found = await services().payments.guarantees(current_caller().user_id)
    return Data(data=[GuaranteeOut.model_validate(g.as_json()) for g in found])


@bp.delete("/bank-guarantees/<string(maxlength=128):guarantee_id>")
@tag(["Bank guarantees"])
@require_user
@validate_response(Ok)
async def cancel_guarantee(guarantee_id: str) -> Ok:
    """Row 7: release the hold now. 409 code 44 while a rent uses it; 404 code 4 for an unknown guarantee,
    another rider's, or one already released (even when payments are not configured)."""
    await services().payments.cancel(current_caller().user_id, guarantee_id)
    return Ok()


@webhook_bp.post("/stripe/webhook")
@tag(["Payments"])
@validate_response(Ok)
async def stripe_webhook() -> Ok:
    """Stripe's events (public). The `Stripe-Signature` header (HMAC-SHA256 with the webhook secret, any of
    its `v1` values, 300 s tolerance) is checked over the raw body before anything is read; a bad or stale one
    answers 400 code 2 and nothing is applied. Each event is applied once (its id is kept); events out of order
    never move a guarantee back."""
    payload = await request.get_data(cache=False, as_text=False)
    if not isinstance(payload, bytes):
        raise ApiError(ErrorCode.INVALID_INPUT, "expected a raw body")
    try:
        await services().payments.webhook(payload, request.headers.get("Stripe-Signature"))
    except WebhookRefused as exc:
        raise ApiError(ErrorCode.INVALID_INPUT, str(exc)) from None
    return Ok()
