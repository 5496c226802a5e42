"""A raw station for tests: speaks the station protocol frame by frame over a real socket.

``RawDevice`` and ``device_socket`` are what any device of this framing does (the raw vehicle of
``tests/vehicle_peer.py`` too): HTTP Basic auth and a subprotocol on the upgrade, CALLs sent and their
answers read frame by frame."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from protocols import station as wire


def basic(station_id: int | str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{station_id}:{secret}".encode()).decode()


class RawDevice:
    """One device socket, frame by frame: nothing is checked but what a test asserts."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ids = 0

    def next_id(self) -> str:
        self._ids += 1
        return f"t-{self._ids}"

    async def send(self, frame: list[Any] | str | bytes) -> None:
        """A frame as JSON (a list), or text or bytes as they are (a binary message)."""
        await self.ws.send_message(frame if isinstance(frame, str | bytes) else json.dumps(frame))

    async def receive(self, timeout: float = 10.0) -> list[Any]:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            frame: list[Any] = json.loads(await self.ws.get_message())
            return frame

    async def call(self, action: str, payload: dict[str, Any], call_id: str | None = None) -> list[Any]:
        """Send a CALL and return its answer (RESULT or ERROR), skipping nothing else."""
        call_id = call_id or self.next_id()
        await self.send([2, call_id, action, payload])
        answer = await self.receive()
        assert answer[1] == call_id, answer
        return answer

    async def answer(self, frame: list[Any], payload: dict[str, Any] | None = None) -> None:
        await self.send([3, frame[1], payload or {}])


class RawStation(RawDevice):
    async def boot(self, spots: int = 4) -> list[Any]:
        board = {"firmware_version": "1.2.3", "board_revision": "B"}
        return await self.call("boot", {"mainboard": board, "spots": [board] * spots})

    async def state(self, spots: dict[int, int | None], battery: int = 80) -> list[Any]:
        return await self.call("state", state_payload(spots, battery))


def state_payload(spots: dict[int, int | None], battery: int = 80) -> dict[str, Any]:
    return {
        "mainboard": {"v5": 5000, "v48": 48000, "temp": 21.5},
        "spots": [{"spot": n, "vehicle": v, "lock": 1 if v else 0} for n, v in sorted(spots.items())],
        "vehicles": [{"vehicle": v, "voltage": 41000, "battery": battery} for v in spots.values() if v],
        "connectivity": {"type": "CAT-M1", "rssi": -70, "rsrp": -95},
    }


@asynccontextmanager
async def device_socket(
    url: str, user: int | str, secret: str, subprotocols: list[str], **options: Any
) -> AsyncIterator[WebSocketConnection]:
    """A device's socket: Basic auth ``user:secret``, the ``subprotocols`` proposed (``options``: trio-websocket's)."""
    async with open_websocket_url(
        url, subprotocols=subprotocols, extra_headers=[("Authorization", basic(user, secret))], **options,
    ) as ws:
        yield ws


@asynccontextmanager
async def station_socket(
    url: str, station_id: int, secret: str, *, subprotocols: list[str] | None = None, **options: Any
) -> AsyncIterator[RawStation]:
    proposed = [wire.SUBPROTOCOL] if subprotocols is None else subprotocols
    async with device_socket(url, station_id, secret, proposed, **options) as ws:
        yield RawStation(ws)


@asynccontextmanager
async def booted_station(url: str, station_id: int, secret: str, *, spots: int = 4) -> AsyncIterator[RawStation]:
    """A station socket whose boot the server accepted (answered with a result, message type 3)."""
    async with station_socket(url, station_id, secret) as station:
        assert (await station.boot(spots=spots))[0] == 3
        yield station


async def next_call(device: RawDevice) -> list[Any]:
    """The next CALL of the backend (answers to the device's own CALLs are skipped)."""
    while True:
        frame = await device.receive()
        if frame[0] == 2:
            return frame


async def unlock_by_operator(
    base_url: str, token: str, station: RawDevice, station_id: int, spot: int
) -> tuple[list[Any], httpx.Response]:
    """``POST /spots/unlock/admin`` to the server at ``base_url``, answered ``accepted`` by the station (wherever
    it is connected): (the station's CALL, the HTTP answer)."""
    answers: list[httpx.Response] = []

    async def operator() -> None:
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
            answers.append(await client.post("/api/application/spots/unlock/admin",
                                             json={"station_id": station_id, "spot": spot},
                                             headers={"Authorization": f"Bearer {token}"}))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(operator)
        command = await next_call(station)
        assert command[2] == "unlock" and command[3]["spot"] == spot, command
        await station.answer(command, {"status": "accepted"})
    return command, answers[0]
