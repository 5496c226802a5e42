"""The ops console (/console/) in a real browser: headless Chromium driven by Playwright, against the real server.

One browser for the module, a new context (fresh storage) per test, the demo city served by a live server
(``tests/browser.py``), a simulated station over a real socket, a rider's feed over a real WebSocket. Every wait
is bounded (``TIMEOUT``); nothing measures time. Each test leaves a screenshot in ``test-artifacts/console/``.
Without Chromium the module is skipped, loudly (a warning and the ``-ra`` skip reason; ``make test`` says so too).
"""

from __future__ import annotations

import asyncio
import queue
import re
import time
import warnings
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pyotp
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from knot_rt.simulator.station import SimulatedStation
from knot_rt.stations.admin import rotate_station_secret
from tests.browser import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, ConsoleServer, chromium_missing, console_server
from tests.feed_client import open_feed
from tests.live_server import module_database
from tests.tcp_proxy import TcpProxy

MISSING = chromium_missing()
if MISSING:  # the serving checks still run; every browser test is skipped with this reason (-ra shows it)
    warnings.warn(f"*** CONSOLE BROWSER TESTS SKIPPED: {MISSING}", stacklevel=1)

TIMEOUT = 15.0  # seconds: the bound of every wait for the page, never a measurement
API = "/api/application"
OPERATOR = ("operator@knot.demo", "knot-demo-operator")
AGENT = ("support@knot.demo", "knot-demo-support")
RIDER = ("rider@knot.demo", "knot-demo-rider")
PASSWORD = "correct horse battery"
ACCESS_SECONDS = 20  # short access tokens: the console refreshes them (at 80% of their life) while a test runs

expect.set_options(timeout=TIMEOUT * 1000)


# -- fixtures ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(pg_server_url: str, template_url: str) -> Iterator[ConsoleServer]:
    with module_database(pg_server_url, template_url) as url, \
            console_server(url, access_token_seconds=ACCESS_SECONDS) as live:
        yield live


@pytest.fixture(scope="module")
def browser(server: ConsoleServer) -> Iterator[Browser]:
    """After the server (whose set-up runs asyncio, which Playwright's sync API forbids while it runs)."""
    if MISSING:
        pytest.skip(f"*** console browser tests SKIPPED: {MISSING}")
    # trio_asyncio's loop policy (set by the server's side) would hand Playwright a Trio-driven loop: Playwright
    # gets a plain asyncio loop of its own (it makes it once, at start).
    policy = asyncio.get_event_loop_policy()
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    try:
        manager = sync_playwright()
        playwright = manager.__enter__()
    finally:
        asyncio.set_event_loop_policy(policy)
    try:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
    finally:
        manager.__exit__(None, None, None)


class Problems:
    """What the page reported that a console must never do: script errors, CSP violations."""

    def __init__(self) -> None:
        self.found: list[str] = []

    def console(self, message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text or "Refused to" in message.text:
            self.found.append(message.text)

    def error(self, error: Exception) -> None:
        self.found.append(f"page error: {error}")


@pytest.fixture
def page(browser: Browser, server: ConsoleServer, request: pytest.FixtureRequest) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 800}, base_url=server.base_url)
    context.set_default_timeout(TIMEOUT * 1000)
    tab = context.new_page()
    problems = Problems()
    tab.on("console", problems.console)
    tab.on("pageerror", problems.error)
    try:
        yield tab
        assert not problems.found, problems.found
    finally:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        try:
            tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"))
        finally:
            context.close()


# -- helpers -------------------------------------------------------------------------------------------------


def log_in(page: Page, email: str, password: str, base_url: str = "") -> None:
    page.goto(f"{base_url}/console/")
    expect(page.locator("#login-email")).to_be_visible()
    page.fill("#login-email", email)
    page.fill("#login-password", password)
    page.press("#login-password", "Enter")  # by keyboard


def api_login(server: ConsoleServer, email: str, password: str, scope: str = "app") -> str:
    response = httpx.post(f"{server.base_url}{API}/login", timeout=30,
                          json={"email": email, "password": password, "app_label": "knot", "scope": scope})
    assert response.status_code == 200, response.text
    token: str = response.json()["token"]
    return token


def api(server: ConsoleServer, method: str, path: str, token: str, **kwargs: Any) -> dict[str, Any]:
    response = httpx.request(method, f"{server.base_url}{API}{path}", timeout=30,
                             headers={"Authorization": f"Bearer {token}"}, **kwargs)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def next_event(frames: queue.Queue[dict[str, Any]], wanted: Any) -> dict[str, Any]:
    """The first frame of the rider's feed for which ``wanted(frame)`` holds (bounded)."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        left = deadline - time.monotonic()
        assert left > 0, "the rider's feed did not receive the expected event"
        frame = frames.get(timeout=left)
        if wanted(frame):
            return frame


async def follow(base_url: str, token: str, topics: list[str], frames: queue.Queue[dict[str, Any]]) -> None:
    """A rider's app: the feed with a bearer token, its topics, every frame into ``frames``."""
    async with open_feed(base_url, token) as feed:
        for topic in topics:
            reply = await feed.subscribe(topic)
            assert reply["code"] == 0, reply
        frames.put({"type": "ready"})
        while True:
            frames.put(await feed.receive(timeout=3600))


async def typing_once(base_url: str, token: str, report_id: int) -> None:
    async with open_feed(base_url, token) as feed:
        reply = await feed.request({"type": "typing", "topic": f"report:{report_id}"})
        assert reply["code"] == 0, reply


def png(colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    out = BytesIO()
    Image.new("RGB", (40, 20), colour).save(out, "PNG")
    return out.getvalue()


# -- serving (no browser needed) -----------------------------------------------------------------------------


def test_console_is_served_with_a_strict_policy(server: ConsoleServer, monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    moved = httpx.get(f"{server.base_url}/console", timeout=30)
    assert (moved.status_code, moved.headers["location"]) == (302, "/console/")
    page = httpx.get(f"{server.base_url}/console/", timeout=30)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe-inline" not in policy
    assert f"ws://{server.base_url.removeprefix('http://')}" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text and 'type="module" src="/console/js/main.js"' in page.text
    script = httpx.get(f"{server.base_url}/console/js/main.js", timeout=30)
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    library = httpx.get(f"{server.base_url}/console/vendor/leaflet-src.esm.js", timeout=30)
    assert library.status_code == 200 and "Leaflet" in library.text[:500]  # installed by make (npm ci), pinned
    for path in ("/console/js/..%2f..%2fweb%2fconsole.py", "/console/vendor/package.json", "/console/js/none.js"):
        refused = httpx.get(f"{server.base_url}{path}", timeout=30)
        assert (refused.status_code, refused.json()["code"]) == (404, 4), path
    assert not [p for p in httpx.get(f"{server.base_url}/openapi.json", timeout=30).json()["paths"]
                if p.startswith("/console")]

    # Without the map library the console still opens, and its configuration says what is missing.
    assert httpx.get(f"{server.base_url}/console/config.json", timeout=30).json()["map_library"] is True
    monkeypatch.setenv("KNOT_CONSOLE_VENDOR", str(tmp_path))
    config = httpx.get(f"{server.base_url}/console/config.json", timeout=30).json()
    assert config["map_library"] is False and "npm ci" in config["missing"]
    assert httpx.get(f"{server.base_url}/console/", timeout=30).status_code == 200


# -- the flows -----------------------------------------------------------------------------------------------


def test_operator_sees_a_station_come_online_and_unlocks_a_spot(page: Page, server: ConsoleServer,
                                                                tmp_path: Path) -> None:
    """Live map without reloading, the station panel's unlock and the station's own report of it, maintenances."""
    picture = tmp_path / "cover.png"
    picture.write_bytes(png())
    secret = server.run(server.svc.db.transaction, lambda conn: rotate_station_secret(conn, 1))
    log_in(page, *OPERATOR)
    expect(page.locator("#feed-state")).to_have_text("Feed: live")
    expect(page.locator("#tab-network")).to_be_visible()
    expect(page.locator("#tab-support")).to_be_visible()  # the demo operator also has `support`
    kleber = page.locator('.cluster-item[data-cluster="1"]')
    expect(kleber).to_have_attribute("data-state", "down")  # no station of Place Kléber is connected
    expect(page.locator("path.cluster-1.state-down")).to_have_count(1)  # its marker on the map

    station = SimulatedStation(1, secret, server.bound.station_url(), spots=8,
                               vehicles={1: 101, 2: 102, 3: 103, 4: 104})
    running = server.start_soon(station.run)
    try:
        # The station connects: the cluster's availability changes on the map and in the list, no reload.
        expect(kleber).to_have_attribute("data-available", "4")
        expect(kleber).to_have_attribute("data-state", "ok")
        expect(page.locator("path.cluster-1.state-ok")).to_have_count(1)

        kleber.click()
        panel = page.locator('#panel .station[data-station="1"]')
        expect(panel.locator(".badge")).to_have_text("online")
        expect(panel.locator('tr[data-spot="2"] td').nth(1)).to_have_text("102")
        expect(panel.locator('tr[data-spot="2"] td.lock')).to_have_text("locked")

        panel.get_by_role("button", name="Unlock spot 2 of station 1").click()
        outcome = panel.locator(".outcome")
        expect(outcome).to_contain_text("Station reported spot 2 unlocked (vehicle 102)")
        expect(panel.locator('tr[data-spot="2"] td.lock')).to_have_text("open")
        expect(kleber).to_have_attribute("data-available", "3")
        expect(page.locator("#panel .cluster-head .counts")).to_contain_text("3 vehicles available")

        # The station refuses to unlock an open spot: the refusal is shown with its status and reason.
        panel.get_by_role("button", name="Unlock spot 2 of station 1").click()
        expect(outcome).to_contain_text("Conflict (409): station 1 rejected the unlock (code 41)")

        # A command the station cannot obey now is refused with its reason, shown (station 2 is offline: 503).
        station_two = page.locator('#panel .station[data-station="2"]')
        expect(station_two.locator(".badge")).to_have_text("offline")
        station_two.get_by_role("button", name="Ping").click()
        expect(station_two.locator(".outcome")).to_contain_text("Service unavailable (503)")
        page.screenshot(path=str(ARTIFACTS / "operator-unlock.png"))

        # Maintenances: open one on spot 5 from the panel, attach a picture, resolve it.
        form = panel.locator("form.open-maintenance")
        form.get_by_label("Target").select_option(label="spot 5")
        form.get_by_label("Maintenance type").select_option(label="Charge fault (low)")
        form.get_by_label("Comment").fill("Charger cover cracked")
        form.get_by_role("button", name="Open maintenance").click()
        opened = panel.locator("li.maintenance", has_text="Charger cover cracked")
        expect(opened).to_contain_text("spot 5")
        opened.get_by_label("Picture").set_input_files(str(picture))
        opened.get_by_role("button", name="Attach picture").click()
        expect(outcome).to_contain_text("Picture attached to maintenance")
        expect(opened.locator("img.maintenance-picture")).to_have_attribute("src", re.compile("^blob:"))
        opened.get_by_role("button", name="Resolve").click()
        expect(outcome).to_contain_text("resolved")
        expect(panel.locator("li.maintenance", has_text="Charger cover cracked")).to_have_count(0)
    finally:
        server.cancel(running)


def test_agent_answers_a_report_and_sees_the_riders_reply(page: Page, server: ConsoleServer,
                                                          tmp_path: Path) -> None:
    """The inbox: a new report arrives live, the agent answers, the rider's feed gets it, the reply comes back."""
    photo = tmp_path / "photo.png"
    photo.write_bytes(png((30, 30, 200)))
    log_in(page, *AGENT)
    expect(page.locator("#feed-state")).to_have_text("Feed: live")
    expect(page.locator("#tab-support")).to_be_visible()
    expect(page.locator("#tab-network")).to_be_hidden()  # an agent without station rights: no map, no commands
    expect(page.locator("#view-support")).to_be_visible()
    expect(page.locator(".report-item").first).to_be_visible()

    rider = api_login(server, *RIDER)
    report = api(server, "POST", "/reports", rider, json={"message": "Spot 3 at Place Kléber will not lock.",
                                                          "cluster_id": 1})["data"]
    report_id = report["report_id"]
    frames: queue.Queue[dict[str, Any]] = queue.Queue()
    following = server.start_soon(follow, server.base_url, rider, ["user", f"report:{report_id}"], frames)
    try:
        assert frames.get(timeout=TIMEOUT) == {"type": "ready"}
        item = page.locator(f'.report-item[data-report="{report_id}"]')
        expect(item).to_contain_text("Spot 3 at Place Kléber will not lock.")  # live, without reloading
        expect(item.locator(".new")).to_be_visible()
        item.click()
        conversation = page.locator("#conversation")
        expect(conversation.locator(".message.user")).to_contain_text("will not lock")

        conversation.get_by_role("button", name="Assign to me").click()
        expect(conversation.locator(".report-status")).to_contain_text("assigned to you")

        answer = conversation.get_by_label("Your answer")
        answer.fill("Sorry about that: we are sending someone. Did you end your trip elsewhere?")
        answer.press("Control+Enter")
        sent = next_event(frames, lambda f: f.get("topic") == f"report:{report_id}"
                          and f.get("event") == "message.created")
        assert sent["data"]["side"] == "support"
        assert sent["data"]["message"].startswith("Sorry about that")
        expect(conversation.locator(".message.support")).to_contain_text("we are sending someone")

        # The rider types (the indicator shows), reads (the marker shows), then replies: it appears live.
        server.run(typing_once, server.base_url, rider, report_id)
        expect(conversation.locator(".typing")).to_have_text("The rider is typing…")
        api(server, "POST", f"/reports/{report_id}/read", rider, json={"message_id": sent["data"]["message_id"]})
        expect(conversation.locator(".message.support .read")).to_have_text("✓ seen")
        api(server, "POST", f"/reports/{report_id}/messages", rider, json={"message": "Yes, at Gare Centrale."})
        expect(conversation.locator(".message.user").last).to_contain_text("Yes, at Gare Centrale.")
        expect(conversation.locator(".typing")).to_have_text("")

        # Images both ways: the rider's shows in the console, the agent's reaches the rider's feed.
        response = httpx.post(f"{server.base_url}{API}/reports/{report_id}/images", timeout=30,
                              headers={"Authorization": f"Bearer {rider}"},
                              files={"chat_image": ("scooter.png", png(), "image/png")})
        assert response.status_code == 200, response.text
        expect(conversation.locator(".message.user img.chat-image")).to_have_attribute("src", re.compile("^blob:"))
        conversation.get_by_label("Image to send").set_input_files(str(photo))
        conversation.get_by_role("button", name="Send image").click()
        pictured = next_event(frames, lambda f: f.get("event") == "message.created"
                              and f["data"].get("side") == "support" and f["data"].get("image"))
        assert pictured["data"]["image"]["url"].startswith(f"{API}/reports/{report_id}/images/")
        expect(conversation.locator(".message.support img.chat-image")).to_have_attribute("src", re.compile("^blob:"))

        conversation.get_by_role("button", name="Resolve").click()
        expect(conversation.locator(".report-status")).to_have_attribute("data-status", "resolved")
        page.get_by_role("button", name="Resolved").click()
        expect(page.locator(f'.report-item[data-report="{report_id}"]')).to_have_attribute("data-status", "resolved")
        expect(page.locator('.report-item[data-status="open"]')).to_have_count(0)
        expect(conversation.get_by_role("button", name="Resolve")).to_be_hidden()
        conversation.get_by_role("button", name="Reopen").click()
        expect(conversation.locator(".report-status")).to_have_attribute("data-status", "open")
        page.screenshot(path=str(ARTIFACTS / "agent-inbox.png"))
    finally:
        server.cancel(following)


def test_what_a_user_sees_follows_their_permissions(page: Page, server: ConsoleServer) -> None:
    """A rider gets no console; a maintainer (read only, no support) sees the map but no command, no inbox."""
    log_in(page, *RIDER)
    expect(page.locator("#login-error")).to_have_text("This account has no access to the console.")
    expect(page.locator("#tabs")).to_be_hidden()
    expect(page.locator("#view-network")).to_be_hidden()
    expect(page.locator("#view-support")).to_be_hidden()

    server.run(lambda: server.make.user("viewer@example.com", PASSWORD, perms=[("maintenance", False)], networks=[1]))
    log_in(page, "viewer@example.com", PASSWORD)
    expect(page.locator("#tab-network")).to_be_visible()
    expect(page.locator("#tab-support")).to_be_hidden()  # no `support`: no inbox
    page.locator('.cluster-item[data-cluster="1"]').focus()
    page.keyboard.press("Enter")  # the cluster list works by keyboard
    expect(page.locator("#panel h2")).to_be_focused()
    station = page.locator('#panel .station[data-station="1"]')
    expect(station.locator("table.spots tbody tr")).to_have_count(8)  # may read the station
    expect(station.locator(".commands")).to_have_count(0)  # but no `stations`: no command
    expect(station.get_by_role("button", name="Unlock spot 1 of station 1")).to_have_count(0)
    expect(station.locator("form.open-maintenance")).to_have_count(0)  # read only: no maintenance opened
    expect(station.locator(".maintenances h4")).to_contain_text("Maintenances")

    page.set_viewport_size({"width": 820, "height": 1180})  # a tablet, upright: the panel goes under the map
    expect(station.locator(".badge")).to_be_visible()
    map_box, side_box = page.locator("#map").bounding_box(), page.locator("#view-network .side").bounding_box()
    assert map_box is not None and side_box is not None
    assert side_box["y"] >= map_box["y"] + map_box["height"] - 1 and side_box["width"] > 700

    # Station rights on one cluster (Gare Centrale, 2): its stations have commands, Place Kléber's none.
    page.set_viewport_size({"width": 1280, "height": 800})
    page.get_by_role("button", name="Log out").click()
    server.run(lambda: server.make.user("gare@example.com", PASSWORD, perms=[("stations", True)], clusters=[2]))
    log_in(page, "gare@example.com", PASSWORD)
    page.locator('.cluster-item[data-cluster="1"]').click()
    expect(page.locator('#panel .station[data-station="1"]')).to_contain_text("You have no station rights here.")
    expect(page.locator("#panel .commands")).to_have_count(0)
    page.locator('.cluster-item[data-cluster="2"]').click()
    expect(page.locator("#panel .station .commands").first).to_be_visible()
    expect(page.locator("#panel .station button.unlock").first).to_be_visible()


def test_bad_password_a_cut_feed_then_an_expired_session(page: Page, server: ConsoleServer) -> None:
    server.run(lambda: server.make.user("ops@example.com", PASSWORD, perms=[("stations", True)], networks=[1]))
    proxy = TcpProxy(int(server.base_url.rsplit(":", 1)[1]))  # the browser reaches the server through it

    async def start_proxy() -> None:
        await server.nursery.start(proxy.run)

    server.run(start_proxy)
    log_in(page, "ops@example.com", "not the password", base_url=f"http://127.0.0.1:{proxy.port}")
    expect(page.locator("#login-error")).to_have_text("Wrong email or password.")
    expect(page.locator("#tabs")).to_be_hidden()

    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#feed-state")).to_have_text("Feed: live")
    expect(page.locator("#view-network")).to_be_visible()

    # The connection drops: the top bar says the feed is reconnecting, then live again (topics resumed).
    server.run(proxy.cut)
    expect(page.locator("#feed-state")).to_have_text("Feed: reconnecting…")
    expect(page.locator("#feed-state")).to_have_text("Feed: live")

    # The session ends behind the console's back (every device logged out): the feed is closed (4401), the
    # refresh refused, and the console says so and asks for the password again.
    other = api_login(server, "ops@example.com", PASSWORD)
    api(server, "POST", "/logout", other, json={})
    expect(page.locator("#login-error")).to_have_text("Your session has expired. Log in again.")
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#view-network")).to_be_hidden()
    expect(page.locator("#feed-state")).to_have_text("Feed: off")


def test_second_factor_a_refreshed_session_and_logout(page: Page, server: ConsoleServer) -> None:
    email = "twofa@example.com"
    server.run(lambda: server.make.user(email, PASSWORD, perms=[("support", True)], networks=[1]))
    token = api_login(server, email, PASSWORD)
    setup = api(server, "POST", "/login/2fa/generate", token, json={"password": PASSWORD})
    api(server, "POST", "/login/2fa/verify", token,
        json={"token": setup["token"], "mfa_token": pyotp.TOTP(setup["key"]).now()})

    log_in(page, email, PASSWORD)
    expect(page.locator("#mfa-form")).to_be_visible()
    page.fill("#mfa-code", "000000" if pyotp.TOTP(setup["key"]).now() != "000000" else "111111")
    page.press("#mfa-code", "Enter")
    expect(page.locator("#login-error")).to_have_text("Wrong code; try the current one.")
    page.fill("#mfa-code", pyotp.TOTP(setup["key"]).at(time.time() + 30))  # a fresh code (the last one is spent)
    page.press("#mfa-code", "Enter")
    expect(page.locator("#view-support")).to_be_visible()
    expect(page.locator("#who")).to_have_text(email)

    # Before the access token expires the console refreshes it, and gives the feed the new one: still live.
    stored = "() => JSON.parse(sessionStorage.getItem('knot-console-session')).token"
    first = page.evaluate(stored)
    page.wait_for_function(f"(old) => ({stored})() !== old", arg=first, timeout=(ACCESS_SECONDS + TIMEOUT) * 1000)
    expect(page.locator("#feed-state")).to_have_text("Feed: live")
    rider = api_login(server, *RIDER)
    report_id = api(server, "POST", "/reports", rider, json={"message": "The bell is missing.",
                                                          "cluster_id": 1})["data"]["report_id"]
    expect(page.locator(f'.report-item[data-report="{report_id}"]')).to_contain_text("The bell is missing.")

    page.get_by_role("button", name="Log out").click()
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#notice-text")).to_have_text("Logged out.")
    page.reload()  # nothing kept: the login again
    expect(page.locator("#login-view")).to_be_visible()
