"""The ops console: static files at ``/console/``, served by the running service.

The console is a browser client of the public API and feed (``knot_rt/console/``: plain ES modules, no build
step). Its map library (Leaflet) is installed by the project's set-up from npm, pinned by ``package-lock.json``
(``make`` runs ``npm ci`` into ``node_modules/``), and served from here at ``/console/vendor/``: nothing is fetched
from a CDN at run time. Without those files the console still opens and says what is missing.

Every answer carries a Content-Security-Policy: scripts and styles from this origin only (no inline script),
API calls and the feed socket to this host. These routes are hidden from the OpenAPI document.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from quart import Blueprint, Response, jsonify, redirect, request, send_file
from quart_schema import hide

from protocols.errors import ErrorCode

from ..errors import ApiError

bp = Blueprint("console", __name__)

STATIC = Path(__file__).resolve().parent.parent / "console"
REPO = Path(__file__).resolve().parent.parent.parent
VENDOR_FILES = {"leaflet.css", "leaflet-src.esm.js"}
VENDOR_IMAGES = {"layers.png", "layers-2x.png", "marker-icon.png", "marker-icon-2x.png", "marker-shadow.png"}
TYPES = {".html": "text/html", ".js": "text/javascript",
         ".css": "text/css", ".png": "image/png", ".svg": "image/svg+xml", ".json": "application/json"}
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_HOST = re.compile(r"^[A-Za-z0-9.\-]{1,253}(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]{2,45}\](:[0-9]{1,5})?$")


def vendor_dir() -> Path:
    """Where the npm-installed Leaflet is (``KNOT_CONSOLE_VENDOR`` to point elsewhere)."""
    given = os.environ.get("KNOT_CONSOLE_VENDOR")
    return Path(given) if given else REPO / "node_modules" / "leaflet" / "dist"


def tiles_url() -> str:
    """A tile URL template a deployment may configure (``KNOT_CONSOLE_TILES``); none by default."""
    return os.environ.get("KNOT_CONSOLE_TILES", "")


def _tile_origin() -> str:
    match = re.match(r"^(https?://[^/{}\s;]+)/", tiles_url())
    return f" {match.group(1)}" if match else ""


def _policy() -> str:
    host = request.host if _HOST.match(request.host or "") else ""
    sockets = f" ws://{host} wss://{host}" if host else ""
    return ("default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src 'self' data: blob:{_tile_origin()}; connect-src 'self'{sockets}; font-src 'self'; "
            "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def _secure(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = _policy()
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-cache"
    return response


def _existing(path: Path) -> Path:
    """``path`` if it is a file (a stat of a small local file, as send_file does itself), else 404."""
    if not path.is_file():
        raise ApiError(ErrorCode.NOT_FOUND, "no such console file")
    return path


async def _file(path: Path) -> Response:
    _existing(path)
    response = await send_file(path, mimetype=TYPES.get(path.suffix, "application/octet-stream"))
    return _secure(response)


@bp.get("/console")
@hide
async def console_root() -> Response:
    return _secure(redirect("/console/"))  # type: ignore[arg-type]


@bp.get("/console/")
@hide
async def console_index() -> Response:
    return await _file(STATIC / "index.html")


@bp.get("/console/config.json")
@hide
async def console_config() -> Response:
    """What the page needs to know before it starts: whether the map library is installed, the tiles."""
    vendor = vendor_dir()
    installed = all((vendor / name).is_file() for name in VENDOR_FILES)
    return _secure(jsonify({
        "code": 0, "map_library": installed, "tiles": tiles_url() or None,
        "missing": None if installed else "The map library is not installed: run `make` (npm ci) on the server.",
    }))


@bp.get("/console/vendor/<name>")
@hide
async def console_vendor(name: str) -> Response:
    if name not in VENDOR_FILES:
        raise ApiError(ErrorCode.NOT_FOUND, "no such console file")
    return await _file(vendor_dir() / name)


@bp.get("/console/vendor/images/<name>")
@hide
async def console_vendor_image(name: str) -> Response:
    """The images leaflet.css refers to (the layers control's icon)."""
    if name not in VENDOR_IMAGES:
        raise ApiError(ErrorCode.NOT_FOUND, "no such console file")
    return await _file(vendor_dir() / "images" / name)


@bp.get("/console/<folder>/<name>")
@hide
async def console_asset(folder: str, name: str) -> Response:
    if folder not in {"js", "css", "img"} or not _NAME.match(name) or ".." in name:
        raise ApiError(ErrorCode.NOT_FOUND, "no such console file")
    return await _file(STATIC / folder / name)
