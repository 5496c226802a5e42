"""The request wrapper of the app: bodies are read through ``inputs``."""

from __future__ import annotations

import re
from typing import Any

from quart import request
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import HTTPException

from ..errors import ApiError
from .inputs import decode_utf8, parse_json_body

# Routes allowed a larger body than the app's ``MAX_CONTENT_LENGTH`` (Settings.max_body_bytes): method, a
# pattern of the whole path, the limit. Quart sizes the body (and the multipart parser) when the request object is
# built, before routing, so the route cannot raise it itself; a blueprint declares it here at import
# (``allow_larger_body``). Every other route keeps the app's limit.
_LARGER_BODIES: list[tuple[str, re.Pattern[str], int]] = []


def allow_larger_body(method: str, path_pattern: str, limit: int) -> None:
    """Let ``method`` requests whose path fully matches ``path_pattern`` carry up to ``limit`` bytes of body."""
    _LARGER_BODIES.append((method.upper(), re.compile(path_pattern), limit))


def body_limit(method: str, path: str, default: int | None) -> int | None:
    """The body limit of a request: a declared larger one for its route, else ``default``."""
    for wanted, pattern, limit in _LARGER_BODIES:
        if method == wanted and pattern.fullmatch(path):
            return limit if default is None else max(limit, default)
    return default


class KnotRequest(TrioRequest):
    """Quart's request, with JSON and text bodies read strictly (see ``inputs``).

    Quart decodes a body as UTF-8 outside its ``ValueError`` guard, so a bad byte
    was a 500; here it is 400 + code 2, like NUL, lone surrogates, 64-bit
    overflow and NaN anywhere in the JSON. ``silent`` keeps Quart's meaning: None
    instead of an error.

    A route declared by ``allow_larger_body`` gets its own body limit (the body
    and the multipart parser alike); every other one keeps the app's.
    """

    def __init__(self, method: str, scheme: str, path: str, *args: Any, max_content_length: int | None = None,
                 **kwargs: Any) -> None:
        limit = body_limit(method, path, max_content_length)
        super().__init__(method, scheme, path, *args, max_content_length=limit, **kwargs)
        if limit != max_content_length:
            self.max_content_length = limit  # the multipart parser reads the property, not the body's limit

    async def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> Any:
        raw: bytes = await super().get_data(cache=cache, as_text=False, parse_form_data=parse_form_data)
        return decode_utf8(raw) if as_text else raw

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        if cache and self._cached_json[silent] is not Ellipsis:
            return self._cached_json[silent]
        if not (force or self.is_json):
            return None
        raw: bytes = await super().get_data(cache=cache, as_text=False, parse_form_data=False)
        try:
            result = parse_json_body(raw)
        except ApiError:
            if not silent:
                raise
            result = None
        if cache:
            self._cached_json[silent] = result
        return result


async def drain_request_body() -> None:
    """Read what is left of the request body before the answer goes out.

    A route that answers before reading the body (a 401 from the bearer check, a
    404, a purpose-token refusal) left hypercorn's HTTP/1.1 connection with the
    body unread: measured here, about one keep-alive request in ten then never got
    its answer (the client timed out). Reading the rest (at most the body size
    limit, under the body timeout) lets the connection be reused cleanly.
    """
    try:
        await request.get_data(cache=True)
    except (HTTPException, ApiError):  # over the size limit, or too slow: the answer stands
        pass
