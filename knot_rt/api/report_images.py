"""Chat images (issue 12): upload one as a new message of a report (ROUTES row 10), fetch one.

Both routes serve the report's author and the support agents of its network (``SupportService.access``); anyone
else gets 404 code 4, whether the report exists or not; an agent whose ``support`` permission is read-only fetches
but may not upload (403 code 13). The upload checks that before the body is parsed, so a
stranger's 10 MiB are never decoded. What the image goes through is in ``knot_rt.media`` (shared with the
maintenance pictures) and ``knot_rt.support.images``.

The upload route alone may carry a body of ``MAX_UPLOAD_BODY`` (10 MiB of image and its multipart framing);
every other route keeps the app's ``Settings.max_body_bytes`` (``web.request.allow_larger_body``). Codes:
413/6 over 10 MiB (or over the pixel limit), 415/23 not a JPEG, PNG or WebP by content, 400/2 a corrupt image
or no ``chat_image`` file part, 409/46 a report resolved past its reopening window, 429/9 over the per-user
message rate (shared with text messages).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, Field
from quart import Blueprint, Response, g
from quart_schema import DataSource, tag, validate_request, validate_response
from quart_schema.pydantic import File

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..support import images
from ..support.store import Report, Side, image_url
from ..web.auth import current_caller, require_user
from ..web.media import picture_response, read_part
from ..web.request import allow_larger_body
from .models import Data

P = ParamSpec("P")
R = TypeVar("R")

bp = Blueprint("report_images", __name__, url_prefix="/api/application")

UPLOAD_PATH = "/reports/<int:report_id>/images"
allow_larger_body("POST", r"/api/application/reports/[0-9]+/images", images.MAX_UPLOAD_BODY)


class ImageUpload(BaseModel):
    chat_image: File = Field(description="The picture: JPEG, PNG or WebP (by content), at most 10 MiB.")


class ImageOut(BaseModel):
    id: str = Field(description="The image's identifier (a string), in its URL.")
    date: str = Field(description="When the image's message was written (ISO 8601).")
    url: str = Field(description="Where to fetch the image (`GET /reports/{report_id}/images/{id}`).")


def readable_report(*, write: bool) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """The caller may read (``write``: write) report ``report_id``, else 404 code 4; ``g.report`` and
    ``g.report_side`` are theirs then. Placed before the body is read (above ``validate_request``)."""

    def decorator(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            report_id = kwargs["report_id"]
            assert isinstance(report_id, int)
            g.report, g.report_side = await services().support.access(
                current_caller().user_id, report_id, write=write)
            return await func(*args, **kwargs)

        return wrapper

    return decorator


def _report() -> tuple[Report, Side]:
    report: Report = g.report
    side: Side = g.report_side
    return report, side


@bp.post(UPLOAD_PATH)
@tag(["Reports"])
@require_user
@readable_report(write=True)
@validate_request(ImageUpload, source=DataSource.FORM_MULTIPART)
@validate_response(Data[ImageOut])
async def upload_image(report_id: int, data: ImageUpload) -> Data[ImageOut]:
    """Upload an image as a new chat message (row 10), as the author or a support agent of the report.

    The picture is checked by its content (JPEG, PNG or WebP; 415 code 23 otherwise), at most 10 MiB (413 code 6),
    decoded (400 code 2 when corrupt), turned upright and re-encoded without any metadata (EXIF and its GPS
    position, XMP, ICC), stored, and posted in the conversation (`message.created` on the report's topic).
    """
    svc = services()
    caller = current_caller()
    # One budget with text messages: the same rate and key as ``reports.post_message``.
    await svc.limiter.check((svc.settings.rate_limits.report_message_per_user, "report_message:user", str(caller.user_id)))
    report, side = _report()
    # The part may sit in a temporary file (werkzeug spools beyond 500 KB): read it off the event loop.
    raw = await read_part(data.chat_image.stream)
    stored, message = await images.post_image(svc.db, svc.support, report, side, caller.user_id, raw)
    return Data(data=ImageOut(id=stored.public_id, date=str(message["date"]),
                              url=image_url(report_id, stored.public_id)))


@bp.get("/reports/<int:report_id>/images/<string(maxlength=64):image_id>")
@tag(["Reports"])
@require_user
@readable_report(write=False)
async def fetch_image(report_id: int, image_id: str) -> Response:
    """Fetch a chat image: its bytes with their content type.

    For the report's author and its network's support agents (404 code 4 for anyone else, or an unknown image).
    Cached privately, for good (`Cache-Control: private, max-age=31536000, immutable`): an image never changes
    under its id. Served with `X-Content-Type-Options: nosniff` and a sandboxing CSP."""
    svc = services()
    found = await svc.db.run(lambda conn: images.load_image(conn, report_id, image_id))
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"report {report_id} has no image {image_id!r}")
    content, content_type = found
    return picture_response(content, content_type, image_id)
