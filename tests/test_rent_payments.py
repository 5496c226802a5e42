"""The money side of rents against localstripe: a rent holds the rider's guarantee, its end captures the price
(the rest of the hold released) or releases the hold, through the payments worker's durable jobs.

Rents are made as ``tests/test_rents.py`` makes them (the services, the station simulator, the rider's app
over HTTP); guarantees through the guarantee routes (a card saved through a SetupIntent the test confirms at
localstripe, as the app's Stripe SDK would). What the provider did is read back from localstripe itself.
Outages go through a loopback TCP proxy in front of localstripe, stopped and started again on its port.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from knot_rt.config import Settings
from knot_rt.payments.provider import StripeProvider
from knot_rt.payments.worker import PaymentWorker
from tests.stripe_server import API_KEY, CARD_OK, StripeServer, event_body, free_port, signature_header
from tests.support import Harness, bearer, eventually, eventually_value, serving
from tests.tcp_proxy import TcpProxy
from tests.test_rents import City, failed, make_city, names, raw_station, simulated, unlock, unlock_at, user_feed


@pytest.fixture
def settings(settings: Settings, stripe_server: StripeServer) -> Settings:
    return replace(settings, station_call_timeout=1.0, rent_unlock_seconds=2.0, stripe=stripe_server.config(),
                   payment_poll_seconds=0.2, payment_retry_seconds=0.2)


# --------------------------------------------------------------------------
# helpers


async def save_card(harness: Harness, stripe: StripeServer, token: str, number: str = CARD_OK) -> int:
    """The rider saves a card: our SetupIntent, confirmed at the provider as the app's SDK does, then recorded."""
    started = await harness.client.post("/api/application/bank-guarantees/payment-methods/setup",
                                        headers=bearer(token))
    assert started.status_code == 200, started.text
    setup = started.json()["data"]
    await stripe.confirm_setup(setup["setup_intent_id"], setup["client_secret"], number)
    saved = await harness.client.post("/api/application/bank-guarantees/payment-methods",
                                      json={"setup_intent_id": setup["setup_intent_id"]}, headers=bearer(token))
    assert saved.status_code == 200, saved.text
    card: int = saved.json()["data"]["id"]
    return card


async def hold(harness: Harness, stripe: StripeServer, token: str, vehicle_id: int, *, keep: bool = False) -> int:
    """A usable guarantee of the rider for the vehicle's network (row 5); its id (ours, not the public one)."""
    card = await save_card(harness, stripe, token)
    made = await harness.client.post("/api/application/bank-guarantees", headers=bearer(token), json={
        "vehicle_id": vehicle_id, "payment_method_id": 1, "user_payment_method_id": card, "keep_after_trip": keep})
    assert made.status_code == 200, made.text
    found: int = await harness.db.fetchval(
        "SELECT id FROM guarantees WHERE instance_id = $1 AND status = 'usable' ORDER BY id DESC LIMIT 1", card)
    return found


async def guarantee(harness: Harness, guarantee_id: int) -> dict[str, Any]:
    row = await harness.db.fetchrow("SELECT * FROM guarantees WHERE id = $1", guarantee_id)
    assert row is not None
    return dict(row)


async def charge_at_provider(stripe: StripeServer, payment_intent_id: str) -> dict[str, Any]:
    """The PaymentIntent's charge as localstripe has it (``amount``, ``captured``, ``amount_refunded``,
    ``refunds``): localstripe keeps no ``amount_received``; what was taken is ``amount - amount_refunded``."""
    async with httpx.AsyncClient() as client:
        answer = await client.get(f"{stripe.url}/v1/payment_intents/{payment_intent_id}",
                                  params={"expand[]": "latest_charge"}, headers={"Authorization": f"Bearer {API_KEY}"})
    intent = answer.json()
    charge: dict[str, Any] = intent["latest_charge"]
    assert isinstance(charge, dict), intent
    return {**charge, "intent_status": intent["status"]}


async def guarded_city(harness: Harness, *, guarantee: str = "5.00", unlock_fee: str = "1.00",
                       per_minute: str = "0.25") -> City:
    return await make_city(harness, stations=2, unlock_fee=unlock_fee, per_minute=per_minute,
                           min_guarantee=Decimal(guarantee))


async def ride(harness: Harness, city: City, token: str, vehicle: int = 101) -> int:
    """Unlock ``vehicle`` at the first station, return it at the second; the trip's id once it has ended."""
    async with simulated(harness, city.stations[0], {1: vehicle}), simulated(harness, city.stations[1], {}) as back:
        response = await unlock(harness, token, f"SN{vehicle}")
        assert response.status_code == 200, response.text
        trip: int = response.json()["data"]["trip_id"]
        await eventually(lambda: harness.svc.vehicles.state(vehicle).rent is not None)
        await eventually_value(lambda: harness.db.fetchval("SELECT state FROM rents WHERE id = $1", trip),
                               lambda state: state == "ongoing")
        await back.return_vehicle(2, vehicle)
        await eventually_value(lambda: harness.db.fetchval("SELECT state FROM rents WHERE id = $1", trip),
                               lambda state: state == "ended")
    return trip


async def job_of(harness: Harness, trip: int) -> dict[str, Any]:
    rows = await harness.db.fetch("SELECT * FROM payment_jobs WHERE rent_id = $1", trip)
    assert len(rows) == 1, rows
    return dict(rows[0])


async def job_done(harness: Harness, trip: int) -> dict[str, Any]:
    await eventually_value(lambda: harness.db.fetchval("SELECT state FROM payment_jobs WHERE rent_id = $1", trip),
                           lambda state: state == "done", timeout=20)
    return await job_of(harness, trip)


# --------------------------------------------------------------------------
# captures and releases


async def test_a_rent_captures_its_price_from_the_hold_and_releases_the_rest(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness)  # a 5.00 EUR hold; a ride under a minute costs 1.25
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    async with user_feed(harness, token) as feed:
        trip = await ride(harness, city, token)
        job = await job_done(harness, trip)
        events = [e for e in await feed.events(6, timeout=20) if e["event"] == "guarantee.updated"]
    assert (job["kind"], job["amount"], job["idempotency_key"]) == ("capture", Decimal("1.250"),
                                                                     f"knot-rent-{trip}-capture")
    rent = await harness.db.fetchrow("SELECT guarantee_id, amount_due, amount_owed FROM rents WHERE id = $1", trip)
    assert (rent["guarantee_id"], rent["amount_due"], rent["amount_owed"]) == (held, Decimal("1.250"), Decimal(0))
    after = await guarantee(harness, held)
    assert (after["status"], after["captured_amount"]) == ("captured", Decimal("1.250"))
    charge = await charge_at_provider(stripe_server, after["payment_intent_id"])
    assert (charge["intent_status"], charge["captured"]) == ("succeeded", True)
    assert (charge["amount"], charge["amount"] - charge["amount_refunded"]) == (500, 125)  # the rest went back
    # The rider saw the hold settle, then captured: the end's event, then the worker's.
    assert [(e["data"]["status"], e["data"]["trip_id"]) for e in events] == [("settling", trip), ("captured", trip)]
    assert events[-1]["data"]["captured_amount"] == "1.250" and events[-1]["data"]["being_used"] is False


async def test_a_free_rent_releases_the_hold(harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness, unlock_fee="0", per_minute="0")
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    trip = await ride(harness, city, token)
    job = await job_done(harness, trip)
    assert (job["kind"], job["amount"]) == ("release", Decimal(0))
    after = await guarantee(harness, held)
    assert (after["status"], after["captured_amount"]) == ("released", Decimal(0))
    intent = await stripe_server.payment_intent(after["payment_intent_id"])
    assert intent["status"] == "canceled"


async def test_a_price_above_the_hold_is_captured_up_to_the_hold_and_the_rest_owed(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness, guarantee="1.00", unlock_fee="3.00")  # the ride costs 3.25
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    trip = await ride(harness, city, token)
    job = await job_done(harness, trip)
    assert (job["kind"], job["amount"]) == ("capture", Decimal("1.000"))
    owed = await harness.db.fetchval("SELECT amount_owed FROM rents WHERE id = $1", trip)
    assert owed == Decimal("2.250")
    after = await guarantee(harness, held)
    assert (after["status"], after["captured_amount"]) == ("captured", Decimal("1.000"))
    charge = await charge_at_provider(stripe_server, after["payment_intent_id"])
    assert (charge["captured"], charge["amount"], charge["amount_refunded"]) == (True, 100, 0)


async def test_a_kept_guarantee_stays_usable_after_a_free_trip_and_serves_the_next_rent(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness, unlock_fee="0", per_minute="0")
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101, keep=True)
    first = await ride(harness, city, token)
    kept = await guarantee(harness, held)
    assert kept["status"] == "usable" and kept["keep_until"] is not None
    assert kept["keep_until"] <= kept["capture_before"]
    assert kept["keep_until"] - kept["updated_at"] <= timedelta(days=3)
    release = await job_of(harness, first)
    assert (release["kind"], release["state"]) == ("release", "pending")  # due when the keeping ends
    assert release["next_attempt_at"] == kept["keep_until"]

    second = await ride(harness, city, token, vehicle=102)  # the same hold, taken again
    assert await harness.db.fetchval("SELECT guarantee_id FROM rents WHERE id = $1", second) == held
    assert await harness.db.fetchval("SELECT count(*) FROM payment_jobs WHERE rent_id = $1", first) == 0
    again = await guarantee(harness, held)
    assert again["status"] == "usable"  # kept once more, its release due later again
    assert (await job_of(harness, second))["kind"] == "release"


async def test_an_unlock_without_a_usable_guarantee_is_refused_with_402_33(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness)
    _, token = await city.rider(harness, "rider@example.com")
    other = await harness.make.network("Elsewhere", labels=[city.label], rules={"min_guarantee": Decimal(5)})
    await harness.make.vehicle(other, 500)  # a hold on another network counts not
    await harness.svc.catalog.reload()
    await hold(harness, stripe_server, token, 500)
    async with simulated(harness, city.stations[0], {1: 101}):
        assert failed(await unlock(harness, token, "SN101")) == (402, 33)
    assert await harness.db.fetchval("SELECT count(*) FROM rents") == 0


async def test_a_refused_unlock_gives_the_guarantee_back(harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness)
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    async with raw_station(harness, city.stations[0], {1: 101, 2: None, 3: None, 4: None}) as raw, \
            user_feed(harness, token) as feed:
        async def refuse(frame: list[Any]) -> None:
            assert (await guarantee(harness, held))["status"] == "in_use"  # taken by the reserved rent
            await raw.answer(frame, {"status": "rejected"})

        response, _ = await unlock_at(harness, token, raw, refuse)
        assert failed(response) == (409, 41)
        events = await feed.events(2)
    assert names(events) == ["unlock.failed", "guarantee.updated"]
    assert (events[1]["data"]["status"], events[1]["data"]["being_used"]) == ("usable", False)
    assert (await guarantee(harness, held))["status"] == "usable"
    assert await harness.db.fetchval("SELECT count(*) FROM payment_jobs") == 0
    trip = await ride(harness, city, token)  # and it serves the next unlock
    assert await harness.db.fetchval("SELECT guarantee_id FROM rents WHERE id = $1", trip) == held


async def test_a_hold_nearing_its_deadline_during_a_rent_warns_the_rider_once(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness)
    rider, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    async with simulated(harness, city.stations[0], {1: 101}), user_feed(harness, token) as feed:
        response = await unlock(harness, token, "SN101")
        assert response.status_code == 200, response.text
        trip = response.json()["data"]["trip_id"]
        assert names(await feed.events(2)) == ["vehicle.unlocked", "rent.started"]
        # The provider's deadline two hours away (forged: no operator can move it).
        await harness.db.execute("UPDATE guarantees SET capture_before = now() + interval '2 hours' WHERE id = $1",
                                 held)
        await harness.svc.payment_worker.warn_expiring()  # or the worker's own round, whichever comes first
        [warning] = await feed.events(1)
        assert warning["event"] == "guarantee.updated"
        assert (warning["data"]["warning"], warning["data"]["trip_id"], warning["data"]["being_used"]) == (
            "expiring", trip, True)
        assert await harness.svc.payment_worker.warn_expiring() == 0
    sent = await harness.db.fetchval(
        "SELECT count(*) FROM feed_events WHERE topic = $1 AND event = 'guarantee.updated' AND data ? 'warning'",
        f"user:{rider}")
    assert sent == 1
    assert (await guarantee(harness, held))["expiry_warned_at"] is not None


async def test_a_hold_gone_at_the_provider_before_the_end_leaves_the_price_owed(
        harness: Harness, stripe_server: StripeServer) -> None:
    city = await guarded_city(harness)
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    intent_id = (await guarantee(harness, held))["payment_intent_id"]
    async with simulated(harness, city.stations[0], {1: 101}), simulated(harness, city.stations[1], {}) as back:
        response = await unlock(harness, token, "SN101")
        assert response.status_code == 200, response.text
        trip = response.json()["data"]["trip_id"]
        await eventually_value(lambda: harness.db.fetchval("SELECT state FROM rents WHERE id = $1", trip),
                               lambda state: state == "ongoing")
        # The authorization ends at the provider mid-ride (as when it outlives capture_before).
        async with httpx.AsyncClient() as client:
            canceled = await client.post(f"{stripe_server.url}/v1/payment_intents/{intent_id}/cancel",
                                         headers={"Authorization": f"Bearer {API_KEY}"})
        assert canceled.status_code == 200, canceled.text
        await back.return_vehicle(2, 101)
        await eventually_value(lambda: harness.db.fetchval("SELECT state FROM rents WHERE id = $1", trip),
                               lambda state: state == "ended")
    await eventually_value(lambda: harness.db.fetchval("SELECT state FROM payment_jobs WHERE rent_id = $1", trip),
                           lambda state: state == "failed", timeout=20)
    owed = await harness.db.fetchval("SELECT amount_owed FROM rents WHERE id = $1", trip)
    assert owed == Decimal("1.250")
    after = await guarantee(harness, held)
    assert (after["status"], after["captured_amount"]) == ("released", Decimal(0))


# --------------------------------------------------------------------------
# the provider away, the worker stopped in the middle


@asynccontextmanager
async def running_proxy(proxy: TcpProxy) -> AsyncIterator[None]:
    async with trio.open_nursery() as nursery:
        await nursery.start(proxy.run)
        yield
        await proxy.cut()
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def harness_through(settings: Settings, stripe: StripeServer, port: int, **overrides: Any) -> AsyncIterator[
        Harness]:
    """A server whose Stripe client goes through the proxy's ``port`` (short timeouts: an outage shows fast)."""
    proxied = stripe.config(api_base=f"http://127.0.0.1:{port}", timeout=2.0)
    async with trio_asyncio.open_loop(), serving(replace(settings, stripe=proxied, **overrides)) as harness:
        yield harness


async def test_stripe_unreachable_during_a_capture_retries_until_it_is_back_and_charges_once(
        settings: Settings, stripe_server: StripeServer) -> None:
    proxy = TcpProxy(int(stripe_server.url.rsplit(":", 1)[1]), port=free_port())
    async with harness_through(settings, stripe_server, proxy.port) as harness:
        city = await guarded_city(harness)
        _, token = await city.rider(harness, "rider@example.com")
        async with running_proxy(proxy):
            held = await hold(harness, stripe_server, token, 101)
        # Stripe is away (nothing listens on the proxy's port) when the rent ends.
        trip = await ride(harness, city, token)
        await eventually_value(lambda: harness.db.fetchrow("SELECT * FROM payment_jobs WHERE rent_id = $1", trip),
                               lambda job: job is not None and job["attempts"] >= 2 and job["last_error"] is not None,
                               timeout=20)
        assert (await job_of(harness, trip))["state"] == "pending"
        assert (await guarantee(harness, held))["status"] == "settling"
        async with running_proxy(proxy):
            job = await job_done(harness, trip)
        assert job["attempts"] >= 3
        after = await guarantee(harness, held)
        assert (after["status"], after["captured_amount"]) == ("captured", Decimal("1.250"))
        charge = await charge_at_provider(stripe_server, after["payment_intent_id"])
        assert (charge["captured"], charge["amount"] - charge["amount_refunded"]) == (True, 125)
        assert len(charge["refunds"]["data"]) == 1  # one partial capture, and its one release of the rest


async def test_a_worker_stopped_after_the_provider_captured_leaves_the_job_to_the_next_one_which_charges_once(
        settings: Settings, stripe_server: StripeServer) -> None:
    proxy = TcpProxy(int(stripe_server.url.rsplit(":", 1)[1]), port=free_port())
    async with harness_through(settings, stripe_server, proxy.port, payment_worker=False) as harness, \
            running_proxy(proxy):
        city = await guarded_city(harness)
        _, token = await city.rider(harness, "rider@example.com")
        held = await hold(harness, stripe_server, token, 101)
        trip = await ride(harness, city, token)
        assert (await job_of(harness, trip))["state"] == "pending"  # no worker in this server
        intent_id = (await guarantee(harness, held))["payment_intent_id"]

        clients: list[StripeProvider] = []

        def worker() -> PaymentWorker:  # as another process would build it: its own Stripe client
            config = stripe_server.config(api_base=f"http://127.0.0.1:{proxy.port}", timeout=30.0)
            clients.append(StripeProvider(config))
            return PaymentWorker(harness.svc.work, clients[-1], poll_seconds=0.1, lease_seconds=1.0,
                                 retry_seconds=0.2)

        # The first worker takes the job and calls Stripe, which captures; its answer never arrives (the proxy
        # swallows it) and the worker is stopped there: nothing of it was written but the lease.
        proxy.hold_downstream = True
        async with trio.open_nursery() as first:
            first.start_soon(worker().run)
            await eventually_value(lambda: charge_at_provider(stripe_server, intent_id),
                                   lambda charge: charge["captured"] is True, timeout=20)
            first.cancel_scope.cancel()
        taken = await job_of(harness, trip)
        assert (taken["state"], taken["attempts"]) == ("pending", 1)
        assert (await guarantee(harness, held))["status"] == "settling"

        # The next worker takes it once its lease has run out: Stripe refuses a second capture, the
        # PaymentIntent says captured, the job is done. One charge of the price.
        proxy.hold_downstream = False
        await proxy.cut()
        async with trio.open_nursery() as second:
            second.start_soon(worker().run)
            job = await job_done(harness, trip)
            second.cancel_scope.cancel()
        assert job["attempts"] == 2
        for client in clients:
            await client.aclose()
        after = await guarantee(harness, held)
        assert (after["status"], after["captured_amount"]) == ("captured", Decimal("1.250"))
        charge = await charge_at_provider(stripe_server, intent_id)
        assert charge["amount"] - charge["amount_refunded"] == 125
        assert len(charge["refunds"]["data"]) == 1


async def test_two_workers_at_once_take_each_job_once(settings: Settings, stripe_server: StripeServer) -> None:
    async with trio_asyncio.open_loop(), serving(replace(settings, payment_worker=False)) as harness:
        city = await guarded_city(harness)
        _, token = await city.rider(harness, "rider@example.com")
        trips = []
        for vehicle in (101, 102, 103):  # one hold per rent: a captured one serves no other
            await hold(harness, stripe_server, token, vehicle)
            trips.append(await ride(harness, city, token, vehicle=vehicle))
        assert await harness.db.fetchval("SELECT count(*) FROM payment_jobs WHERE state = 'pending'") == 3
        providers = [StripeProvider(stripe_server.config()) for _ in range(2)]
        workers = [PaymentWorker(harness.svc.work, provider, batch=1) for provider in providers]
        async with trio.open_nursery() as nursery:
            for worker in workers:
                nursery.start_soon(worker.run_due)
        jobs = await harness.db.fetch("SELECT state, attempts FROM payment_jobs ORDER BY id")
        assert [(job["state"], job["attempts"]) for job in jobs] == [("done", 1)] * 3
        assert sum(worker.settled for worker in workers) == 3
        for provider in providers:
            await provider.aclose()
        captured = await harness.db.fetch("SELECT captured_amount FROM guarantees ORDER BY id")
        assert [row["captured_amount"] for row in captured] == [Decimal("1.250")] * 3


async def test_a_late_held_webhook_leaves_a_guarantee_in_use(harness: Harness, stripe_server: StripeServer) -> None:
    """Stripe's ``amount_capturable_updated`` of the hold, delivered after the rider started riding with it."""
    city = await guarded_city(harness)
    _, token = await city.rider(harness, "rider@example.com")
    held = await hold(harness, stripe_server, token, 101)
    intent = await stripe_server.payment_intent((await guarantee(harness, held))["payment_intent_id"])
    async with simulated(harness, city.stations[0], {1: 101}):
        assert (await unlock(harness, token, "SN101")).status_code == 200
        assert (await guarantee(harness, held))["status"] == "in_use"
        body = event_body("evt_late_hold", "payment_intent.amount_capturable_updated", intent)
        answer = await harness.client.post("/api/payments/stripe/webhook", content=body,
                                           headers={"Stripe-Signature": signature_header(body),
                                                    "Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text
        assert (await guarantee(harness, held))["status"] == "in_use"
