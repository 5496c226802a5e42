"""Which process runs a station's or a vehicle's actor: the one holding its PostgreSQL advisory lock.

The registry's gate (``actors.registry.ActorGate``): before a station or vehicle actor starts here, its
lock is taken on the link's connection; when it stops for good, the lock is given back. A process that
dies loses its locks at once (its connection ends), so its devices are free to reconnect elsewhere.

Two ways to take a device:

- ``claim(..., socket=True)``: the device has just connected here. The newest socket wins, as within one
  process: the holder, if any, is asked to let go (it closes the old socket with 4001 and stops the
  actor), then the lock is taken.
- ``admit`` (the gate, for every other first use: an operator's command, a rent, a maintenance): the
  holder lets go only if the device has no socket there (an actor kept for an offline station, a docked
  vehicle's actor); otherwise ``RunsElsewhere`` names it, and the request is forwarded to it
  (``calls.py``).

Lock keys: one bigint per device, the kind's code in the top 16 bits and the id (below 2**48) in the
rest. Chat actors and anything else are not gated (their writes are ordered by row locks).

Costs: a first start pays a ``pg_try_advisory_lock`` on the link, plus, when the device was held
elsewhere, a call to its holder. The locks asked for meanwhile go together in one statement (a group
commit, ``devices/batch.py``): a reconnect storm of 1,000 stations and their docked vehicles costs a few
round trips on the link, not 3,000 in a row. An actor's stop pays an unlock, sent by a background task,
in one statement with the others pending; a start meanwhile takes the lock over without a round trip.

A session's advisory locks count: a lock taken twice needs two unlocks. So a key is locked only when it
is neither held nor waiting for its unlock here, and once per statement.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import RunsElsewhere

from ..devices.batch import GroupCommit
from ..errors import ApiError
from .calls import RemoteCalls
from .link import ClusterLink, LinkLost

log = logging.getLogger(__name__)

KIND_CODES = {"station": 1, "vehicle": 2}
ID_BITS = 48
RELEASE = "cluster.release"

#: ``release(kind, id, socket)``: close the device's socket here if ``socket`` (a newer one is elsewhere),
#: then stop its actor; answers False (and does nothing) when ``socket`` is False and a socket is attached.
Releaser = Callable[[str, int, bool], Awaitable[bool]]


def lock_key(kind: str, actor_id: int) -> int:
    return (KIND_CODES[kind] << ID_BITS) | (actor_id & ((1 << ID_BITS) - 1))


class Ownership:
    def __init__(self, link: ClusterLink, calls: RemoteCalls, *, takeover_seconds: float = 5.0) -> None:
        self.link = link
        self.calls = calls
        self.takeover_seconds = takeover_seconds
        self.releaser: Releaser | None = None  # set by the stations' wiring
        self._held: set[int] = set()
        self._to_unlock: set[int] = set()
        self._unlocked: dict[int, trio.Event] = {}
        self._wake_send, self._wake_receive = trio.open_memory_channel[None](math.inf)
        self._locks: GroupCommit[int, bool] = GroupCommit(self._try_locks, max_batch=2000)
        calls.handle(RELEASE, self._release)
        link.on_lost.append(self._lost)

    @property
    def node(self) -> int:
        return self.link.node

    def holds(self, kind: str, actor_id: int) -> bool:
        return lock_key(kind, actor_id) in self._held

    # -- the gate ----------------------------------------------------------------------------------

    async def admit(self, kind: str, actor_id: str) -> None:
        if kind not in KIND_CODES:
            return
        await self.claim(kind, int(actor_id), socket=False)

    def left(self, kind: str, actor_id: str) -> None:
        if kind not in KIND_CODES:
            return
        key = lock_key(kind, int(actor_id))
        if key in self._held:
            self._held.discard(key)
            self._to_unlock.add(key)
            self._wake_send.send_nowait(None)

    # -- taking a device ---------------------------------------------------------------------------

    async def claim(self, kind: str, actor_id: int, *, socket: bool) -> None:
        """Hold the device's lock here; raises ``RunsElsewhere`` (another process keeps it)."""
        key = lock_key(kind, actor_id)
        if key in self._held:
            return
        if key in self._to_unlock:  # stopped a moment ago, its unlock not sent yet: keep the lock
            self._to_unlock.discard(key)
            self._held.add(key)
            return
        with trio.move_on_after(self.takeover_seconds):
            asked = False
            while True:
                if await self._try_lock(key):
                    return
                holder = await self.owner(kind, actor_id)
                if holder is None or holder == self.node:
                    await trio.sleep(0.05)  # freed meanwhile (or our unlock is on its way): try again
                    continue
                if asked:
                    await trio.sleep(0.05)
                    continue
                released = await self._ask_release(holder, kind, actor_id, socket)
                if not released:
                    raise RunsElsewhere(f"{kind} {actor_id} runs in process {holder}", holder)
                asked = True
        raise RunsElsewhere(f"{kind} {actor_id}: its holder did not let go in time", 0)

    async def owner(self, kind: str, actor_id: int) -> int | None:
        """The node holding the device's lock, or None."""
        key = lock_key(kind, actor_id)
        found: int | None = await self.link.db.fetchval(
            """SELECT pid FROM pg_locks
               WHERE locktype = 'advisory' AND granted AND objsubid = 1
                 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                 AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid""",
            key,
        )
        return found

    async def elsewhere(self, kind: str, actor_id: int) -> int | None:
        """The other process that holds the device, or None (held here, or by nobody)."""
        if lock_key(kind, actor_id) in self._held:
            return None
        holder = await self.owner(kind, actor_id)
        return holder if holder is not None and holder != self.node else None

    async def _try_lock(self, key: int) -> bool:
        """Whether the key is held here now (taken, or already ours)."""
        try:
            return await self._locks.submit(key)
        except LinkLost as exc:
            raise RunsElsewhere(f"the cluster link is down: {exc}", 0) from exc

    async def _try_locks(self, keys: list[int]) -> list[bool]:
        """One statement for the locks asked for meanwhile; each key locked at most once (see above)."""
        for key in keys:
            if key in self._to_unlock:  # still ours: keep it rather than lock it a second time
                self._to_unlock.discard(key)
                self._held.add(key)
        fresh = sorted({key for key in keys if key not in self._held})
        if fresh:
            rows = await self.link.fetch(
                "SELECT k, pg_try_advisory_lock(k) AS taken FROM unnest($1::bigint[]) AS k", fresh
            )
            self._held.update(row["k"] for row in rows if row["taken"])
        return [key in self._held for key in keys]

    async def _ask_release(self, holder: int, kind: str, actor_id: int, socket: bool) -> bool:
        try:
            released = await self.calls.call(
                holder, RELEASE, {"kind": kind, "id": actor_id, "socket": socket}, timeout=self.takeover_seconds
            )
        except ApiError as error:
            log.warning("[cluster] %s %s: process %s did not let go: %s", kind, actor_id, holder, error)
            return False
        return bool(released)

    async def _release(self, args: dict[str, Any]) -> bool:
        """Another process asks us to let go of a device (see ``claim``)."""
        kind, actor_id, socket = str(args["kind"]), int(args["id"]), bool(args["socket"])
        key = lock_key(kind, actor_id)
        if key not in self._held and key not in self._to_unlock:
            return True  # not ours (any more): it will find the lock free
        unlocked = self._unlocked.setdefault(key, trio.Event())
        if self.releaser is None or not await self.releaser(kind, actor_id, socket):
            return False
        if key in self._held:  # the actor was not running: nothing will call ``left``
            self.left(kind, str(actor_id))
        with trio.move_on_after(self.takeover_seconds):
            await unlocked.wait()
        return True

    # -- giving back -------------------------------------------------------------------------------

    async def run(self) -> None:
        """Send the unlocks of the actors that stopped (one task; those pending go in one statement)."""
        async for _ in self._wake_receive:
            while self._to_unlock:
                keys = sorted(self._to_unlock)
                self._to_unlock.clear()
                try:
                    await self.link.fetch("SELECT pg_advisory_unlock(k) FROM unnest($1::bigint[]) AS k", keys)
                except LinkLost:
                    pass  # the connection is gone, and the locks with it
                for key in keys:
                    event = self._unlocked.pop(key, None)
                    if event is not None:
                        event.set()

    async def _lost(self) -> None:
        """The link broke: every lock is gone. What ran here must stop (``releaser`` for each)."""
        held = list(self._held)
        self._held.clear()
        self._to_unlock.clear()
        if self.releaser is None:
            return
        for key in held:
            kind_code, actor_id = key >> ID_BITS, key & ((1 << ID_BITS) - 1)
            kind = next(name for name, code in KIND_CODES.items() if code == kind_code)
            try:
                await self.releaser(kind, actor_id, True)
            except Exception:
                log.exception("[cluster] dropping %s %s failed", kind, actor_id)
