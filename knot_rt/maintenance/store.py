"""Maintenance storage: types and maintenances (``migrations/110_maintenance.sql``).

Plain query functions on a connection, called by :class:`~knot_rt.maintenance.service.MaintenanceService`
inside its units of work (writes) or on the pool (reads).

A maintenance's JSON is the spec's (rows 47-55): ``maintenance_id``, ``spot_id``, ``vehicle_id``,
``station_id``, ``maintenance_type`` (the type's key), ``comment``, ``start_date``, ``started_by``
(``user`` or ``automatic``), ``started_by_uid``, ``severity``, ``automatic_code_description``, ``report_id``;
a resolved one adds ``stop_date``, ``stopped_by``, ``stopped_by_uid``. We add ``type_name`` (localized in the
asked ``lang``) and ``target_type``: extra fields a client of the spec ignores.

Choices:

- The target is stored with where it sits when the maintenance opens: a spot's station, a vehicle's spot
  and station when it is docked, the network and cluster. Events of a vehicle maintenance go to the station
  it was docked at when opened; a vehicle that moves later does not move its maintenance's topic.
- History is ordered by ``id`` (ids grow with time) and paged by keyset (``last_maintenance_id``), never
  by offset: a page never repeats nor skips a row while new ones are resolved.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import asyncpg

TargetType = Literal["station", "spot", "vehicle"]
Severity = Literal["info", "low", "high"]
StartedBy = Literal["user", "automatic"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "high")
DEFAULT_LANG = "en"
#: At most this many maintenances in one history page.
HISTORY_PAGE = 50


@dataclass(frozen=True, slots=True)
class Target:
    """A maintenance's object and where it sits (the permission scope and the topics)."""

    kind: TargetType
    network_id: int
    cluster_id: int | None
    organization_id: int | None
    station_id: int | None = None
    spot_id: int | None = None
    vehicle_id: int | None = None
    spot_number: int | None = None  # the spot's number in its station (the actor's index)


@dataclass(frozen=True, slots=True)
class MaintenanceType:
    key: str
    target_type: TargetType
    severity: Severity
    names: dict[str, str]
    created_at: datetime
    deleted_at: datetime | None

    def name(self, lang: str) -> str:
        return self.names.get(lang) or self.names.get(DEFAULT_LANG) or next(iter(self.names.values()), self.key)

    def as_json(self, lang: str) -> dict[str, Any]:
        return {
            "type_key": self.key,
            "target_type": self.target_type,
            "severity": self.severity,
            "type_name": self.name(lang),
            "deletion_date": _iso(self.deleted_at),
            "creation_date": _iso(self.created_at),
        }


@dataclass(frozen=True, slots=True)
class Maintenance:
    id: int
    target_type: TargetType
    station_id: int | None
    spot_id: int | None
    vehicle_id: int | None
    spot_number: int | None
    network_id: int
    cluster_id: int | None
    type_key: str
    type_names: dict[str, str]
    severity: Severity
    comment: str | None
    report_id: int | None
    started_by: StartedBy
    started_by_uid: int | None
    automatic_code_description: str | None
    started_at: datetime
    stopped_at: datetime | None
    stopped_by: StartedBy | None
    stopped_by_uid: int | None
    deleted_from_history: bool

    @property
    def is_open(self) -> bool:
        return self.stopped_at is None

    @property
    def high_open(self) -> bool:
        """True while it takes its target out of service (open and ``high``)."""
        return self.is_open and self.severity == "high"

    @property
    def opened_by(self) -> str:
        """The feed's ``opened_by``: ``user``, or ``station`` for one opened from a station's report."""
        return "user" if self.started_by == "user" else "station"

    def type_name(self, lang: str) -> str:
        names = self.type_names
        return names.get(lang) or names.get(DEFAULT_LANG) or next(iter(names.values()), self.type_key)

    def as_json(self, lang: str = DEFAULT_LANG) -> dict[str, Any]:
        out: dict[str, Any] = {
            "maintenance_id": self.id,
            "spot_id": self.spot_id,
            "vehicle_id": self.vehicle_id,
            "station_id": self.station_id,
            "maintenance_type": self.type_key,
            "type_name": self.type_name(lang),
            "target_type": self.target_type,
            "comment": self.comment,
            "start_date": _iso(self.started_at),
            "started_by": self.started_by,
            "started_by_uid": self.started_by_uid,
            "severity": self.severity,
            "automatic_code_description": self.automatic_code_description,
            "report_id": self.report_id,
        }
        if not self.is_open:
            out |= {
                "stop_date": _iso(self.stopped_at),
                "stopped_by": self.stopped_by,
                "stopped_by_uid": self.stopped_by_uid,
            }
        return out

    def event_json(self) -> dict[str, Any]:
        """The payload of ``maintenance.*`` events: the HTTP shape, ``opened_by`` and the network."""
        return self.as_json() | {
            "opened_by": self.opened_by,
            "network_id": self.network_id,
            "cluster_id": self.cluster_id,
            "deleted_from_history": self.deleted_from_history,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _names(value: Any) -> dict[str, str]:
    if isinstance(value, str):  # jsonb without a codec arrives as text
        import json

        value = json.loads(value)
    return {str(k): str(v) for k, v in (value or {}).items()}


# targets --------------------------------------------------------------------------------------------------


async def station_target(conn: asyncpg.Connection, station_id: int) -> Target | None:
    row = await conn.fetchrow(
        """SELECT s.id, s.cluster_id, c.network_id, n.organization_id FROM stations s
           JOIN clusters c ON c.id = s.cluster_id JOIN networks n ON n.id = c.network_id WHERE s.id = $1""",
        station_id,
    )
    if row is None:
        return None
    return Target("station", row["network_id"], row["cluster_id"], row["organization_id"], station_id=row["id"])


async def spot_target(conn: asyncpg.Connection, spot_id: int) -> Target | None:
    row = await conn.fetchrow(
        """SELECT p.id, p.number, p.station_id, s.cluster_id, c.network_id, n.organization_id FROM spots p
           JOIN stations s ON s.id = p.station_id JOIN clusters c ON c.id = s.cluster_id
           JOIN networks n ON n.id = c.network_id WHERE p.id = $1""",
        spot_id,
    )
    if row is None:
        return None
    return Target("spot", row["network_id"], row["cluster_id"], row["organization_id"],
                  station_id=row["station_id"], spot_id=row["id"], spot_number=row["number"])


async def spot_target_by_number(conn: asyncpg.Connection, station_id: int, number: int) -> Target | None:
    spot_id = await conn.fetchval("SELECT id FROM spots WHERE station_id = $1 AND number = $2", station_id, number)
    return None if spot_id is None else await spot_target(conn, spot_id)


async def vehicle_target(
    conn: asyncpg.Connection, vehicle_id: int | None = None, serial_number: str | None = None
) -> Target | None:
    """A vehicle by id or serial (both given: both must name it). Its network is its own, or its station's;
    a vehicle of no network cannot be maintained (None)."""
    if vehicle_id is None and serial_number is None:
        return None
    row = await conn.fetchrow(
        """SELECT v.id, v.spot_id, p.number, p.station_id, s.cluster_id,
                  coalesce(v.network_id, c.network_id) AS network_id
           FROM vehicles v LEFT JOIN spots p ON p.id = v.spot_id LEFT JOIN stations s ON s.id = p.station_id
           LEFT JOIN clusters c ON c.id = s.cluster_id
           WHERE ($1::bigint IS NULL OR v.id = $1) AND ($2::text IS NULL OR v.serial_number = $2)""",
        vehicle_id, serial_number,
    )
    if row is None or row["network_id"] is None:
        return None
    organization_id = await conn.fetchval("SELECT organization_id FROM networks WHERE id = $1", row["network_id"])
    return Target("vehicle", row["network_id"], row["cluster_id"], organization_id, station_id=row["station_id"],
                  spot_id=row["spot_id"], vehicle_id=row["id"], spot_number=row["number"])


# types ----------------------------------------------------------------------------------------------------


def _type(row: asyncpg.Record) -> MaintenanceType:
    return MaintenanceType(row["key"], row["target_type"], row["default_severity"], _names(row["names"]),
                           row["created_at"], row["deleted_at"])


async def list_types(conn: asyncpg.Connection, *, with_deleted: bool = True) -> list[MaintenanceType]:
    rows = await conn.fetch(
        "SELECT * FROM maintenance_types WHERE $1 OR deleted_at IS NULL ORDER BY target_type, key", with_deleted
    )
    return [_type(r) for r in rows]


async def get_type(conn: asyncpg.Connection, key: str) -> MaintenanceType | None:
    row = await conn.fetchrow("SELECT * FROM maintenance_types WHERE key = $1", key)
    return None if row is None else _type(row)


async def create_type(conn: asyncpg.Connection, key: str, target_type: TargetType, severity: Severity,
                      names: dict[str, str]) -> MaintenanceType | None:
    """A new type, or a deleted one of the same key brought back with the new target, severity and names;
    None when a type of that key exists (a live type never changes its target under its maintenances)."""
    import json

    row = await conn.fetchrow(
        """INSERT INTO maintenance_types (key, target_type, default_severity, names) VALUES ($1, $2, $3, $4::jsonb)
           ON CONFLICT (key) DO UPDATE SET target_type = EXCLUDED.target_type,
               default_severity = EXCLUDED.default_severity, names = EXCLUDED.names, deleted_at = NULL,
               created_at = now()
           WHERE maintenance_types.deleted_at IS NOT NULL
           RETURNING *""",
        key, target_type, severity, json.dumps(names),
    )
    return None if row is None else _type(row)


async def delete_type(conn: asyncpg.Connection, key: str) -> bool:
    """Mark a type deleted (it keeps naming its maintenances); False when unknown or already deleted."""
    done = await conn.fetchval(
        "UPDATE maintenance_types SET deleted_at = now() WHERE key = $1 AND deleted_at IS NULL RETURNING key", key
    )
    return done is not None


# maintenances ---------------------------------------------------------------------------------------------

_SELECT = """SELECT m.*, p.number AS spot_number, t.names AS type_names FROM maintenances m
    JOIN maintenance_types t ON t.key = m.type_key LEFT JOIN spots p ON p.id = m.spot_id"""


def _maintenance(row: asyncpg.Record) -> Maintenance:
    return Maintenance(
        id=row["id"], target_type=row["target_type"], station_id=row["station_id"], spot_id=row["spot_id"],
        vehicle_id=row["vehicle_id"], spot_number=row["spot_number"], network_id=row["network_id"],
        cluster_id=row["cluster_id"], type_key=row["type_key"], type_names=_names(row["type_names"]),
        severity=row["severity"], comment=row["comment"], report_id=row["report_id"],
        started_by=row["started_by"], started_by_uid=row["started_by_uid"],
        automatic_code_description=row["automatic_code_description"], started_at=row["started_at"],
        stopped_at=row["stopped_at"], stopped_by=row["stopped_by"], stopped_by_uid=row["stopped_by_uid"],
        deleted_from_history=row["deleted_from_history"],
    )


async def get(conn: asyncpg.Connection, maintenance_id: int, *, for_update: bool = False) -> Maintenance | None:
    """One maintenance (also one deleted from history: its id still names it for the hooks and the feed)."""
    if for_update:
        await conn.execute("SELECT 1 FROM maintenances WHERE id = $1 FOR UPDATE", maintenance_id)
    row = await conn.fetchrow(f"{_SELECT} WHERE m.id = $1", maintenance_id)
    return None if row is None else _maintenance(row)


def _target_filter(target: Target) -> tuple[str, int]:
    """The column naming a target's own maintenances (a station's are only the station-level ones)."""
    if target.kind == "station":
        assert target.station_id is not None
        return "m.target_type = 'station' AND m.station_id = $1", target.station_id
    if target.kind == "spot":
        assert target.spot_id is not None
        return "m.target_type = 'spot' AND m.spot_id = $1", target.spot_id
    assert target.vehicle_id is not None
    return "m.target_type = 'vehicle' AND m.vehicle_id = $1", target.vehicle_id


async def ongoing(conn: asyncpg.Connection, target: Target) -> list[Maintenance]:
    where, key = _target_filter(target)
    rows = await conn.fetch(f"{_SELECT} WHERE {where} AND m.stopped_at IS NULL ORDER BY m.id", key)
    return [_maintenance(r) for r in rows]


async def history(conn: asyncpg.Connection, target: Target, *, last_id: int | None = None,
                  direction: Literal["ASC", "DESC"] = "DESC", limit: int = HISTORY_PAGE) -> list[Maintenance]:
    """Resolved maintenances not deleted from history, ``limit`` of them after ``last_id`` in ``direction``
    (DESC: newest first, the next page has smaller ids; ASC: oldest first, larger ids)."""
    where, key = _target_filter(target)
    order, compare = ("DESC", "<") if direction == "DESC" else ("ASC", ">")
    rows = await conn.fetch(
        f"""{_SELECT} WHERE {where} AND m.stopped_at IS NOT NULL AND NOT m.deleted_from_history
            AND ($2::bigint IS NULL OR m.id {compare} $2) ORDER BY m.id {order} LIMIT $3""",
        key, last_id, limit,
    )
    return [_maintenance(r) for r in rows]


async def insert(conn: asyncpg.Connection, target: Target, type_key: str, severity: Severity, *,
                 comment: str | None, report_id: int | None, started_by: StartedBy, started_by_uid: int | None,
                 automatic_code: str | None) -> Maintenance | None:
    """A new open maintenance; None when it is automatic and one of its code is already open on the target."""
    new_id = await conn.fetchval(
        """INSERT INTO maintenances (target_type, station_id, spot_id, vehicle_id, network_id, cluster_id, type_key,
               severity, comment, report_id, started_by, started_by_uid, automatic_code_description)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT DO NOTHING RETURNING id""",
        target.kind, target.station_id, target.spot_id, target.vehicle_id, target.network_id, target.cluster_id,
        type_key, severity, comment, report_id, started_by, started_by_uid, automatic_code,
    )
    return None if new_id is None else await get(conn, new_id)


async def open_automatic(conn: asyncpg.Connection, target: Target, code: str) -> Maintenance | None:
    """The open automatic maintenance of ``code`` on the target, if any."""
    where, key = _target_filter(target)
    row = await conn.fetchrow(
        f"""{_SELECT} WHERE {where} AND m.stopped_at IS NULL AND m.started_by = 'automatic'
            AND m.automatic_code_description = $2""",
        key, code,
    )
    return None if row is None else _maintenance(row)


async def update(conn: asyncpg.Connection, maintenance_id: int, *, comment: str | None,
                 severity: Severity | None) -> Maintenance | None:
    done = await conn.fetchval(
        """UPDATE maintenances SET comment = coalesce($2, comment), severity = coalesce($3, severity)
           WHERE id = $1 AND NOT deleted_from_history RETURNING id""",
        maintenance_id, comment, severity,
    )
    return None if done is None else await get(conn, maintenance_id)


async def stop(conn: asyncpg.Connection, maintenance_id: int, *, by: StartedBy, by_uid: int | None,
               delete_from_history: bool = False) -> Maintenance | None:
    """Resolve an open maintenance (and mark it deleted from history if asked); None when not open."""
    done = await conn.fetchval(
        """UPDATE maintenances SET stopped_at = now(), stopped_by = $2, stopped_by_uid = $3,
               deleted_from_history = $4
           WHERE id = $1 AND stopped_at IS NULL RETURNING id""",
        maintenance_id, by, by_uid, delete_from_history,
    )
    return None if done is None else await get(conn, maintenance_id)


async def hide(conn: asyncpg.Connection, maintenance_id: int) -> Maintenance | None:
    """Delete a resolved maintenance from history; None when it is open or already deleted."""
    done = await conn.fetchval(
        """UPDATE maintenances SET deleted_from_history = true
           WHERE id = $1 AND stopped_at IS NOT NULL AND NOT deleted_from_history RETURNING id""",
        maintenance_id,
    )
    return None if done is None else await get(conn, maintenance_id)


async def target_of(conn: asyncpg.Connection, m: Maintenance) -> Target:
    """A maintenance's target as it was stored (the scope used for the rights on it)."""
    organization_id = await conn.fetchval("SELECT organization_id FROM networks WHERE id = $1", m.network_id)
    return Target(m.target_type, m.network_id, m.cluster_id, organization_id, station_id=m.station_id,
                  spot_id=m.spot_id, vehicle_id=m.vehicle_id, spot_number=m.spot_number)
