"""Scale-out benchmark: one server process, then two on the same database, in one run, and the ratio 2/1.

Run: ``make bench-scale`` (or ``.venv/bin/python -m bench.scale``; ``--duration 2 --stations 100`` for a
quick check).

It seeds one database (``DATABASE_URL``, or a private PostgreSQL cluster of its own) once: the demo city
at ``--scale`` (``knot-rt demo``) and ``--stations`` stations of ``--spots`` spots (``bench/stations.py``'s
seed). Then two phases on that database, one after the other:

1. ``knot-rt serve``: one process, in the cluster mode (``KNOT_CLUSTER=1``: the advisory lock per station,
   the cluster link and its LISTEN/NOTIFY, the shared rate-limit counters), so that both phases pay the
   same costs and the ratio measures the second process alone (``--plain-single``: phase 1 without it);
2. ``knot-rt serve --workers 2``: a parent that serves nothing and two worker processes sharing the HTTP
   and the gateway sockets (``knot_rt/workers.py``).

In each phase:

- HTTP: ``GET /map/public`` (anonymous) and ``GET /map`` (the demo rider, logged in once) on the same
  street view as ``bench/maps.py``, each after a short warm-up, measured with ``bench/maps.py``'s closed
  loop (``--clients`` keep-alive connections over loopback, ``--duration`` seconds), the clients spread
  over ``--client-procs`` processes started at the same instant (their rates summed);
- stations held: ``--stations`` simulated stations connect over a ramp of ``--ramp-rate`` a second
  (``bench/stations.py``'s ``connect_all``); how many are online, how long it took until every server
  process saw them all online, and each process's RSS before and after. In the cluster mode each process's
  ``knot_stations_online`` counts the stations online in any process (each keeps the live view of all):
  the total is the figure the processes agree on, and what each one holds is its own station sockets
  (``knot_stations_connected``) and station actors (``knot_actors_running``).

It prints the figures of both phases, the ratio 2/1 of each beside issue 14's goal (2 processes give
>= 1.7x the HTTP throughput of 1), and what shows that both workers did work: for HTTP, each process's
CPU and the connections each one held (the kernel's socket table says which process holds the server end
of each client connection); for stations, each process's own /metrics (read over connections whose
server end is known to be that process's).

The machine has 2 cores. The load generator (client processes, and the station simulator in this
process), PostgreSQL and anything else running take CPU from the same 2 cores as the two workers: with
one process, the server has a core to itself and the rest uses the other; with two, every CPU the others
use is taken from the workers, so the ratio is capped below 2x by what the others need. The CPU of each
part (server processes, PostgreSQL, the load generator, the rest of the machine) is printed for every
measure: a load generator near 100 % of a core per client process is the limit, not the server.

Only loopback addresses are used; every loop is bounded in count and time. Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import shutil
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.maps import KLEBER, RIDER, STREET, RawClient, Result, area, closed_loop, raw_request
from bench.maps import seed as seed_city
from bench.stations import Server, connect_all, database, metric_in, percentile, rss_kib
from bench.stations import seed as seed_stations

#: Issue 14's goal: 2 processes give at least this times the HTTP throughput of 1.
GOAL_HTTP_RATIO = 1.7
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PUBLIC = ("GET /map/public  street view", "/api/application/map/public")
USER = ("GET /map  street view (demo rider)", "/api/application/map")
BUSY_NEIGHBOURS = 0.15  # cores used by the rest of the machine during a measure, beyond which a warning says so
PROBE_TRIES = 64  # connections opened at most to reach every server process's /metrics once
PROBE_SECONDS = 5.0  # per /metrics probe


# -- processes, their CPU and their sockets (/proc) ---------------------------------------------------------


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
            except (OSError, IndexError, ValueError):
                continue  # ended meanwhile
    return sorted(found)


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` so far (0 when it has ended)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14 and 15 of stat)


def postgres_cpu() -> dict[int, float]:
    """CPU so far of every ``postgres`` process on the machine (other users' work on it included)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    found[int(entry.name)] = cpu_seconds(int(entry.name))
            except OSError:
                continue
    return found


def machine_busy() -> float:
    """CPU seconds the whole machine has been busy (every core, every process)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / CLOCK_TICKS  # all but idle and iowait


def _server_sockets(port: int, client_port: int | None = None) -> set[int]:
    """The inodes of the established server ends on ``port`` (of the client's ``client_port`` only)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state, inode = fields[1], fields[2], fields[3], int(fields[9])
        if state == "01" and int(local.split(":")[1], 16) == port and inode and (
                client_port is None or int(remote.split(":")[1], 16) == client_port):
            inodes.add(inode)
    return inodes


def _holders(inodes: set[int], pids: Iterable[int]) -> dict[int, int]:
    """How many of the sockets ``inodes`` each process of ``pids`` holds."""
    wanted = {f"socket:[{inode}]" for inode in inodes}
    held = {}
    for pid in pids:
        count = 0
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                try:
                    count += os.readlink(f"/proc/{pid}/fd/{fd}") in wanted
                except OSError:
                    continue
        except OSError:
            pass
        held[pid] = count
    return held


def connections_by_process(port: int, pids: list[int]) -> dict[int, int]:
    """Established connections to ``port`` per server process."""
    return _holders(_server_sockets(port), pids)


async def metrics_by_process(port: int, pids: list[int]) -> dict[int, str]:
    """Each server process's own /metrics page: connections are opened until each process has answered
    one (``PROBE_TRIES`` at most; a process never reached is missing from the answer)."""
    found: dict[int, str] = {}
    request = raw_request(f"http://127.0.0.1:{port}", "/metrics", {}, {})
    for _ in range(PROBE_TRIES):
        if len(found) == len(pids):
            break
        client = RawClient("127.0.0.1", port)
        try:
            with trio.move_on_after(PROBE_SECONDS):
                status, body = await client.get(request)
                local = client.local_port
                if status == 200 and local is not None:
                    holder = [pid for pid, n in _holders(_server_sockets(port, local), pids).items() if n]
                    if holder:
                        found.setdefault(holder[0], body.decode())
        finally:
            await client.aclose()
    return found


# -- HTTP ----------------------------------------------------------------------------------------------------


def _client_job(name: str, base_url: str, path: str, params: dict[str, Any], headers: dict[str, str],
                clients: int, duration: float, start_at: float) -> Result:
    """One load-generator process: ``bench/maps.py``'s closed loop, from the wall-clock instant ``start_at``."""
    time.sleep(max(0.0, start_at - time.time()))
    return trio.run(closed_loop, name, base_url, path, params, headers, clients, duration)


@dataclass
class HttpFigure:
    name: str
    rate: float
    p50: float
    p99: float
    errors: int
    client_cpu: float  # cores used by the load generator's processes
    server_cpu: dict[int, float]  # cores per server process
    postgres_cpu: float
    other_cpu: float  # the rest of the machine: other processes, this orchestrating one
    connections: dict[int, int]  # client connections per server process, mid-measure


def measure_http(pool: Any, procs: int, server: Server, pids: list[int], name: str, path: str,
                 params: dict[str, Any], headers: dict[str, str], clients: int, duration: float) -> HttpFigure:
    """``clients`` closed-loop clients spread over ``procs`` processes of ``pool``, for ``duration`` s."""
    shares = [clients // procs + (i < clients % procs) for i in range(procs)]
    start_at = time.time() + 0.5
    jobs = [(name, server.base_url, path, params, headers, n, duration, start_at) for n in shares if n]
    pending = pool.starmap_async(_client_job, jobs)
    time.sleep(max(0.0, start_at - time.time()) + 0.2)  # the warm-up request of each client is done
    server_before = {pid: cpu_seconds(pid) for pid in pids}
    pg_before, busy_before, started = postgres_cpu(), machine_busy(), time.monotonic()
    time.sleep(duration / 2)
    connections = connections_by_process(server.port, pids)
    time.sleep(max(0.0, start_at + 0.2 + duration - time.time() - 0.05))
    elapsed = time.monotonic() - started
    server_cpu = {pid: (cpu_seconds(pid) - server_before[pid]) / elapsed for pid in pids}
    pg_after = postgres_cpu()
    pg = sum(after - pg_before.get(pid, 0.0) for pid, after in pg_after.items()) / elapsed
    busy = (machine_busy() - busy_before) / elapsed
    results: list[Result] = pending.get(timeout=duration + 120)
    latencies = sorted(x for r in results for x in r.latencies)
    client_cpu = sum(r.client_cpu for r in results)
    if not latencies:
        raise RuntimeError(f"{name}: no answer")
    return HttpFigure(
        name, sum(r.rate for r in results), statistics.median(latencies), percentile(latencies, 0.99),
        sum(r.errors for r in results), client_cpu, server_cpu, pg,
        max(0.0, busy - sum(server_cpu.values()) - pg - client_cpu), connections,
    )


# -- stations ------------------------------------------------------------------------------------------------


@dataclass
class StationFigure:
    stations: int
    online: int
    seconds: float
    simulator_cpu: float  # cores used by this process (the simulator) while they connected
    rss_before: dict[int, int]  # KiB per server process
    rss_after: dict[int, int]
    # Each process's own /metrics: the stations online as it sees them (in the cluster mode, every process
    # keeps the live view of every station: the stations online anywhere), the station sockets it holds, and
    # the station actors it runs.
    online_seen: dict[int, int] = field(default_factory=dict)
    connected: dict[int, int] = field(default_factory=dict)
    actors: dict[int, int] = field(default_factory=dict)


async def hold_stations(server: Server, pids: list[int], stations: list[tuple[int, str]], spots: int,
                        ramp_rate: float) -> StationFigure:
    async def online(_client: httpx.AsyncClient) -> float:
        """The stations every process sees online (0 while one of them was not reached)."""
        pages = await metrics_by_process(server.port, pids)
        if len(pages) < len(pids):
            return 0.0
        return min(metric_in(page, "knot_stations_online") for page in pages.values())

    everyone = [p for p in (server.process.pid if server.process else 0, *pids) if p]
    rss_before = {pid: rss_kib(pid) for pid in dict.fromkeys(everyone)}
    cpu_before, started = time.process_time(), time.monotonic()
    async with trio.open_nursery() as nursery:
        simulator = await nursery.start(partial(connect_all, server, stations, spots, None, ramp_rate, online))
        elapsed = time.monotonic() - started
        simulator_cpu = (time.process_time() - cpu_before) / elapsed
        await trio.sleep(2)  # the actors settle
        rss_after = {pid: rss_kib(pid) for pid in rss_before}
        pages = await metrics_by_process(server.port, pids)
        simulator.stop()
    return StationFigure(
        len(stations), simulator.online, elapsed, simulator_cpu, rss_before, rss_after,
        {pid: int(metric_in(page, "knot_stations_online")) for pid, page in pages.items()},
        {pid: int(metric_in(page, "knot_stations_connected")) for pid, page in pages.items()},
        {pid: int(metric_in(page, 'knot_actors_running{kind="station"}')) for pid, page in pages.items()},
    )


# -- a phase -------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    label: str
    parent: int | None  # ``--workers``' parent process (serves nothing)
    pids: list[int]  # the serving processes
    http: list[HttpFigure]
    stations: StationFigure


def run_phase(url: str, workers: int, cluster: bool, args: argparse.Namespace, pool: Any,
              stations: list[tuple[int, str]]) -> Phase:
    server = Server(url, workers=workers, cluster=cluster)
    try:
        server.start()
        assert server.process is not None
        try:
            pids = children(server.process.pid) if workers > 1 else [server.process.pid]
            if len(pids) != workers:
                raise RuntimeError(f"{workers} serving processes expected, found {pids}")
            login = httpx.post(server.base_url + "/api/application/login", timeout=30, json={
                "email": RIDER[0], "password": RIDER[1], "scope": "app", "app_label": "knot"})
            login.raise_for_status()
            rider = {"Authorization": f"Bearer {login.json()['token']}"}
            routes = [
                (*PUBLIC, {**area(False, KLEBER, STREET), "app_label": "knot", "lang": "fr"}, {}),
                (*USER, {**area(True, KLEBER, STREET), "lang": "fr"}, rider),
            ]
            figures = []
            for name, path, params, headers in routes:
                measure_http(pool, args.client_procs, server, pids, name, path, params, headers, args.clients,
                             min(1.0, args.duration / 2))  # warm-up: caches of every process, not measured
                figures.append(measure_http(pool, args.client_procs, server, pids, name, path, params, headers,
                                            args.clients, args.duration))
            held = trio.run(hold_stations, server, pids, stations, args.spots, args.ramp_rate)
            label = "1 process" + ("" if cluster else " (no cluster mode)") if workers == 1 else \
                f"{workers} processes"
            return Phase(label, server.process.pid if workers > 1 else None, pids, figures, held)
        except BaseException:
            for log in ("server.out", "server.log"):
                if (server.data / log).exists():
                    print(f"--- the server's {log}, its end:\n" + (server.data / log).read_text()[-4000:])
            raise
        finally:
            server.stop()
            if args.logs is not None:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in ("server.out", "server.log"):
                    if (server.data / log).exists():
                        shutil.copy(server.data / log, args.logs / f"{workers}-{log}")
    finally:
        shutil.rmtree(server.data, ignore_errors=True)


# -- the report ----------------------------------------------------------------------------------------------


def _ratio(two: float, one: float) -> str:
    return f"{two / one:6.2f}x" if one else "     -"


def _cores(values: Iterable[float]) -> str:
    return " + ".join(f"{v * 100:.0f}%" for v in values)


def report(one: Phase, two: Phase, args: argparse.Namespace, city: dict[str, Any], seed_seconds: float) -> None:
    cpus = os.cpu_count()
    print(f"\ndemo city at scale {args.scale}: {city['clusters']} clusters, {city['stations']} stations,"
          f" {city['vehicles']} vehicles; plus {args.stations} bench stations of {args.spots} spots;"
          f" seeded once in {seed_seconds:.1f} s")
    print(f"{args.clients} closed-loop clients over loopback in {args.client_procs} load-generator process(es),"
          f" {args.duration:g} s per route after a warm-up; stations over a ramp of {args.ramp_rate:g}/s")
    print(f"{cpus} CPUs for everything: the server processes, PostgreSQL, the load generator and whatever else"
          f" runs on the machine (with 2 workers, every CPU the others take is taken from the workers:"
          f" the ratio is capped below 2x by it)\n")
    w = max(16, len(one.label), len(two.label))  # the width of a phase's column
    print(f"  {'figure':<46} {one.label:>{w}} {two.label:>{w}} {'2/1':>8}   goal")
    for a, b in zip(one.http, two.http, strict=True):
        print(f"  {a.name + '  req/s':<46} {a.rate:{w}.0f} {b.rate:{w}.0f} {_ratio(b.rate, a.rate)}"
              f"   >= {GOAL_HTTP_RATIO:g}x  {'(reached)' if b.rate >= GOAL_HTTP_RATIO * a.rate else '(not reached)'}")
        latency_a, latency_b = (f"{x.p50 * 1000:.2f} / {x.p99 * 1000:.2f}" for x in (a, b))
        print(f"  {'    p50 / p99 ms':<46} {latency_a:>{w}} {latency_b:>{w}}")
    s1, s2 = one.stations, two.stations
    print(f"  {f'stations online (of {args.stations})':<46} {s1.online:{w}d} {s2.online:{w}d}"
          f" {_ratio(s2.online, s1.online)}")
    def until(s: StationFigure) -> str:
        return f"{s.seconds:.1f}" if s.online >= s.stations else f"> {s.seconds:.1f}"  # the bound ran out

    print(f"  {'    seconds until all online (ramp included)':<46} {until(s1):>{w}} {until(s2):>{w}}"
          f" {_ratio(s2.seconds, s1.seconds)}   (ramp alone {args.stations / args.ramp_rate:.1f} s;"
          f" lower is better)")
    rss1, rss2 = sum(s1.rss_after.values()) / 1024, sum(s2.rss_after.values()) / 1024
    print(f"  {'    server RSS with the stations, MiB (all)':<46} {rss1:{w}.0f} {rss2:{w}.0f} {_ratio(rss2, rss1)}")

    for phase in (one, two):
        names = {pid: f"pid {pid}" for pid in phase.pids}
        print(f"\n{phase.label}" + (f" (parent pid {phase.parent}, serving nothing)" if phase.parent else "") + ":")
        for f in phase.http:
            split = ", ".join(f"{names[pid]} {n}" for pid, n in f.connections.items())
            print(f"  {f.name}: CPU (of {cpus * 100}%): server {_cores(f.server_cpu.values())},"
                  f" PostgreSQL {f.postgres_cpu * 100:.0f}%, load generator {f.client_cpu * 100:.0f}%,"
                  f" rest of the machine {f.other_cpu * 100:.0f}%; client connections: {split}"
                  + (f"; {f.errors} non-200 answers (not counted)" if f.errors else ""))
        s = phase.stations
        bound = "" if s.online >= s.stations else " (the bound ran out first)"
        print(f"  stations: {s.online} of {s.stations} online after {s.seconds:.1f} s{bound}; the simulator (this"
              f" process) used {s.simulator_cpu * 100:.0f}% of a core meanwhile")
        for pid in s.rss_before:
            role = "parent" if pid == phase.parent else names[pid]
            held = (f", holds {s.connected.get(pid, '?')} station sockets and runs {s.actors.get(pid, '?')}"
                    f" station actors; sees {s.online_seen.get(pid, '?')} stations online"
                    if pid in phase.pids else "")
            missing = " (its /metrics not reached)" if pid in phase.pids and pid not in s.connected else ""
            print(f"    {role:<10} RSS {s.rss_before[pid] / 1024:6.0f} -> {s.rss_after[pid] / 1024:6.0f} MiB"
                  f"{held}{missing}")
    others = max(f.other_cpu for f in [*one.http, *two.http])
    if others > BUSY_NEIGHBOURS:
        print(f"\nwarning: the rest of the machine (other processes) used up to {others * 100:.0f}% of the CPUs"
              f" during a measure: these figures and ratios are not the server's alone; run again on a quiet"
              f" machine")
    idle = [pid for f in two.http for pid, n in f.connections.items() if not n]
    if idle:
        print(f"\nwarning: with 2 processes, some held no client connection during a measure: {sorted(set(idle))}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=33, help="demo city scale (33: about 10,000 vehicles)")
    parser.add_argument("--stations", type=int, default=1000, help="simulated stations connected in each phase")
    parser.add_argument("--spots", type=int, default=4)
    parser.add_argument("--ramp-rate", type=float, default=200.0, help="station connections started a second")
    parser.add_argument("--clients", type=int, default=8, help="concurrent HTTP clients (closed loop)")
    parser.add_argument("--client-procs", type=int, default=2, help="processes the HTTP clients are spread over")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per route and phase")
    parser.add_argument("--plain-single", action="store_true",
                        help="phase 1 without the cluster mode (as one process is deployed alone)")
    parser.add_argument("--logs", type=Path, metavar="DIR", help="keep each phase's server logs in DIR")
    args = parser.parse_args()
    if not 1 <= args.client_procs <= args.clients:
        parser.error("--client-procs takes 1 to --clients")

    with multiprocessing.get_context("spawn").Pool(args.client_procs) as pool, database() as url:
        seeding = Server(url)
        try:
            seed_seconds, city = seed_city(seeding, args.scale)
        finally:
            shutil.rmtree(seeding.data, ignore_errors=True)
        started = time.monotonic()
        _, stations = asyncio.run(seed_stations(url, args.stations, args.spots))
        seed_seconds += time.monotonic() - started
        one = run_phase(url, 1, not args.plain_single, args, pool, stations)
        two = run_phase(url, 2, True, args, pool, stations)
    report(one, two, args, city, seed_seconds)


if __name__ == "__main__":
    main()
