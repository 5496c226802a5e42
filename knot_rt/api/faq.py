"""FAQ."""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("faq", __name__, url_prefix="/api/application")
