"""The route side of uploaded pictures (chat images, maintenance pictures; the checks are in ``knot_rt.media``).

- ``read_part``: a multipart file part's bytes, read in a worker thread (werkzeug spools a part beyond 500 KB to a
  temporary file), at most one byte over the image limit so ``media.prepare`` can tell "too large".
- ``picture_response``: the stored bytes with their content type, cached privately for good (a picture never
  changes under its random id), never sniffed by a browser as anything else (``nosniff``), and sandboxed by its CSP
  should one be opened directly (an image cannot run script, but a served body should not be able to try).
"""

from __future__ import annotations

from typing import IO

import trio
from quart import Response

from ..media import MAX_IMAGE_BYTES

# Private (only the readers of the report or maintenance), and never changed under its id: cached a year, never
# revalidated.
CACHE_CONTROL = "private, max-age=31536000, immutable"


async def read_part(stream: IO[bytes]) -> bytes:
    """At most ``MAX_IMAGE_BYTES + 1`` bytes of an uploaded part, read off the event loop."""
    return await trio.to_thread.run_sync(stream.read, MAX_IMAGE_BYTES + 1)


def picture_response(content: bytes, content_type: str, public_id: str) -> Response:
    """A stored picture as the answer of a fetch route."""
    response = Response(content, content_type=content_type)
    response.headers["Cache-Control"] = CACHE_CONTROL
    response.headers["ETag"] = f'"{public_id}"'
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Content-Disposition"] = "inline"
    return response
