"""The base of every socket message model (station payloads, feed frames)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, SerializerFunctionWrapHandler, model_serializer


class WireModel(BaseModel):
    """Strict, immutable, extra fields ignored; absent optionals are not written as null."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore")

    @model_serializer(mode="wrap")
    def _omit_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        fields = type(self).model_fields
        return {key: value for key, value in data.items() if value is not None or fields[key].is_required()}


def field_path(loc: tuple[int | str, ...], root: str) -> str:
    """A validation error's location as ``spots[2].lock``; ``root`` when it is the whole message."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else part
    return path or root
