"""Hostile input stops here: one check for every route, before any model or query sees it.

What no route may receive, whatever its model says:

- text that is not UTF-8 (body, query string), text holding NUL or lone
  surrogates (PostgreSQL refuses NUL in ``text``; a lone surrogate cannot be
  encoded to UTF-8, so asyncpg fails on it);
- integers beyond 64 bits (no column holds them; asyncpg fails encoding them);
- NaN and ±Infinity (``NaN``, ``Infinity``, or ``1e400``, which Python parses
  as ``inf``);
- JSON nested deeper than ``MAX_DEPTH`` (Python's parser raises
  ``RecursionError``, not ``ValueError``, near 1,000 levels).

Each is answered 400 + code 2 with the field that holds it (``device.id``,
``consents.<key>``, ``query token``). Path ids are checked by ``IdConverter``:
an id no bigint column can hold is no object, so the route answers 404.

Choice: the checks run on the raw JSON and query, not in each pydantic model,
so a field typed ``Any`` or ``dict`` and a route added tomorrow are covered
alike; the cost is one walk over each body (bounded by the body size limit).
Bounds narrower than 64 bits (an ``integer`` column, a percentage) stay the
models' business.
"""

from __future__ import annotations

import json
import math
from typing import Any
from urllib.parse import unquote_to_bytes

from werkzeug.routing import BaseConverter, ValidationError

from protocols.errors import ErrorCode
from protocols.wire import child_path

from ..errors import ApiError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
MAX_DEPTH = 32
# Longest integer literal that can still be a 64-bit integer ("-9223372036854775808").
_MAX_INT_LITERAL = 20


class _Refused:
    """A JSON literal the parser met and we refuse; the walk reports it with its field."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def invalid(field: str, reason: str) -> ApiError:
    return ApiError(ErrorCode.INVALID_INPUT, f"invalid input: {field}: {reason}")


def text_fault(text: str) -> str | None:
    """Why ``text`` may not be stored, or None when it may."""
    if "\x00" in text:
        return "text must not contain NUL (\\u0000)"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "text must not contain lone surrogates"
    return None


def int_fault(value: int) -> str | None:
    if INT64_MIN <= value <= INT64_MAX:
        return None
    return "integer out of range (beyond 64 bits)"


def _parse_int(literal: str) -> int | _Refused:
    if len(literal) > _MAX_INT_LITERAL:
        return _Refused("integer out of range (beyond 64 bits)")
    return int(literal)


def _parse_constant(name: str) -> _Refused:
    return _Refused(f"{name} is not a number (numbers must be finite)")


def decode_utf8(raw: bytes, where: str = "body") -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise invalid(where, f"not valid UTF-8 (byte {error.start})") from None


def parse_json_body(raw: bytes) -> Any:
    """The JSON value of a request body, checked all through; ApiError (400 + code 2) otherwise."""
    text = decode_utf8(raw)
    try:
        value = json.loads(text, parse_int=_parse_int, parse_constant=_parse_constant)
    except RecursionError:
        raise invalid("body", f"JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as error:
        raise invalid("body", f"malformed JSON ({error})") from None
    check_json_value(value)
    return value


def check_json_value(value: Any) -> None:
    """Raise ApiError at the first field holding what no route may receive."""
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        field = path or "body"
        if depth > MAX_DEPTH:
            raise invalid(field, f"JSON nested deeper than {MAX_DEPTH} levels")
        fault: str | None = None
        if isinstance(item, _Refused):
            fault = item.reason
        elif isinstance(item, str):
            fault = text_fault(item)
        elif isinstance(item, bool):
            pass
        elif isinstance(item, int):
            fault = int_fault(item)
        elif isinstance(item, float):
            fault = None if math.isfinite(item) else "number must be finite"
        elif isinstance(item, dict):
            for key, child in item.items():
                key_fault = text_fault(key)
                if key_fault is not None:
                    raise invalid(field, f"a field name: {key_fault}")
                stack.append((child, child_path(path, key), depth + 1))
        elif isinstance(item, list):
            stack.extend((child, child_path(path, index), depth + 1) for index, child in enumerate(item))
        if fault is not None:
            raise invalid(field, fault)


def check_query_string(raw: bytes) -> None:
    """Every name and value of a raw query string is UTF-8 text without NUL; ApiError otherwise.

    Werkzeug decodes the query with ``errors="replace"``, so a bad byte would reach a
    route as U+FFFD and a ``%00`` as NUL; the raw bytes are checked here instead.
    """
    for part in raw.split(b"&"):
        if not part:
            continue
        raw_name, _, raw_value = part.partition(b"=")
        name_bytes = unquote_to_bytes(raw_name.replace(b"+", b" "))
        name = name_bytes.decode("utf-8", "replace")
        decoded_name = decode_utf8(name_bytes, "query parameter name")
        fault = text_fault(decoded_name)
        if fault is not None:
            raise invalid("query parameter name", fault)
        value = decode_utf8(unquote_to_bytes(raw_value.replace(b"+", b" ")), f"query {name}")
        fault = text_fault(value)
        if fault is not None:
            raise invalid(f"query {name}", fault)


def _at_most(limit: int) -> str:
    """A regex of the decimal numbers from 0 to ``limit`` (leading zeros allowed, as many digits as ``limit``).

    The path converter's regex itself refuses a larger id: werkzeug answers a converter's ``ValidationError``
    with 405 when another method of the same path exists (the methods it passed over), not 404."""
    digits = str(limit)
    width = len(digits)
    alternatives = [f"[0-9]{{1,{width - 1}}}"]
    for i, digit in enumerate(digits):
        if digit != "0":
            rest = width - i - 1
            alternatives.append(f"{digits[:i]}[0-{int(digit) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    alternatives.append(digits)
    return "(?:" + "|".join(alternatives) + ")"


class IdConverter(BaseConverter):
    """``<int:…>`` in a path: ASCII digits only, at most a bigint.

    Werkzeug's own accepts any Unicode digit (``٣`` is 3) and any size; a larger
    id names no object, so the route does not match and answers 404.
    """

    regex = _at_most(INT64_MAX)
    weight = 50

    def to_python(self, value: str) -> int:
        number = int(value)
        if number > INT64_MAX:
            raise ValidationError()
        return number

    def to_url(self, value: Any) -> str:
        return str(int(value))
