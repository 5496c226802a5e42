"""The exception every layer of the service raises for a client-visible error."""

from __future__ import annotations

from typing import Any

from protocols.errors import ERRORS, ErrorCode


class ApiError(Exception):
    """Answered as the JSON envelope: ``code``, ``message`` and any extra fields."""

    def __init__(
        self, code: ErrorCode, message: str | None = None, *, status: int | None = None, **extra: Any
    ) -> None:
        self.code = code
        self.message = message or ERRORS[code].message
        self.status = status or ERRORS[code].status
        self.extra = extra
        super().__init__(self.message)
