"""The JSON response envelope shared by every HTTP route."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from .errors import ERRORS, ErrorCode


class Envelope(BaseModel):
    """Every response: ``code`` 0 on success."""

    code: int = 0


class ErrorBody(BaseModel):
    code: int
    message: str


def error_body(code: ErrorCode, message: str | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"code": int(code), "message": message or ERRORS[code].message}
    body.update(extra)
    return body
