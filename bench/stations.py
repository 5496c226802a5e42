"""Station benchmark: capacity, memory per station, and the unlock round trip under load.

Run: ``make bench`` (or ``.venv/bin/python -m bench.stations --stations 1000,10000``).

It starts a real ``knot-rt serve`` process (on ``DATABASE_URL``, or on a private
PostgreSQL cluster of its own), connects simulated stations to it from this
process over loopback, and prints:

- for each station count: the stations connected and online in that one server
  process, how long it took, and the server's memory per station (the growth of
  its resident memory divided by the count);
- with the first station count connected and sending a state every few seconds:
  the operator unlock -> station ``unlocked`` -> feed push round trip (HTTP
  POST until the feed event arrives), p50 and p99;
- the same round trip through a bare trio-websocket relay (operator socket ->
  station socket -> feed socket) measured in the same run: the floor of the
  transport alone;
- a reconnect storm (as after a restart): the first station count connecting
  all at once to a freshly started server, how many are online after 10 s and
  when the last came online.

Each figure is printed beside the goal of issue 14 (``GOALS``).

``--memory-profile FILE`` traces the server's allocations (tracemalloc) during the first capacity run and
prints where the memory per station goes; ``--profile FILE`` runs the unlock phase's server under cProfile
(the round trips only) and prints its database calls per round trip and its top functions.

Only loopback addresses are used; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import pstats
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import trio
from trio_websocket import open_websocket_url, serve_websocket

from knot_rt.db import apply_migrations
from knot_rt.devices.credentials import hash_device_secret, new_device_secret
from knot_rt.pgcluster import PgCluster
from knot_rt.simulator.station import Simulator
from protocols import vehicle as vehicle_wire

VENV_BIN = Path(sys.executable).parent
PASSWORD = "bench-operator-password"
RAMP_RATE = 50.0
STORM_WINDOW = 10.0  # seconds: the reconnect storm's goal is every station online within this

#: The goals of issue 14, printed beside the figures.
GOAL_KIB_PER_STATION = 20.0
GOAL_STORM_STATIONS = 1000
GOAL_UNLOCK_P99_MS = 10.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, seconds: float) -> bool:
    """Whether ``url`` answers 200 within ``seconds`` (polled every 0.1 s while it refuses)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.1)
    return False


def stop_process(process: subprocess.Popen[bytes] | None, seconds: float) -> None:
    """SIGTERM, then SIGKILL if it has not exited within ``seconds``; reaped either way."""
    if process is None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User and system CPU of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def database() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    folder = Path(tempfile.mkdtemp(prefix="knot-bench-"))
    os.chmod(folder, 0o755)
    cluster = None if given else PgCluster(folder)
    base = given or cluster.start()  # type: ignore[union-attr]
    name = f"knot_bench_{os.getpid()}"
    admin_url = base.rsplit("/", 1)[0] + "/postgres"

    async def create(drop: bool) -> None:
        conn = await asyncpg.connect(admin_url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            if not drop:
                await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create(False))
    try:
        yield base.rsplit("/", 1)[0] + "/" + name
    finally:
        asyncio.run(create(True))
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


async def seed(url: str, count: int, spots: int) -> tuple[int, list[tuple[int, str]]]:
    """The schema, an app label, a network, a cluster per 50 stations, ``count`` stations and their vehicles."""
    conn = await asyncpg.connect(url)
    try:
        await apply_migrations(conn)
        await conn.execute("INSERT INTO app_labels (name, label_name) VALUES ('knot', 'Knot') ON CONFLICT DO NOTHING")
        network = await conn.fetchval("INSERT INTO networks (name) VALUES ('Bench') RETURNING id")
        clusters = await conn.fetch(
            """INSERT INTO clusters (network_id, name, latitude, longitude)
               SELECT $1, 'Bench ' || g, 48.5 + g * 0.001, 7.7 FROM generate_series(1, $2) g RETURNING id""",
            network, max(1, count // 50),
        )
        cluster_ids = [r["id"] for r in clusters]
        secrets = [new_device_secret() for _ in range(count)]
        rows = await conn.fetch(
            """INSERT INTO stations (cluster_id, secret_hash, spot_count)
               SELECT ($1::bigint[])[1 + (i % array_length($1::bigint[], 1))], h, $3
               FROM unnest($2::text[]) WITH ORDINALITY AS t(h, i) RETURNING id""",
            cluster_ids, [hash_device_secret(s) for s in secrets], spots,
        )
        ids = [r["id"] for r in rows]
        await conn.execute(
            """INSERT INTO spots (station_id, number, displayed_number)
               SELECT s, n, n FROM unnest($1::bigint[]) s, generate_series(1, $2) n""",
            ids, spots,
        )
        await conn.execute(
            """INSERT INTO vehicles (id, serial_number, network_id)
               SELECT s * 100 + n, 'B' || (s * 100 + n), $3 FROM unnest($1::bigint[]) s, generate_series(1, $2) n""",
            ids, spots, network,
        )
        return network, list(zip(ids, secrets, strict=True))
    finally:
        await conn.close()


class Server:
    """``knot-rt serve`` in its own process; with ``workers`` > 1, ``knot-rt serve --workers N`` (a parent
    process and N worker processes sharing the ports, always in the cluster mode); ``cluster``: the cluster
    mode for one process too (``KNOT_CLUSTER=1``)."""

    def __init__(self, database_url: str, workers: int = 1, cluster: bool = False) -> None:
        self.port = free_port()
        self.station_port = free_port()
        self.workers = workers
        self.data = Path(tempfile.mkdtemp(prefix="knot-bench-data-"))
        env = {**os.environ, "DATABASE_URL": database_url, "PORT": str(self.port),
               "KNOT_STATION_PORT": str(self.station_port), "KNOT_DATA_DIR": str(self.data),
               "KNOT_SECRET_KEY": new_device_secret() * 2}
        if cluster:
            env["KNOT_CLUSTER"] = "1"
        self.env = env
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def station_url(self) -> str:
        return f"ws://127.0.0.1:{self.station_port}/api/stations/ws"

    @property
    def vehicle_url(self) -> str:
        """The free-floating vehicles' socket: the stations' port, another path."""
        return f"ws://127.0.0.1:{self.station_port}{vehicle_wire.WS_PATH}"

    def create_operator(self, network: int) -> None:
        subprocess.run(
            [str(VENV_BIN / "knot-rt"), "user", "create", "--email", "bench@example.com", "--password", PASSWORD,
             "--perm", "stations:write", "--network", str(network)],
            env=self.env, check=True, capture_output=True,
        )

    def start(self) -> None:
        workers = ["--workers", str(self.workers)] if self.workers > 1 else []
        self.process = subprocess.Popen(
            [str(VENV_BIN / "knot-rt"), "serve", *workers], env=self.env,
            stdout=open(self.data / "server.out", "wb"), stderr=open(self.data / "server.log", "wb"),
        )
        if not wait_until_up(f"{self.base_url}/health", 60):
            raise RuntimeError("the server did not start: " + (self.data / "server.log").read_text()[-2000:])
        # With workers, the first ready one answers /health; the parent's banner says that all are.
        deadline = time.monotonic() + 120
        while self.workers > 1 and "knot_rt API:" not in (self.data / "server.out").read_text():
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError("the workers did not start: " + (self.data / "server.log").read_text()[-2000:])
            time.sleep(0.1)

    def start_profiled(self, path: Path, *, memory: bool = False) -> None:
        """``knot-rt serve`` with a profiler that SIGUSR1 starts and SIGUSR2 stops and writes to ``path``
        (``bench/profiled_serve.py``: cProfile, or tracemalloc with ``memory``)."""
        root = Path(__file__).resolve().parent.parent
        env = {**self.env, "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.profiled_serve", *(["--memory"] if memory else []), str(path)],
            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=open(self.data / "server.log", "wb"),
        )
        if not wait_until_up(f"{self.base_url}/health", 60):
            raise RuntimeError("the server did not start: " + (self.data / "server.log").read_text()[-2000:])

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def stop(self) -> None:
        stop_process(self.process, 30)

    @property
    def rss_kib(self) -> int:
        assert self.process is not None
        return rss_kib(self.process.pid)


def metric_in(text: str, name: str) -> float:
    """The value of the unlabelled metric ``name`` in a /metrics page (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


async def metric(client: httpx.AsyncClient, name: str) -> float:
    return metric_in((await client.get("/metrics")).text, name)


async def stations_online(client: httpx.AsyncClient) -> float:
    return await metric(client, "knot_stations_online")


async def connect_all(server: Server, stations: list[tuple[int, str]], spots: int, heartbeat: float | None = None,
                      ramp_rate: float = RAMP_RATE, online: Callable[[httpx.AsyncClient], Awaitable[float]] = (
                          stations_online), *, task_status: trio.TaskStatus[Simulator]) -> None:
    # Stations come up over a ramp (as a fleet does after a network outage, with its backoff),
    # ramp_rate connections a second. ``online``: the stations online in the server (several processes: the
    # sum of theirs).
    simulator = Simulator(server.station_url, stations, spots=spots, vehicles=spots // 2, heartbeat=heartbeat,
                          backoff_min=0.5, backoff_max=5.0, ramp=len(stations) / ramp_rate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(simulator.run)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            # Bounded: a run where some stations never come online reports how many did.
            with trio.move_on_after(max(60.0, 3 * len(stations) / ramp_rate)):
                while await online(client) < len(stations):  # noqa: ASYNC110
                    await trio.sleep(0.5)
            simulator.online = int(await online(client))  # type: ignore[attr-defined]
        task_status.started(simulator)


async def capacity(server: Server, stations: list[tuple[int, str]], spots: int,
                   memory_profile: Path | None = None) -> dict[str, Any]:
    """Stations connected over the ramp, and the server's memory per station. With ``memory_profile`` (a
    server started by ``start_profiled(memory=True)``), what the stations left allocated is traced and
    written there."""
    before = server.rss_kib
    started = time.monotonic()
    if memory_profile is not None:
        server.signal(signal.SIGUSR1)
    async with trio.open_nursery() as nursery:
        simulator = await nursery.start(connect_all, server, stations, spots)
        elapsed = time.monotonic() - started
        await trio.sleep(2)  # let the actors settle
        after = server.rss_kib
        if memory_profile is not None:
            server.signal(signal.SIGUSR2)
            with trio.fail_after(120):  # the snapshot appears whole (written aside, then renamed)
                while not await trio.Path(memory_profile).exists():  # noqa: ASYNC110
                    await trio.sleep(0.5)
        simulator.stop()
    return {"stations": len(stations), "online": simulator.online, "seconds": elapsed,
            "rss_before_mib": before / 1024,
            "rss_after_mib": after / 1024, "kib_per_station": (after - before) / max(1, simulator.online)}


async def reconnect_storm(server: Server, stations: list[tuple[int, str]], spots: int,
                          seconds: float = 120.0) -> dict[str, Any]:
    """Every station connects at once (no ramp, as after a restart): online counts over time, polled
    every 0.2 s, until all are online or ``seconds`` pass."""
    simulator = Simulator(server.station_url, stations, spots=spots, vehicles=spots // 2,
                          backoff_min=0.5, backoff_max=5.0)
    timeline: list[tuple[float, int]] = []
    async with trio.open_nursery() as nursery, httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
        started = time.monotonic()
        nursery.start_soon(simulator.run)
        with trio.move_on_after(seconds):
            while True:
                online = int(await metric(client, "knot_stations_online"))
                timeline.append((time.monotonic() - started, online))
                if online >= len(stations):
                    break
                await trio.sleep(0.2)
        simulator.stop()
        nursery.cancel_scope.cancel()
    within = max((n for t, n in timeline if t <= STORM_WINDOW), default=0)
    last = next((t for t, n in timeline if n >= len(stations)), None)
    marks = [next((n for t, n in reversed(timeline) if t <= second), 0) for second in range(1, int(STORM_WINDOW) + 6)]
    return {"stations": len(stations), "online_within_window": within, "all_online_after": last, "marks": marks,
            "boot_timeouts": sum(s.stats.timeouts for s in simulator.stations)}


async def login(client: httpx.AsyncClient) -> str:
    response = await client.post("/api/application/login", json={
        "email": "bench@example.com", "password": PASSWORD, "scope": "app", "app_label": "knot"})
    response.raise_for_status()
    return str(response.json()["token"])


async def unlock_round_trips(server: Server, stations: list[tuple[int, str]], spots: int, count: int,
                             heartbeat: float, profiled: bool = False) -> list[float]:
    """Operator POST unlock -> station `unlocked` -> the feed event, ``count`` times, under state load
    (``profiled``: the server's profiler runs for the round trips only). The latencies; an unlock refused
    (a station reconnecting on an overloaded machine) is counted in ``refused`` and skipped."""
    latencies: list[float] = []
    refused: list[int] = []
    async with trio.open_nursery() as nursery:
        simulator = await nursery.start(connect_all, server, stations, spots, heartbeat)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
            token = await login(client)
            targets = random.Random(7).sample(stations, min(count, len(stations)))
            ws_url = server.base_url.replace("http", "ws") + "/api/application/ws"
            async with open_websocket_url(ws_url, extra_headers=[("Authorization", f"Bearer {token}")]) as feed:
                for ref, (station_id, _) in enumerate(targets):
                    await feed.send_message(json.dumps({"type": "subscribe", "topic": f"station:{station_id}",
                                                        "ref": ref}))
                    while json.loads(await feed.get_message()).get("type") != "reply":
                        pass
                if profiled:
                    server.signal(signal.SIGUSR1)
                assert server.process is not None
                server_cpu, own_cpu, started_all = cpu_seconds(server.process.pid), time.process_time(), time.monotonic()
                with trio.fail_after(300):
                    for station_id, _ in targets:
                        station = simulator.station(station_id)
                        spot = next(s.spot for s in station.spots if s.vehicle is not None)
                        vehicle = station.spot(spot).vehicle
                        started = time.perf_counter()
                        response = await client.post(
                            "/api/application/spots/unlock/admin", json={"station_id": station_id, "spot": spot},
                            headers={"Authorization": f"Bearer {token}"},
                        )
                        if response.status_code != 200:  # e.g. 504: that station was reconnecting; counted
                            refused.append(response.status_code)
                            continue
                        while True:
                            event = json.loads(await feed.get_message())
                            if event.get("event") == "spot.unlocked" and event["data"].get("station_id") == station_id:
                                break
                        latencies.append(time.perf_counter() - started)
                        assert vehicle is not None
                        await station.return_vehicle(spot, vehicle)  # keep the station full for the next turn
                elapsed = time.monotonic() - started_all
                print(f"unlock round trips: server CPU {(cpu_seconds(server.process.pid) - server_cpu) / elapsed:.0%},"
                      f" this process (simulator of every station, operator, feed client)"
                      f" {(time.process_time() - own_cpu) / elapsed:.0%} of a core", flush=True)
                if profiled:
                    server.signal(signal.SIGUSR2)
        simulator.stop()
    if refused:
        print(f"unlock round trips: {len(refused)} of {len(targets)} refused ({sorted(set(refused))}), not counted",
              flush=True)
    return latencies


async def relay_round_trips(count: int) -> list[float]:
    """The same three hops through a bare trio-websocket relay: operator -> station -> feed."""
    peers: dict[str, Any] = {}
    ready = trio.Event()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        role = request.path.strip("/")
        peers[role] = ws
        if {"operator", "station", "feed"} <= peers.keys():
            ready.set()
        try:
            while True:
                message = await ws.get_message()
                if role == "operator":
                    await peers["station"].send_message(message)
                elif role == "station":
                    await peers["feed"].send_message(message)
        except Exception:  # the run is over
            return

    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        base = f"ws://127.0.0.1:{server.port}"
        async with open_websocket_url(base + "/operator") as operator, \
                open_websocket_url(base + "/station") as station, open_websocket_url(base + "/feed") as feed:
            await ready.wait()

            async def station_side() -> None:
                while True:
                    command = json.loads(await station.get_message())
                    await station.send_message(json.dumps([2, "u", "unlocked", command]))

            async with trio.open_nursery() as inner:
                inner.start_soon(station_side)
                with trio.fail_after(120):
                    for n in range(count):
                        started = time.perf_counter()
                        await operator.send_message(json.dumps({"spot": 1, "unlock": n}))
                        await feed.get_message()
                        latencies.append(time.perf_counter() - started)
                inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    return latencies


DB_CALLS = ("fetch", "fetchrow", "fetchval", "execute", "executemany")


def print_profile(path: Path, requests: int, lines: int = 15, what: str = "request") -> None:
    """A cProfile dump of the server (``Server.start_profiled``): its database calls per ``what``, then its top
    functions."""
    stats = pstats.Stats(str(path))
    calls = {
        name: count for (file, _, name), (_, count, *_rest) in stats.stats.items()  # type: ignore[attr-defined]
        if name in DB_CALLS and file.endswith("asyncpg/connection.py")
    }
    print(f"\nasyncpg calls in the server per {what} ({requests} of them; cProfile counts a coroutine once per"
          " resumption, so a query may count more than once):")
    for name, count in sorted(calls.items()):
        print(f"  {name:<12} {count / max(requests, 1):8.3f}")
    print(f"\ntop {lines} by own time:")
    stats.sort_stats("tottime").print_stats(lines)
    print(f"top {lines} by cumulative time:")
    stats.sort_stats("cumulative").print_stats(lines)


def report_latency(name: str, values: list[float]) -> str:
    return (f"{name:<48} n={len(values):<5} p50 {statistics.median(values) * 1000:8.2f} ms"
            f"   p99 {percentile(values, 0.99) * 1000:8.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", default="1000,10000", help="station counts, comma separated")
    parser.add_argument("--spots", type=int, default=4)
    parser.add_argument("--round-trips", type=int, default=200)
    parser.add_argument("--heartbeat", type=float, default=5.0, help="state interval during the round trips (s)")
    parser.add_argument("--only", default="capacity,storm,unlock",
                        help="which measurements to run, comma separated (capacity, storm, unlock)")
    parser.add_argument("--memory-profile", metavar="FILE",
                        help="trace the server's allocations (tracemalloc) during the first capacity run, write"
                             " the snapshot to FILE and print where the memory per station goes; the RSS figures"
                             " of that run include the tracer's own cost")
    parser.add_argument("--profile", metavar="FILE",
                        help="run the unlock phase's server under cProfile (for the round trips only), write the"
                             " profile to FILE and print its top")
    args = parser.parse_args()
    only = set(args.only.split(","))
    counts = [int(c) for c in args.stations.split(",")]
    with database() as url:
        server = Server(url)
        network, stations = asyncio.run(seed(url, max(counts), args.spots))
        server.create_operator(network)
        # Each figure is printed as soon as it is measured (a later failure keeps the earlier ones).
        for count in counts if "capacity" in only else []:
            profile = Path(args.memory_profile) if args.memory_profile and count == counts[0] else None
            if profile is not None:
                profile.unlink(missing_ok=True)
                server.start_profiled(profile, memory=True)
            else:
                server.start()
            try:
                measured = trio.run(capacity, server, stations[:count], args.spots, profile)
                report_capacity(measured)
            finally:
                server.stop()
            if profile is not None:
                report_memory_profile(profile, measured["online"])
        if "storm" in only:
            server.start()
            try:
                report_storm(trio.run(reconnect_storm, server, stations[: counts[0]], args.spots))
            finally:
                server.stop()
        knot = None
        if "unlock" in only:
            if args.profile:
                Path(args.profile).unlink(missing_ok=True)
                server.start_profiled(Path(args.profile))
            else:
                server.start()
            try:
                load = stations[: counts[0]]
                knot = trio.run(unlock_round_trips, server, load, args.spots, args.round_trips, args.heartbeat,
                                bool(args.profile))
            finally:
                server.stop()
        shutil.rmtree(server.data, ignore_errors=True)
    if knot is not None:
        relay = trio.run(relay_round_trips, args.round_trips)
        print(f"\nunlock round trip with {counts[0]} stations connected, each reporting state every "
              f"{args.heartbeat:g} s ({counts[0] / args.heartbeat:.0f} state events/s)")
        print("  " + report_latency("knot_rt: POST unlock -> unlocked -> feed push", knot)
              + f"   [goal p99 <= {GOAL_UNLOCK_P99_MS:g} ms]")
        print("  " + report_latency("baseline: bare trio-websocket relay, 3 hops", relay))
        if args.profile:
            print_profile(Path(args.profile), len(knot), what="unlock round trip (with the state load meanwhile)")


def report_memory_profile(path: Path, stations: int, lines: int = 15) -> None:
    """What the stations left allocated (tracemalloc), per station: by module, then by line."""
    snapshot = tracemalloc.Snapshot.load(str(path)).filter_traces([
        tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
    ])
    total = sum(stat.size for stat in snapshot.statistics("filename"))
    stations = max(1, stations)
    print(f"\nmemory profile (tracemalloc, blocks still allocated after {stations} stations came online):"
          f" {total / 1024 / stations:.1f} KiB per station traced")
    root = str(Path(__file__).resolve().parent.parent) + os.sep
    for key in ("filename", "lineno"):
        print(f"  by {key}:")
        for stat in snapshot.statistics(key)[:lines]:
            where = str(stat.traceback[0]).replace(root, "")
            where = where.split("site-packages/")[-1]
            print(f"    {stat.size / 1024 / stations:7.2f} KiB/station  {stat.count / stations:7.1f} blocks/station  {where}")


def report_capacity(r: dict[str, Any]) -> None:
    print(f"\nstations per server process (one knot-rt serve, simulator over loopback):"
          f" {r['online']} of {r['stations']} stations online after {r['seconds']:.1f} s"
          f" (ramp {RAMP_RATE:g}/s); server RSS {r['rss_before_mib']:.0f} -> {r['rss_after_mib']:.0f} MiB,"
          f" {r['kib_per_station']:.1f} KiB per station (actor, vehicle actors, socket)"
          f"   [goal <= {GOAL_KIB_PER_STATION:g} KiB]", flush=True)


def report_storm(storm: dict[str, Any]) -> None:
    last = storm["all_online_after"]
    after = f"{last:.1f} s" if last is not None else "never (within the bound)"
    print(f"\nreconnect storm: {storm['stations']} stations connecting at once to a freshly started server")
    print(f"  online after {STORM_WINDOW:g} s: {storm['online_within_window']} of {storm['stations']};"
          f" last online after {after}; boot timeouts {storm['boot_timeouts']}"
          f"   [goal {GOAL_STORM_STATIONS} within {STORM_WINDOW:g} s]", flush=True)
    print("  online after 1, 2, 3 ... s: " + ", ".join(str(n) for n in storm["marks"]), flush=True)


if __name__ == "__main__":
    main()
