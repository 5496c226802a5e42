"""Maintenance pictures (issue 13): attach one to a maintenance (ROUTES row 60), fetch one.

Who: the ``maintenance`` permission on an OU covering the maintenance's target (its network, cluster or
organisation), as for every maintenance route (``api/maintenances.py``): with ``write`` to attach, any to fetch.
The order of the answers is theirs: an unknown maintenance first (404/4, also one deleted from history), then the
rights (403/13). Both are checked before the body is parsed, so a stranger's 10 MiB are never decoded.

What a picture goes through is ``knot_rt.media`` (shared with the chat images): JPEG, PNG or WebP recognised by
content (415/23 otherwise, whatever the file name or declared type), at most 10 MiB (413/6; over the pixel limit
too), decoded (400/2 when corrupt), turned upright and re-encoded without any metadata (EXIF with its GPS
position, XMP, ICC) in a worker thread; then stored with the maintenance (``maintenance.pictures``). A missing
``maintenance_picture`` file part is 400/2.

The upload route alone may carry ``media.MAX_UPLOAD_BODY`` (10 MiB of picture and its multipart framing); every
other route keeps the app's ``Settings.max_body_bytes`` (``web.request.allow_larger_body``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import ParamSpec, TypeVar

from pydantic import BaseModel, Field
from quart import Blueprint, Response
from quart_schema import DataSource, tag, validate_request, validate_response
from quart_schema.pydantic import File

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..maintenance import pictures
from ..maintenance.service import scope_of
from ..maintenance.store import Maintenance
from ..media import MAX_UPLOAD_BODY
from ..services.access import MAINTENANCE
from ..web.auth import caller_permissions, current_caller, require_user
from ..web.media import picture_response, read_part
from ..web.request import allow_larger_body
from .models import Data

P = ParamSpec("P")
R = TypeVar("R")

bp = Blueprint("maintenance_pictures", __name__, url_prefix="/api/application")

allow_larger_body("POST", r"/api/application/maintenances/[0-9]+/pictures", MAX_UPLOAD_BODY)


class PictureUpload(BaseModel):
    maintenance_picture: File = Field(description="The picture: JPEG, PNG or WebP (by content), at most 10 MiB.")


class PictureOut(BaseModel):
    url: str = Field(description="Where to fetch the picture (`GET /maintenances/{id}/pictures/{picture_id}`).")


async def maintenance_of_caller(maintenance_id: int, *, write: bool) -> Maintenance:
    """Maintenance ``maintenance_id`` if the caller may read it (``write``: write it): 404/4 when unknown or
    deleted from history, then 403/13 without the ``maintenance`` permission on its target's scope. The same
    rule, in the same order, as ``api/maintenances.py``'s rows 58-59 (``_maintenance`` there)."""
    svc = services().maintenance
    found = await svc.get(maintenance_id) if maintenance_id >= 1 else None
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no maintenance {maintenance_id}")
    permissions = await caller_permissions()
    if not permissions.allows(MAINTENANCE, scope_of(await svc.target_of(found)), write=write):
        raise ApiError(ErrorCode.NOT_ALLOWED, "no maintenance permission here")
    return found


def writable_maintenance(func: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """The caller may write maintenance ``maintenance_id`` (else 404/4 or 403/13). Placed above
    ``validate_request``, so it runs before the body is read and parsed."""

    @wraps(func)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        maintenance_id = kwargs["maintenance_id"]
        assert isinstance(maintenance_id, int)
        await maintenance_of_caller(maintenance_id, write=True)
        return await func(*args, **kwargs)

    return wrapper


@bp.post("/maintenances/<int:maintenance_id>/pictures")
@tag(["Maintenance"])
@require_user
@writable_maintenance
@validate_request(PictureUpload, source=DataSource.FORM_MULTIPART)
@validate_response(Data[PictureOut])
async def attach_picture(maintenance_id: int, data: PictureUpload) -> Data[PictureOut]:
    """Attach a picture to a maintenance (row 60): `{"code":0,"data":{"url":...}}`.

    The picture is checked by its content (JPEG, PNG or WebP; 415 code 23 otherwise), at most 10 MiB (413 code 6),
    decoded (400 code 2 when corrupt), turned upright and re-encoded without any metadata (EXIF and its GPS
    position, XMP, ICC), and stored with the maintenance. Needs the `maintenance` permission with write on the
    maintenance's network (or cluster, or organisation): 404 code 4 for an unknown maintenance, then 403 code 13.
    """
    raw = await read_part(data.maintenance_picture.stream)
    stored = await pictures.attach(services().db, maintenance_id, current_caller().user_id, raw)
    if stored is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"no maintenance {maintenance_id}")
    return Data(data=PictureOut(url=stored.url))


@bp.get("/maintenances/<int:maintenance_id>/pictures/<string(maxlength=64):picture_id>")
@tag(["Maintenance"])
@require_user
async def fetch_picture(maintenance_id: int, picture_id: str) -> Response:
    """Fetch a maintenance picture: its bytes with their content type.

    For those who may read the maintenance (the `maintenance` permission on its network, cluster or
    organisation): 404 code 4 for an unknown maintenance or picture, 403 code 13 without the permission.
    Cached privately, for good (`Cache-Control: private, max-age=31536000, immutable`): a picture never changes
    under its id. Served with `X-Content-Type-Options: nosniff` and a sandboxing CSP."""
    await maintenance_of_caller(maintenance_id, write=False)
    found = await services().db.run(lambda conn: pictures.load(conn, maintenance_id, picture_id))
    if found is None:
        raise ApiError(ErrorCode.NOT_FOUND, f"maintenance {maintenance_id} has no picture {picture_id!r}")
    content, content_type = found
    return picture_response(content, content_type, picture_id)
