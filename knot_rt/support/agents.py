"""The support agents' side of the chat: the reports of their networks, assignment, resolution, the rider's mail.

An agent is a user with the ``support`` permission on a network (``services/access.support_networks``).
Reading (the list, the ``support:<network_id>`` topic) takes any such permission; acting on a report
(assign, resolve, reopen) takes one with ``write``. A report of a network the agent does not serve
answers exactly like an unknown one (404 code 4), so an agent learns nothing of other networks.

Every change is one unit of work (``uow.Work``) with its feed events: ``report.assigned`` /
``report.resolved`` / ``report.reopened`` on ``report:<id>``, ``report.updated`` on
``support:<network_id>`` and, for a status change, on the author's ``user`` topic. The events on
``report:<id>`` say ``"by": "support"`` and the ``agent_id`` (a reopening by the rider's message says
``"by": "user"``, ``support/store.py``). The row is locked (``FOR UPDATE``) inside
the transaction, so two agents acting at once are ordered; a change that changes nothing (resolving a
resolved report, assigning to the current assignee) still answers 0 but writes and publishes nothing.

The offline-rider mail (:meth:`SupportAgents.mail_rider_if_offline`) is called by the chat service in
the unit of work of a support message: when the rider has no feed socket open in this process
(``FeedHub.is_online``; the launcher runs one server process) and no such mail went out for that report
within the hour (``reports.mailed_at``), a mail is written to the outbox in the same transaction and the
sender woken after the commit. The cost of deciding "offline" at write time: a rider who connects a
moment later still gets the mail; one who is connected but not looking gets none (the app shows it).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

import asyncpg

from protocols.errors import ErrorCode
from protocols.feed import EventName, Topic

from ..bus import FeedHub
from ..db import Database
from ..errors import ApiError
from ..services import mail as outbox
from ..services.access import Catalog, Cluster, support_networks
from ..services.mail import MailSender
from ..services.permissions import load_permissions
from ..uow import UnitOfWork, Work
from . import store
from .service import unknown_report as store_unknown_report
from .store import Side

Status = Literal["open", "resolved", "all"]
MAIL_EVERY = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class AgentReport:
    """A report as its network's agents see it: the chat's report and its author's address."""

    report: store.Report
    author_email: str

    def as_json(self) -> dict[str, Any]:
        """The spec's report from the support side (``store.report_json``: ``unread`` a flag, ``unread_count``
        the rider's messages support has not read), with ``author`` and ``resolved_at``: the list's items and
        the payload of ``report.updated`` on ``support:<network_id>``."""
        return {
            **store.report_json(self.report, Side.SUPPORT),
            "author": {"user_id": self.report.user_id, "email": self.author_email},
            "resolved_at": None if self.report.resolved_at is None else self.report.resolved_at.isoformat(),
        }


def unknown_report(report_id: int) -> ApiError:
    """The one answer for an unknown report and one of a network the agent does not serve."""
    return ApiError(ErrorCode.NOT_FOUND, store_unknown_report(report_id))


async def _emails(conn: asyncpg.Connection, user_ids: set[int]) -> dict[int, str]:
    rows = await conn.fetch("SELECT id, email FROM users WHERE id = ANY($1::bigint[])", list(user_ids))
    return {row["id"]: row["email"] for row in rows}


async def read_report(conn: asyncpg.Connection, report_id: int) -> AgentReport | None:
    """One report as agents see it (any connection; inside a unit of work after its change)."""
    report = await store.load_report(conn, report_id)
    if report is None:
        return None
    return AgentReport(report, (await _emails(conn, {report.user_id})).get(report.user_id, ""))


async def publish_report_updated(uow: UnitOfWork, report: AgentReport, *, rider: bool) -> None:
    """``report.updated`` on ``support:<network_id>`` (the agents' view) and, with ``rider``, on the author's
    ``user`` topic (the rider's view, with their unread count). The unit of work names both topics
    (:func:`report_topics`)."""
    if report.report.network_id is not None:
        await uow.publish(Topic.support(report.report.network_id), EventName.REPORT_UPDATED, report.as_json())
    if rider:
        await uow.publish(Topic.user(report.report.user_id), EventName.REPORT_UPDATED,
                          store.report_json(report.report, Side.USER))


def report_topics(report_id: int, network_id: int | None, author_id: int) -> list[Topic]:
    """The topics a change of a report publishes on."""
    topics = [Topic.report(report_id), Topic.user(author_id)]
    if network_id is not None:
        topics.append(Topic.support(network_id))
    return topics


class SupportAgents:
    """The support routes' service; see the module's docstring."""

    def __init__(
        self, db: Database, work: Work, catalog: Catalog[Cluster], hub: FeedHub, mail: MailSender, public_url: str,
    ) -> None:
        self.db = db
        self.work = work
        self.catalog = catalog
        self.hub = hub
        self.mail = mail
        self.public_url = public_url.rstrip("/")

    async def networks_of(self, agent_id: int, *, write: bool = False) -> frozenset[int]:
        """The networks whose reports ``agent_id`` serves (``write``: may act on them)."""
        permissions = await self.db.run(lambda conn: load_permissions(conn, agent_id))
        return support_networks(permissions, self.catalog, write=write)

    async def reports(
        self, agent_id: int, *, status: Status = "open", network_id: int | None = None, before: int | None = None,
        limit: int = 30,
    ) -> list[AgentReport]:
        """The reports of the agent's networks (or of one of them), newest first, ``limit`` of them with an id
        below ``before``. Raises 403 code 13 for a caller who serves no network, or not ``network_id``."""
        networks = await self.networks_of(agent_id)
        if not networks or (network_id is not None and network_id not in networks):
            raise ApiError(ErrorCode.NOT_ALLOWED, "you are no support agent of that network")
        wanted = [network_id] if network_id is not None else sorted(networks)

        async def read(conn: asyncpg.Connection) -> list[AgentReport]:
            found = await store.network_reports(conn, wanted, status=None if status == "all" else status,
                                                before=before, limit=limit)
            emails = await _emails(conn, {r.user_id for r in found})
            return [AgentReport(r, emails.get(r.user_id, "")) for r in found]

        return await self.db.run(read)

    async def _change(self, agent_id: int, report_id: int, action: str, agent: int | None = None) -> AgentReport:
        networks = await self.networks_of(agent_id, write=True)
        where = await self.db.fetchrow("SELECT network_id, user_id FROM reports WHERE id = $1", report_id)
        if where is None or where["network_id"] not in networks:
            raise unknown_report(report_id)
        network_id, author_id = where["network_id"], where["user_id"]
        if action == "assign" and agent is not None and network_id not in await self.networks_of(agent, write=True):
            raise ApiError(ErrorCode.INVALID_INPUT, f"user {agent} is no support agent of the report's network")

        async def change(uow: UnitOfWork) -> AgentReport:
            row = await uow.conn.fetchrow(
                "SELECT status, assigned_to, network_id FROM reports WHERE id = $1 FOR UPDATE", report_id
            )
            if row is None or row["network_id"] != network_id:  # deleted or moved meanwhile
                raise unknown_report(report_id)
            topic = Topic.report(report_id)
            if action == "assign":
                if row["assigned_to"] != agent:
                    await uow.conn.execute("UPDATE reports SET assigned_to = $2 WHERE id = $1", report_id, agent)
                    await uow.publish(topic, EventName.REPORT_ASSIGNED, {
                        "report_id": report_id, "assigned_to": agent, "by": str(Side.SUPPORT), "agent_id": agent_id,
                    })
                    changed = True
                else:
                    changed = False
            elif action == "resolve":
                changed = row["status"] != "resolved"
                if changed:
                    resolved_at = await uow.conn.fetchval(
                        "UPDATE reports SET status = 'resolved', resolved_at = now() WHERE id = $1 "
                        "RETURNING resolved_at", report_id,
                    )
                    await uow.publish(topic, EventName.REPORT_RESOLVED, {
                        "report_id": report_id, "by": str(Side.SUPPORT), "agent_id": agent_id,
                        "resolved_at": resolved_at.isoformat(),
                    })
            else:
                changed = row["status"] != "open"
                if changed:
                    await uow.conn.execute(
                        "UPDATE reports SET status = 'open', resolved_at = NULL WHERE id = $1", report_id
                    )
                    await uow.publish(topic, EventName.REPORT_REOPENED, {
                        "report_id": report_id, "by": str(Side.SUPPORT), "agent_id": agent_id,
                    })
            report = await read_report(uow.conn, report_id)
            assert report is not None
            if changed:  # the rider hears of their report's status, not of who handles it
                await publish_report_updated(uow, report, rider=action != "assign")
            return report

        return await self.work.run(change, topics=report_topics(report_id, network_id, author_id))

    async def assign(self, agent_id: int, report_id: int, assignee: int | None) -> AgentReport:
        """Assign the report to ``assignee`` (an agent of its network), or release it (None)."""
        return await self._change(agent_id, report_id, "assign", assignee)

    async def resolve(self, agent_id: int, report_id: int) -> AgentReport:
        return await self._change(agent_id, report_id, "resolve")

    async def reopen(self, agent_id: int, report_id: int) -> AgentReport:
        return await self._change(agent_id, report_id, "reopen")

    async def mail_rider_if_offline(self, uow: UnitOfWork, report_id: int) -> bool:
        """In the unit of work of a support message: mail the rider when offline, at most once an hour per
        report. Returns whether a mail was written."""
        row = await uow.conn.fetchrow(
            "SELECT r.user_id, u.email FROM reports r JOIN users u ON u.id = r.user_id WHERE r.id = $1", report_id
        )
        if row is None or self.hub.is_online(row["user_id"]):
            return False
        claimed = await uow.conn.fetchval(
            """UPDATE reports SET mailed_at = now() WHERE id = $1
               AND (mailed_at IS NULL OR mailed_at <= now() - $2::interval) RETURNING id""",
            report_id, MAIL_EVERY,
        )
        if claimed is None:
            return False
        await outbox.enqueue(
            uow.conn, row["email"], "Support answered your report",
            f"Hello,\n\nThe support team answered your report #{report_id}. Open the app to read it and reply.\n\n"
            f"{self.public_url}\n",
        )
        uow.after(self.mail.wake)
        return True
