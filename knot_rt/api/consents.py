"""Consents."""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("consents", __name__, url_prefix="/api/application")
