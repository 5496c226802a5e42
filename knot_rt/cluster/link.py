"""This process's seat among the server processes that share one PostgreSQL.

One dedicated connection per process, outside the pool, does two things:

- it holds the process's session advisory locks (``ownership.py``: one per station or vehicle whose
  actor runs here). A process that dies, or whose connection breaks, loses them all at once: that is
  what lets another process take its devices over without asking;
- it LISTENs: ``knot_feed`` (feed events written by any process: ``remote_feed.py``), ``knot_ephemeral``
  (typing indicators, which have no row), ``knot_sessions`` (sessions revoked: a trigger sends them),
  ``knot_catalog`` (the catalog's tables changed: a trigger too), ``knot_access`` (a user's rights
  changed: triggers), and the process's own channel ``knot_node_<node>`` (calls from other processes and
  their answers: ``calls.py``).

The process's ``node`` is that connection's backend pid: ``pg_locks`` names it as the holder of a
device's lock, so "who owns station 7" is one query and "tell node 1234" is a NOTIFY on its channel.

Choices and costs:

- Notifications are handed to their handlers in the order PostgreSQL delivers them (commit order), on
  one Trio task; a handler that needs the database starts a task of its own (``spawn``).
- Commands on the connection (lock, unlock, the keep-alive) are serialised by a lock: asyncpg runs
  one command at a time on a connection. A lock or unlock is a loopback round trip (~0.1 ms).
- The connection is checked every ``keepalive`` seconds. When it is lost, the locks are gone:
  ``on_lost`` handlers drop what the process owned (devices reconnect, elsewhere or here), and the link
  connects again with back-off, under a new node id; ``on_joined`` handlers then run (caches that may
  have missed a revocation or a change are dropped).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import trio

from ..db import Backoff, Database

log = logging.getLogger(__name__)

FEED = "knot_feed"
SESSIONS = "knot_sessions"
CATALOG = "knot_catalog"
ACCESS = "knot_access"
EPHEMERAL = "knot_ephemeral"

Handler = Callable[[str], None]
APPLICATION_NAME = "knot-rt link"  # how the links show in pg_stat_activity: one per process of the cluster


def node_channel(node: int) -> str:
    return f"knot_node_{node}"


class LinkLost(Exception):
    """The link's connection is not there (lost, or not connected yet)."""


class ClusterLink:
    def __init__(self, db: Database, *, keepalive: float = 2.0, connect_timeout: float = 5.0) -> None:
        self.db = db
        self.keepalive = keepalive
        self.connect_timeout = connect_timeout
        self.node = 0  # this process's id in the cluster; 0 while not connected
        self._conn: asyncpg.Connection | None = None
        self._lock = trio.Lock()
        self._handlers: dict[str, Handler] = {}
        self._own_handler: Handler | None = None
        self._send, self._receive = trio.open_memory_channel[tuple[str, str]](math.inf)
        self._nursery: trio.Nursery | None = None
        self.on_lost: list[Callable[[], Awaitable[None]]] = []
        self.on_joined: list[Callable[[], None]] = []
        self.joined = trio.Event()  # set once the first connection is up

    # -- wiring (before ``run``) -------------------------------------------------------------------

    def listen(self, channel: str, handler: Handler) -> None:
        """Call ``handler(payload)`` for each notification on ``channel`` (a shared channel)."""
        self._handlers[channel] = handler

    def listen_own(self, handler: Handler) -> None:
        """Call ``handler(payload)`` for each notification on this process's own channel."""
        self._own_handler = handler

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Run ``fn(*args)`` as a task of the link (a handler's work that needs the database)."""
        if self._nursery is None:
            raise LinkLost("the cluster link is not running")
        self._nursery.start_soon(fn, *args)

    # -- the connection's commands -----------------------------------------------------------------

    async def command(self, sql: str, *args: Any) -> Any:
        """One command on the link's own connection (for the advisory locks): its first value; raises
        ``LinkLost``."""
        return await self._on_link(lambda conn: conn.fetchval(sql, *args, timeout=self.connect_timeout))

    async def fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        """One query on the link's own connection: its rows; raises ``LinkLost``."""
        rows: list[asyncpg.Record] = await self._on_link(
            lambda conn: conn.fetch(sql, *args, timeout=self.connect_timeout))
        return rows

    async def _on_link(self, query: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        async with self._lock:
            conn = self._conn
            if conn is None or conn.is_closed():
                raise LinkLost("the cluster link is down")

            async def run() -> Any:
                return await query(conn)

            try:
                return await self.db.on_loop(run)()
            except (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError) as exc:
                raise LinkLost(f"the cluster link failed: {exc!r}") from exc

    # -- running -----------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep the link up for the life of the process; reports the first node id once connected."""
        backoff = Backoff(cap=4.0)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._dispatch)
            try:
                await self._keep_up(backoff, task_status)
            finally:
                await self.aclose()

    async def _keep_up(self, backoff: Backoff, task_status: trio.TaskStatus[int]) -> None:
        started = False
        while True:
            try:
                await self._connect()
            except Exception as exc:
                if backoff.failures == 0:
                    log.warning("[cluster] cannot connect the link (%r); retrying", exc)
                await backoff.sleep()
                continue
            backoff.reset()
            log.info("[cluster] joined as node %s", self.node)
            if not started:
                started = True
                self.joined.set()
                task_status.started(self.node)
            else:
                for joined in self.on_joined:
                    joined()
            await self._watch()
            await self._lose()

    async def _connect(self) -> None:
        url = self.db.url

        async def connect() -> asyncpg.Connection:
            conn = await asyncpg.connect(url, timeout=self.connect_timeout,
                                         server_settings={"application_name": APPLICATION_NAME})
            node = conn.get_server_pid()
            for channel in [*self._handlers, node_channel(node)]:
                await conn.add_listener(channel, self._notified)
            return conn

        conn: asyncpg.Connection = await self.db.on_loop(connect)()
        self._conn = conn
        self.node = conn.get_server_pid()

    def _notified(self, _conn: Any, _pid: int, channel: str, payload: str) -> None:
        # Called on the asyncio side (in the Trio thread, trio-asyncio): hand it to the dispatcher.
        self._send.send_nowait((channel, payload))

    async def _dispatch(self) -> None:
        async for channel, payload in self._receive:
            if channel == node_channel(self.node):
                handler = self._own_handler
            else:
                handler = self._handlers.get(channel)
            if handler is None:
                continue
            try:
                handler(payload)
            except Exception:
                log.exception("[cluster] a %s notification could not be handled: %r", channel, payload[:200])

    async def _watch(self) -> None:
        """Return when the connection is lost."""
        while True:
            await trio.sleep(self.keepalive)
            try:
                await self.command("SELECT 1")
            except LinkLost as exc:
                log.warning("[cluster] node %s lost its link (%s): its devices are dropped", self.node, exc)
                return

    async def _lose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()
        with trio.CancelScope(shield=True):
            for lost in self.on_lost:
                try:
                    await lost()
                except Exception:
                    log.exception("[cluster] dropping what node %s owned failed", self.node)
        self.node = 0

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            async def close() -> None:
                await conn.close(timeout=2)

            with trio.CancelScope(shield=True), trio.move_on_after(3):
                try:
                    await self.db.on_loop(close)()
                    return
                except Exception:
                    pass
            conn.terminate()

    async def notify(self, channel: str, payload: str) -> None:
        """Send a notification through the pool (delivered to every listener, this process's too)."""
        await self.db.execute("SELECT pg_notify($1, $2)", channel, payload)
