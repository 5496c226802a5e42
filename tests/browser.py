"""What the console's browser tests share: the machine's Chromium driven by Playwright, and a live server.

The browser is Debian's ``chromium`` (``KNOT_CHROMIUM`` to point elsewhere), launched by Playwright's own driver
(its pip wheel carries it; ``playwright install`` is never run). Without it the tests are skipped, loudly.

``console_server`` serves the demo city like ``tests/live_server.py`` (a database of its own, hypercorn on port 0
in a thread), and also gives the station gateway's URL and a way to run coroutines in the server's Trio loop:
``run`` (wait for the result) and ``start_soon`` (a background task, such as a simulated station or a rider's
feed, cancelled when the server stops).
"""

from __future__ import annotations

import os
import queue
import shutil
import tempfile
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio_asyncio

from knot_rt.config import RateLimits, Settings
from knot_rt.context import Services
from knot_rt.db import Database
from knot_rt.demo import load_demo
from knot_rt.server import Bound, run_server
from knot_rt.services.passwords import Passwords
from tests.factory import Factory

T = TypeVar("T")
CHROMIUM = os.environ.get("KNOT_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "console"
START_TIMEOUT = 60.0


def chromium_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver, or set KNOT_CHROMIUM)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (make: pip install -r requirements.lock)"
    return None


@dataclass
class ConsoleServer:
    base_url: str
    bound: Bound
    svc: Services
    demo: dict[str, Any]
    token: trio.lowlevel.TrioToken
    nursery: trio.Nursery

    @property
    def make(self) -> Factory:
        return Factory(self.svc)

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


@contextmanager
def console_server(database_url: str, **settings: Any) -> Iterator[ConsoleServer]:
    """Serve ``database_url`` (the demo loaded) on loopback ports until the block ends."""
    data_dir = Path(tempfile.mkdtemp(prefix="knot-console-"))
    config = Settings(
        host="127.0.0.1", port=0, station_port=0, database_url=database_url, smtp_url="smtp://127.0.0.1:9",
        secret_key="test-secret-" + uuid.uuid4().hex, data_dir=data_dir, public_url="http://knot.test",
        rate_limits=RateLimits(), mail_retry_seconds=5.0, **settings,
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

    thread = threading.Thread(target=thread_main, name="knot-console-server", daemon=True)
    thread.start()
    outcome = started.get(timeout=START_TIMEOUT)
    if isinstance(outcome, BaseException):
        raise RuntimeError("the console's server did not start") from outcome
    bound, token, shutdown, svc, demo, tasks = outcome
    try:
        yield ConsoleServer(base_url=bound.base_url, bound=bound, svc=svc, demo=demo, token=token, nursery=tasks)
    finally:
        trio.from_thread.run_sync(shutdown.set, trio_token=token)
        thread.join(timeout=30)
        shutil.rmtree(data_dir, ignore_errors=True)
        assert not thread.is_alive(), "the console's server did not stop"
