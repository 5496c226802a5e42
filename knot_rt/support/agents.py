"""The support agents' side of the chat: the reports of their networks, assignment, resolution, the rider's mail.

An agent is a user with the ``support`` permission on a network (``services/access.support_networks``).
Reading (the list, the ``support:<network_id>`` topic) takes any such permission; acting on a report
(assign, resolve, reopen) takes one with ``write``. A report of a network the agent does not serve
answers exactly like an unknown one (404 code 4), so an agent learns nothing of other networks.

Every change is one unit of work (``uow.Work``) with its feed events: ``report.assigned`` /
``report.resolved`` / ``report.reopened`` on ``report:<id>``, ``report.updated`` on
``support:<network_id>`` and on the author's ``user`` topic. The row is locked (``FOR UPDATE``) inside
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

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
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

Status = Literal["open", "resolved", "all"]
MAIL_EVERY = timedelta(hours=1)
PREVIEW_CHARS = 200


@dataclass(frozen=True, slots=True)
class AgentReport:
    """A report as its network's agents list it."""

    report_id: int
    network_id: int | None
    status: str
    assigned_to: int | None
    author_id: int
    author_email: str
    created_at: datetime
    resolved_at: datetime | None
    last_message_id: int | None
    last_message: str | None
    last_message_side: str | None
    last_message_at: datetime | None
    unread: int

    def as_event(self) -> dict[str, Any]:
        """The payload of ``report.updated`` / ``report.created`` on ``support:<network_id>``."""
        return {
            "report_id": self.report_id,
            "network_id": self.network_id,
            "status": self.status,
            "resolved": self.status == "resolved",
            "assigned_to": self.assigned_to,
            "author": {"user_id": self.author_id, "email": self.author_email},
            "message": self.last_message,
            "sender": self.last_message_side,
            "date": _ms(self.last_message_at),
            "report_date": _ms(self.created_at),
            "unread": self.unread,
        }


def _ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def unknown_report(report_id: int) -> ApiError:
    """The one answer for an unknown report and one of a network the agent does not serve."""
    return ApiError(ErrorCode.NOT_FOUND, f"no report {report_id}")


_SELECT = f"""
    SELECT r.id, r.network_id, r.status, r.assigned_to, r.user_id, u.email, r.created_at, r.resolved_at,
           r.last_message_id,
           left(m.body, {PREVIEW_CHARS}) AS body, m.image_id, m.side, m.created_at AS message_at,
           (SELECT count(*) FROM report_messages x
            WHERE x.report_id = r.id AND x.side = 'user' AND x.id > r.support_read_up_to) AS unread
    FROM reports r
    JOIN users u ON u.id = r.user_id
    LEFT JOIN report_messages m ON m.id = r.last_message_id
"""


def _report(row: Mapping[str, Any]) -> AgentReport:
    body = row["body"]
    if body is None and row["image_id"] is not None:
        body = "[image]"
    return AgentReport(
        report_id=row["id"], network_id=row["network_id"], status=row["status"], assigned_to=row["assigned_to"],
        author_id=row["user_id"], author_email=row["email"], created_at=row["created_at"],
        resolved_at=row["resolved_at"], last_message_id=row["last_message_id"], last_message=body,
        last_message_side=row["side"], last_message_at=row["message_at"], unread=int(row["unread"]),
    )


async def read_report(conn: asyncpg.Connection, report_id: int) -> AgentReport | None:
    """One report as agents see it (any connection; inside a unit of work after its change)."""
    row = await conn.fetchrow(_SELECT + " WHERE r.id = $1", report_id)
    return None if row is None else _report(row)


async def user_unread(conn: asyncpg.Connection, report_id: int) -> int:
    """The rider's unread count of a report: support messages after the rider's read marker."""
    count: int = await conn.fetchval(
        """SELECT count(*) FROM report_messages m JOIN reports r ON r.id = m.report_id
           WHERE r.id = $1 AND m.side = 'support' AND m.id > r.user_read_up_to""",
        report_id,
    )
    return count


async def publish_report_updated(uow: UnitOfWork, report: AgentReport) -> None:
    """``report.updated`` on ``support:<network_id>`` (the agents' view) and on the author's ``user`` topic
    (the rider's unread count). The unit of work must name both topics (:func:`report_topics`)."""
    if report.network_id is not None:
        await uow.publish(Topic.support(report.network_id), EventName.REPORT_UPDATED, report.as_event())
    await uow.publish(Topic.user(report.author_id), EventName.REPORT_UPDATED, {
        "report_id": report.report_id,
        "resolved": report.status == "resolved",
        "unread": await user_unread(uow.conn, report.report_id),
        "message": report.last_message,
        "sender": report.last_message_side,
        "date": _ms(report.last_message_at),
    })


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
        statuses = ["open", "resolved"] if status == "all" else [status]
        rows = await self.db.fetch(
            _SELECT + """ WHERE r.network_id = ANY($1::bigint[]) AND r.status = ANY($2::text[])
                          AND ($3::bigint IS NULL OR r.id < $3) ORDER BY r.id DESC LIMIT $4""",
            wanted, statuses, before, limit,
        )
        return [_report(row) for row in rows]

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
                        "report_id": report_id, "assigned_to": agent, "by": agent_id,
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
                        "report_id": report_id, "by": agent_id, "resolved_at": _ms(resolved_at),
                    })
            else:
                changed = row["status"] != "open"
                if changed:
                    await uow.conn.execute(
                        "UPDATE reports SET status = 'open', resolved_at = NULL WHERE id = $1", report_id
                    )
                    await uow.publish(topic, EventName.REPORT_REOPENED, {"report_id": report_id, "by": agent_id})
            report = await read_report(uow.conn, report_id)
            assert report is not None
            if changed:
                await publish_report_updated(uow, report)
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
