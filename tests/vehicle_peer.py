"""A raw free-floating vehicle for tests: speaks ``vehicle-protocol.md`` frame by frame over a real socket.

``vehicle_socket`` opens ``/api/vehicles/ws`` with HTTP Basic auth (serial number : secret) and the
``knot-vehicle.v1`` subprotocol; ``RawVehicle`` sends CALLs (well-formed ones from the payload helpers, or
anything a hostile test wants) and reads whatever comes back, RESULTs, ERRORs and the backend's CALLs
alike, without checking anything itself: the tests assert. ``booted_vehicle`` is a socket whose ``boot``
the backend accepted.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from protocols import vehicle as wire
from tests.station_client import RawDevice, device_socket

NOW_MS = 1_767_225_600_000  # 2026-01-01: a fixed time for payloads whose time does not matter


def now_ms() -> int:
    return int(time.time() * 1000)


def status_payload(
    lat: float = 48.58, lng: float = 7.73, *, battery: int = 80, voltage: int = 41_000, speed: float = 0.0,
    locked: bool = True, time: int = NOW_MS,
) -> dict[str, Any]:
    return {"lat": lat, "lng": lng, "battery": battery, "voltage": voltage, "speed": speed, "locked": locked,
            "time": time}


class RawVehicle(RawDevice):
    async def boot(self, firmware_version: str = "1.0.0", model: str = "test-scooter") -> list[Any]:
        return await self.call(wire.Action.BOOT, {"firmware_version": firmware_version, "model": model})

    async def status(self, lat: float = 48.58, lng: float = 7.73, *, call_id: str | None = None,
                     **fields: Any) -> list[Any]:
        """A ``status`` (``fields``: those of ``status_payload``) and its answer."""
        return await self.call(wire.Action.STATUS, status_payload(lat, lng, **fields), call_id)

    async def locked(self, lat: float = 48.58, lng: float = 7.73, *, lock: int = 0, time: int = NOW_MS) -> list[Any]:
        return await self.call(wire.Action.LOCKED, {"lat": lat, "lng": lng, "time": time, "lock": lock})

    async def unlocked(self, *, unlock: int = 0, time: int = NOW_MS) -> list[Any]:
        return await self.call(wire.Action.UNLOCKED, {"unlock": unlock, "time": time})


@asynccontextmanager
async def vehicle_socket(
    url: str, serial: str, secret: str, *, subprotocols: list[str] | None = None, **options: Any
) -> AsyncIterator[RawVehicle]:
    """``url``: the harness's ``vehicle_url``; ``options``: trio-websocket's (``connect_timeout``, ...)."""
    proposed = [wire.SUBPROTOCOL] if subprotocols is None else subprotocols
    async with device_socket(url, serial, secret, proposed, **options) as ws:
        yield RawVehicle(ws)


@asynccontextmanager
async def booted_vehicle(url: str, serial: str, secret: str) -> AsyncIterator[RawVehicle]:
    """A vehicle socket whose boot the backend accepted (a RESULT with status ``accepted``)."""
    async with vehicle_socket(url, serial, secret) as vehicle:
        answer = await vehicle.boot()
        assert answer[0] == wire.MessageType.RESULT and answer[2]["status"] == "accepted", answer
        yield vehicle
