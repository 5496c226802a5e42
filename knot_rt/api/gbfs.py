"""GBFS v3.0 public feeds (ROUTES: ``/gbfs/v3/{network_id}/<file>.json`` and ``/gbfs/v3/manifest.json``).

Thin: the files, their cache and ETags are ``knot_rt.gbfs.service``'s. The answers are GBFS documents
(``last_updated``, ``ttl``, ``version``, ``data``), not the ``code`` envelope; an unknown or non-public
network answers 404 with code and message as every other route. ``If-None-Match`` naming the current
ETag answers 304; ``Cache-Control`` gives the file's ``ttl`` as ``max-age``.

The service's background loop (the tariffs, and the rents' watch that rotates the vehicles' public ids)
runs with the app: started before it serves, stopped when it stops.
"""

from __future__ import annotations

from typing import Any

import trio
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, current_app, request
from quart_schema import document_response, tag

from protocols.errors import ErrorCode

from ..context import services
from ..errors import ApiError
from ..gbfs.service import FILES, LISTED, MANIFEST, Answer

bp = Blueprint("gbfs", __name__, url_prefix="/gbfs/v3")

TAGS = ["GBFS"]


class GbfsDocument(BaseModel):
    """A GBFS v3.0 file: see the official schema of the file for ``data``."""

    model_config = ConfigDict(extra="allow")
    last_updated: str = Field(description="RFC 3339: when the data last changed")
    ttl: int = Field(description="seconds before the data may change again (also Cache-Control max-age)")
    version: str = Field(description='"3.0"')
    data: dict[str, Any]


def _respond(answer: Answer | None) -> Response:
    if answer is None:
        raise ApiError(ErrorCode.NOT_FOUND, "no public GBFS feed here")
    headers = {"ETag": answer.etag, "Cache-Control": f"public, max-age={answer.ttl}"}
    if answer.matches(request.headers.get("If-None-Match")):
        return Response(b"", status=304, headers=headers)
    return Response(answer.body, status=200, headers=headers, mimetype="application/json")


@bp.get("/manifest.json")
@tag(TAGS)
@document_response(GbfsDocument)
async def manifest() -> Response:
    """The GBFS manifest: the gbfs.json of every public network."""
    return _respond(await services().gbfs.answer(None, MANIFEST.name))


def _file_route(name: str) -> None:
    async def route(network_id: int) -> Response:
        return _respond(await services().gbfs.answer(network_id, name))

    route.__name__ = f"gbfs_{name}"
    route.__doc__ = f"GBFS v3.0 {name}.json of a public network (404 for any other network)."
    bp.get(f"/<int:network_id>/{name}.json")(tag(TAGS)(document_response(GbfsDocument)(route)))


for _name in ["gbfs", *LISTED]:
    assert _name in FILES
    _file_route(_name)


@bp.before_app_serving
async def start_watch() -> None:
    svc = current_app.extensions.get("knot")
    if svc is None:
        return
    await svc.gbfs.refresh()
    scope = trio.CancelScope()
    current_app.extensions["gbfs_watch"] = scope

    async def watch() -> None:
        with scope:
            await svc.gbfs.run()

    current_app.nursery.start_soon(watch)  # type: ignore[attr-defined]


@bp.after_app_serving
async def stop_watch() -> None:
    scope = current_app.extensions.pop("gbfs_watch", None)
    if scope is not None:
        scope.cancel()
