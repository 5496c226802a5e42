"""Feed fan-out benchmark: cluster events to many subscribers while stations change state, beside a bare broadcast.

Run: ``make bench-fanout`` (or ``.venv/bin/python -m bench.fanout --subscribers 1000,10000``;
``--duration 2 --subscribers 200`` for a quick check).

It seeds ``DATABASE_URL`` (or a private PostgreSQL cluster of its own) with
``--clusters`` clusters (45) of 50 bench stations of 4 spots each
(``bench/stations.py``'s ``seed``: 2,250 stations, 9,000 vehicles), starts a real ``knot-rt serve`` process, and for each subscriber count:

- connects ``--changers`` simulated stations (20, one per cluster, the first
  clusters), each of which changes state every ``--interval`` seconds for the
  whole phase (a ``state`` frame with one spot's lock opened or closed and its
  vehicle's battery changed, so its cluster's totals change each time; a
  changer whose last state is not answered yet skips its turn, counted);
- opens the subscribers' feed sockets (``protocols.feed.WS_PATH``, the bench
  operator's token in the upgrade's ``Authorization``, one ``subscribe`` to one
  ``cluster:<id>`` topic each, round robin over the clusters) from
  ``--receivers`` child processes, which only count the frames they receive
  (a minimal WebSocket reader on non-blocking sockets and ``selectors``: no
  JSON parsed, no trio task per socket);
- counts for ``--duration`` seconds (after a warm-up second) the events
  delivered to all subscribers, per second; the ``cluster.updated`` events the
  server published on the clusters' topics in that window (read from
  ``feed_events``) beside the state changes the stations sent, to show the
  coalescing (one event per cluster per 50 ms at most) and a collapse of the
  publishing under load; what the subscribers should have received for those
  events (each event times its topic's subscribers) against what they did.

Then, in the same run, the baseline: a bare trio-websocket server
(``serve_websocket``, in a child process) that answers the same ``subscribe``
frames from the same receivers, the same number of sockets on the same topic
split, and broadcasts frames of the same size (a ``cluster.updated`` frame
encoded by ``protocols.feed``) to every subscriber, topic by topic, as fast as
it can for the same duration.

It prints events (messages) per second for both, their ratio beside issue 14's
goal (>= 0.5x the bare broadcast), and the CPU used in the measured window by
the server, the receivers and this process (near 100 % for a process means it,
not the server, is the limit). The coalescing caps each subscriber at one
event per 50 ms, so with few subscribers the cadence, not the server, bounds
knot_rt's figure: the ceiling at the measured publishing rate is printed too.

File descriptors: the soft RLIMIT_NOFILE is raised to the hard limit at start
(the server and the bare server, started from here, inherit it); a subscriber
count that the limit cannot hold is skipped with a line saying so.

``--profile FILE`` runs the server under cProfile for the measured window of the
first subscriber count only (``bench/profiled_serve.py``) and prints the top of
the profile and its asyncpg calls per ``cluster.updated`` published.

Only loopback addresses are used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import httpx
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket

from bench.stations import Server, cpu_seconds, database, login, metric, print_profile, seed
from knot_rt.simulator.fleet import Fleet
from knot_rt.simulator.outbox import Delivery
from knot_rt.simulator.station import SimulatedStation, default_vehicles
from protocols import feed as wire
from protocols import station as st
from protocols.feed import EventName, Topic

#: Issue 14's goal: events delivered per second over the bare broadcast's messages per second.
GOAL_RATIO = 0.5
STATIONS_PER_CLUSTER = 50  # bench.stations.seed makes a cluster per 50 stations
SPOTS = 4  # 45 clusters of 50 stations: 9,000 vehicles, about the demo city's 10,000
WARM_UP = 1.0  # seconds between every socket subscribed and the measure
FD_MARGIN = 512  # descriptors a process needs beside its sockets (database pool, station sockets, files)
CONNECT_PARALLEL = 32  # handshakes in flight per receiver process
SUBSCRIBE_SECONDS = 30.0  # a socket's handshake and subscription, at most


# ----------------------------------------------------------------------------------------------------------
# The receivers: child processes that open the sockets, then only count frames.


def ws_handshake(host: str, port: int, path: str, token: str | None) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}:{port}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
    if token is not None:
        lines.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def client_frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One masked client frame (RFC 6455 5.3: a client masks every frame)."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    size = len(payload)
    head = bytes([0x80 | opcode])
    if size < 126:
        head += bytes([0x80 | size])
    elif size < 65536:
        head += bytes([0x80 | 126]) + size.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return head + mask + masked


def split_frames(buffer: bytearray) -> list[tuple[int, bytes]]:
    """The complete server frames at the start of ``buffer`` as (opcode, payload), removed from it."""
    frames = []
    pos, end = 0, len(buffer)
    while end - pos >= 2:
        b1 = buffer[pos + 1]
        size, head = b1 & 0x7F, 2
        if size == 126:
            if end - pos < 4:
                break
            size, head = int.from_bytes(buffer[pos + 2:pos + 4], "big"), 4
        elif size == 127:
            if end - pos < 10:
                break
            size, head = int.from_bytes(buffer[pos + 2:pos + 10], "big"), 10
        if b1 & 0x80:
            head += 4  # a masked frame (never from a server)
        if end - pos < head + size:
            break
        frames.append((buffer[pos] & 0x0F, bytes(buffer[pos + head:pos + head + size])))
        pos += head + size
    del buffer[:pos]
    return frames


async def open_subscriber(host: str, port: int, path: str, token: str | None, topic: str
                          ) -> tuple[trio.SocketStream, bytearray]:
    """A socket upgraded, authenticated by its header and subscribed to ``topic`` (its reply read)."""
    stream = await trio.open_tcp_stream(host, port)
    try:
        await stream.send_all(ws_handshake(host, port, path, token))
        buffer = bytearray()
        while (end := buffer.find(b"\r\n\r\n")) < 0:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed during the upgrade")
            buffer += chunk
        status = bytes(buffer[:end]).split(b"\r\n", 1)[0]
        if b" 101 " not in status + b" ":
            raise ConnectionError(f"upgrade refused: {status.decode('latin-1')}")
        del buffer[:end + 4]
        subscribe = {"type": "subscribe", "topic": topic, "ref": "s"}
        await stream.send_all(client_frame(json.dumps(subscribe).encode()))
        while True:
            for opcode, payload in split_frames(buffer):
                if opcode == 0x8:
                    code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
                    raise ConnectionError(f"closed with {code} before the subscription's reply")
                if opcode == 0x1:
                    frame = json.loads(payload)
                    if frame.get("type") == "reply":
                        if frame.get("code") != 0:
                            raise ConnectionError(f"subscribe {topic}: {frame}")
                        return stream, buffer
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise ConnectionError("closed before the subscription's reply")
            buffer += chunk
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def open_all(spec: dict[str, Any]) -> tuple[list[tuple[int, int]], list[str]]:
    """Every socket of ``spec`` opened and subscribed, ``CONNECT_PARALLEL`` at a time: their (descriptor,
    index) detached from trio, and the errors of those that failed."""
    opened: list[tuple[int, int]] = []
    errors: list[str] = []
    limit = trio.Semaphore(CONNECT_PARALLEL)

    async def one(index: int, topic: str) -> None:
        async with limit:
            try:
                with trio.fail_after(SUBSCRIBE_SECONDS):
                    stream, _rest = await open_subscriber(spec["host"], spec["port"], spec["path"],
                                                          spec["token"], topic)
            except (OSError, ConnectionError, trio.TooSlowError, ValueError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            # What came after the reply (an event already) is not counted: the measure starts later.
            opened.append((stream.socket.detach(), index))

    async with trio.open_nursery() as nursery:
        for index, topic in enumerate(spec["topics"]):
            nursery.start_soon(one, index, topic)
    return opened, errors


def count_frames(opened: list[tuple[int, int]], topics: list[str], control: IO[str], reply: IO[str]) -> None:
    """Read every socket until ``exit`` comes on ``control``; count the data frames per socket between
    ``start`` and ``stop`` (per second too), answer pings, and at ``stop`` write the counts to ``reply`` as
    one JSON line."""
    selector = selectors.DefaultSelector()
    sockets: list[socket.socket] = []
    buffers: list[bytearray] = []
    counts: list[int] = []
    closes: dict[str, int] = {}
    for n, (fd, _index) in enumerate(opened):
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        sockets.append(sock)
        buffers.append(bytearray())
        counts.append(0)
        selector.register(sock, selectors.EVENT_READ, n)
    selector.register(control, selectors.EVENT_READ, -1)
    counting, started, cpu_started = False, 0.0, 0.0
    seconds: list[int] = []
    received_bytes = 0
    deadline = time.monotonic() + 3600  # bounded even if the parent never says stop
    while time.monotonic() < deadline:
        for key, _ in selector.select(1.0):
            n = key.data
            if n == -1:
                command = control.readline().strip()
                if command == "start":
                    counts = [0] * len(sockets)
                    seconds, received_bytes = [], 0
                    counting, started, cpu_started = True, time.monotonic(), time.process_time()
                elif command == "stop" and counting:
                    counting = False
                    elapsed, cpu = time.monotonic() - started, time.process_time() - cpu_started
                    per_topic: dict[str, list[int]] = {}
                    for sock_n, (_fd, index) in enumerate(opened):
                        entry = per_topic.setdefault(topics[index], [0, 0])
                        entry[0] += 1
                        entry[1] += counts[sock_n]
                    reply.write(json.dumps({"per_topic": per_topic, "seconds": seconds, "elapsed": elapsed,
                                            "cpu": cpu, "bytes": received_bytes, "closes": closes}) + "\n")
                    reply.flush()
                elif command in ("exit", ""):  # the sockets stay open until then: their closing is not measured
                    for sock in sockets:
                        sock.close()
                    return
                continue
            sock = sockets[n]
            try:
                data = sock.recv(262144)
            except BlockingIOError:
                continue
            except OSError as exc:
                data, reason = b"", type(exc).__name__
            else:
                reason = "closed"
            if not data:
                closes[reason] = closes.get(reason, 0) + 1
                selector.unregister(sock)
                continue
            buffer = buffers[n]
            buffer += data
            frames = 0
            for opcode, payload in split_frames(buffer):
                if opcode in (0x0, 0x1, 0x2):
                    frames += 1
                elif opcode == 0x9:
                    sock.send(client_frame(payload, 0xA))
                elif opcode == 0x8:
                    code = str(int.from_bytes(payload[:2], "big")) if len(payload) >= 2 else "no code"
                    closes[code] = closes.get(code, 0) + 1
            if counting and frames:
                counts[n] += frames
                received_bytes += len(data)
                second = int(time.monotonic() - started)
                while len(seconds) <= second:
                    seconds.append(0)
                seconds[second] += frames


def receiver_main() -> None:
    """``python -m bench.fanout --receiver``: a JSON spec on stdin, then ``start``/``stop`` lines."""
    spec = json.loads(sys.stdin.readline())
    opened, errors = trio.run(open_all, spec)
    print(json.dumps({"opened": len(opened), "failed": len(errors), "errors": sorted(set(errors))[:5]}), flush=True)
    count_frames(opened, spec["topics"], sys.stdin, sys.stdout)


@dataclass
class Counted:
    """What the receivers counted in the measured window."""

    per_topic: dict[str, list[int]] = field(default_factory=dict)  # topic -> [sockets, frames]
    seconds: list[int] = field(default_factory=list)
    elapsed: float = 0.0
    cpu: list[float] = field(default_factory=list)  # per receiver process, share of one core
    bytes: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    opened: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def frames(self) -> int:
        return sum(frames for _sockets, frames in self.per_topic.values())

    @property
    def rate(self) -> float:
        return self.frames / self.elapsed if self.elapsed else 0.0

    @property
    def frame_bytes(self) -> float:
        """The mean size of a frame on the wire (header included)."""
        return self.bytes / self.frames if self.frames else 0.0


class Receivers:
    """``count`` child processes sharing ``topics`` (one socket per entry) round robin."""

    def __init__(self, count: int, host: str, port: int, token: str | None, topics: list[str]) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.processes: list[subprocess.Popen[str]] = []
        for n in range(count):
            process = subprocess.Popen([sys.executable, "-m", "bench.fanout", "--receiver"], cwd=root, env=env,
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.processes.append(process)
            assert process.stdin is not None
            share = topics[n::count]
            process.stdin.write(json.dumps({"host": host, "port": port, "path": wire.WS_PATH, "token": token,
                                            "topics": share}) + "\n")
            process.stdin.flush()
        self.counted = Counted()

    async def _line(self, process: subprocess.Popen[str]) -> dict[str, Any]:
        assert process.stdout is not None
        line = await trio.to_thread.run_sync(process.stdout.readline, abandon_on_cancel=True)
        if not line:
            raise RuntimeError(f"a receiver ended (exit {process.poll()})")
        return dict(json.loads(line))

    async def opened(self) -> Counted:
        for process in self.processes:
            ready = await self._line(process)
            self.counted.opened += ready["opened"]
            self.counted.failed += ready["failed"]
            self.counted.errors += ready["errors"]
        return self.counted

    def _say(self, word: str) -> None:
        for process in self.processes:
            assert process.stdin is not None
            process.stdin.write(word + "\n")
            process.stdin.flush()

    def start(self) -> None:
        self._say("start")

    async def stop(self) -> Counted:
        self._say("stop")
        counted = self.counted
        for process in self.processes:
            result = await self._line(process)
            for topic, (sockets, frames) in result["per_topic"].items():
                entry = counted.per_topic.setdefault(topic, [0, 0])
                entry[0] += sockets
                entry[1] += frames
            for second, frames in enumerate(result["seconds"]):
                while len(counted.seconds) <= second:
                    counted.seconds.append(0)
                counted.seconds[second] += frames
            counted.elapsed = max(counted.elapsed, result["elapsed"])
            counted.cpu.append(result["cpu"] / result["elapsed"] if result["elapsed"] else 0.0)
            counted.bytes += result["bytes"]
            for code, n in result["closes"].items():
                counted.closes[code] = counted.closes.get(code, 0) + n
        return counted

    def close(self) -> None:
        """Every socket closed, every process ended (killed if it does not end within 30 s)."""
        for process in self.processes:
            if process.poll() is None and process.stdin is not None:
                try:
                    process.stdin.write("exit\n")
                    process.stdin.close()
                except OSError:
                    pass
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ----------------------------------------------------------------------------------------------------------
# The stations that change state.


class ChangingStation(SimulatedStation):
    """A simulated station whose spots' locks open one by one, then close one by one, with a state frame
    each time: every change moves its cluster's available vehicles by one."""

    async def change(self, step: int) -> Delivery:
        count = len(self.spots)
        spot = self._spot(1 + step % count)
        spot.lock = st.Lock.OPEN if (step // count) % 2 == 0 else st.Lock.CLOSED
        if spot.vehicle is not None:
            spot.battery = 20 + step % 80
        return await self.send_state()


class Changers(Fleet[ChangingStation]):
    def __init__(self, url: str, stations: list[tuple[int, str]]) -> None:
        super().__init__(noun="stations")
        self.url = url
        for station_id, secret in stations:
            self.add(ChangingStation(station_id, secret, url, spots=SPOTS, vehicles=default_vehicles(station_id, SPOTS),
                                     changed=self.changes, backoff_min=0.5, backoff_max=5.0))
        self.sent = 0
        self.skipped = 0  # turns skipped: the last state was not answered yet

    async def keep_changing(self, station: ChangingStation, interval: float, until: float) -> None:
        step, pending = 0, None
        next_at = trio.current_time()
        while next_at < until:
            if pending is not None and not pending.answered:
                self.skipped += 1
            else:
                pending = await station.change(step)
                step += 1
                self.sent += 1
            next_at += interval
            await trio.sleep_until(next_at)


# ----------------------------------------------------------------------------------------------------------
# The server side's figures.


@dataclass
class Phase:
    name: str
    subscribers: int
    counted: Counted
    server_cpu: float  # share of one core in the window
    main_cpu: float
    published: dict[str, int] = field(default_factory=dict)  # cluster topic -> cluster.updated in the window
    window: tuple[float, float] = (0.0, 0.0)  # wall clock, for feed_events
    events_total: float = 0.0  # knot_feed_events_total in the window (every topic)
    changes: int = 0
    skipped: int = 0

    @property
    def seconds(self) -> float:
        return self.window[1] - self.window[0]

    @property
    def expected(self) -> int:
        """What the subscribers should have received for the events published in the window."""
        return sum(n * self.counted.per_topic.get(topic, [0, 0])[0] for topic, n in self.published.items())


async def measure(receivers: Receivers, duration: float, server_pid: int,
                  snapshot: Callable[[], Awaitable[None]] | None = None) -> tuple[Counted, float, float, float, float]:
    """Warm up, then count for ``duration``: (counted, server CPU share, this process's CPU share, wall start,
    wall end); ``snapshot`` is awaited just before the start and just after the end."""
    await trio.sleep(WARM_UP)
    if snapshot is not None:
        await snapshot()
    server_cpu, main_cpu, wall = cpu_seconds(server_pid), time.process_time(), time.time()
    started = time.monotonic()
    receivers.start()
    await trio.sleep(duration)
    counted = await receivers.stop()
    elapsed = time.monotonic() - started
    server_share = (cpu_seconds(server_pid) - server_cpu) / elapsed
    main_share = (time.process_time() - main_cpu) / elapsed
    if snapshot is not None:
        await snapshot()
    return counted, server_share, main_share, wall, wall + elapsed


async def knot_phase(server: Server, stations: list[tuple[int, str]], topics: list[str],
                     args: argparse.Namespace, profiled: bool) -> Phase:
    process = server.process
    assert process is not None
    changers = Changers(server.station_url, stations)
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        nursery.start_soon(changers.run)
        with trio.move_on_after(60):
            while await metric(client, "knot_stations_online") < len(stations):  # noqa: ASYNC110
                await trio.sleep(0.2)
        online = int(await metric(client, "knot_stations_online"))
        if online < len(stations):
            print(f"  *** only {online} of {len(stations)} changing stations online after 60 s", flush=True)
        token = await login(client)
        # The changes run from now to the end of the measure (opening the sockets included), bounded.
        until = trio.current_time() + 120 + len(topics) / 50 + WARM_UP + args.duration
        changing = trio.CancelScope()

        async def change_all() -> None:
            with changing:
                async with trio.open_nursery() as inner:
                    for station in changers.devices:
                        inner.start_soon(changers.keep_changing, station, args.interval, until)

        nursery.start_soon(change_all)
        receivers = Receivers(args.receivers, "127.0.0.1", server.port, token, topics)
        marks: list[tuple[float, int, int]] = []

        async def snapshot() -> None:
            marks.append((await metric(client, "knot_feed_events_total"), changers.sent, changers.skipped))
            if profiled:
                process.send_signal(signal.SIGUSR1 if len(marks) == 1 else signal.SIGUSR2)

        try:
            with trio.fail_after(120 + len(topics) / 50):
                opened = await receivers.opened()
            report_opened("knot_rt", opened, len(topics))
            counted, server_cpu, main_cpu, t0, t1 = await measure(receivers, args.duration, process.pid,
                                                                  snapshot)
        finally:
            receivers.close()
        (events_before, sent_before, skipped_before), (events_after, sent_after, skipped_after) = marks
        changing.cancel()
        changers.stop()
        if profiled:
            await trio.sleep(2)  # the profile is written
    return Phase("knot_rt", len(topics), counted, server_cpu, main_cpu, window=(t0, t1),
                 events_total=events_after - events_before, changes=sent_after - sent_before,
                 skipped=skipped_after - skipped_before)


async def published_in(url: str, topics: list[str], window: tuple[float, float]) -> dict[str, int]:
    """The ``cluster.updated`` events of ``topics`` written in the window (wall clock), per topic."""
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            """SELECT topic, count(*) AS n FROM feed_events
               WHERE topic = ANY($1::text[]) AND event = $2
                 AND created_at >= to_timestamp($3) AND created_at < to_timestamp($4)
               GROUP BY topic""",
            topics, str(EventName.CLUSTER_UPDATED), window[0], window[1],
        )
        return {r["topic"]: int(r["n"]) for r in rows}
    finally:
        await conn.close()


# ----------------------------------------------------------------------------------------------------------
# The baseline: a bare trio-websocket broadcast, in a child process.


async def bare_serve(frames: dict[str, str]) -> None:
    """Sockets subscribe like feed sockets; on ``go`` over ``/control`` every topic's frame goes to its
    subscribers, topic by topic, until ``stop`` (answered with the count sent and the CPU used)."""
    groups: dict[str, list[WebSocketConnection]] = {topic: [] for topic in frames}
    running, finished = trio.Event(), trio.Event()
    stopping = False
    sent = 0

    async def broadcast() -> None:
        nonlocal sent
        await running.wait()
        while not stopping:
            for topic, members in groups.items():
                frame = frames[topic]
                for ws in list(members):
                    try:
                        await ws.send_message(frame)
                    except ConnectionClosed:
                        members.remove(ws)
                        continue
                    sent += 1
            await trio.lowlevel.checkpoint()

    async def handler(request: WebSocketRequest) -> None:
        nonlocal stopping
        ws = await request.accept()
        try:
            if request.path == "/control":
                assert await ws.get_message() == "go"
                cpu, started = time.process_time(), time.monotonic()
                running.set()
                assert await ws.get_message() == "stop"
                stopping = True
                elapsed = time.monotonic() - started
                await ws.send_message(json.dumps({"sent": sent, "elapsed": elapsed,
                                                  "cpu": (time.process_time() - cpu) / elapsed}))
                finished.set()
                return
            frame = json.loads(await ws.get_message())
            groups[frame["topic"]].append(ws)
            await ws.send_message(wire.reply(frame["ref"]))
            while True:
                await ws.get_message()
        except ConnectionClosed:
            return

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        nursery.start_soon(broadcast)
        print(listeners.port, flush=True)
        with trio.move_on_after(3600):  # bounded even if the parent never says stop
            await finished.wait()
        nursery.cancel_scope.cancel()


def bare_main() -> None:
    """``python -m bench.fanout --bare-serve``: a JSON object topic -> frame on stdin, the port on stdout."""
    frames = json.loads(sys.stdin.readline())
    trio.run(bare_serve, frames)


def sample_frame(topic: Topic, cluster_id: int) -> str:
    """A ``cluster.updated`` frame as the server writes one."""
    return wire.event(str(topic), 1234, EventName.CLUSTER_UPDATED,
                      {"cluster_id": cluster_id, "available_vehicles": 5, "free_spots": 0, "total_spots": SPOTS,
                       "cluster_is_down": False})


async def bare_phase(port: int, pid: int, topics: list[str], args: argparse.Namespace) -> Phase:
    from trio_websocket import open_websocket_url

    receivers = Receivers(args.receivers, "127.0.0.1", port, None, topics)
    try:
        with trio.fail_after(120 + len(topics) / 50):
            opened = await receivers.opened()
        report_opened("bare", opened, len(topics))
        async with open_websocket_url(f"ws://127.0.0.1:{port}/control") as control:
            await control.send_message("go")
            counted, server_cpu, main_cpu, t0, t1 = await measure(receivers, args.duration, pid)
            await control.send_message("stop")
            await control.get_message()  # the bare server's own count: sent, not necessarily read yet
    finally:
        receivers.close()
    return Phase("bare", len(topics), counted, server_cpu, main_cpu, window=(t0, t1))


def run_bare(frames: dict[str, str], topics: list[str], args: argparse.Namespace) -> Phase:
    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.Popen([sys.executable, "-m", "bench.fanout", "--bare-serve"], cwd=root, env=env,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.write(json.dumps(frames) + "\n")
        process.stdin.flush()
        port = int(process.stdout.readline())
        return trio.run(bare_phase, port, process.pid, topics, args)
    finally:
        try:
            process.wait(timeout=10)  # it ends once told to stop
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ----------------------------------------------------------------------------------------------------------
# Reports.


def report_opened(name: str, counted: Counted, wanted: int) -> None:
    if counted.failed:
        print(f"  *** {name}: {counted.failed} of {wanted} sockets could not subscribe: {counted.errors}", flush=True)


def per_second(counted: Counted) -> str:
    whole = counted.seconds[: int(counted.elapsed)] or counted.seconds
    if not whole:
        return ""
    return f" (per second: min {min(whole):,}, median {statistics.median(whole):,.0f}, max {max(whole):,})"


def report(knot: Phase, bare: Phase, args: argparse.Namespace, clusters: int, active_ids: list[int]) -> None:
    k, b = knot.counted, bare.counted
    active = {str(Topic.cluster(c)) for c in active_ids}
    on_active = sum(sockets for topic, (sockets, _f) in k.per_topic.items() if topic in active)
    published = sum(knot.published.values())
    per_cluster_cap = 1 / 0.05  # LiveStations coalesces 50 ms of changes into one event per cluster
    print(f"\n{knot.subscribers:,} subscribers ({k.opened:,} subscribed; one socket and one cluster topic each, round"
          f" robin over {clusters} clusters; {on_active:,} on the {len(active)} clusters of the {args.changers}"
          f" changing stations), {args.receivers} receiver process(es), {knot.seconds:.1f} s measured")
    print(f"  stations: {knot.changes / knot.seconds:,.0f} state changes/s sent"
          f" ({args.changers} stations every {args.interval * 1000:g} ms; {knot.skipped} turns skipped:"
          f" the last state not answered yet)")
    print(f"  server: cluster.updated published {published / knot.seconds:,.0f}/s"
          f" (at most {per_cluster_cap * len(active):,.0f}/s: {per_cluster_cap:g} per changing cluster);"
          f" every feed event {knot.events_total / knot.seconds:,.0f}/s; CPU {knot.server_cpu * 100:.0f}%")
    expected = knot.expected
    print(f"  delivered: {k.frames:,} of {expected:,} owed for those events"
          f" ({k.frames / expected * 100 if expected else 0:.1f}%)"
          + (f"; sockets closed: {k.closes}" if k.closes else ""))
    ceiling = expected / knot.seconds
    ideal = per_cluster_cap * on_active
    print(f"  ceiling of this offer: {ceiling:,.0f} events/s at the published rate, {ideal:,.0f}/s if every"
          f" changing cluster published {per_cluster_cap:g}/s")
    print(f"\n  {'':<44} {'msgs/s':>10} {'frame B':>8} {'server':>7} {'receivers':>10} {'bench':>6}")
    for phase in (knot, bare):
        c = phase.counted
        name = ("knot_rt: events delivered" if phase is knot else
                "baseline: bare trio-websocket broadcast")
        cpus = "+".join(f"{x * 100:.0f}" for x in c.cpu)
        print(f"  {name:<44} {c.rate:10,.0f} {c.frame_bytes:8.0f} {phase.server_cpu * 100:6.0f}%"
              f" {cpus + '%':>10} {phase.main_cpu * 100:5.0f}%{per_second(c)}")
    ratio = k.rate / b.rate if b.rate else 0.0
    print(f"  {'ratio knot_rt / bare':<44} {ratio:10.2f}x   [goal >= {GOAL_RATIO:g}x]", flush=True)
    if b.closes:
        print(f"  bare: sockets closed: {b.closes}")


# ----------------------------------------------------------------------------------------------------------


def raise_file_limit() -> int:
    """The soft RLIMIT_NOFILE raised to the hard one (children inherit it); the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 1 << 30 if soft == resource.RLIM_INFINITY else soft


async def layout(url: str, changing: list[int]) -> tuple[list[int], list[int]]:
    """The ids of every cluster, and those of the changing stations' clusters."""
    conn = await asyncpg.connect(url)
    try:
        clusters = [r["id"] for r in await conn.fetch("SELECT id FROM clusters ORDER BY id")]
        active = [r["cluster_id"] for r in await conn.fetch(
            "SELECT DISTINCT cluster_id FROM stations WHERE id = ANY($1::bigint[]) ORDER BY 1", changing)]
        return clusters, active
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", default="1000,10000", help="subscriber counts, comma separated")
    parser.add_argument("--clusters", type=int, default=45, help="cluster topics the subscribers spread over")
    parser.add_argument("--changers", type=int, default=20, help="stations changing state (one per cluster)")
    parser.add_argument("--interval", type=float, default=0.05, help="seconds between a station's changes")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    parser.add_argument("--receivers", type=int, default=2, help="child processes receiving the frames")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the server under cProfile for the first count's measure, into FILE")
    parser.add_argument("--receiver", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bare-serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        receiver_main()
        return
    if args.bare_serve:
        bare_main()
        return
    counts = [int(c) for c in args.subscribers.split(",")]
    if not 1 <= args.changers <= args.clusters or args.interval < 0.005 or not 0 < args.duration <= 600:
        parser.error("--changers takes 1..--clusters, --interval at least 0.005 s, --duration up to 600 s")
    if args.receivers < 1 or min(counts) < 1 or max(counts) > 100_000:
        parser.error("--receivers takes 1 or more, --subscribers 1..100,000")
    limit = raise_file_limit()
    runnable = []
    for count in counts:
        # The server (and the bare server) hold every socket in one process; a receiver its share.
        if count + FD_MARGIN > limit:
            print(f"*** {count:,} subscribers SKIPPED: a process may open {limit:,} files (RLIMIT_NOFILE,"
                  f" hard limit included), {count + FD_MARGIN:,} needed", flush=True)
        else:
            runnable.append(count)
    with database() as url:
        server = Server(url)
        try:
            network, stations = asyncio.run(seed(url, args.clusters * STATIONS_PER_CLUSTER, SPOTS))
            server.create_operator(network)
            # The seed deals the stations round robin over the clusters: the first ``changers`` are in
            # distinct clusters.
            changing = stations[: args.changers]
            cluster_ids, active = asyncio.run(layout(url, [s for s, _ in changing]))
            topic_names = [str(Topic.cluster(c)) for c in cluster_ids]
            frames = {str(Topic.cluster(c)): sample_frame(Topic.cluster(c), c) for c in cluster_ids}
            for n, count in enumerate(runnable):
                topics = [topic_names[i % len(topic_names)] for i in range(count)]
                profiled = args.profile is not None and n == 0
                if profiled:
                    server.start_profiled(args.profile)
                else:
                    server.start()
                try:
                    knot = trio.run(knot_phase, server, changing, topics, args, profiled)
                finally:
                    server.stop()
                knot.published = asyncio.run(published_in(url, topic_names, knot.window))
                bare = run_bare(frames, topics, args)
                report(knot, bare, args, len(cluster_ids), active)
                if profiled:
                    print_profile(args.profile, sum(knot.published.values()), 20, what="cluster.updated published")
        finally:
            shutil.rmtree(server.data, ignore_errors=True)


if __name__ == "__main__":
    main()
