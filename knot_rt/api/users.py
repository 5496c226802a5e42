"""Accounts."""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("users", __name__, url_prefix="/api/application")
