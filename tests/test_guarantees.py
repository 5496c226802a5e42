"""Bank guarantees against a real Stripe-compatible server (localstripe over HTTP, tests/stripe_server.py).

Save a card (SetupIntent), hold, list, cancel, decline, 3-D Secure pending then confirmed by a signed
webhook, signatures refused with nothing applied, the same event twice applied once, another rider's
guarantee answering 404, hostile bodies answering 400.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any

import pytest

from knot_rt.config import Settings
from tests.feed_client import rider_seeing
from tests.stripe_server import (
    CARD_3DS,
    CARD_DECLINED,
    CARD_OK,
    StripeServer,
    event_body,
    signature_header,
)
from tests.support import Harness, bearer, open_test_session

WEBHOOK = "/api/payments/stripe/webhook"
GUARANTEES = "/api/application/bank-guarantees"


@pytest.fixture
def settings(settings: Settings, stripe_server: StripeServer) -> Settings:
    return replace(settings, stripe=stripe_server.config())


@dataclass
class Rider:
    user_id: int
    headers: dict[str, str]


@dataclass
class Site:
    network: int
    free_network: int
    vehicle: int
    free_vehicle: int
    rider: Rider


async def make_site(harness: Harness) -> Site:
    network = await harness.make.network("Paid", rules={"min_guarantee": Decimal("350")})
    free_network = await harness.make.network("Free")
    vehicle = await harness.make.vehicle(network, 501)
    free_vehicle = await harness.make.vehicle(free_network, 502)
    user = await rider_seeing(harness, network)
    await harness.make.show_in(free_network, await harness.make.app_label_once("knot"))
    return Site(network, free_network, vehicle, free_vehicle,
                Rider(user, bearer(await open_test_session(harness, user))))


async def other_rider(harness: Harness, email: str) -> Rider:
    user = await harness.create_user(email, app_label=await harness.make.app_label_once("knot"))
    return Rider(user, bearer(await open_test_session(harness, user)))


async def save_card(harness: Harness, stripe_server: StripeServer, rider: Rider, number: str = CARD_OK) -> int:
    """The app's way: our setup route, Stripe's confirm (3-D Secure passed when asked), our save route."""
    client = harness.client
    setup = await client.post(f"{GUARANTEES}/payment-methods/setup", headers=rider.headers)
    assert setup.status_code == 200, setup.text
    started = setup.json()["data"]
    confirmed = await stripe_server.confirm_setup(started["setup_intent_id"], started["client_secret"], number)
    if confirmed.get("status") == "requires_action":
        await stripe_server.finish_setup(started["setup_intent_id"], started["client_secret"])
    saved = await client.post(f"{GUARANTEES}/payment-methods", headers=rider.headers,
                              json={"setup_intent_id": started["setup_intent_id"]})
    assert saved.status_code == 200, saved.text
    card_id: int = saved.json()["data"]["id"]
    return card_id


async def guarantee_row(harness: Harness, public_id: str) -> dict[str, Any]:
    row = await harness.db.run(lambda conn: conn.fetchrow("SELECT * FROM guarantees WHERE public_id = $1", public_id))
    assert row is not None
    return dict(row)


async def guarantee_events(harness: Harness, user_id: int) -> list[dict[str, Any]]:
    rows = await harness.db.run(lambda conn: conn.fetch(
        "SELECT data FROM feed_events WHERE topic = $1 AND event = 'guarantee.updated' ORDER BY seq", f"user:{user_id}"))
    return [json.loads(r["data"]) if isinstance(r["data"], str) else dict(r["data"]) for r in rows]


async def post_event(harness: Harness, body: bytes, header: str | None) -> Any:
    headers = {"Content-Type": "application/json"}
    if header is not None:
        headers["Stripe-Signature"] = header
    return await harness.client.post(WEBHOOK, content=body, headers=headers)


async def test_save_card_hold_list_and_cancel(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    client, rider = harness.client, site.rider
    card_id = await save_card(harness, stripe_server, rider)

    methods = await client.get(f"{GUARANTEES}/payment-methods", params={"vehicle_id": site.vehicle},
                               headers=rider.headers)
    assert methods.status_code == 200, methods.text
    body = methods.json()
    assert body["providers_setup_info"] == {"stripe": {"public_key": "pk_test_knot"}}
    [method] = body["data"]
    assert (method["method_id"], method["type"], method["provider"]) == (1, "card", "stripe")
    [instance] = method["instances"]
    assert instance["id"] == card_id and instance["default"] is True
    assert instance["details"]["alias"] == "XXXX XXXX XXXX 4242"
    assert instance["details"]["expiration_date"] == "1234"
    assert instance["details"]["card_provider"] == "visa"

    made = await client.post(GUARANTEES, headers=rider.headers,
                             json={"vehicle_id": site.vehicle, "payment_method_id": 1,
                                   "user_payment_method_id": card_id, "keep_after_trip": False})
    assert made.status_code == 200, made.text
    assert made.json() == {"code": 0}

    listed = await client.get(GUARANTEES, headers=rider.headers)
    [held] = listed.json()["data"]
    assert held["amount"] == "350.000" and held["currency"] == "EUR" and held["being_used"] is False
    assert isinstance(held["id"], str) and held["exp_date"] and held["refund_date"]
    row = await guarantee_row(harness, held["id"])
    assert row["status"] == "usable"
    intent = await stripe_server.payment_intent(row["payment_intent_id"])
    assert (intent["status"], intent["amount"], intent["capture_method"]) == ("requires_capture", 35000, "manual")

    # The same request again: the usable guarantee answers, no second hold.
    again = await client.post(GUARANTEES, headers=rider.headers, json={"vehicle_id": site.vehicle})
    assert again.json() == {"code": 0}
    assert len((await client.get(GUARANTEES, headers=rider.headers)).json()["data"]) == 1

    # Another rider sees nothing of it and cannot cancel it.
    other = await other_rider(harness, "other@example.com")
    assert (await client.get(GUARANTEES, headers=other.headers)).json()["data"] == []
    refused = await client.delete(f"{GUARANTEES}/{held['id']}", headers=other.headers)
    assert (refused.status_code, refused.json()["code"]) == (404, 4)

    cancelled = await client.delete(f"{GUARANTEES}/{held['id']}", headers=rider.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (await client.get(GUARANTEES, headers=rider.headers)).json()["data"] == []
    assert (await stripe_server.payment_intent(row["payment_intent_id"]))["status"] == "canceled"
    assert (await guarantee_row(harness, held["id"]))["status"] == "canceled"
    jobs = await harness.db.run(lambda conn: conn.fetch("SELECT kind, state FROM payment_jobs"))
    assert [(j["kind"], j["state"]) for j in jobs] == [("release", "done")]
    statuses = [e["status"] for e in await guarantee_events(harness, rider.user_id)]
    assert statuses == ["pending", "usable", "canceled"]
    gone = await client.delete(f"{GUARANTEES}/{held['id']}", headers=rider.headers)
    assert (gone.status_code, gone.json()["code"]) == (404, 4)


async def test_guarantee_in_use_is_not_cancelled(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    await save_card(harness, stripe_server, site.rider)
    await harness.client.post(GUARANTEES, headers=site.rider.headers, json={"vehicle_id": site.vehicle})
    [held] = (await harness.client.get(GUARANTEES, headers=site.rider.headers)).json()["data"]
    # What the rents domain does when it ties a rent to the guarantee (written behind the service here).
    await harness.db.run(lambda conn: conn.execute(
        "UPDATE guarantees SET status = 'in_use' WHERE public_id = $1", held["id"]))
    refused = await harness.client.delete(f"{GUARANTEES}/{held['id']}", headers=site.rider.headers)
    assert (refused.status_code, refused.json()["code"]) == (409, 44)
    [listed] = (await harness.client.get(GUARANTEES, headers=site.rider.headers)).json()["data"]
    assert listed["being_used"] is True


async def test_declined_hold(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    card_id = await save_card(harness, stripe_server, site.rider, CARD_DECLINED)
    declined = await harness.client.post(GUARANTEES, headers=site.rider.headers,
                                         json={"vehicle_id": site.vehicle, "user_payment_method_id": card_id})
    assert (declined.status_code, declined.json()["code"]) == (402, 42)
    assert (await harness.client.get(GUARANTEES, headers=site.rider.headers)).json()["data"] == []
    statuses = await harness.db.run(lambda conn: conn.fetch("SELECT status FROM guarantees"))
    assert [r["status"] for r in statuses] == ["failed"]


async def test_three_d_secure_then_signed_webhook(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    await save_card(harness, stripe_server, site.rider, CARD_3DS)
    pending = await harness.client.post(GUARANTEES, headers=site.rider.headers, json={"vehicle_id": site.vehicle})
    assert (pending.status_code, pending.json()["code"]) == (402, 43)
    data = pending.json()["data"]
    assert data["client_secret"].startswith(data["payment_intent_id"])
    assert (await guarantee_row(harness, data["id"]))["status"] == "requires_action"
    assert (await harness.client.get(GUARANTEES, headers=site.rider.headers)).json()["data"] == []

    # The rider passes 3-D Secure in the app; Stripe tells us by the webhook.
    intent = await stripe_server.authenticate(data["payment_intent_id"], data["client_secret"])
    assert intent["status"] == "requires_capture"
    now = int(time.time())
    held = event_body("evt_held", "payment_intent.amount_capturable_updated", intent, created=now)

    # Refused, nothing applied: no signature, a wrong secret, a stale one, a tampered body.
    for header, body in (
        (None, held),
        (signature_header(held, "whsec_wrong"), held),
        (signature_header(held, timestamp=now - 301), held),
        (signature_header(held, timestamp=now + 3600), held),
        ("t=abc,v1=zz", held),
        (signature_header(held), held.replace(b"evt_held", b"evt_hel2")),
    ):
        answer = await post_event(harness, body, header)
        assert (answer.status_code, answer.json()["code"]) == (400, 2), answer.text
    assert (await guarantee_row(harness, data["id"]))["status"] == "requires_action"
    assert await harness.db.run(lambda conn: conn.fetchval("SELECT count(*) FROM payment_events")) == 0

    # Signed right (among other v1 values, as during a secret's rotation): applied.
    accepted = await post_event(harness, held, signature_header(held, extra_v1=("00" * 32,)))
    assert accepted.status_code == 200, accepted.text
    [listed] = (await harness.client.get(GUARANTEES, headers=site.rider.headers)).json()["data"]
    assert listed["id"] == data["id"]
    events_after_first = await guarantee_events(harness, site.rider.user_id)

    # The same event again: applied once.
    again = await post_event(harness, held, signature_header(held))
    assert again.status_code == 200
    assert await guarantee_events(harness, site.rider.user_id) == events_after_first

    # A late event of an earlier state (requires_action, failed) never moves it back.
    for event_id, kind in (("evt_late", "payment_intent.requires_action"),
                           ("evt_late_fail", "payment_intent.payment_failed")):
        late = event_body(event_id, kind, {**intent, "status": "requires_action"}, created=now - 10)
        assert (await post_event(harness, late, signature_header(late))).status_code == 200
    assert (await guarantee_row(harness, data["id"]))["status"] == "usable"
    assert [e["status"] for e in await guarantee_events(harness, site.rider.user_id)] == [
        "pending", "requires_action", "usable"]


async def test_card_saved_by_the_webhook(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    setup = (await harness.client.post(f"{GUARANTEES}/payment-methods/setup", headers=site.rider.headers)).json()
    intent = await stripe_server.confirm_setup(setup["data"]["setup_intent_id"], setup["data"]["client_secret"],
                                               CARD_OK)
    body = event_body("evt_setup", "setup_intent.succeeded", intent)
    assert (await post_event(harness, body, signature_header(body))).status_code == 200
    assert (await post_event(harness, body, signature_header(body))).status_code == 200
    methods = await harness.client.get(f"{GUARANTEES}/payment-methods", params={"vehicle_id": site.vehicle},
                                       headers=site.rider.headers)
    [instance] = methods.json()["data"][0]["instances"]
    assert instance["details"]["alias"] == "XXXX XXXX XXXX 4242"

    # Another rider may not record that SetupIntent's card.
    other = await other_rider(harness, "other@example.com")
    stolen = await harness.client.post(f"{GUARANTEES}/payment-methods", headers=other.headers,
                                       json={"setup_intent_id": setup["data"]["setup_intent_id"]})
    assert (stolen.status_code, stolen.json()["code"]) == (404, 4)


async def test_no_guarantee_needed_and_bad_input(harness: Harness, stripe_server: StripeServer) -> None:
    site = await make_site(harness)
    await save_card(harness, stripe_server, site.rider)
    free = await harness.client.post(GUARANTEES, headers=site.rider.headers, json={"vehicle_id": site.free_vehicle})
    assert (free.status_code, free.json()["code"]) == (409, 24)
    unknown = await harness.client.post(GUARANTEES, headers=site.rider.headers, json={"vehicle_id": 999_999})
    assert (unknown.status_code, unknown.json()["code"]) == (404, 4)
    for body in ({"vehicle_id": "x"}, {"vehicle_id": -1}, {"vehicle_id": 2**70}, [1, 2], "nope",
                 {"vehicle_id": site.vehicle, "payment_method_parameters": {"networks": "other"}}):
        answer = await harness.client.post(GUARANTEES, headers=site.rider.headers, json=body)
        assert (answer.status_code, answer.json()["code"]) == (400, 2), answer.text
    for raw in (b"\xff\xfe", b"{", b"[]", b'{"id": 1}'):
        answer = await post_event(harness, raw, signature_header(raw))
        assert (answer.status_code, answer.json()["code"]) == (400, 2), answer.text
    bad_id = await harness.client.post(f"{GUARANTEES}/payment-methods", headers=site.rider.headers,
                                       json={"setup_intent_id": "pi_123"})
    assert bad_id.status_code == 400


class TestUnconfigured:
    """No Stripe key: the payment routes answer 501 code 45, the rest of the app works."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return replace(settings, stripe=replace(settings.stripe, api_key=None))

    async def test_routes_answer_501(self, harness: Harness) -> None:
        site = await make_site(harness)
        client, headers = harness.client, site.rider.headers
        for method, path, body in (
            ("GET", GUARANTEES, None),
            ("POST", GUARANTEES, {"vehicle_id": site.vehicle}),
            ("GET", f"{GUARANTEES}/payment-methods?vehicle_id={site.vehicle}", None),
            ("POST", f"{GUARANTEES}/payment-methods/setup", None),
            ("POST", f"{GUARANTEES}/payment-methods", {"setup_intent_id": "seti_1"}),
        ):
            answer = await client.request(method, path, headers=headers, json=body)
            assert (answer.status_code, answer.json()["code"]) == (501, 45), (method, path, answer.text)
        unknown = await client.delete(f"{GUARANTEES}/abc", headers=headers)  # nothing to release: 404 as always
        assert (unknown.status_code, unknown.json()["code"]) == (404, 4)
        hook = await post_event(harness, b"{}", "t=1,v1=00")
        assert (hook.status_code, hook.json()["code"]) == (501, 45)
        assert (await client.get("/api/application/users", headers=headers)).status_code == 200
        assert (await client.get("/api/application/badges", headers=headers)).status_code == 200
