"""One process's part in a cluster of server processes on one database: the pieces, wired and run.

``Services.build`` makes one when ``Settings.cluster`` is on (``knot-rt serve --workers N`` sets it for
its processes; several ``knot-rt serve`` behind a load balancer set ``KNOT_CLUSTER=1``). What crosses
processes, and how (see ``link.py``):

- devices: one advisory lock each (``ownership.py``); requests for a device held elsewhere are forwarded
  (``calls.py``);
- feed events: announced at commit, read by the processes with subscribers (``remote_feed.py``);
- sessions revoked, catalog changes, users' access changes: told by triggers (migration 130); here they
  reach ``on_sessions_revoked``, ``on_catalog_changed`` and ``on_access_changed``;
- rate-limit counters: a table (``services/ratelimit.py``'s ``SharedRateLimiter``);
- after the link was lost and came back (something may have been missed): ``on_rejoined``.

One process alone has none of it: no extra connection, no NOTIFY.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable

import trio

from ..bus import FeedBus
from ..db import Database
from .calls import RemoteCalls
from .link import ACCESS, CATALOG, SESSIONS, ClusterLink
from .ownership import Ownership
from .remote_feed import RemoteFeed

log = logging.getLogger(__name__)


class Cluster:
    def __init__(self, db: Database, bus: FeedBus, *, takeover_seconds: float = 5.0) -> None:
        self.link = ClusterLink(db)
        self.calls = RemoteCalls(db, self.link)
        self.ownership = Ownership(self.link, self.calls, takeover_seconds=takeover_seconds)
        self.feed = RemoteFeed(bus, self.link)
        self.on_sessions_revoked: Callable[[list[uuid.UUID]], None] = lambda _ids: None
        self.on_catalog_changed: Callable[[], None] = lambda: None
        self.on_access_changed: Callable[[int | None], None] = lambda _user_id: None  # None: every user's
        self.on_rejoined: Callable[[], None] = lambda: None
        self.link.listen(SESSIONS, self._sessions_revoked)
        self.link.listen(CATALOG, lambda _table: self.on_catalog_changed())
        self.link.listen(ACCESS, self._access_changed)
        self.link.on_joined.append(lambda: self.on_rejoined())

    @property
    def node(self) -> int:
        return self.link.node

    def _sessions_revoked(self, payload: str) -> None:
        try:
            session_id = uuid.UUID(payload)
        except ValueError:
            return
        self.on_sessions_revoked([session_id])

    def _access_changed(self, payload: str) -> None:
        if payload == "*":
            self.on_access_changed(None)
        elif payload.isdigit():
            self.on_access_changed(int(payload))

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Join (the link up, its node id known), then keep the parts running."""
        async with trio.open_nursery() as nursery:
            node: int = await nursery.start(self.link.run)
            nursery.start_soon(self.ownership.run)
            nursery.start_soon(self.feed.run)
            nursery.start_soon(self.calls.run_pruner)
            task_status.started(node)
