"""The answered CALLs of the devices, by id: ``station_messages`` and ``vehicle_messages``.

Both protocols promise the same delivery (``station-protocol.md``): an event is
recorded before its RESULT is sent, and a repeated id is answered with the
stored RESULT without being applied twice. So a CALL is inserted with ``ON
CONFLICT DO NOTHING`` in the transaction that applies it: inserted, the caller
applies the event in that transaction; not inserted, the id was seen, the
stored RESULT is returned and the caller writes nothing. Ids are kept
``MESSAGE_RETENTION``, a day over the contract's ``ID_RETENTION_DAYS``, and
pruned hourly (``StationService``), one indexed DELETE per table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import asyncpg

from protocols.station import ID_RETENTION_DAYS

from ..db import Database

MESSAGE_RETENTION = timedelta(days=ID_RETENTION_DAYS + 1)


@dataclass(frozen=True, slots=True)
class MessageLog:
    """One device kind's table of answered CALLs (its name and device column are constants of this module)."""

    table: str
    device_column: str

    async def record(
        self, conn: asyncpg.Connection, device_id: int, message_id: str, action: str, payload: dict[str, Any],
        result: dict[str, Any],
    ) -> dict[str, Any] | None:
        """Record the CALL (inside the caller's transaction): None when it is new (apply it now), else the
        RESULT stored for that id (apply nothing)."""
        inserted = await conn.fetchval(
            f"""INSERT INTO {self.table} ({self.device_column}, message_id, action, payload, result)
                VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true""",
            device_id, message_id, action, payload, result,
        )
        if inserted:
            return None
        earlier: dict[str, Any] = await conn.fetchval(
            f"SELECT result FROM {self.table} WHERE {self.device_column} = $1 AND message_id = $2",
            device_id, message_id,
        )
        return earlier

    async def prune(self, db: Database) -> int:
        """Forget the ids older than ``MESSAGE_RETENTION``; how many."""
        status = await db.execute(f"DELETE FROM {self.table} WHERE received_at < now() - $1::interval",
                                  MESSAGE_RETENTION)
        return int(status.split()[-1])


STATION_MESSAGES = MessageLog("station_messages", "station_id")
VEHICLE_MESSAGES = MessageLog("vehicle_messages", "vehicle_id")
