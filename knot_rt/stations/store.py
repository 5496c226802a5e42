"""PostgreSQL persistence of the station actors (their ``StationStore``).

Round trips are what a station costs the database, so each of the station's
writes is one statement (data-modifying CTEs, the spots as arrays), run without
BEGIN / COMMIT (one statement is one transaction):

- ``secret_hash`` (the gateway's auth lookup) reads the station and its spots
  with its secret in one query (many stations' lookups grouped in one) and keeps the view a few seconds, for the actor
  that starts right after (``load`` takes it instead of reading again); any
  write of this store forgets it, so a kept view is never older than a write;
- ``set_online`` writes the flag, the firmware and the feed event of the change
  (grouped too: a reconnecting fleet's boots share statements);
- ``record`` writes the CALL id (once), the spots, the last state and the feed
  event. Records are grouped (``devices/batch.py``, group commit): while one statement runs, the
  records that arrive meanwhile wait and go together in the next, one statement
  for any number of stations (a station has at most one record in flight: its
  actor waits for it). An idle store adds no delay; under load, one round trip
  carries many stations' state. Each caller is answered once its own record
  committed: write first, then answer.

A feed event written here is handed to the bus after the commit, under its
topic's lock, as ``uow.Work`` does (the topic's sequence is the durable
table's: the statement increments ``feed_topics`` and inserts the event).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import trio

from actors.station import Changes, FeedItem, SpotView, StationView, VehicleReading
from protocols.feed import Topic

from ..bus import FeedEvent, events_of_rows
from ..db import Database
from ..devices.batch import GroupCommit, each_alone
from ..devices.messages import STATION_MESSAGES
from ..uow import Work

#: How long a view read with the secret waits for its actor (which starts right after the auth).
PREFETCH_SECONDS = 5.0
#: Records in one statement at most (a larger queue goes in several).
MAX_BATCH = 500

_STATION = """SELECT s.id, s.cluster_id, s.enabled, s.online, s.last_seen_at, s.last_state, s.firmware, s.secret_hash,
       sp.numbers, sp.ids, sp.vehicles, sp.locks, sp.maintenance, sp.accessible
FROM stations s
CROSS JOIN LATERAL (
    SELECT array_agg(number ORDER BY number) AS numbers, array_agg(id ORDER BY number) AS ids,
           array_agg(vehicle_id ORDER BY number) AS vehicles, array_agg(lock_status ORDER BY number) AS locks,
           array_agg(in_maintenance ORDER BY number) AS maintenance,
           array_agg(is_accessible ORDER BY number) AS accessible
    FROM spots WHERE station_id = s.id
) sp"""

log = logging.getLogger(__name__)


def _view(row: asyncpg.Record) -> StationView:
    state = row["last_state"] or {}
    numbers = row["numbers"] or []
    return StationView(
        station_id=row["id"],
        cluster_id=row["cluster_id"],
        enabled=row["enabled"],
        online=row["online"],
        last_seen_ms=int(row["last_seen_at"].timestamp() * 1000) if row["last_seen_at"] else None,
        spots=tuple(
            SpotView(number=n, spot_id=i, vehicle=v, lock=lock, in_maintenance=m, is_accessible=a)
            for n, i, v, lock, m, a in zip(
                numbers, row["ids"], row["vehicles"], row["locks"], row["maintenance"], row["accessible"], strict=True
            )
        ),
        vehicles=tuple(
            VehicleReading(v["vehicle"], v["voltage"], v.get("battery")) for v in state.get("vehicles", [])
        ),
        mainboard=state.get("mainboard"),
        connectivity=state.get("connectivity"),
        firmware=row["firmware"],
    )


async def load_station(conn: asyncpg.Connection, station_id: int) -> StationView | None:
    """The station and its spots, in one query."""
    row = await conn.fetchrow(_STATION + " WHERE s.id = $1", station_id)
    return None if row is None else _view(row)


async def load_all_stations(conn: asyncpg.Connection) -> list[StationView]:
    return [_view(row) for row in await conn.fetch(_STATION + " ORDER BY s.id")]


# Many stations' online states in one statement (at most one per station), each with the feed event of its
# change (``topic`` NULL: no event): the topic's next sequence number, then the event.
_SET_ONLINE = """WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::boolean[], $3::jsonb[], $4::text[], $5::text[], $6::jsonb[])
        AS t(station_id, online, firmware, topic, event, data)
), station AS (
    UPDATE stations s SET online = i.online, last_seen_at = now(), firmware = coalesce(i.firmware, s.firmware)
    FROM input i WHERE s.id = i.station_id
), """ + events_of_rows("input") + """
SELECT topic, seq FROM event"""

# Many stations' records in one statement (at most one per station). Per record: its CALL (inserted once:
# ``ON CONFLICT DO NOTHING``), and only when it was new, its spots, its last state and its feed event.
# Answered per record: new or not, the event's sequence number, the RESULT stored for a repeated id (read
# in the statement's snapshot, from before it: None for a new id).
_RECORD = """WITH input AS (
    SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::jsonb[], $5::jsonb[], $6::jsonb[],
                         $7::text[], $8::text[], $9::jsonb[])
        AS t(station_id, message_id, action, payload, result, state, topic, event, data)
), message AS (
    INSERT INTO station_messages (station_id, message_id, action, payload, result)
    SELECT station_id, message_id, action, payload, result FROM input
    ON CONFLICT DO NOTHING
    RETURNING station_id
), spot AS (
    UPDATE spots s SET vehicle_id = u.vehicle, lock_status = u.lock
    FROM unnest($10::bigint[], $11::int[], $12::bigint[], $13::smallint[]) AS u(station_id, number, vehicle, lock)
    WHERE s.station_id = u.station_id AND s.number = u.number AND u.station_id IN (SELECT station_id FROM message)
), station AS (
    UPDATE stations s SET last_state = coalesce(i.state, s.last_state), last_seen_at = now()
    FROM input i WHERE s.id = i.station_id AND i.station_id IN (SELECT station_id FROM message)
), """ + events_of_rows("input", "station_id IN (SELECT station_id FROM message)") + """
SELECT i.station_id, i.station_id IN (SELECT station_id FROM message) AS new,
       (SELECT e.seq FROM event e WHERE e.topic = i.topic) AS seq, m.result AS earlier
FROM input i LEFT JOIN station_messages m ON m.station_id = i.station_id AND m.message_id = i.message_id"""


@dataclass(frozen=True, slots=True)
class _Record:
    """One station's record, waiting for its statement."""

    station_id: int
    message_id: str
    action: str
    payload: dict[str, Any]
    result: dict[str, Any]
    changes: Changes
    feed: FeedItem | None

    @property
    def topic(self) -> Topic:
        return Topic.station(self.station_id)


@asynccontextmanager
async def _topics_locked(work: Work, topics: set[Topic]) -> AsyncIterator[None]:
    """The topics' locks, in sorted order as ``uow.Work`` takes them (no deadlock with a unit of work)."""
    held: list[trio.Lock] = []
    try:
        for topic in sorted(topics, key=str):
            lock = work.bus.topic_lock(topic)
            await lock.acquire()
            held.append(lock)
        yield
    finally:
        for lock in reversed(held):
            lock.release()


@dataclass(frozen=True, slots=True)
class _Online:
    station_id: int
    online: bool
    firmware: dict[str, Any] | None
    feed: FeedItem | None

    @property
    def topic(self) -> Topic:
        return Topic.station(self.station_id)


async def _write_online(work: Work, batch: list[_Online]) -> list[None]:
    """One statement for the batch (at most one per station); the feed events delivered after it."""
    async with _topics_locked(work, {o.topic for o in batch if o.feed is not None}):
        rows = await work.db.fetch(
            _SET_ONLINE, [o.station_id for o in batch], [o.online for o in batch], [o.firmware for o in batch],
            [str(o.topic) if o.feed is not None else None for o in batch],
            [str(o.feed.event) if o.feed is not None else None for o in batch],
            [o.feed.data if o.feed is not None else None for o in batch],
        )
        seqs = {row["topic"]: row["seq"] for row in rows}
        written = [FeedEvent(str(change.topic), seqs[str(change.topic)], str(change.feed.event), change.feed.data)
                   for change in batch if change.feed is not None]
        for event in written:
            await work.bus.deliver_committed(event)
    await _announce(work, written)
    return [None] * len(batch)


async def _announce(work: Work, written: list[FeedEvent]) -> None:
    """Several processes: the others hear of the events (committed already: a failure loses no event, only
    its push there; their subscribers catch up with ``since``)."""
    try:
        await work.bus.announce(written)
    except Exception as exc:
        log.warning("stations: %s feed events were not announced to the other processes: %r", len(written), exc)


async def _read_stations(db: Database, station_ids: list[int]) -> list[asyncpg.Record | None]:
    """Many stations' rows with their spots and secret hashes, in one query, in the order asked."""
    rows = await db.fetch(_STATION + " WHERE s.id = ANY($1::bigint[])", sorted(set(station_ids)))
    found = {row["id"]: row for row in rows}
    return [found.get(station_id) for station_id in station_ids]


#: A record's outcome: None (new: applied), the earlier RESULT (a repeated id), or why it failed.
_Outcome = dict[str, Any] | None | BaseException


async def _write_records(work: Work, batch: list[_Record]) -> list[_Outcome]:
    """One statement for the batch (at most one record per station); the feed events delivered after it."""
    bus = work.bus
    outcomes: list[_Outcome] = []
    late: list[int] = []
    announced: list[FeedEvent] = []
    async with _topics_locked(work, {r.topic for r in batch if r.feed is not None}):
        spots = [(r.station_id, s) for r in batch for s in r.changes.spots]
        rows = await work.db.fetch(
            _RECORD,
            [r.station_id for r in batch], [r.message_id for r in batch], [r.action for r in batch],
            [r.payload for r in batch], [r.result for r in batch], [r.changes.state for r in batch],
            [str(r.topic) if r.feed is not None else None for r in batch],
            [str(r.feed.event) if r.feed is not None else None for r in batch],
            [r.feed.data if r.feed is not None else None for r in batch],
            [station for station, _ in spots], [s.number for _, s in spots], [s.vehicle for _, s in spots],
            [s.lock for _, s in spots],
        )
        # Committed: from here on, no record of the batch may be told it failed as a whole.
        by_station = {row["station_id"]: row for row in rows}
        for index, record in enumerate(batch):
            row = by_station[record.station_id]
            outcomes.append(None)
            if row["new"]:
                if record.feed is not None:
                    written = FeedEvent(str(record.topic), row["seq"], str(record.feed.event), record.feed.data)
                    await bus.deliver_committed(written)
                    announced.append(written)
            elif row["earlier"] is not None:
                outcomes[index] = row["earlier"]
            else:  # seen, but committed after this statement's snapshot (another process): read below
                late.append(index)
    await _announce(work, announced)
    for index in late:  # a repeat: nothing of it is applied either way
        record = batch[index]
        try:
            outcomes[index] = await work.db.fetchval(
                "SELECT result FROM station_messages WHERE station_id = $1 AND message_id = $2",
                record.station_id, record.message_id,
            )
        except Exception as exc:
            outcomes[index] = exc
    return outcomes


class PgStationStore:
    def __init__(self, work: Work) -> None:
        self._db = work.db
        self._work = work
        self.records: GroupCommit[_Record, dict[str, Any] | None] = GroupCommit(
            lambda batch: each_alone(lambda b: _write_records(work, b), batch), max_batch=MAX_BATCH,
        )
        self._online: GroupCommit[_Online, None] = GroupCommit(
            lambda batch: each_alone(lambda b: _write_online(work, b), batch), max_batch=MAX_BATCH,
        )
        self._lookups: GroupCommit[int, asyncpg.Record | None] = GroupCommit(
            lambda ids: _read_stations(work.db, ids), max_batch=MAX_BATCH, shield=False,
        )
        # Views read with a secret, for the actor that starts next: station id -> (monotonic time, view).
        self._prefetched: OrderedDict[int, tuple[float, StationView]] = OrderedDict()
        # Stations whose view is being read with their secret: False once a write came meanwhile (the
        # read may be older than the write: it is not kept).
        self._reading: dict[int, bool] = {}

    async def load(self, station_id: int) -> StationView | None:
        kept = self._prefetched.pop(station_id, None)
        if kept is not None and time.monotonic() - kept[0] < PREFETCH_SECONDS:
            return kept[1]
        return await self._db.run(lambda conn: load_station(conn, station_id))

    def _forget(self, station_id: int) -> None:
        self._prefetched.pop(station_id, None)
        if station_id in self._reading:
            self._reading[station_id] = False

    async def record(
        self, station_id: int, message_id: str, action: str, payload: dict[str, Any], result: dict[str, Any],
        changes: Changes, feed: FeedItem | None = None,
    ) -> dict[str, Any] | None:
        self._forget(station_id)
        return await self.records.submit(_Record(station_id, message_id, action, payload, result, changes, feed))

    async def set_online(
        self, station_id: int, online: bool, *, firmware: dict[str, Any] | None = None, feed: FeedItem | None = None,
    ) -> None:
        self._forget(station_id)
        await self._online.submit(_Online(station_id, online, firmware, feed))

    async def next_unlock_id(self) -> int:
        value: int = await self._db.fetchval("SELECT nextval('station_unlock_ids')")
        return value

    async def set_spot_maintenance(self, station_id: int, spot: int, in_maintenance: bool) -> None:
        self._forget(station_id)
        await self._db.execute(
            "UPDATE spots SET in_maintenance = $3 WHERE station_id = $1 AND number = $2",
            station_id, spot, in_maintenance,
        )

    async def secret_hash(self, station_id: int) -> str | None:
        """The station's stored secret hash; the station's view is kept for its actor (``load``)."""
        self._reading[station_id] = True
        try:
            row = await self._lookups.submit(station_id)
        finally:
            fresh = self._reading.pop(station_id, False)
        if row is None:
            return None
        found: str | None = row["secret_hash"]
        if not fresh:
            return found
        now = time.monotonic()
        while self._prefetched:  # forget the views no actor took (its actor was running already)
            oldest = next(iter(self._prefetched.values()))
            if now - oldest[0] < PREFETCH_SECONDS:
                break
            self._prefetched.popitem(last=False)
        self._prefetched[station_id] = (now, _view(row))
        self._prefetched.move_to_end(station_id)
        return found

    async def secret_hashes(self, station_ids: list[int]) -> dict[int, str]:
        """The stored secret hash of each station that still exists."""
        rows = await self._db.fetch("SELECT id, secret_hash FROM stations WHERE id = ANY($1::bigint[])", station_ids)
        return {row["id"]: row["secret_hash"] for row in rows}

    async def prune_messages(self) -> int:
        return await STATION_MESSAGES.prune(self._db)
