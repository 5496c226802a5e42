"""The open sessions this process knows of, so that the session check of a request needs no query.

``AccountService.authenticate`` asks ``get``; on a miss it reads the session from the
database and keeps it (``put``). Every revocation drops its sessions (``drop``): this
process's own once they committed (``AccountService._close_sockets``), other processes'
when their notice arrives (``AccountService.sessions_revoked``); ``clear`` forgets all
(the cross-process link reconnected and may have missed notices).

- A read that raced with a drop (it started before the drop, answered after) is not
  kept: it may have seen the session open just before its revocation committed.
- An entry is kept at most ``max_age`` seconds (the bound on what a revocation written
  behind the service's back, e.g. by a script, can miss), and at most ``size`` entries
  (the oldest read goes first).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable


class SessionCache:
    def __init__(self, max_age: float = 60.0, size: int = 100_000) -> None:
        self.max_age = max_age
        self.size = size
        self._entries: dict[uuid.UUID, tuple[float, int]] = {}
        self.generation = 0  # bumped by every drop and clear

    def get(self, session_id: uuid.UUID) -> int | None:
        """The user of an open session, if known and fresh."""
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        if time.monotonic() - entry[0] > self.max_age:
            del self._entries[session_id]
            return None
        return entry[1]

    def put(self, session_id: uuid.UUID, user_id: int, generation: int) -> None:
        """Keep a session read open, unless a drop happened since ``generation`` was taken (before the read)."""
        if generation != self.generation:
            return
        if len(self._entries) >= self.size and session_id not in self._entries:
            del self._entries[next(iter(self._entries))]
        self._entries[session_id] = (time.monotonic(), user_id)

    def drop(self, session_ids: Iterable[uuid.UUID]) -> None:
        self.generation += 1
        for session_id in session_ids:
            self._entries.pop(session_id, None)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
