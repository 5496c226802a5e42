"""Pictures of a maintenance (ROUTES row 60 and its fetch route): cleaned by ``knot_rt.media``, stored in
``maintenance_pictures`` (``migrations/110_maintenance.sql``).

Choices:

- Stored in PostgreSQL (``bytea``), like the chat's images: durable with the maintenance, in its backups, deleted
  with it (``ON DELETE CASCADE``), no second store to keep consistent. The cost is database size: at most
  10 MiB a picture (usually a few hundred KB once re-encoded); a file store would be the next step if pictures
  grow to dominate the database.
- The picture's URL carries a random public id (``media.new_public_id``), never the row id, and a picture is
  only found under its own maintenance: the right id under another maintenance names nothing.
- A picture may be attached to an open or a resolved maintenance (the photo of the repair comes after it);
  a maintenance deleted from history is unknown (``MaintenanceService.get``), so are its pictures.
- Attaching a picture publishes no feed event: the maintenance itself did not change (its JSON has no pictures).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from ..db import Database
from ..media import is_public_id, new_public_id, prepare

PICTURES_PATH = "/api/application/maintenances/{maintenance_id}/pictures/{public_id}"


@dataclass(frozen=True, slots=True)
class StoredPicture:
    id: int
    maintenance_id: int
    public_id: str
    created_at: datetime

    @property
    def url(self) -> str:
        return picture_url(self.maintenance_id, self.public_id)


def picture_url(maintenance_id: int, public_id: str) -> str:
    """Where a picture is fetched (``GET /maintenances/{id}/pictures/{picture_id}``), relative to the server."""
    return PICTURES_PATH.format(maintenance_id=maintenance_id, public_id=public_id)


async def attach(db: Database, maintenance_id: int, uploaded_by: int | None, data: bytes) -> StoredPicture | None:
    """Check and clean ``data`` (in a worker thread), then store it for maintenance ``maintenance_id``.

    The caller checked that the maintenance exists and that the uploader may write it. Raises the media errors
    (413/6, 415/23, 400/2) before anything is stored. None when the maintenance row vanished meanwhile (its
    station, spot or vehicle was deleted, which cascades): the caller answers it as unknown. One deleted from
    history in the meantime keeps its row: the picture is stored, as unreachable as its maintenance.
    """
    image = await prepare(data)

    async def insert(conn: asyncpg.Connection) -> StoredPicture:
        row = await conn.fetchrow(
            """INSERT INTO maintenance_pictures (public_id, maintenance_id, content_type, data, width, height,
                   uploaded_by)
               VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, public_id, created_at""",
            new_public_id(), maintenance_id, image.content_type, image.data, image.width, image.height,
            uploaded_by)
        assert row is not None
        return StoredPicture(row["id"], maintenance_id, row["public_id"], row["created_at"])

    try:
        return await db.transaction(insert)
    except asyncpg.ForeignKeyViolationError:
        return None


async def load(conn: asyncpg.Connection, maintenance_id: int, public_id: str) -> tuple[bytes, str] | None:
    """The bytes and content type of picture ``public_id`` of maintenance ``maintenance_id``, or None."""
    if not is_public_id(public_id):
        return None
    row = await conn.fetchrow(
        "SELECT data, content_type FROM maintenance_pictures WHERE maintenance_id = $1 AND public_id = $2",
        maintenance_id, public_id)
    return None if row is None else (bytes(row["data"]), row["content_type"])


async def listed(conn: asyncpg.Connection, maintenance_id: int) -> list[StoredPicture]:
    """The pictures of a maintenance, oldest first (ids and URLs only, never the bytes)."""
    rows = await conn.fetch(
        """SELECT id, public_id, created_at FROM maintenance_pictures WHERE maintenance_id = $1 ORDER BY id""",
        maintenance_id)
    return [StoredPicture(r["id"], maintenance_id, r["public_id"], r["created_at"]) for r in rows]
