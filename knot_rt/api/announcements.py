"""Global announcement."""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("announcements", __name__, url_prefix="/api/application")
