"""Chat images (issue 12, ROUTES row 10): checked, cleaned, stored in ``report_images``, posted as a message.

The checks and the cleaning are the shared ones of ``knot_rt.media`` (size, kind by content, pixel limit,
re-encoding without metadata in a worker thread), also used by the maintenance pictures; this module keeps what is
the chat's: the ``report_images`` table and posting an image as a message. The limits are re-exported under their
old names for the chat's route and tests.

Stored bytes are served as they are: ``report_images`` keeps the cleaned data, its type and size; the public id
(row 10's ``id``, in the URL) is random (``media.new_public_id``), never the row id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import asyncpg
import trio

from protocols.errors import ErrorCode

from ..errors import ApiError
from ..media import MAX_IMAGE_BYTES as MAX_IMAGE_BYTES
from ..media import MAX_PIXELS as MAX_PIXELS
from ..media import MAX_UPLOAD_BODY as MAX_UPLOAD_BODY
from ..media import CleanImage, is_public_id, new_public_id, prepare

if TYPE_CHECKING:
    from ..db import Database
    from .service import SupportService
    from .store import Report, Side


@dataclass(frozen=True, slots=True)
class StoredImage:
    id: int  # report_images.id, for report_messages.image_id
    public_id: str
    created_at: datetime


async def insert_image(conn: asyncpg.Connection, report_id: int, image: CleanImage) -> StoredImage:
    """Store a cleaned image of report ``report_id`` (inside the caller's transaction)."""
    row = await conn.fetchrow(
        """INSERT INTO report_images (public_id, report_id, content_type, data, width, height)
           VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, public_id, created_at""",
        new_public_id(), report_id, image.content_type, image.data, image.width, image.height)
    assert row is not None
    return StoredImage(row["id"], row["public_id"], row["created_at"])


async def load_image(conn: asyncpg.Connection, report_id: int, public_id: str) -> tuple[bytes, str] | None:
    """The bytes and content type of image ``public_id`` of report ``report_id``, or None."""
    if not is_public_id(public_id):
        return None
    row = await conn.fetchrow(
        "SELECT data, content_type FROM report_images WHERE report_id = $1 AND public_id = $2",
        report_id, public_id)
    return None if row is None else (bytes(row["data"]), row["content_type"])


async def delete_unposted(conn: asyncpg.Connection, image_id: int) -> None:
    """Remove image ``image_id`` unless a message shows it (the upload failed after storing it)."""
    await conn.execute(
        """DELETE FROM report_images WHERE id = $1
           AND NOT EXISTS (SELECT 1 FROM report_messages WHERE image_id = $1)""", image_id)


async def post_image(db: Database, support: SupportService, report: Report, side: Side, author_id: int,
                     data: bytes) -> tuple[StoredImage, dict[str, Any]]:
    """Clean ``data``, store it, and post it in ``report`` as a message of ``side`` by ``author_id``.

    The caller checked that ``author_id`` may write ``report`` on ``side``. The image is stored (committed)
    before the message is written through the report's chat actor (``SupportService.post_message``), which
    writes the message and its feed events in one transaction: a message never points to a missing image.
    When the post is refused (resolved past its window, 409 code 46) or fails (the chat busy or restarting,
    503), the image is deleted again unless a message shows it after all (an actor that wrote after its
    ask timed out). A crash between the two steps leaves an image no message shows: never served to anyone
    but the report's readers, and only with its random id; a later sweep may remove such rows.
    Returns the stored image and the message's JSON.
    """
    if report.resolved and not report.allow_reopen():  # the actor decides; this only spares the decoding
        raise ApiError(ErrorCode.REPORT_CLOSED, f"report {report.id} was resolved more than 7 days ago")
    image = await prepare(data)
    stored = await db.transaction(lambda conn: insert_image(conn, report.id, image))
    try:
        message = await support.post_message(report, side, author_id, image_id=stored.id)
    except Exception:
        with trio.move_on_after(5) as scope:
            scope.shield = True
            await db.run(lambda conn: delete_unposted(conn, stored.id))
        raise
    return stored, message
