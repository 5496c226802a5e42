"""The process runner: database, trio-asyncio loop, the server, clean shutdown on signals."""

from __future__ import annotations

import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TypeVar

import trio
import trio_asyncio

from .catalog.store import ensure_countries
from .config import Settings
from .db import Database, migrate
from .pgcluster import PgCluster

log = logging.getLogger(__name__)
T = TypeVar("T")


@asynccontextmanager
async def database_url(settings: Settings) -> AsyncIterator[str]:
    """``DATABASE_URL``, or a private PostgreSQL cluster in the data folder for the block's lifetime."""
    if settings.database_url:
        yield settings.database_url
        return
    cluster = await trio.to_thread.run_sync(PgCluster, settings.data_dir)
    try:
        url = await trio.to_thread.run_sync(cluster.start)
        yield url
    finally:
        # Leaves the cluster; stops it only if no other process (a server, a command) still uses it.
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(cluster.stop)


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """A migrated database pool, inside an open trio-asyncio loop."""
    async with database_url(settings) as url:
        db = await Database.connect(
            url, max_size=settings.db_pool_size, connect_timeout=settings.db_connect_timeout,
            acquire_timeout=settings.db_acquire_timeout, command_timeout=settings.db_command_timeout,
        )
        try:
            await migrate(db)
            await db.transaction(ensure_countries)
            yield db
        finally:
            await db.close()


def tune_gc() -> None:
    """Collect the youngest generation less often: a server holding thousands of live actors
    otherwise spends much of its time in the collector's full passes."""
    gc.set_threshold(50_000, 20, 20)


def run_with_loop(main: Callable[[], Awaitable[T]]) -> T:
    """Run a Trio main with the trio-asyncio loop open around it (asyncpg needs it)."""
    return trio_asyncio.run(main)


class Stopper:
    """What SIGINT/SIGTERM do, for the whole life of the process.

    Before ``serving()`` a signal cancels the start-up, so that whatever was started
    (an embedded PostgreSQL) is stopped by its own clean-up. Once serving, the first
    signal sets ``shutdown`` for a graceful stop; a second one cancels the rest.
    """

    def __init__(self, scope: trio.CancelScope) -> None:
        self.shutdown = trio.Event()
        self._scope = scope
        self._serving = False

    def serving(self) -> None:
        self._serving = True

    def stop(self) -> None:
        if self._serving and not self.shutdown.is_set():
            self.shutdown.set()
        else:
            self._scope.cancel()


@asynccontextmanager
async def stop_on_signal() -> AsyncIterator[Stopper]:
    """Handle SIGINT/SIGTERM from now on: the block is stopped as ``Stopper`` says."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            stopper = Stopper(nursery.cancel_scope)

            async def watch() -> None:
                async for signum in signals:
                    log.info("received %s: shutting down", signal.Signals(signum).name)
                    stopper.stop()

            nursery.start_soon(watch)
            yield stopper
            nursery.cancel_scope.cancel()
