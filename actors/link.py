"""A device's live connection as its actor sees it: stations and free-floating vehicles alike.

The gateway (``knot_rt/stations/gateway.py``, ``knot_rt/vehicles/gateway.py``)
holds the socket; the device's actor gets this small interface to answer the
device's CALLs and to send its own. Both device protocols share the framing
(OCPP-J), so one interface serves both.
"""

from __future__ import annotations

from typing import Any, Protocol

from protocols.station import Payload


class LinkClosed(Exception):
    """The connection is gone."""


class CallTimeout(Exception):
    """No answer in time."""


class CallRefused(Exception):
    """The device answered with an ERROR."""


class DeviceLink(Protocol):
    """One live connection of a device (held by the gateway)."""

    booted: bool

    async def send(self, text: str) -> None: ...

    async def call(self, action: str, payload: Payload, timeout: float) -> dict[str, Any]:  # noqa: ASYNC109
        """Send a CALL and return the RESULT payload. Raises ``LinkClosed``, ``CallTimeout`` or ``CallRefused``."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class DeviceLinks(Protocol):
    """The current connection of each device of one kind, by its id."""

    def current(self, device_id: int) -> DeviceLink | None: ...
