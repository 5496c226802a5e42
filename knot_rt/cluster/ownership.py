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

Costs: a first start pays one ``pg_try_advisory_lock`` round trip on the link (~0.1 ms), plus, when the
device was held elsewhere, a call to its holder. An actor's stop pays one unlock, done by a background
task; a start meanwhile takes the lock over without a round trip.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from actors import RunsElsewhere

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
                    self._held.add(key)
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
        try:
            taken: bool = await self.link.command("SELECT pg_try_advisory_lock($1::bigint)", key)
        except LinkLost as exc:
            raise RunsElsewhere(f"the cluster link is down: {exc}", 0) from exc
        return taken

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
        """Send the unlocks of the actors that stopped (one task; unlocks are cheap and rare)."""
        async for _ in self._wake_receive:
            while self._to_unlock:
                key = self._to_unlock.pop()
                try:
                    await self.link.command("SELECT pg_advisory_unlock($1::bigint)", key)
                except LinkLost:
                    pass  # the connection is gone, and the lock with it
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
