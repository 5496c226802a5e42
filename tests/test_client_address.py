"""Rate-limit keys use the client address from trusted proxies only (``KNOT_TRUSTED_PROXIES``).

The real server on loopback: the test client is the direct peer (127.0.0.1).
Without trusted proxies, any ``X-Forwarded-For`` it writes is ignored, so a
spoofed header cannot escape the per-address login limit. With 127.0.0.1
trusted, the right-most address that is not a trusted proxy is the client.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from knot_rt.config import RateLimits, Settings, parse_trusted_proxies
from knot_rt.web.auth import resolve_client
from tests.support import Harness

LOGIN = "/api/application/login"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(login_per_client="3/minute", login_per_address="1000/minute")


@pytest.fixture
def settings(settings: Settings, request: pytest.FixtureRequest) -> Settings:
    """``trusted_proxies`` from an indirect parametrization; none by default."""
    return replace(settings, trusted_proxies=tuple(getattr(request, "param", ())))


async def attempt(harness: Harness, n: int, headers: dict[str, str]) -> int:
    """A wrong login (a new address each time, so only the per-client limit counts); its error code."""
    response = await harness.client.post(
        LOGIN, headers=headers,
        json={"email": f"nobody{n}@example.com", "password": "wrong password", "app_label": "knot"},
    )
    code: int = response.json()["code"]
    return code


async def test_a_spoofed_forwarded_for_does_not_escape_the_limit(harness: Harness) -> None:
    await harness.create_app_label()
    codes = [
        await attempt(harness, n, {"X-Forwarded-For": f"198.51.100.{n}", "X-Real-IP": f"203.0.113.{n}",
                                   "Forwarded": f"for=192.0.2.{n}"})
        for n in range(5)
    ]
    assert codes == [8, 8, 8, 9, 9]


@pytest.mark.parametrize("settings", [("127.0.0.1",)], indirect=True)
async def test_a_trusted_proxy_names_the_client(harness: Harness) -> None:
    await harness.create_app_label()
    # Five clients behind the proxy: each has its own budget.
    assert [await attempt(harness, n, {"X-Forwarded-For": f"198.51.100.{n}"}) for n in range(5)] == [8] * 5
    # One client, however many addresses it writes itself before the proxy's entry.
    spoofed = [
        await attempt(harness, n, {"X-Forwarded-For": f"203.0.113.{n}, 198.51.100.77"}) for n in range(5)
    ]
    assert spoofed == [8, 8, 8, 9, 9]
    # Without the header, the proxy itself is the client.
    assert [await attempt(harness, n, {}) for n in range(4)] == [8, 8, 8, 9]


@pytest.mark.parametrize("settings", [("127.0.0.1", "10.0.0.0/8")], indirect=True)
async def test_trusted_hops_are_skipped_from_the_right(harness: Harness) -> None:
    await harness.create_app_label()
    chains = [f"192.0.2.1, 198.51.100.5, 10.0.{n}.1, 10.9.9.{n}" for n in range(5)]
    assert [await attempt(harness, n, {"X-Forwarded-For": chain}) for n, chain in enumerate(chains)] == [
        8, 8, 8, 9, 9
    ]
    # Two headers read as one chain: the client is 198.51.100.5 again, over its limit.
    response = await harness.client.post(
        LOGIN, headers=[("X-Forwarded-For", "198.51.100.5"), ("X-Forwarded-For", "10.0.0.1")],
        json={"email": "x@example.com", "password": "wrong password", "app_label": "knot"},
    )
    assert response.json()["code"] == 9


def test_the_client_address_rules() -> None:
    trusted = ("127.0.0.1", "10.0.0.0/8", "2001:db8::/32")
    assert resolve_client("192.0.2.9", ["198.51.100.1"], trusted) == "192.0.2.9"  # untrusted peer
    assert resolve_client("192.0.2.9", ["198.51.100.1"], ()) == "192.0.2.9"
    assert resolve_client("127.0.0.1", [], trusted) == "127.0.0.1"
    assert resolve_client("127.0.0.1", ["198.51.100.1:4711"], trusted) == "198.51.100.1"
    assert resolve_client("127.0.0.1", ["[2001:db9::1]:443, 10.0.0.2"], trusted) == "2001:db9::1"
    assert resolve_client("2001:db8::5", ["::ffff:198.51.100.3"], trusted) == "198.51.100.3"
    # All hops trusted: the left-most one.
    assert resolve_client("127.0.0.1", ["10.1.1.1, 10.2.2.2"], trusted) == "10.1.1.1"
    # Garbage written by a trusted hop ends the walk at that hop; garbage on the left is never reached.
    assert resolve_client("127.0.0.1", ["not-an-ip, 10.2.2.2"], trusted) == "10.2.2.2"
    assert resolve_client("127.0.0.1", ["unknown, 198.51.100.4"], trusted) == "198.51.100.4"
    assert resolve_client(None, ["198.51.100.4"], trusted) == "unknown"


def test_trusted_proxies_are_checked_when_read() -> None:
    assert parse_trusted_proxies("10.0.0.0/8, 127.0.0.1  ::1") == ("10.0.0.0/8", "127.0.0.1", "::1")
    assert parse_trusted_proxies("") == ()
    with pytest.raises(ValueError, match="KNOT_TRUSTED_PROXIES"):
        parse_trusted_proxies("10.0.0.0/8,proxy.local")
