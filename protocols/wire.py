"""The base of every socket message model (station payloads, feed frames)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Final, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer
from pydantic_core import PydanticCustomError

#: Bounds of the integer columns a wire value may end up in (PostgreSQL integer, bigint).
INT32_MAX: Final = 2**31 - 1
INT64_MAX: Final = 2**63 - 1

#: RFC 6455 close code "try again later": a socket the service cannot serve now (database away, actor down).
TRY_AGAIN_LATER: Final = 1013


class WireModel(BaseModel):
    """Strict, immutable, extra fields ignored; absent optionals are not written as null."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        return {key: value for key, value in data.items() if value is not None or fields[key].is_required()}


J = TypeVar("J", dict[str, Any], list[Any])

_JSON_KINDS: Final = {dict: "object", list: "array"}


class NotAFrame(ValueError):
    """Text that is not the JSON container a protocol's frames are; its message is what to answer."""


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def loads_frame(text: str | bytes, kind: type[J]) -> J:
    """``text`` as JSON that must be a ``dict`` (feed frames) or a ``list`` (station frames).

    Strict JSON: ``NaN`` and ``Infinity`` are refused, as is nesting too deep to
    parse. Raises :class:`NotAFrame` ("frame is not valid JSON", "frame is not a
    JSON array"); each protocol wraps it in its own error.
    """
    try:
        data = json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise NotAFrame("frame is not valid JSON") from None
    if not isinstance(data, kind):
        raise NotAFrame(f"frame is not a JSON {_JSON_KINDS[kind]}")
    return data


def field_path(loc: tuple[int | str, ...], root: str) -> str:
    """A validation error's location as ``spots[2].lock``; ``root`` when it is the whole message.

    The one format of a field's place in every error message: station and feed
    frames, and HTTP requests (``knot_rt/web``) alike.
    """
    path = ""
    for part in loc:
        path = child_path(path, part)
    return path or root


def child_path(path: str, part: int | str) -> str:
    """``path`` one level down, as :func:`field_path` writes it: ``spots`` -> ``spots[2]`` -> ``spots[2].lock``."""
    if isinstance(part, int):
        return f"{path}[{part}]"
    return f"{path}.{part}" if path else part


def storable_text(value: str) -> str:
    """``value`` if PostgreSQL can store it as text or in jsonb: no NUL, no lone surrogate.

    JSON may escape both (``"\\u0000"``, ``"\\ud800"``) and Python decodes them, but
    PostgreSQL refuses them in ``text`` and ``jsonb``, and a lone surrogate cannot
    even be written back as UTF-8. Valid surrogate pairs are already one code point
    once decoded, so any surrogate left is a lone one.
    """
    if "\x00" in value:
        raise PydanticCustomError("nul_character", "String should not contain the NUL character")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise PydanticCustomError("lone_surrogate", "String should be valid Unicode (no lone surrogates)") from None
    return value


def is_storable_text(value: str) -> bool:
    try:
        storable_text(value)
    except PydanticCustomError:
        return False
    return True


#: Longest free-text field of a socket message (names, versions, statuses), in characters.
MAX_TEXT_LENGTH: Final = 256

#: A string PostgreSQL can store (see :func:`storable_text`), of at most :data:`MAX_TEXT_LENGTH` characters.
StorableText = Annotated[str, Field(max_length=MAX_TEXT_LENGTH), AfterValidator(storable_text)]
