"""A Stripe-compatible server for the tests: localstripe (a stateful fake Stripe, PyPI), in a child process.

Not a mock of our code: the SDK talks HTTP to it exactly as to Stripe. What the tests rely on:

- It is started once per test session (``stripe_server`` in conftest) on a free port; localstripe binds
  ``::`` (every interface, IPv4 too) and has no option to bind only loopback: the tests use only
  ``127.0.0.1``, and the server holds nothing but fake test cards. ``--from-scratch``: it never loads an
  earlier run's state (it still writes ``/tmp/localstripe.pickle`` after each write; never read back).
- Its test cards (localstripe/resources.py, ``PaymentMethod``): ``4242424242424242`` is held;
  ``4000000000000341`` is saved but its holds are declined; ``4000002500003155`` needs 3-D Secure (its
  SetupIntent and its PaymentIntents answer ``requires_action``); ``4000000000000002`` is refused when saved.
- What the app's Stripe SDK does on the phone, the tests do over HTTP with the publishable key:
  ``confirm_setup`` (the app confirms a SetupIntent with card details) and ``authenticate`` (the 3-D Secure
  page the rider passes).
- It sends no event for a manual-capture hold that becomes ``requires_capture``: the tests sign the webhook
  themselves with the webhook secret, as Stripe does (``signed_event``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from knot_rt.config import StripeConfig

API_KEY = "sk_test_knot"
PUBLIC_KEY = "pk_test_knot"
WEBHOOK_SECRET = "whsec_test_knot"

CARD_OK = "4242424242424242"
CARD_DECLINED = "4000000000000341"
CARD_3DS = "4000002500003155"
CARD_REFUSED = "4000000000000002"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class StripeServer:
    url: str

    def config(self, **overrides: Any) -> StripeConfig:
        values: dict[str, Any] = {"api_key": API_KEY, "public_key": PUBLIC_KEY, "webhook_secret": WEBHOOK_SECRET,
                                  "api_base": self.url, "timeout": 10.0, "max_network_retries": 0}
        values.update(overrides)
        return StripeConfig(**values)

    # what the rider's app does with Stripe.js / the mobile SDK ----------------------------------------------

    async def confirm_setup(self, setup_intent_id: str, client_secret: str, number: str) -> dict[str, Any]:
        """The app confirms the SetupIntent with the card the rider typed (publishable key only)."""
        data = {
            "key": PUBLIC_KEY, "client_secret": client_secret,
            "payment_method_data": {"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034,
                                                             "cvc": "123"}},
        }
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{self.url}/v1/setup_intents/{setup_intent_id}/confirm", json=data)
        found: dict[str, Any] = answer.json()
        return found

    async def finish_setup(self, setup_intent_id: str, client_secret: str) -> dict[str, Any]:
        """The rider passed 3-D Secure on a SetupIntent: confirmed again, it succeeds (localstripe's way)."""
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"{self.url}/v1/setup_intents/{setup_intent_id}/confirm",
                                       json={"key": PUBLIC_KEY, "client_secret": client_secret})
        found: dict[str, Any] = answer.json()
        return found

    async def authenticate(self, payment_intent_id: str, client_secret: str, *, success: bool = True) -> dict[str, Any]:
        """The rider passes (or fails) the 3-D Secure page of a PaymentIntent."""
        async with httpx.AsyncClient() as client:
            answer = await client.post(
                f"{self.url}/v1/payment_intents/{payment_intent_id}/_authenticate",
                json={"key": PUBLIC_KEY, "client_secret": client_secret, "success": success},
            )
        found: dict[str, Any] = answer.json()
        return found

    async def payment_intent(self, payment_intent_id: str) -> dict[str, Any]:
        async with httpx.AsyncClient() as client:
            answer = await client.get(f"{self.url}/v1/payment_intents/{payment_intent_id}",
                                      headers={"Authorization": f"Bearer {API_KEY}"})
        found: dict[str, Any] = answer.json()
        return found


def signature_header(payload: bytes, secret: str = WEBHOOK_SECRET, *, timestamp: int | None = None,
                     extra_v1: tuple[str, ...] = ()) -> str:
    """``Stripe-Signature`` as Stripe writes it: ``t=<unix>,v1=<HMAC-SHA256 of "t.payload">`` (more v1 may come)."""
    stamp = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{stamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return ",".join([f"t={stamp}", *(f"v1={v}" for v in extra_v1), f"v1={mac}"])


def event_body(event_id: str, event_type: str, obj: dict[str, Any], *, created: int | None = None) -> bytes:
    """A webhook event's JSON as Stripe sends it (``data.object`` is the object's state at the event)."""
    event = {"id": event_id, "object": "event", "type": event_type, "api_version": "2025-01-27",
             "created": int(time.time()) if created is None else created, "livemode": False,
             "data": {"object": obj}, "pending_webhooks": 1, "request": {"id": None, "idempotency_key": None}}
    return json.dumps(event).encode()


def _executable() -> str:
    beside = os.path.join(os.path.dirname(sys.executable), "localstripe")
    found = beside if os.path.exists(beside) else shutil.which("localstripe")
    if found is None:
        raise RuntimeError("localstripe is not installed: pip install -r requirements.lock")
    return found


@contextmanager
def running_localstripe(*, start_timeout: float = 30.0) -> Iterator[StripeServer]:
    """Start localstripe on a free port, wait until it answers, stop it (kill after 5 s) at the end."""
    port = free_port()
    process = subprocess.Popen(
        [_executable(), "--port", str(port), "--from-scratch"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"localstripe exited with {process.returncode} before answering")
            try:
                httpx.get(f"{url}/v1/customers", headers={"Authorization": f"Bearer {API_KEY}"}, timeout=1.0)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"localstripe did not answer on {url} within {start_timeout} s") from None
                time.sleep(0.1)
        yield StripeServer(url)
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
