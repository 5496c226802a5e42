"""Maintenances of stations, spots and vehicles: opened by operators or automatically, resolved, updated.

Every write is one unit of work (``uow.py``): the row and its ``maintenance.opened`` / ``updated`` /
``resolved`` events on ``maintenance:<network_id>`` and, when the target sits at a station (a station, a
spot, a vehicle docked when the maintenance opened), on ``station:<station_id>``; both in one order.

After the commit the **after-change hooks** run, in order, each with the maintenance row and whether it
is open and ``high`` (it takes its target out of service). They are where the live effects plug in (the
station actor's spot state, the vehicle's availability, the clusters): a hook may be sync or async, and
one that fails is logged and does not undo the change (``uow.py``'s effects). A hook that needs the whole
picture of a target (another ``high`` maintenance still open on it) asks :meth:`MaintenanceService.ongoing_of`.

Errors are plain exceptions the routes map: :class:`WrongType` (400/47), :class:`UnknownMaintenance` (404/4).
Rights are the routes' business (they know the caller); the service trusts its callers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from protocols.feed import EventName, Topic

from ..db import Database
from ..services.permissions import Scope
from ..uow import UnitOfWork, Work
from . import store
from .store import Maintenance, MaintenanceType, Severity, StartedBy, Target, TargetType

#: ``hook(maintenance, high_open)``, run after the commit of every change.
AfterChange = Callable[[Maintenance, bool], object]


class WrongType(ValueError):
    """An unknown or deleted maintenance type, or a type of another target (400/47)."""


class UnknownMaintenance(LookupError):
    """No such maintenance (or one deleted from history) (404/4)."""


def topics_of(network_id: int, station_id: int | None) -> list[Topic]:
    topics = [Topic.maintenance(network_id)]
    if station_id is not None:
        topics.append(Topic.station(station_id))
    return topics


def scope_of(target: Target) -> Scope:
    """The permission scope of a target: its network, cluster and organisation."""
    return Scope(network_id=target.network_id, cluster_id=target.cluster_id,
                 organization_id=target.organization_id)


class MaintenanceService:
    def __init__(self, work: Work) -> None:
        self.work = work
        self.hooks: list[AfterChange] = []

    @property
    def db(self) -> Database:
        return self.work.db

    # targets and reads ------------------------------------------------------------------------------------

    async def station(self, station_id: int) -> Target | None:
        return await self.db.run(lambda conn: store.station_target(conn, station_id))

    async def spot(self, spot_id: int) -> Target | None:
        return await self.db.run(lambda conn: store.spot_target(conn, spot_id))

    async def spot_by_number(self, station_id: int, number: int) -> Target | None:
        return await self.db.run(lambda conn: store.spot_target_by_number(conn, station_id, number))

    async def vehicle(self, vehicle_id: int | None = None, serial_number: str | None = None) -> Target | None:
        return await self.db.run(lambda conn: store.vehicle_target(conn, vehicle_id, serial_number))

    async def types(self, *, with_deleted: bool = True) -> list[MaintenanceType]:
        return await self.db.run(lambda conn: store.list_types(conn, with_deleted=with_deleted))

    async def get(self, maintenance_id: int) -> Maintenance | None:
        """A maintenance by id; None when unknown or deleted from history."""
        found = await self.db.run(lambda conn: store.get(conn, maintenance_id))
        return None if found is None or found.deleted_from_history else found

    async def target_of(self, m: Maintenance) -> Target:
        return await self.db.run(lambda conn: store.target_of(conn, m))

    async def ongoing_of(self, target: Target) -> list[Maintenance]:
        """The open maintenances of the target itself (a station's: not its spots' nor its vehicles')."""
        return await self.db.run(lambda conn: store.ongoing(conn, target))

    async def history(self, target: Target, *, last_id: int | None = None,
                      direction: Literal["ASC", "DESC"] = "DESC", limit: int = store.HISTORY_PAGE
                      ) -> list[Maintenance]:
        return await self.db.run(
            lambda conn: store.history(conn, target, last_id=last_id, direction=direction, limit=limit)
        )

    # writes -----------------------------------------------------------------------------------------------

    async def open(self, target: Target, type_key: str, *, severity: Severity | None = None,
                   comment: str | None = None, report_id: int | None = None, by_user_id: int | None = None,
                   automatic_code: str | None = None) -> Maintenance | None:
        """Open a maintenance on ``target``, by a user (``by_user_id``) or automatically (``automatic_code``,
        e.g. ``charge-fault``: ``started_by`` "automatic", the feed's ``opened_by`` "station").

        ``severity`` defaults to the type's. Raises :class:`WrongType` for an unknown or deleted type or one
        of another target. An automatic one returns None when one of the same code is already open on the
        target (a resent fault or alert opens nothing, even racing: a unique index decides).
        """
        if (by_user_id is None) == (automatic_code is None):
            raise ValueError("a maintenance is opened by a user or by an automatic code, exactly one")
        started_by: StartedBy = "user" if automatic_code is None else "automatic"

        async def change(uow: UnitOfWork) -> Maintenance | None:
            kind = await store.get_type(uow.conn, type_key)
            _check_type(kind, target.kind)
            assert kind is not None
            opened = await store.insert(
                uow.conn, target, type_key, severity or kind.severity, comment=comment, report_id=report_id,
                started_by=started_by, started_by_uid=by_user_id, automatic_code=automatic_code,
            )
            if opened is not None:
                await self._publish(uow, opened, EventName.MAINTENANCE_OPENED)
            return opened

        return await self.work.run(change, topics=topics_of(target.network_id, target.station_id))

    async def open_automatic(self, target: Target, type_key: str, code: str, *,
                             severity: Severity | None = None, comment: str | None = None) -> Maintenance | None:
        """:meth:`open` by a station's report; None when one of ``code`` is already open on the target."""
        return await self.open(target, type_key, severity=severity, comment=comment, automatic_code=code)

    async def resolve_automatic(self, target: Target, code: str) -> Maintenance | None:
        """Resolve the open automatic maintenance of ``code`` on the target (``stopped_by`` "automatic");
        None when there is none (a user resolved it already, or none was opened)."""
        found = await self.db.run(lambda conn: store.open_automatic(conn, target, code))
        if found is None:
            return None
        return await self.resolve(found.id, by_user_id=None)

    async def update(self, maintenance_id: int, *, comment: str | None = None,
                     severity: Severity | None = None) -> Maintenance:
        """Change the comment and/or severity (absent: kept). Raises :class:`UnknownMaintenance`."""
        m = await self._known(maintenance_id)

        async def change(uow: UnitOfWork) -> Maintenance:
            updated = await store.update(uow.conn, maintenance_id, comment=comment, severity=severity)
            if updated is None:
                raise UnknownMaintenance(maintenance_id)
            await self._publish(uow, updated, EventName.MAINTENANCE_UPDATED)
            return updated

        return await self.work.run(change, topics=topics_of(m.network_id, m.station_id))

    async def resolve(self, maintenance_id: int, *, by_user_id: int | None,
                      delete_from_history: bool = False) -> Maintenance | None:
        """Resolve an open maintenance (by a user, or automatically when ``by_user_id`` is None), or delete it
        from history (a resolved one is hidden; an open one is resolved and hidden).

        Returns the row, or None when there was nothing to do (already resolved, and not deleting). Raises
        :class:`UnknownMaintenance` for an unknown id or one already deleted from history.
        """
        m = await self._known(maintenance_id)
        by: StartedBy = "user" if by_user_id is not None else "automatic"

        async def change(uow: UnitOfWork) -> Maintenance | None:
            await uow.conn.execute("SELECT 1 FROM maintenances WHERE id = $1 FOR UPDATE", maintenance_id)
            stopped = await store.stop(uow.conn, maintenance_id, by=by, by_uid=by_user_id,
                                       delete_from_history=delete_from_history)
            if stopped is not None:
                await self._publish(uow, stopped, EventName.MAINTENANCE_RESOLVED)
                return stopped
            if not delete_from_history:
                return None
            hidden = await store.hide(uow.conn, maintenance_id)
            if hidden is None:
                raise UnknownMaintenance(maintenance_id)
            await self._publish(uow, hidden, EventName.MAINTENANCE_UPDATED)
            return hidden

        return await self.work.run(change, topics=topics_of(m.network_id, m.station_id))

    # types ------------------------------------------------------------------------------------------------

    async def create_type(self, key: str, target_type: TargetType, severity: Severity,
                          names: dict[str, str]) -> MaintenanceType | None:
        """A new type (or a deleted one brought back); None when a live type has that key."""
        return await self.db.transaction(lambda conn: store.create_type(conn, key, target_type, severity, names))

    async def delete_type(self, key: str) -> bool:
        return await self.db.transaction(lambda conn: store.delete_type(conn, key))

    # inside -----------------------------------------------------------------------------------------------

    async def _known(self, maintenance_id: int) -> Maintenance:
        m = await self.get(maintenance_id)
        if m is None:
            raise UnknownMaintenance(maintenance_id)
        return m

    async def _publish(self, uow: UnitOfWork, m: Maintenance, event: EventName) -> None:
        data = m.event_json()
        for topic in topics_of(m.network_id, m.station_id):
            await uow.publish(topic, event, data)
        for hook in self.hooks:
            uow.after(_bind(hook, m))


def _bind(hook: AfterChange, m: Maintenance) -> Callable[[], object]:
    return lambda: hook(m, m.high_open)


def _check_type(kind: MaintenanceType | None, target: TargetType) -> None:
    if kind is None or kind.deleted_at is not None:
        raise WrongType("unknown maintenance type")
    if kind.target_type != target:
        raise WrongType(f"this maintenance type is for a {kind.target_type}, not a {target}")


__all__ = ["AfterChange", "MaintenanceService", "UnknownMaintenance", "WrongType"]
