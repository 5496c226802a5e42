"""PostgreSQL access from Trio through trio-asyncio.

asyncpg runs on asyncio only. Every unit of database work is one asyncio
coroutine wrapped once with ``aio_as_trio``: a connection is never held across a
Trio await, so a Trio cancellation cannot leak it. The pool is closed inside a
shielded cancel scope with a deadline, then terminated.
"""

from __future__ import annotations

import json
import logging
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


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class Database:
    """A pool of connections, used from Trio."""

    def __init__(self, pool: asyncpg.Pool, loop: Any) -> None:
        self._pool = pool
        # Kept so that any Trio task may use the pool, even one that did not inherit the loop.
        self._loop = loop

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> Database:
        loop = trio_asyncio.current_loop.get()
        if loop is None:
            raise RuntimeError("Database.connect needs an open trio-asyncio loop")

        async def create() -> asyncpg.Pool:
            return await asyncpg.create_pool(
                url, min_size=min_size, max_size=max_size, init=_init_connection, command_timeout=30
            )

        return cls(await trio_asyncio.aio_as_trio(create, loop=loop)(), loop)

    async def close(self) -> None:
        async def close_pool() -> None:
            await self._pool.close()

        with trio.CancelScope(shield=True):
            with trio.move_on_after(5):
                await self._aio(close_pool)()
                return
            self._pool.terminate()

    async def run(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work(conn)`` as one asyncio coroutine, on a pooled connection."""

        async def unit() -> T:
            async with self._pool.acquire() as conn:
                return await work(conn)

        return await self._aio(unit)()

    async def transaction(self, work: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run ``work(conn)`` inside one transaction."""

        async def unit() -> T:
            async with self._pool.acquire() as conn, conn.transaction():
                return await work(conn)

        return await self._aio(unit)()

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
    await conn.execute("SELECT pg_advisory_lock(726310001)")
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
                await conn.execute(sql)
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
