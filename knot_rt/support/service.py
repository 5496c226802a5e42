"""Support chat: who may read and write a report, on which side, and the chat actors that write its messages.

Access (:meth:`SupportService.access`):

- the report's author is on side ``user``;
- anyone else with the ``support`` permission on an OU covering the report's network is on side ``support``
  (reading and subscribing need the permission, writing and marking read need it with ``write``);
- anyone else gets 404 code 4, exactly like an unknown report (nobody learns that it exists). An author who is
  also an agent of the network is on the ``user`` side of their own report.

Every message of an existing report goes through its chat actor (``actors/chat.py``): one actor per report,
started on first use under the ``chats`` supervisor, stopped when idle (``idle_after``), restarted from the
database after a crash. The first message is written with the report itself (:meth:`open_report`), before
anyone may know the report's id, so no actor is needed for it.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import trio

from actors import (
    ActorError,
    ActorKind,
    ActorMetrics,
    AskTimeout,
    ChildStartFailed,
    Registry,
    RestartIntensity,
    Supervisor,
)
from actors.chat import (
    ChatActor,
    ChatMessageIn,
    ChatReply,
    ChatView,
    MarkRead,
    Post,
    Posted,
    Refused,
    Side,
    Typing,
)
from actors.runtime import ActorRef
from protocols.errors import ErrorCode
from protocols.feed import Topic

from ..catalog.memory import Catalog
from ..errors import ApiError
from ..services.access import AccessCache
from ..services.permissions import Scope
from ..uow import Work
from . import store
from .store import NewReport, PgChatStore, Report, ReportContext

log = logging.getLogger(__name__)

CHAT = ActorKind[ChatMessageIn, ChatReply]("chat")
SUPPORT_PERMISSION = "support"


def unknown_report(report_id: int) -> str:
    """The one message for an unknown report and one the caller may not see (404 code 4, feed code 13)."""
    return f"no report {report_id}"


class SupportService:
    def __init__(self, work: Work, catalog: Catalog, access: AccessCache, *, idle_after: float = 300.0,
                 ask_timeout: float = 10.0, restart_backoff: float = 0.5) -> None:
        self.work = work
        self.db = work.db
        self.catalog = catalog
        self.access_cache = access
        self.store = PgChatStore(work)
        self.idle_after = idle_after
        self.ask_timeout = ask_timeout
        self.metrics = ActorMetrics()
        # Counted per actor, like the stations': one channel crashing again and again is stopped alone.
        self.supervisor = Supervisor("chats", intensity=RestartIntensity(
            max_restarts=3, period=5.0, scope="child", backoff=restart_backoff, max_backoff=30.0,
            exceeded="stop_child",
        ), metrics=self.metrics)
        self.registry = Registry()
        self.registry.register(CHAT, self.supervisor, self._new_actor)

    def _new_actor(self, actor_id: str) -> ChatActor:
        return ChatActor(int(actor_id), self.store, idle_after=self.idle_after if self.idle_after > 0 else math.inf)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the chat actors' supervisor until cancelled."""
        async with trio.open_nursery() as nursery:
            await nursery.start(self.supervisor.run)
            task_status.started()

    async def actor(self, report_id: int) -> ActorRef[ChatMessageIn, ChatReply]:
        return await self.registry.get(CHAT, str(report_id))

    def running_actor(self, report_id: int) -> ActorRef[ChatMessageIn, ChatReply] | None:
        return self.registry.lookup(CHAT, str(report_id))

    # ------------------------------------------------------------------
    # Access

    async def side_of(self, user_id: int, report: Report, *, write: bool) -> Side | None:
        """The side ``user_id`` is on in ``report``, or None when they may not (read or ``write``) it."""
        if report.user_id == user_id:
            return Side.USER
        if report.network_id is None:
            return None
        network = self.catalog.networks.get(report.network_id)
        scope = Scope(network_id=report.network_id,
                      organization_id=network.organization_id if network is not None else None)
        permissions = await self.access_cache.permissions(self.db, user_id)
        return Side.SUPPORT if permissions.allows(SUPPORT_PERMISSION, scope, write=write) else None

    async def access(self, user_id: int, report_id: int, *, write: bool = False) -> tuple[Report, Side]:
        """The report and the caller's side in it; 404 code 4 when unknown or not theirs to read; with
        ``write``, 403 code 13 for an agent whose ``support`` permission there is read-only."""
        report = await self.db.run(lambda conn: store.load_report(conn, report_id))
        side = None if report is None else await self.side_of(user_id, report, write=write)
        if report is None or side is None:
            if write and report is not None and await self.side_of(user_id, report, write=False) is not None:
                raise ApiError(ErrorCode.NOT_ALLOWED, "your support permission on this network is read-only")
            raise ApiError(ErrorCode.NOT_FOUND, unknown_report(report_id))
        return report, side

    async def support_networks(self, user_id: int, *, write: bool = False) -> list[int]:
        """The networks whose reports ``user_id`` handles as a support agent."""
        permissions = await self.access_cache.permissions(self.db, user_id)
        return sorted(
            n.id for n in self.catalog.networks.values()
            if permissions.allows(SUPPORT_PERMISSION, Scope(network_id=n.id, organization_id=n.organization_id),
                                  write=write)
        )

    # ------------------------------------------------------------------
    # Through the chat actor

    async def _ask(self, report_id: int, message: ChatMessageIn) -> ChatReply:
        try:
            ref = await self.actor(report_id)
            return await ref.ask(message, timeout=self.ask_timeout)
        except AskTimeout as exc:
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, f"report {report_id}: the chat is busy") from exc
        except (ActorError, ChildStartFailed) as exc:
            # A crash rolled its unit of work back (nothing was written) and the actor restarts on its own.
            raise ApiError(ErrorCode.SERVICE_UNAVAILABLE, f"report {report_id}: the chat is restarting") from exc

    async def post_message(self, report: Report, side: Side, author: int | None, body: str | None = None,
                           image_id: int | None = None) -> dict[str, Any]:
        """Write a message (text or an image already stored in ``report_images``) through the report's actor;
        returns its JSON (``store.message_json``). 409 code 46 when the report is resolved past its window."""
        reply = await self._ask(report.id, Post(side, author, body, image_id))
        if isinstance(reply, Refused):
            raise ApiError(ErrorCode.REPORT_CLOSED, reply.reason)
        assert isinstance(reply, Posted)
        written = reply.message
        public_id = None
        if written.image_id is not None:
            public_id = await self.db.fetchval("SELECT public_id FROM report_images WHERE id = $1", written.image_id)
        return store.message_json({
            "id": written.id, "report_id": written.report_id, "side": str(written.side),
            "author_id": written.author_id, "body": written.body, "image_public_id": public_id,
            "created_at": written.created_at,
        })

    async def mark_read(self, report: Report, side: Side, message_id: int) -> ChatView:
        reply = await self._ask(report.id, MarkRead(side, message_id))
        assert isinstance(reply, ChatView)
        return reply

    async def typing(self, report: Report, side: Side) -> ChatView:
        reply = await self._ask(report.id, Typing(side))
        assert isinstance(reply, ChatView)
        return reply

    # ------------------------------------------------------------------
    # Reports

    async def open_report(self, user_id: int, body: str, context: ReportContext) -> Report:
        """A new report with its first message. Each piece of context must be something the rider sees (404
        code 4 otherwise, like an unknown one); the report's network is theirs (400 code 2 when they disagree),
        else the network of the rider's ongoing rent, else none."""
        access = await self.access_cache.of(self.db, self.catalog, user_id)
        found = await self.db.run(lambda conn: store.resolve_context(conn, user_id, context))
        networks: set[int] = set()
        for what, (given, network_id) in found.networks.items():
            network = self.catalog.networks.get(network_id) if network_id is not None else None
            if network is None or not access.sees(network):
                raise ApiError(ErrorCode.NOT_FOUND, f"no {what} {given}")
            networks.add(network.id)
        if len(networks) > 1:
            raise ApiError(ErrorCode.INVALID_INPUT, "the report's context spans several networks")
        network_id = next(iter(networks), None)
        if network_id is None:
            network_id = await self.db.fetchval(
                "SELECT network_id FROM rents WHERE user_id = $1 AND ended_at IS NULL ORDER BY id DESC LIMIT 1",
                user_id,
            )
        new = NewReport(
            user_id=user_id, network_id=network_id, body=body, vehicle_id=found.vehicle_id,
            station_id=context.station_id, spot_id=context.spot_id, cluster_id=context.cluster_id,
            rent_id=context.trip_id, latitude=context.latitude, longitude=context.longitude,
        )
        report_id = await self.db.run(store.next_report_id)
        topics = [Topic.report(report_id)]
        if network_id is not None:
            topics.append(Topic.support(network_id))
        return await self.work.run(lambda uow: store.create_report(uow, report_id, new), topics=topics)
