"""Support chat storage: reports, their messages and read markers (``migrations/100_support.sql``).

Two kinds of callers:

- the chat actors (``actors/chat.py``), through :class:`PgChatStore`: a message and its feed events in one
  unit of work; read markers; typing handed to the bus's ephemeral path;
- the routes and the service, through the plain query functions below (reading reports and history,
  opening a report with its first message).

Message JSON (history, ``message.created``): ``message_id``, ``report_id``, ``side`` (``user`` or
``support``), ``author_id``, ``message`` (the text, or null for an image), ``image`` (``{"id", "url"}`` or
null), ``date``. The report shape is the spec's (rows 8-9), see :func:`report_json`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from actors.chat import ChatMessage, ChatState, Refused, Side
from protocols.feed import EventName, Topic

from ..uow import UnitOfWork, Work

#: A resolved report is reopened by a new message within this long after its resolution (``allow_reopen``).
REOPEN_WINDOW = timedelta(days=7)
#: The report's ``message``: the last message's text cut to this many characters.
PREVIEW_CHARS = 100
IMAGE_PREVIEW = "[image]"

_REPORT_COLUMNS = """r.id, r.user_id, r.network_id, r.status, r.assigned_to, r.created_at, r.resolved_at,
    r.last_message_id, r.user_read_up_to, r.support_read_up_to,
    r.vehicle_id, r.station_id, r.spot_id, r.cluster_id, r.rent_id, r.latitude, r.longitude,
    m.side AS last_side, m.body AS last_body, m.image_id AS last_image_id, m.created_at AS last_date,
    (SELECT count(*) FROM report_messages x WHERE x.report_id = r.id AND x.side = 'support'
        AND x.id > r.user_read_up_to) AS user_unread,
    (SELECT count(*) FROM report_messages x WHERE x.report_id = r.id AND x.side = 'user'
        AND x.id > r.support_read_up_to) AS support_unread"""
_REPORT_FROM = "reports r LEFT JOIN report_messages m ON m.id = r.last_message_id"


@dataclass(frozen=True, slots=True)
class Report:
    id: int
    user_id: int
    network_id: int | None
    status: str
    assigned_to: int | None
    created_at: datetime
    resolved_at: datetime | None
    last_message_id: int | None
    read_up_to: dict[Side, int]
    unread: dict[Side, int]
    last_side: Side | None
    last_body: str | None
    last_image_id: int | None
    last_date: datetime | None
    context: dict[str, Any]

    @property
    def resolved(self) -> bool:
        return self.status == "resolved"

    def allow_reopen(self, now: datetime | None = None) -> bool:
        """True while a message may be written: open, or resolved less than ``REOPEN_WINDOW`` ago."""
        if self.resolved_at is None:
            return True
        return (now or datetime.now(UTC)) - self.resolved_at < REOPEN_WINDOW

    @property
    def preview(self) -> str:
        if self.last_body is not None:
            return self.last_body[:PREVIEW_CHARS]
        return IMAGE_PREVIEW if self.last_image_id is not None else ""


def _report(row: asyncpg.Record) -> Report:
    return Report(
        id=row["id"], user_id=row["user_id"], network_id=row["network_id"], status=row["status"],
        assigned_to=row["assigned_to"], created_at=row["created_at"], resolved_at=row["resolved_at"],
        last_message_id=row["last_message_id"],
        read_up_to={Side.USER: row["user_read_up_to"], Side.SUPPORT: row["support_read_up_to"]},
        unread={Side.USER: row["user_unread"], Side.SUPPORT: row["support_unread"]},
        last_side=Side(row["last_side"]) if row["last_side"] else None, last_body=row["last_body"],
        last_image_id=row["last_image_id"], last_date=row["last_date"],
        context={k: row[k] for k in ("vehicle_id", "station_id", "spot_id", "cluster_id", "rent_id", "latitude",
                                     "longitude") if row[k] is not None},
    )


def report_json(report: Report, side: Side) -> dict[str, Any]:
    """The spec's report (rows 8-9), as seen from ``side`` (whose ``unread`` it is), plus ``unread_count``,
    ``network_id``, ``status`` and ``assigned_to`` (extra fields the apps may ignore).

    ``sender``: the side that wrote the last message (``user`` or ``support``); ``date``: that message's date
    (the report's own before any message); ``allow_reopen``: a message may be written (open, or resolved less
    than 7 days ago)."""
    return {
        "report_id": report.id,
        "message": report.preview,
        "sender": str(report.last_side) if report.last_side else str(Side.USER),
        "date": (report.last_date or report.created_at).isoformat(),
        "report_date": report.created_at.isoformat(),
        "resolved": report.resolved,
        "unread": report.unread[side] > 0,
        "allow_reopen": report.allow_reopen(),
        "unread_count": report.unread[side],
        "network_id": report.network_id,
        "status": report.status,
        "assigned_to": report.assigned_to,
    }


def image_url(report_id: int, public_id: str) -> str:
    return f"/api/application/reports/{report_id}/images/{public_id}"


def message_json(row: asyncpg.Record | dict[str, Any]) -> dict[str, Any]:
    public_id = row["image_public_id"]
    return {
        "message_id": row["id"],
        "report_id": row["report_id"],
        "side": row["side"],
        "author_id": row["author_id"],
        "message": row["body"],
        "image": None if public_id is None else {"id": public_id, "url": image_url(row["report_id"], public_id)},
        "date": row["created_at"].isoformat(),
    }


_MESSAGE_SELECT = """SELECT m.id, m.report_id, m.side, m.author_id, m.body, m.image_id, m.created_at,
    i.public_id AS image_public_id FROM report_messages m LEFT JOIN report_images i ON i.id = m.image_id"""


# --------------------------------------------------------------------------
# Reading


async def load_report(conn: asyncpg.Connection, report_id: int, *, lock: bool = False) -> Report | None:
    if lock:
        await conn.execute("SELECT 1 FROM reports WHERE id = $1 FOR UPDATE", report_id)
    row = await conn.fetchrow(f"SELECT {_REPORT_COLUMNS} FROM {_REPORT_FROM} WHERE r.id = $1", report_id)
    return None if row is None else _report(row)


async def user_reports(conn: asyncpg.Connection, user_id: int, *, before: int | None = None,
                       limit: int = 100) -> list[Report]:
    """The user's reports, newest first."""
    rows = await conn.fetch(
        f"""SELECT {_REPORT_COLUMNS} FROM {_REPORT_FROM} WHERE r.user_id = $1 AND ($2::bigint IS NULL OR r.id < $2)
            ORDER BY r.id DESC LIMIT $3""",
        user_id, before, limit,
    )
    return [_report(row) for row in rows]


async def network_reports(conn: asyncpg.Connection, network_ids: list[int], *, status: str | None = None,
                          before: int | None = None, limit: int = 30) -> list[Report]:
    """The reports of these networks (``status`` None: all), newest first (for the agents' routes)."""
    rows = await conn.fetch(
        f"""SELECT {_REPORT_COLUMNS} FROM {_REPORT_FROM}
            WHERE r.network_id = ANY($1::bigint[]) AND ($2::text IS NULL OR r.status = $2)
              AND ($3::bigint IS NULL OR r.id < $3)
            ORDER BY r.id DESC LIMIT $4""",
        network_ids, status, before, limit,
    )
    return [_report(row) for row in rows]


async def history(conn: asyncpg.Connection, report_id: int, *, before: int | None, limit: int) -> list[dict[str, Any]]:
    """A page of messages, newest first: those with an id below ``before`` (all without it)."""
    rows = await conn.fetch(
        f"""{_MESSAGE_SELECT} WHERE m.report_id = $1 AND ($2::bigint IS NULL OR m.id < $2)
            ORDER BY m.id DESC LIMIT $3""",
        report_id, before, limit,
    )
    return [message_json(row) for row in rows]


async def load_chat_state(conn: asyncpg.Connection, report_id: int) -> ChatState | None:
    report = await load_report(conn, report_id)
    if report is None:
        return None
    return ChatState(
        report_id=report.id, user_id=report.user_id, network_id=report.network_id,
        last_message_id=report.last_message_id or 0, read_up_to=dict(report.read_up_to), unread=dict(report.unread),
    )


# --------------------------------------------------------------------------
# Writing


@dataclass(frozen=True, slots=True)
class NewReport:
    user_id: int
    network_id: int | None
    body: str
    vehicle_id: int | None = None
    station_id: int | None = None
    spot_id: int | None = None
    cluster_id: int | None = None
    rent_id: int | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class ReportContext:
    """What a new report is about, as the rider gave it (each checked by ``SupportService.open_report``)."""

    vehicle_id: int | None = None
    serial_number: str | None = None
    station_id: int | None = None
    spot_id: int | None = None
    cluster_id: int | None = None
    trip_id: int | None = None
    latitude: float | None = None
    longitude: float | None = None


@dataclass(frozen=True, slots=True)
class ResolvedContext:
    """Each piece of context given: what -> (as given, its network or None when unknown); the vehicle's id."""

    networks: dict[str, tuple[object, int | None]]
    vehicle_id: int | None


async def resolve_context(conn: asyncpg.Connection, user_id: int, context: ReportContext) -> ResolvedContext:
    """The network of each piece of context (None: unknown). A trip counts only if it is the rider's own."""
    found: dict[str, tuple[object, int | None]] = {}
    vehicle_id = None
    if context.vehicle_id is not None or context.serial_number is not None:
        row = await conn.fetchrow(
            """SELECT id, network_id FROM vehicles
               WHERE ($1::bigint IS NULL OR id = $1) AND ($2::text IS NULL OR serial_number = $2)""",
            context.vehicle_id, context.serial_number,
        )
        given = context.vehicle_id if context.vehicle_id is not None else context.serial_number
        found["vehicle"] = (given, row["network_id"] if row else None)
        vehicle_id = row["id"] if row else None
    if context.station_id is not None:
        found["station"] = (context.station_id, await conn.fetchval(
            "SELECT c.network_id FROM stations s JOIN clusters c ON c.id = s.cluster_id WHERE s.id = $1",
            context.station_id))
    if context.spot_id is not None:
        found["spot"] = (context.spot_id, await conn.fetchval(
            """SELECT c.network_id FROM spots p JOIN stations s ON s.id = p.station_id
               JOIN clusters c ON c.id = s.cluster_id WHERE p.id = $1""",
            context.spot_id))
    if context.cluster_id is not None:
        found["cluster"] = (context.cluster_id, await conn.fetchval(
            "SELECT network_id FROM clusters WHERE id = $1", context.cluster_id))
    if context.trip_id is not None:
        found["trip"] = (context.trip_id, await conn.fetchval(
            "SELECT network_id FROM rents WHERE id = $1 AND user_id = $2", context.trip_id, user_id))
    return ResolvedContext(found, vehicle_id)


async def next_report_id(conn: asyncpg.Connection) -> int:
    """Drawn before the unit of work that creates the report, so that it can name the report's topic."""
    report_id: int = await conn.fetchval("SELECT nextval(pg_get_serial_sequence('reports', 'id'))")
    return report_id


async def create_report(uow: UnitOfWork, report_id: int, new: NewReport) -> Report:
    """The report, its first message, ``message.created`` on its topic and ``report.created`` on its network's
    support topic. No chat actor runs for it yet (nobody knows its id), so this is its only writer."""
    conn = uow.conn
    await conn.execute(
        """INSERT INTO reports (id, user_id, network_id, vehicle_id, station_id, spot_id, cluster_id, rent_id,
                                latitude, longitude)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)""",
        report_id, new.user_id, new.network_id, new.vehicle_id, new.station_id, new.spot_id, new.cluster_id,
        new.rent_id, new.latitude, new.longitude,
    )
    message = await _insert_message(conn, report_id, Side.USER, new.user_id, new.body, None)
    await conn.execute(
        "UPDATE reports SET last_message_id = $2, user_read_up_to = $2 WHERE id = $1", report_id, message["id"]
    )
    await uow.publish(Topic.report(report_id), EventName.MESSAGE_CREATED, message_json(message))
    report = await load_report(conn, report_id)
    assert report is not None
    if new.network_id is not None:
        await uow.publish(Topic.support(new.network_id), EventName.REPORT_CREATED, report_json(report, Side.SUPPORT))
    return report


async def _insert_message(conn: asyncpg.Connection, report_id: int, side: Side, author_id: int | None,
                          body: str | None, image_id: int | None) -> asyncpg.Record:
    row: asyncpg.Record = await conn.fetchrow(
        """WITH m AS (INSERT INTO report_messages (report_id, side, author_id, body, image_id)
                      VALUES ($1, $2, $3, $4, $5) RETURNING *)
           SELECT m.id, m.report_id, m.side, m.author_id, m.body, m.image_id, m.created_at,
                  i.public_id AS image_public_id FROM m LEFT JOIN report_images i ON i.id = m.image_id""",
        report_id, str(side), author_id, body, image_id,
    )
    return row


def report_topics(state: ChatState) -> list[Topic]:
    """Every topic a message of this report may publish on."""
    topics = [Topic.report(state.report_id), Topic.user(state.user_id)]
    if state.network_id is not None:
        topics.append(Topic.support(state.network_id))
    return topics


class PgChatStore:
    """The chat actors' store (``actors.chat.ChatStore``)."""

    def __init__(self, work: Work) -> None:
        self.work = work

    async def load(self, report_id: int) -> ChatState | None:
        return await self.work.db.run(lambda conn: load_chat_state(conn, report_id))

    async def append(
        self, state: ChatState, side: Side, author_id: int | None, body: str | None, image_id: int | None,
        unread: dict[Side, int],
    ) -> ChatMessage | Refused:
        """One unit of work: the report row locked; a resolved report reopened (``report.reopened``) or the
        message refused past the window; the message; ``message.created`` on the report's topic;
        ``report.updated`` on the author's ``user`` topic when support wrote (with the rider's unread count) and
        on the network's support topic."""

        async def change(uow: UnitOfWork) -> ChatMessage | Refused:
            conn = uow.conn
            report = await load_report(conn, state.report_id, lock=True)
            if report is None:
                raise LookupError(f"report {state.report_id} is gone")
            if report.resolved:
                if not report.allow_reopen():
                    return Refused(f"report {report.id} was resolved more than 7 days ago")
                await conn.execute(
                    "UPDATE reports SET status = 'open', resolved_at = NULL WHERE id = $1", report.id
                )
                await uow.publish(Topic.report(report.id), EventName.REPORT_REOPENED,
                                  {"report_id": report.id, "by": str(side)})
            row = await _insert_message(conn, report.id, side, author_id, body, image_id)
            marker = "user_read_up_to" if side is Side.USER else "support_read_up_to"
            await conn.execute(
                f"UPDATE reports SET last_message_id = $2, {marker} = $2 WHERE id = $1", report.id, row["id"]
            )
            await uow.publish(Topic.report(report.id), EventName.MESSAGE_CREATED, message_json(row))
            after = await load_report(conn, report.id)
            assert after is not None
            if side is Side.SUPPORT:
                await uow.publish(Topic.user(report.user_id), EventName.REPORT_UPDATED, report_json(after, Side.USER))
            if report.network_id is not None:
                await uow.publish(Topic.support(report.network_id), EventName.REPORT_UPDATED,
                                  report_json(after, Side.SUPPORT))
            return ChatMessage(row["id"], report.id, side, author_id, body, image_id, row["created_at"])

        return await self.work.run(change, topics=report_topics(state))

    async def mark_read(self, state: ChatState, side: Side, up_to: int) -> int:
        marker = "user_read_up_to" if side is Side.USER else "support_read_up_to"

        async def change(uow: UnitOfWork) -> int:
            await uow.conn.execute(
                f"UPDATE reports SET {marker} = greatest({marker}, $2) WHERE id = $1", state.report_id, up_to
            )
            unread: int = await uow.conn.fetchval(
                f"""SELECT count(*) FROM report_messages m JOIN reports r ON r.id = m.report_id
                    WHERE m.report_id = $1 AND m.side = $2 AND m.id > r.{marker}""",
                state.report_id, str(side.other),
            )
            await uow.publish(Topic.report(state.report_id), EventName.MESSAGE_READ,
                              {"report_id": state.report_id, "side": str(side), "message_id": up_to})
            return unread

        return await self.work.run(change, topics=[Topic.report(state.report_id)])

    def typing(self, report_id: int, side: Side, until_ms: int) -> None:
        self.work.bus.deliver_ephemeral(Topic.report(report_id), EventName.TYPING, {"side": str(side), "until": until_ms})
