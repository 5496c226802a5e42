"""Shared test helpers: the running service, a real SMTP sink, account helpers."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Protocol, TypeVar

import httpx
import trio
from aiosmtpd.controller import Controller

from actors.station import GetView, StationView
from knot_rt.accounts.service import LoginIntent
from knot_rt.accounts.store import Device
from knot_rt.config import Settings
from knot_rt.context import Services
from knot_rt.db import Database
from knot_rt.server import run_server
from knot_rt.services.passwords import Passwords
from tests.factory import PASSWORD, STORE_URLS, Factory

T = TypeVar("T")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _Collector:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(message)  # type: ignore[arg-type]
        return "250 OK"


class SmtpSink:
    """A real SMTP server on loopback that keeps what it receives."""

    def __init__(self, port: int | None = None) -> None:
        self._collector = _Collector()
        # A plain selector loop of its own: the trio-asyncio policy must not serve the sink's thread.
        self._controller = Controller(
            self._collector, hostname="127.0.0.1", port=port or _free_port(), loop=asyncio.SelectorEventLoop()
        )

    def start(self) -> None:
        self._controller.start()

    def stop(self) -> None:
        self._controller.stop()

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self._controller.port}"

    def messages(self, to: str | None = None) -> list[EmailMessage]:
        with self._collector.lock:
            found = list(self._collector.messages)
        if to is not None:
            found = [m for m in found if to.lower() in str(m["To"]).lower()]
        return found

    async def wait_for(self, to: str, count: int = 1, timeout: float = 10.0) -> list[EmailMessage]:  # noqa: ASYNC109
        """Wait until ``count`` mails to ``to`` arrived; return them in order."""
        with trio.move_on_after(timeout):
            while len(self.messages(to)) < count:  # noqa: ASYNC110 - the sink runs in its own thread
                await trio.sleep(0.02)
        found = self.messages(to)
        assert len(found) >= count, f"expected {count} mail(s) to {to}, got {len(found)}"
        return found


class Startable(Protocol):
    def start(self) -> None: ...
    def stop(self) -> None: ...


StartableT = TypeVar("StartableT", bound=Startable)


@contextmanager
def running(server: StartableT) -> Iterator[StartableT]:
    """A test server (an SMTP sink, an identity provider) started for the block, stopped after it."""
    server.start()
    try:
        yield server
    finally:
        server.stop()


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())


def token_in(message: EmailMessage, length: int = 10) -> str:
    """The 10-character token of a mail: the value of its ``token=`` link parameter."""
    match = re.search(rf"token=([A-Za-z0-9]{{{length}}})\b", body_of(message))
    assert match, f"no token in mail: {body_of(message)!r}"
    return match.group(1)


@dataclass
class Harness:
    svc: Services
    db: Database
    base_url: str
    client: httpx.AsyncClient
    station_url: str = ""
    vehicle_url: str = ""  # the free-floating vehicles' socket, on the station gateway's port
    _password_hashes: dict[str, str] = field(default_factory=dict)

    @property
    def make(self) -> Factory:
        """Builds rows through the services (``tests/factory.py``)."""
        return Factory(self.svc)

    async def create_user(
        self,
        email_addr: str,
        password: str = PASSWORD,
        *,
        confirmed: bool = True,
        perms: list[tuple[str, bool]] | None = None,
        networks: list[int] | None = None,
        clusters: list[int] | None = None,
        organizations: list[int] | None = None,
        app_label: int | None = None,
    ) -> int:
        return await self.make.user(
            email_addr, password, confirmed=confirmed, perms=perms, networks=networks, clusters=clusters,
            organizations=organizations, app_label=app_label,
        )

    async def create_app_label(
        self, name: str = "knot", label_name: str = "Knot", *, android: str | None = STORE_URLS["android"],
        ios: str | None = STORE_URLS["ios"], organization: int | None = None,
    ) -> int:
        return await self.make.app_label(name, label_name, organization=organization, android=android, ios=ios)

    async def create_network(self, name: str = "Strasbourg", *, organization: int | None = None) -> int:
        return await self.make.network(name, organization=organization)

    async def login(
        self, email_addr: str, password: str = "correct horse battery", *, app_label: str = "knot",
        scope: str = "app", device_id: str | None = "device-1",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"email": email_addr, "password": password, "scope": scope, "app_label": app_label}
        if device_id is not None:
            body["device"] = {"id": device_id, "os": "Android", "model": "Pixel", "app_version": "1.0"}
        response = await self.client.post("/api/application/login", json=body)
        result: dict[str, Any] = response.json()
        assert response.status_code == 200, result
        return result


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def open_test_session(harness: Harness, user_id: int, device_id: str = "device-1") -> str:
    """An access token of a new session, opened by the service's session code (not the login route)."""
    session = await harness.svc.accounts.open_session(user_id, LoginIntent("app", None, Device(id=device_id)))
    return str(session["token"])


async def eventually(check: Callable[[], Awaitable[bool] | bool], timeout: float = 10.0) -> None:  # noqa: ASYNC109
    """Wait, bounded, until ``check()`` holds (for state that follows asynchronously, e.g. vehicle actors).

    The bound guards against a hang; it is never a measurement."""
    with trio.fail_after(timeout):
        while True:
            outcome = check()
            if outcome if isinstance(outcome, bool) else await outcome:
                return
            await trio.sleep(0.01)


async def eventually_value(fetch: Callable[[], Awaitable[T]], done: Callable[[T], bool], timeout: float = 10.0) -> T:  # noqa: ASYNC109
    """``eventually`` for a fetched value: the first ``fetch()`` for which ``done(value)`` holds."""
    found: list[T] = []

    async def check() -> bool:
        found.append(await fetch())
        return done(found[-1])

    await eventually(check, timeout)
    return found[-1]


async def wait_station_online(harness: Harness, station_id: int, online: bool = True) -> StationView:
    """Wait, bounded, until the station's actor runs and reports ``online``; its view then."""
    with trio.fail_after(10):
        while True:
            ref = harness.svc.stations.running_actor(station_id)
            if ref is not None:
                view = await ref.ask(GetView())
                assert isinstance(view, StationView)
                if view.online == online:
                    return view
            await trio.sleep(0.01)


@asynccontextmanager
async def serving(settings: Settings, **pool: Any) -> AsyncIterator[Harness]:
    """The real server on ``settings`` (port 0) with a client, inside an open trio-asyncio loop;
    ``pool`` passes the database pool's timeouts."""
    db = await Database.connect(settings.database_url or "", min_size=1, max_size=5, **pool)
    try:
        svc = Services.build(settings, db, passwords=Passwords(time_cost=1, memory_cost=8192, parallelism=1))
        shutdown = trio.Event()
        async with trio.open_nursery() as nursery:
            bound = await nursery.start(lambda task_status: run_server(svc, shutdown=shutdown, task_status=task_status))
            async with httpx.AsyncClient(base_url=bound.base_url, timeout=30) as client:
                yield Harness(svc=svc, db=db, base_url=bound.base_url, client=client,
                              station_url=bound.station_url(), vehicle_url=bound.vehicle_url())
            shutdown.set()
    finally:
        await db.close()
