"""Login, tokens, second factor, social login and logout."""

from __future__ import annotations

from quart import Blueprint

bp = Blueprint("login", __name__, url_prefix="/api/application")
