"""Errors as JSON envelopes: a code, a message, the matching HTTP status."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
from pydantic import ValidationError
from quart import Quart, Response, jsonify
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

from protocols.envelope import error_body
from protocols.errors import ERRORS, ErrorCode
from protocols.wire import field_path

from ..db import DatabaseUnavailable
from ..errors import ApiError
from ..services.passwords import Busy

log = logging.getLogger(__name__)


def error_response(code: ErrorCode, message: str | None = None, status: int | None = None,
                   **extra: Any) -> Response:
    response = jsonify(error_body(code, message, **extra))
    response.status_code = status or ERRORS[code].status
    return response


def describe_validation_error(error: Exception) -> str:
    """One readable sentence naming the fields at fault."""
    if isinstance(error, ValidationError):
        parts = []
        for item in error.errors()[:5]:
            field = field_path(tuple(item.get("loc", ())), "body")
            msg = item.get("msg", "invalid")
            if item.get("type") == "missing":
                msg = "field required"
            parts.append(f"{field}: {msg}")
        return "invalid input: " + "; ".join(parts)
    if isinstance(error, TypeError):
        return "invalid input: expected a JSON object body"
    return f"invalid input: {error}"


_HTTP_CODES = {
    400: ErrorCode.INVALID_INPUT,
    401: ErrorCode.INVALID_TOKEN,
    403: ErrorCode.NOT_ALLOWED,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    429: ErrorCode.RATE_LIMITED,
}


def install_error_handlers(app: Quart) -> None:
    @app.errorhandler(ApiError)
    async def api_error(error: ApiError) -> Response:
        return error_response(error.code, error.message, error.status, **error.extra)

    @app.errorhandler(Busy)
    async def busy(error: Busy) -> Response:
        response = error_response(error.code, error.message, error.status, **error.extra)
        response.headers["Retry-After"] = str(error.retry_after)
        return response

    @app.errorhandler(RequestSchemaValidationError)
    async def validation_error(error: RequestSchemaValidationError) -> Response:
        return error_response(ErrorCode.INVALID_INPUT, describe_validation_error(error.validation_error))

    @app.errorhandler(asyncpg.DataError)
    async def refused_data(error: asyncpg.DataError) -> Response:
        # PostgreSQL (or asyncpg encoding an argument) refused a value: a bound the models do not
        # state yet (an ``integer`` column, a length). The input is at fault; logged to add the bound.
        log.warning("input refused by the database: %s", error)
        return error_response(ErrorCode.INVALID_INPUT, "invalid input: a value is out of range or not valid here")

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, ErrorCode.INTERNAL if status >= 500 else ErrorCode.INVALID_INPUT)
        message = ERRORS[code].message
        if status == 400:
            message = "invalid input: the request could not be read (malformed JSON body or form)"
        response = error_response(code, message, status)
        if status == 405 and error.get_response().headers.get("Allow"):
            response.headers["Allow"] = error.get_response().headers["Allow"]
        return response

    @app.errorhandler(DatabaseUnavailable)
    async def database_unavailable(error: DatabaseUnavailable) -> Response:
        # Logged once per outage by the database layer; the client retries.
        response = error_response(ErrorCode.SERVICE_UNAVAILABLE)
        response.headers["Retry-After"] = "5"
        return response

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error: %r", error)
        return error_response(ErrorCode.INTERNAL)
