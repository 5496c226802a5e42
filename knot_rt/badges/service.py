"""The badges domain's one entry point (``BadgeService``): a rider's badges, their linking, their unlocks.

Linking: ``start_link`` picks the reader, then asks the station's actor to wait
there (``StationService.start_badge_link``); the actor keeps the pending link
(``actors/badge_reader.py``) and, when a badge is read there in time, calls
this service back as its ``BadgeBook``: ``link`` writes the badge with its
``badge.linked`` event on the user's topic in one unit of work. A badge read
where no link waits is an unlock: ``badge_presented`` finds its user and hands
over to the ``BadgeUnlocker`` (the rents domain).

Choices:

- The UID is kept as HMAC-SHA256 under a key derived from the server's secret
  key (``services.secrets.derive_key``), never in clear, and shown masked (its
  last 4 hex digits). A plain SHA-256 would do for random secrets, but UIDs are
  short (4 to 10 bytes, often sequential): without the key, a stolen table
  could be matched against every UID. The cost: a changed secret key orphans
  every badge (they must be linked again).
- Which reader: with ``spot_id``, that spot's (a v6 station has one per spot;
  a v5 station's one reader when the spot is on a v5 station). Without it, the
  cluster's first v5 station by id: the link waits at ONE reader, so that
  "already waiting" (409 code 38) and its failure have one place. A cluster of
  v6 stations needs ``spot_id`` (409 code 37), as does one with no station.
- Rename and delete of another user's badge answer exactly like an unknown
  one (404 code 4).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

import asyncpg

from actors.badge_reader import LinkFailure, LinkOutcome
from protocols import station as wire
from protocols.errors import ErrorCode
from protocols.feed import EventName, Topic

from ..catalog.memory import Cluster
from ..db import DatabaseUnavailable
from ..errors import ApiError
from ..services.secrets import derive_key
from ..stations.service import StationService
from ..uow import UnitOfWork, Work
from . import store

log = logging.getLogger(__name__)

MASK = "••••••"
V5 = "v5"  # stations.version of a station with one badge reader (v6: one per spot)


@dataclass(frozen=True, slots=True)
class Badge:
    badge_id: int
    name: str
    masked_uid: str
    created_at: datetime

    def event_data(self) -> dict[str, object]:
        """The ``badge.linked`` payload: the fields of the badge list."""
        return {"badge_id": self.badge_id, "name": self.name, "masked_uid": self.masked_uid,
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True, slots=True)
class Reader:
    """Where a badge link waits: a station, and its spot on stations with one reader per spot."""

    station_id: int
    spot: int | None


@dataclass(frozen=True, slots=True)
class UnlockRefused:
    """A badge unlock that did not happen, and why (logged; the station shows a failure)."""

    reason: str


class BadgeUnlocker(Protocol):
    """What unlocks for a badge shown at a reader with no link waiting (``RentService`` in production)."""

    async def unlock_for_badge(self, user_id: int, station_id: int, spot: int | None) -> object:
        """Start or resume the user's rent at that reader, returning anything when it did.

        A refusal is an ``ApiError`` raised, or an ``UnlockRefused`` returned; either way the reader gets
        FAILURE feedback.
        """
        ...


class NoBadgeUnlock:
    """The unlocker when none is wired: every badge unlock is refused."""

    async def unlock_for_badge(self, user_id: int, station_id: int, spot: int | None) -> object:
        return UnlockRefused("badge unlocks are not available")


def mask(uid: str) -> str:
    """What a rider sees of a badge: its last 4 hex digits."""
    return MASK + uid[-4:].upper()


def _badge(row: asyncpg.Record) -> Badge:
    return Badge(row["id"], row["name"], row["masked_uid"], row["created_at"])


class BadgeService:
    """Badges for the routes, and the station actors' ``BadgeBook``."""

    def __init__(
        self, work: Work, stations: StationService, secret_key: str, *, unlocker: BadgeUnlocker | None = None
    ) -> None:
        self.work = work
        self.db = work.db
        self.stations = stations
        self._key = derive_key(secret_key, "knot-rt/badge-uid")
        # Wiring point of the rents domain (``Services.build`` sets ``RentService``) before the server runs.
        self.unlocker: BadgeUnlocker = unlocker or NoBadgeUnlock()

    def uid_hash(self, uid: str) -> bytes:
        """The keyed hash the database keeps of a UID (hex, either case)."""
        return hmac.new(self._key, uid.upper().encode(), hashlib.sha256).digest()

    # the rider's routes -----------------------------------------------------------

    async def badges(self, user_id: int) -> list[Badge]:
        return [_badge(row) for row in await self.db.run(lambda conn: store.badges_of(conn, user_id))]

    async def rename(self, user_id: int, badge_id: int, name: str) -> None:
        """404 code 4 when the user has no such badge."""
        if not await self.work.run(lambda uow: store.rename(uow.conn, user_id, badge_id, name)):
            raise ApiError(ErrorCode.NOT_FOUND, f"no badge {badge_id}")

    async def delete(self, user_id: int, badge_id: int) -> None:
        """404 code 4 when the user has no such badge."""
        if not await self.work.run(lambda uow: store.delete(uow.conn, user_id, badge_id)):
            raise ApiError(ErrorCode.NOT_FOUND, f"no badge {badge_id}")

    async def start_link(self, user_id: int, cluster: Cluster, name: str, spot_id: int | None) -> Reader:
        """Wait for the user's badge at a reader of ``cluster`` (seen by the user: the caller checked).

        Returns once the station took LINK_STARTED. Raises ``ApiError``: no reader there 409 (37), a spot
        not in the cluster 404 (4), a link already waiting there 409 (38), the station offline 503 (50),
        no answer 504 (40), refused 409 (41).
        """
        if not cluster.has_badge_reader:
            raise ApiError(ErrorCode.NO_BADGE_READER, f"cluster {cluster.id} has no badge reader")
        reader = await self._reader(cluster.id, spot_id)
        await self.stations.start_badge_link(reader.station_id, user_id, name, reader.spot)
        return reader

    async def _reader(self, cluster_id: int, spot_id: int | None) -> Reader:
        if spot_id is not None:
            row = await self.db.run(lambda conn: store.spot_station(conn, cluster_id, spot_id))
            if row is None:
                raise ApiError(ErrorCode.NOT_FOUND, f"no spot {spot_id} in cluster {cluster_id}")
            return Reader(row["station_id"], None if row["version"] == V5 else row["number"])
        stations = await self.db.run(lambda conn: store.cluster_stations(conn, cluster_id))
        for station in stations:
            if station["version"] == V5:
                return Reader(station["id"], None)
        raise ApiError(ErrorCode.NO_BADGE_READER,
                       f"the stations of cluster {cluster_id} have a reader per spot: give spot_id")

    async def user_of_uid(self, uid: str) -> int | None:
        """The user the badge ``uid`` is linked to, if any."""
        digest = self.uid_hash(uid)
        return await self.db.run(lambda conn: store.owner_of(conn, digest))

    # BadgeBook: what the station actors call ------------------------------------------

    async def link(self, user_id: int, name: str, uid: str) -> LinkOutcome:
        """Link the badge with its ``badge.linked`` event, in one unit of work; TAKEN when another account has it."""
        topic = Topic.user(user_id)
        digest, masked = self.uid_hash(uid), mask(uid)

        async def change(uow: UnitOfWork) -> LinkOutcome:
            row = await store.link(uow.conn, user_id, digest, masked, name)
            if row is None:
                return LinkOutcome.TAKEN
            await uow.publish(topic, EventName.BADGE_LINKED, _badge(row).event_data())
            return LinkOutcome.LINKED

        return await self.work.run(change, topics=[topic])

    async def link_failed(self, user_id: int, name: str, reason: LinkFailure) -> None:
        await self.work.publish(Topic.user(user_id), EventName.BADGE_LINK_FAILED, {"name": name, "reason": reason.value})

    async def badge_presented(self, station_id: int, spot: int | None, uid: str) -> None:
        """A badge at a reader with no link waiting: unlock for its user, or FAILURE feedback at the reader."""
        refusal = await self._unlock(station_id, spot, uid)
        if refusal is None:
            return
        log.info("station %s: badge unlock refused: %s", station_id, refusal.reason, extra={"station_id": station_id})
        try:
            await self.stations.command(
                station_id, wire.Action.BADGE_FEEDBACK,
                wire.BadgeFeedbackPayload(status=wire.BadgeFeedbackStatus.FAILURE, spot=spot),
            )
        except ApiError as exc:  # offline, no answer: the rider sees nothing open and tries again
            log.info("station %s: badge FAILURE feedback not delivered: %s", station_id, exc.message,
                     extra={"station_id": station_id})

    async def _unlock(self, station_id: int, spot: int | None, uid: str) -> UnlockRefused | None:
        try:
            user_id = await self.user_of_uid(uid)
        except DatabaseUnavailable:
            return UnlockRefused("the badge could not be looked up (database away)")
        if user_id is None:
            return UnlockRefused("unknown badge")
        try:
            unlocked = await self.unlocker.unlock_for_badge(user_id, station_id, spot)
        except ApiError as exc:
            return UnlockRefused(f"code {int(exc.code)}: {exc.message}")
        return unlocked if isinstance(unlocked, UnlockRefused) else None
