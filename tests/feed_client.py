"""A feed client for tests: a real trio-websocket connection to /api/application/ws."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from tests.support import Harness


class FeedClient:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self._ref = 0

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send_message(json.dumps(frame))

    async def receive(self, timeout: float = 10.0) -> dict[str, Any]:  # noqa: ASYNC109
        with trio.fail_after(timeout):
            frame: dict[str, Any] = json.loads(await self.ws.get_message())
            return frame

    async def request(self, frame: dict[str, Any]) -> dict[str, Any]:
        """Send a frame with a fresh ref and return the reply that echoes it."""
        self._ref += 1
        ref = f"r{self._ref}"
        await self.send({**frame, "ref": ref})
        while True:
            answer = await self.receive()
            if answer.get("ref") == ref:
                return answer

    async def subscribe(self, topic: str, since: int | None = None) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "subscribe", "topic": topic}
        if since is not None:
            frame["since"] = since
        return await self.request(frame)

    async def events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        found: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while len(found) < count:
                frame = await self.receive(timeout)
                if frame.get("type") == "event":
                    found.append(frame)
        return found


def ws_url(base_url: str) -> str:
    return base_url.replace("http://", "ws://", 1) + "/api/application/ws"


@asynccontextmanager
async def open_feed(base_url: str, token: str | None = None, **options: Any) -> AsyncIterator[FeedClient]:
    headers = [("Authorization", f"Bearer {token}")] if token else []
    async with open_websocket_url(ws_url(base_url), extra_headers=headers, **options) as ws:
        yield FeedClient(ws)


async def rider_seeing(harness: Harness, network: int, email: str = "rider@example.com") -> int:
    """A rider who sees ``network``'s clusters over HTTP, so may subscribe to their ``cluster:<id>`` topics.

    The network is shown by the rider's app label (``knot``, created if missing) and the
    catalog reloaded, as ``services/access.py`` decides for HTTP and the feed alike.
    """
    label = await harness.make.app_label_once("knot")
    await harness.make.show_in(network, label)  # the catalog is read again once linked
    return await harness.create_user(email, app_label=label)
