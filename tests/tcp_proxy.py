"""A loopback TCP proxy for failure tests: it can swallow what the server sends, and cut connections."""

from __future__ import annotations

from dataclasses import dataclass, field

import trio


@dataclass
class TcpProxy:
    upstream_port: int
    port: int = 0
    hold_downstream: bool = False  # server -> client bytes are dropped while set
    _streams: list[trio.SocketStream] = field(default_factory=list)
    connections: int = 0

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        # The port it had (or was given): a proxy stopped and run again listens where its clients connect.
        listeners = await trio.open_tcp_listeners(self.port, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, client: trio.SocketStream) -> None:
        self.connections += 1
        server = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
        self._streams += [client, server]
        async with trio.open_nursery() as nursery:

            async def pump(source: trio.SocketStream, sink: trio.SocketStream, downstream: bool) -> None:
                try:
                    while data := await source.receive_some(65536):
                        if not (downstream and self.hold_downstream):
                            await sink.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(pump, client, server, False)
            nursery.start_soon(pump, server, client, True)
        for stream in (client, server):
            await stream.aclose()

    async def cut(self) -> None:
        """Close every proxied connection at once (both sides see a dropped TCP connection)."""
        streams, self._streams = self._streams, []
        for stream in streams:
            await stream.aclose()
