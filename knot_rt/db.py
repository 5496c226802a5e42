"""PostgreSQL access from Trio through trio-asyncio.

asyncpg runs on asyncio only. Every unit of database work is one asyncio
coroutine wrapped once with ``aio_as_trio``: a connection is never held across a
Trio await, so a Trio cancellation cannot leak it. The pool is closed inside a
shielded cancel scope with a deadline, then terminated.

Outages are handled here, at one depth: a unit of work that fails because
PostgreSQL is down, refusing, full or hanging raises ``DatabaseUnavailable``
(HTTP answers it with 503 code 48; background loops retry with ``Backoff``).
Every wait is bounded: connecting (``connect_timeout``, 5 s by default),
getting a pooled connection (``acquire_timeout``, 10 s, which also bounds
handing it back) and each command (``command_timeout``, 15 s). Nothing needs
restarting when PostgreSQL comes back: a connection that failed is dropped at
once, and the pool opens a new one on the next acquire (asyncpg also refills its
minimum in the background). The costs: a refused connection is tried again by
each request (cheap: a refused loopback connect takes about a millisecond), and
a write whose COMMIT was sent when the connection broke is reported unavailable
although it may have been applied; callers that must not apply twice (station
events) deduplicate by id.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any, TypeVar

import asyncpg
import trio
import trio_asyncio

log = logging.getLogger(__name__)

T = TypeVar("T")
Connection = asyncpg.Connection
Record = asyncpg.Record

MIGRATIONS_PACKAGE = "knot_rt.migrations"
MIGRATION_TIMEOUT = 3600.0  # a migration may rewrite a big table: not bound by the command timeout


class DatabaseUnavailable(Exception):
    """PostgreSQL cannot serve now (down, refusing, restarting, out of connections or hanging): retry later."""


# What says "the server or the connection is gone", as opposed to "this query is wrong".
_CONNECTION_FAILURES: tuple[type[BaseException], ...] = (
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect, acquire or command timeout (asyncio.TimeoutError is TimeoutError)
    asyncpg.PostgresConnectionError,  # class 08: connection failure, connection does not exist, ...
    asyncpg.CannotConnectNowError,  # 57P03: starting up, shutting down, in recovery
    asyncpg.AdminShutdownError,  # 57P01: terminated by an administrator (pg_ctl stop -m fast)
    asyncpg.CrashShutdownError,  # 57P02: another backend crashed
    asyncpg.TooManyConnectionsError,  # 53300
    # The driver's state machine met a connection the server just ended (seen at `pg_ctl stop`: the
    # pool handed out a connection whose FATAL had arrived and whose socket was not closed yet).
    asyncpg.exceptions.InternalClientError,
)


def _is_connection_failure(error: BaseException, conn: asyncpg.Connection | None = None) -> bool:
    """Whether ``error`` (or what it was raised from) means the database is away.

    An ``InterfaceError`` on a connection that is now closed counts too ("connection is
    closed"); one on a live connection is a misuse of the driver and is left alone.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _CONNECTION_FAILURES):
            return True
        current = current.__cause__ or current.__context__
    return isinstance(error, asyncpg.InterfaceError) and conn is not None and conn.is_closed()


class PooledConnection(asyncpg.Connection):
    """A pooled connection handed back without asyncpg's reset query (advisory unlock, ``CLOSE ALL``,
    ``UNLISTEN *``, ``RESET ALL``): that is one more round trip per unit of work, on every request. An open
    transaction is still rolled back and listeners dropped (asyncpg does that before the query).

    The rule it needs: no session state is left on a pooled connection. A session advisory lock is
    released before the unit ends (``apply_migrations``), ``SET`` is ``SET LOCAL``, ``LISTEN`` and
    long-held locks use a connection of their own, outside the pool.
    """

    def get_reset_query(self) -> str:
        return ""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """A pool of connections, used from Trio."""

    def __init__(self, pool: asyncpg.Pool, loop: Any, *, acquire_timeout: float = 10.0, url: str = "") -> None:
        self._pool = pool
        self.url = url  # for a connection of one's own (the cluster link's)
        # Kept so that any Trio task may use the pool, even one that did not inherit the loop.
        self._loop = loop
        self.acquire_timeout = acquire_timeout
        self.available = True  # as of the last unit of work; an outage and its end are logged once

    @classmethod
    async def connect(
        cls, url: str, *, min_size: int = 2, max_size: int = 10, connect_timeout: float = 5.0,
        acquire_timeout: float = 10.0, command_timeout: float = 15.0,
    ) -> Database:
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError("Database.connect needs an open trio-asyncio loop")

        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection, timeout=connect_timeout,
                command_timeout=command_timeout, connection_class=PooledConnection,
            )

        try:
            pool = await trio_asyncio.aio_as_trio(create, loop=loop)()
        except Exception as exc:
            if _is_connection_failure(exc):  # one exception for "cannot reach it", at start as later
                raise DatabaseUnavailable(_describe(exc, "no connection within the connect timeout")) from exc
            raise
        return cls(pool, loop, acquire_timeout=acquire_timeout, url=url)

    async def close(self) -> None:
        async def close_pool() -> None:
            await self._pool.close()

        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self._aio(close_pool)()
                return
            self._pool.terminate()

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work(conn)`` as one asyncio coroutine, on a pooled connection.

        Raises ``DatabaseUnavailable`` when PostgreSQL cannot serve; any other error of
        ``work`` (a constraint, an ``ApiError``) goes through unchanged.
        """
        return await self._unit(work, in_transaction=False)

    async def transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work(conn)`` inside one transaction (``DatabaseUnavailable`` as ``run``)."""
        return await self._unit(work, in_transaction=True)

    async def _unit(self, work: Callable[[asyncpg.Connection], Awaitable[T]], *, in_transaction: bool) -> T:
        async def unit() -> T:
            try:
                # The acquire timeout also bounds the release (asyncpg applies it to the reset).
                conn = await self._pool.acquire(timeout=self.acquire_timeout)
            except Exception as exc:  # whatever stops us from getting a connection: refused, timeout, full
                raise DatabaseUnavailable(_describe(exc, "no connection within the connect or acquire timeout")) from exc
            try:
                if in_transaction:
                    async with conn.transaction():
                        result = await work(conn)
                else:
                    result = await work(conn)
            except Exception as exc:
                if _is_connection_failure(exc, conn):
                    # Dropped at once: handing it back would wait (up to the acquire timeout) for a
                    # hung server to confirm the cancelled command, and the caller with it.
                    conn.terminate()
                    raise DatabaseUnavailable(_describe(exc, "no answer within the command timeout")) from exc
                raise
            finally:
                try:
                    await self._pool.release(conn)  # nothing to do for a terminated one
                except Exception as exc:  # the pool has terminated that connection already
                    log.info("database: a connection could not be reset and was dropped: %s", _describe(exc))
            return result

        try:
            result = await self._aio(unit)()
        except DatabaseUnavailable as exc:
            self._note(False, str(exc))
            raise
        except Exception:
            self._note(True)  # PostgreSQL answered; the error is the work's own
            raise
        self._note(True)
        return result

    def _note(self, available: bool, reason: str = "") -> None:
        """Log the start and the end of an outage, once each."""
        if available == self.available:
            return
        self.available = available
        if available:
            log.info("database available again")
        else:
            log.warning("database unavailable: %s", reason)

    def on_loop(self, proc: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        """``proc`` (an asyncio coroutine function) made awaitable from any Trio task, on the pool's loop: for
        a connection of one's own outside the pool (``cluster/link.py``)."""
        return self._aio(proc)

    def _aio(self, proc: Callable[[], Awaitable[T]]) -> Callable[[], Awaitable[T]]:
        wrapped: Callable[[], Awaitable[T]] = trio_asyncio.aio_as_trio(proc, loop=self._loop)
        return wrapped

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        return await self.run(lambda conn: conn.fetch(sql, *args))

    async def fetchrow(self, sql: str, *args: Any) -> asyncpg.Record | None:
        return await self.run(lambda conn: conn.fetchrow(sql, *args))

    async def fetchval(self, sql: str, *args: Any) -> Any:
        return await self.run(lambda conn: conn.fetchval(sql, *args))

    async def execute(self, sql: str, *args: Any) -> str:
        return await self.run(lambda conn: conn.execute(sql, *args))


def _describe(error: BaseException, timed_out: str = "") -> str:
    text = str(error).strip() or (timed_out if isinstance(error, TimeoutError) else "")
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


class Backoff:
    """Delays between the retries of a background loop whose database (or peer) is away.

    Doubling from ``first`` up to ``cap``, each delay drawn in its upper half so that
    processes restarted together do not retry together; ``reset()`` after a success.
    The cap keeps recovery prompt (at most ``cap`` seconds after PostgreSQL is back),
    at the cost of one failed connection attempt per ``cap`` seconds while it is down.
    """

    def __init__(self, first: float = 0.2, cap: float = 4.0) -> None:
        self.first = first
        self.cap = cap
        self._delay = 0.0
        self.failures = 0

    def reset(self) -> None:
        self._delay = 0.0
        self.failures = 0

    def next_delay(self) -> float:
        """The next wait, counting one more failure."""
        self.failures += 1
        self._delay = min(self.cap, max(self.first, self._delay * 2))
        return self._delay * random.uniform(0.5, 1.0)

    async def sleep(self) -> None:
        await trio.sleep(self.next_delay())


async def attempt(what: str, job: Callable[[], Awaitable[object]], backoff: Backoff) -> bool:
    """Run ``job`` once for a background loop; True when it succeeded.

    A failure never escapes: the first failure of a streak is logged (one line when the
    database is away, the traceback otherwise); the caller then waits on ``backoff``
    (which counts the failures). The recovery after a streak is logged once and resets it.
    """
    try:
        await job()
    except DatabaseUnavailable as exc:
        if backoff.failures == 0:
            log.warning("%s: the database is unavailable (%s); retrying", what, exc)
        return False
    except Exception:
        if backoff.failures == 0:
            log.exception("%s failed; retrying", what)
        return False
    if backoff.failures:
        log.info("%s: done again after %s failed attempts", what, backoff.failures)
        backoff.reset()
    return True


async def repeat(what: str, job: Callable[[], Awaitable[object]], every: float, *, wait_first: bool = False) -> None:
    """Run ``job`` every ``every`` seconds, forever: the shape of the periodic background loops.

    A failure never ends the loop (nor the process around it): the job runs again after
    a back-off capped at ``every`` (see ``attempt``).
    """
    backoff = Backoff(cap=min(every, 30.0))
    if wait_first:
        await trio.sleep(every)
    while True:
        if await attempt(what, job, backoff):
            await trio.sleep(every)
        else:
            await backoff.sleep()


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, in order."""
    found = []
    for entry in resources.files(MIGRATIONS_PACKAGE).iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), name, entry.read_text(encoding="utf-8")))
    found.sort()
    versions = [v for v, _, _ in found]
    if len(versions) != len(set(versions)):
        raise RuntimeError(f"two migrations share a version number: {versions}")
    return found


async def apply_migrations(conn: asyncpg.Connection) -> list[str]:
    """Apply the migrations not applied yet, in order, each in its own transaction (asyncio side)."""
    applied_now: list[str] = []
    # One migrator at a time across processes.
    await conn.execute("SELECT pg_advisory_lock(726310001)", timeout=MIGRATION_TIMEOUT)
    try:
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_version (
                   version integer PRIMARY KEY,
                   name text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_version")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql, timeout=MIGRATION_TIMEOUT)
                await conn.execute("INSERT INTO schema_version (version, name) VALUES ($1, $2)", version, name)
            applied_now.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock(726310001)")
    return applied_now


async def migrate(db: Database) -> list[str]:
    """Apply pending migrations through the pool."""
    applied = await db.run(apply_migrations)
    for name in applied:
        log.info("applied migration %s", name)
    return applied
