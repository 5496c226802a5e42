"""Feed fan-out, per event and per message: what one ``cluster.updated`` costs the server for N subscribers.

Run: ``.venv/bin/python -m bench.feed_frames`` (``--subscribers 500 --events 200``).

In one process, no database, no network peer but loopback, bounded loops:

1. encoding: the frame of one event for each of N subscribers, as ``web/feed.py`` did
   before (``protocols.feed.event`` per subscriber) and does now (``FeedEvent.frame``:
   encoded once, the same text handed to every subscriber);
2. hypercorn's per-message websocket send path, piece by piece: wsproto building the
   frame (``WSConnection.send``, as ``WSStream._send_wsproto_event`` calls it), and one
   ``send_all`` of it on a loopback trio socket (``TCPServer.protocol_send``: one
   write per message, no batching);
3. the whole path as a subscriber's pump meets it: a quart-trio app on hypercorn
   (port 0) sends M frames to one trio-websocket client, against a bare
   trio-websocket server sending the same frames to the same client.

It prints microseconds per event or per message. Figures are noisy on a shared
machine: compare lines of one run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart_trio import QuartTrio
from trio_websocket import serve_websocket
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from knot_rt.bus import FeedEvent
from protocols import feed as wire

TOPIC = "cluster:17"
DATA = {"cluster_id": 17, "available_vehicles": 5, "free_spots": 3, "total_spots": 8}


def timed(label: str, count: int, work: Callable[[], Any], per: str) -> float:
    started = time.perf_counter()
    work()
    seconds = time.perf_counter() - started
    micro = seconds / count * 1e6
    print(f"  {label:<66} {micro:9.2f} µs per {per}")
    return micro


def encoding(subscribers: int, events: int) -> None:
    print(f"encoding one cluster.updated for {subscribers} subscribers ({events} events):")

    def before() -> None:
        for seq in range(1, events + 1):
            for _ in range(subscribers):
                wire.event(TOPIC, seq, "cluster.updated", DATA)

    def after() -> None:
        for seq in range(1, events + 1):
            item = FeedEvent(TOPIC, seq, "cluster.updated", DATA)
            for _ in range(subscribers):
                item.frame(TOPIC)

    old = timed("before: protocols.feed.event per subscriber", events, before, "event")
    new = timed("now: FeedEvent.frame, encoded once", events, after, "event")
    print(f"  {'ratio':<66} {old / new:9.1f} x")


def server_connection() -> WSConnection:
    client, server = WSConnection(ConnectionType.CLIENT), WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="localhost", target="/ws")))
    for _ in server.events():
        pass
    client.receive_data(server.send(AcceptConnection()))
    return server


async def socket_sends(text: str, messages: int) -> float:
    data = server_connection().send(TextMessage(data=text))
    a, b = await _loopback_pair()
    received = 0

    async def drain() -> None:
        nonlocal received
        while received < len(data) * messages:
            chunk = await b.receive_some(1 << 16)
            if not chunk:
                return
            received += len(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        started = time.perf_counter()
        for _ in range(messages):
            await a.send_all(data)
        seconds = time.perf_counter() - started
    await a.aclose()
    await b.aclose()
    return seconds


async def _loopback_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    client = await trio.open_tcp_stream("127.0.0.1", port)
    server = await listeners[0].accept()
    await listeners[0].aclose()
    return server, client


def send_path(messages: int) -> None:
    text = FeedEvent(TOPIC, 1, "cluster.updated", DATA).frame(TOPIC)
    print(f"hypercorn's per-message send path, piece by piece ({messages} messages of {len(text)} bytes):")
    connection = server_connection()
    timed("wsproto WSConnection.send(TextMessage) (frame building)", messages,
          lambda: [connection.send(TextMessage(data=text)) for _ in range(messages)], "message")
    seconds = trio.run(socket_sends, text, messages)
    print(f"  {'one trio send_all of the frame on loopback (one write per message)':<66}"
          f" {seconds / messages * 1e6:9.2f} µs per message")


def quart_app(text: str, messages: int) -> QuartTrio:
    app = QuartTrio(__name__)

    @app.websocket("/ws")
    async def ws() -> None:
        from quart import websocket

        await websocket.accept()
        for _ in range(messages):
            await websocket.send(text)
        await websocket.receive()  # the client says it got them all

    return app


async def receive_all(port: int, messages: int, frame_bytes: int) -> float:
    """A client that costs next to nothing: the upgrade by wsproto, then raw bytes counted, not parsed."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    client = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(client.send(Request(host="localhost", target="/ws")))
    accepted = False
    while not accepted:
        client.receive_data(await stream.receive_some(1 << 16))
        accepted = any(isinstance(event, AcceptConnection) for event in client.events())
    expected, received = messages * frame_bytes, 0
    started = time.perf_counter()
    while received < expected:
        chunk = await stream.receive_some(1 << 16)
        if not chunk:
            raise ConnectionError("closed early")
        received += len(chunk)
    seconds = time.perf_counter() - started
    await stream.send_all(client.send(TextMessage(data="done")))
    await stream.aclose()
    return seconds


async def whole_path(messages: int) -> None:
    text = FeedEvent(TOPIC, 1, "cluster.updated", DATA).frame(TOPIC)
    frame_bytes = len(server_connection().send(TextMessage(data=text)))
    print(f"the whole path to one client ({messages} messages; the client counts bytes, parses nothing):")
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(lambda task_status: serve(
            quart_app(text, messages), config, shutdown_trigger=trio.sleep_forever, task_status=task_status))
        port = int(binds[0].rsplit(":", 1)[1])
        with trio.fail_after(120):
            seconds = await receive_all(port, messages, frame_bytes)
        print(f"  {'quart-trio websocket.send -> hypercorn (ASGI, wsproto, one write)':<66}"
              f" {seconds / messages * 1e6:9.2f} µs per message")
        nursery.cancel_scope.cancel()

    async def bare(request: Any) -> None:
        ws = await request.accept()
        for _ in range(messages):
            await ws.send_message(text)
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, bare, "127.0.0.1", 0, None)
        port = server.port
        with trio.fail_after(120):
            seconds = await receive_all(port, messages, frame_bytes)
        print(f"  {'bare trio-websocket send_message':<66} {seconds / messages * 1e6:9.2f} µs per message")
        nursery.cancel_scope.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--events", type=int, default=200)
    parser.add_argument("--messages", type=int, default=20_000)
    args = parser.parse_args()
    encoding(args.subscribers, args.events)
    send_path(args.messages)
    trio.run(whole_path, args.messages)


if __name__ == "__main__":
    main()
