"""The real server on port 0, run in a thread of its own for a whole test module.

The per-test ``harness`` starts a server and a database for every test; the
checks that send thousands of requests across every route (hostile input, the
schemathesis stage) share one server instead: a database of its own copied from
the test template, the demo data loaded, the server serving until the module
ends. Tests talk to it over real sockets with a synchronous HTTP client.
"""

from __future__ import annotations

import asyncio
import json
import queue
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx
import trio
import trio_asyncio

from knot_rt.api.app import create_app
from knot_rt.config import RateLimits, Settings
from knot_rt.context import Services
from knot_rt.db import Database
from knot_rt.demo import DEMO_ACCOUNTS, load_demo
from knot_rt.server import Bound, run_server
from knot_rt.services.passwords import Passwords
from tests.factory import Factory

T = TypeVar("T")

OPERATOR = next((email, password) for email, password, role in DEMO_ACCOUNTS if role.startswith("operator"))
RIDER = next((email, password) for email, password, role in DEMO_ACCOUNTS if role == "rider")
START_TIMEOUT = 60.0
# Routes whose bearer is not an access token: they may refuse the operator's token (401 + code 3)
# before they read the body.
OTHER_BEARER = {
    ("POST", "/api/application/login/2fa"),
    ("POST", "/api/application/login/refresh"),
    ("POST", "/api/application/users/email/confirmation"),
}


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the app serves (read without a server or a database)."""
    app = create_app(None)

    async def read() -> dict[str, Any]:
        async with app.test_app():
            response = await app.test_client().get("/openapi.json")
            document: dict[str, Any] = json.loads(await response.get_data(as_text=True))
            return document

    return trio.run(read)


@dataclass
class LiveServer:
    """The running server: its address, its services, the demo's ids, and a way to run coroutines in its Trio
    loop (``run`` waits for the result; ``start_soon`` starts a background task, such as a simulated station or
    a rider's feed, cancelled when the server stops)."""

    base_url: str
    bound: Bound
    svc: Services
    demo: dict[str, Any]
    token: trio.lowlevel.TrioToken
    nursery: trio.Nursery

    @property
    def make(self) -> Factory:
        return Factory(self.svc)

    def login(self, email: str, password: str) -> dict[str, Any]:
        response = httpx.post(f"{self.base_url}/api/application/login", timeout=30,
                              json={"email": email, "password": password, "app_label": "knot"})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def run(self, afn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run ``afn(*args)`` in the server's loop and wait for its result."""
        return trio.from_thread.run(afn, *args, trio_token=self.token)

    def start_soon(self, afn: Callable[..., Awaitable[Any]], *args: Any) -> trio.CancelScope:
        """Start ``afn(*args)`` in the server's nursery; the returned scope cancels it."""
        scope = trio.CancelScope()

        async def task() -> None:
            with scope:
                await afn(*args)

        def spawn() -> None:
            self.nursery.start_soon(task)

        trio.from_thread.run_sync(spawn, trio_token=self.token)
        return scope

    def cancel(self, scope: trio.CancelScope) -> None:
        trio.from_thread.run_sync(scope.cancel, trio_token=self.token)


def _admin(pg_server_url: str, sql: str) -> None:
    async def run() -> None:
        conn = await asyncpg.connect(pg_server_url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run())


@contextmanager
def module_database(pg_server_url: str, template_url: str) -> Iterator[str]:
    """A database of its own, copied from the test template, dropped at the end."""
    template = template_url.rpartition("/")[2]
    name = f"knot_test_live_{uuid.uuid4().hex[:12]}"
    _admin(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    try:
        yield f"{pg_server_url.rpartition('/')[0]}/{name}"
    finally:
        _admin(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def live_server(database_url: str, data_dir: Path, *, smtp_url: str = "smtp://127.0.0.1:9",
                rate_limits: RateLimits | None = None, **settings: Any) -> Iterator[LiveServer]:
    """Serve ``database_url`` (the demo loaded) on loopback ports until the block ends (``settings``: more
    ``Settings`` fields)."""
    config = Settings(
        host="127.0.0.1", port=0, station_port=0, database_url=database_url, smtp_url=smtp_url,
        secret_key="test-secret-" + uuid.uuid4().hex, data_dir=data_dir, public_url="http://knot.test",
        rate_limits=rate_limits or RateLimits(), mail_retry_seconds=5.0, **settings,
    )
    started: queue.Queue[Any] = queue.Queue()

    async def serve() -> None:
        async with trio_asyncio.open_loop():
            db = await Database.connect(database_url, min_size=1, max_size=10)
            try:
                demo = await load_demo(db)
                svc = Services.build(config, db, passwords=Passwords(time_cost=1, memory_cost=8192, parallelism=1))
                shutdown = trio.Event()
                async with trio.open_nursery() as nursery:
                    bound = await nursery.start(partial(run_server, svc, shutdown=shutdown))
                    async with trio.open_nursery() as tasks:  # background tasks of the tests
                        started.put((bound, trio.lowlevel.current_trio_token(), shutdown, svc, demo, tasks))
                        await shutdown.wait()
                        tasks.cancel_scope.cancel()
            finally:
                await db.close()

    def thread_main() -> None:
        try:
            trio.run(serve)
        except BaseException as error:  # reported to the waiting test, not lost in the thread
            started.put(error)

    thread = threading.Thread(target=thread_main, name="knot-live-server", daemon=True)
    thread.start()
    outcome = started.get(timeout=START_TIMEOUT)
    if isinstance(outcome, BaseException):
        raise RuntimeError("the live server did not start") from outcome
    bound, token, shutdown, svc, demo, tasks = outcome
    try:
        yield LiveServer(base_url=bound.base_url, bound=bound, svc=svc, demo=demo, token=token, nursery=tasks)
    finally:
        trio.from_thread.run_sync(shutdown.set, trio_token=token)
        thread.join(timeout=30)
        assert not thread.is_alive(), "the live server did not stop"
