"""The request wrapper of the app: bodies are read through ``inputs``."""

from __future__ import annotations

from typing import Any

from quart import request
from quart_trio.wrappers import TrioRequest
from werkzeug.exceptions import HTTPException

from ..errors import ApiError
from .inputs import decode_utf8, parse_json_body


class KnotRequest(TrioRequest):
    """Quart's request, with JSON and text bodies read strictly (see ``inputs``).

    Quart decodes a body as UTF-8 outside its ``ValueError`` guard, so a bad byte
    was a 500; here it is 400 + code 2, like NUL, lone surrogates, 64-bit
    overflow and NaN anywhere in the JSON. ``silent`` keeps Quart's meaning: None
    instead of an error.
    """

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
