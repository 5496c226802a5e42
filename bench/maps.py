"""Map benchmark: the map routes of a city of about 10,000 vehicles, beside the ceiling of the server.

Run: ``.venv/bin/python -m bench.maps`` (``--duration 2`` for a quick check).

It loads the demo city at ``--scale`` (33: about 1,150 clusters, 2,000 stations
and 10,000 vehicles) into ``DATABASE_URL`` or a private PostgreSQL cluster of
its own, starts a real ``knot-rt serve`` process, and measures with a bounded
closed loop from this process over loopback (``--clients`` concurrent clients,
each with its own keep-alive connection, sending its next request when the
previous one answered, for ``--duration`` seconds per route). The clients are
a minimal HTTP/1.1 client (``RawClient``) by default, or httpx with ``--client
httpx``: on a small machine httpx alone takes most of a core, and the load
generator shares the CPUs with the server. Routes:

- ``GET /map/public`` (anonymous, app label ``knot``) on a street-level view
  (about 1.1 x 1.1 km around Place Kléber) and on the whole city;
- ``GET /map`` as the demo rider (logged in once), on the same street view;
- ``GET /clusters/areas`` as the demo rider on the same view, when the
  server has that route (skipped with a note otherwise);
- the baseline: a bare ASGI app (``bare_app`` below: a small JSON, nothing
  else) served by hypercorn's trio worker in its own process, measured the
  same way in the same run: the ceiling of this server;
- a second baseline: a Quart-trio route answering the public street view's
  body (recorded from the server) with no work (``quart_floor_app``): the
  framework's own ceiling, so that what our routes cost shows apart from it.

It prints requests/s, p50 and p99 latency, the response size, the CPU the
load generator itself used (near 100 % means the client, not the server, is
the limit), and each route's rate against the bare ASGI app's beside its goal
(issue 14: the public street view >= 0.8x, the logged-in one >= 0.6x). Only
loopback addresses are used; every loop is bounded in time.

``--profile FILE`` runs the server with cProfile switched on for the measure only
(``bench/profiled_serve.py``) and measures one street view only (the logged-in
one, or the public one with ``--profile-route public``): it
prints the profile's top lines and the database calls the server made per
request (asyncpg's ``fetch``/``fetchrow``/``fetchval``/``execute`` calls over the
requests answered).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import trio

from bench.stations import (
    VENV_BIN,
    Server,
    database,
    free_port,
    percentile,
    print_profile,
    stop_process,
    wait_until_up,
)

CENTRE = (48.5734, 7.7521)
KLEBER = (48.5834, 7.7458)
STREET = (0.01, 0.015)  # degrees: about 1.1 x 1.1 km, a phone's street-level view
CITY = (0.12, 0.16)  # the whole network
RIDER = ("rider@knot.demo", "knot-demo-rider")

#: Issue 14's goals: a route's rate over the bare ASGI app's, served the same way in the same run.
GOALS = {
    "GET /map/public  street view": 0.8,
    "GET /map  street view (demo rider)": 0.6,
}

BARE_BODY = b'{"code":0}'


async def bare_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The baseline: a bare ASGI function answering a small JSON to every request."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BARE_BODY)).encode())]})
    await send({"type": "http.response.body", "body": BARE_BODY})


def quart_floor_app() -> Any:
    """A second baseline, to tell the framework's cost from ours: a Quart-trio app (the framework the API runs
    on) with one route answering the public street view's body, recorded once from the real server
    (``QUART_FLOOR_BODY``), with no work per request."""
    from quart import Response
    from quart_trio import QuartTrio

    app = QuartTrio("quart_floor")
    body = Path(os.environ["QUART_FLOOR_BODY"]).read_bytes()

    @app.get("/")
    async def floor() -> Response:
        return Response(body, content_type="application/json")

    return app


class BareServer:
    """``hypercorn --worker-class trio bench.maps:bare_app`` in its own process (or ``app``: another factory,
    e.g. ``bench.maps:quart_floor_app()``)."""

    def __init__(self, app: str = "bench.maps:bare_app", env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.app = app
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, **self.env,
               "PYTHONPATH": str(root) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.process = subprocess.Popen(
            [str(VENV_BIN / "hypercorn"), "--worker-class", "trio", "--bind", f"127.0.0.1:{self.port}", self.app],
            env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        if not wait_until_up(self.base_url + "/", 30):
            raise RuntimeError("the bare ASGI server did not start")

    def stop(self) -> None:
        stop_process(self.process, 10)


@dataclass
class Result:
    name: str
    latencies: list[float]
    seconds: float
    size: int
    errors: int
    client_cpu: float
    note: str = ""

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds

    def row(self, bare: Result | None = None) -> str:
        if not self.latencies:
            return f"  {self.name:<44} {'-':>8} {'-':>9} {'-':>9} {'-':>9} {'-':>7}  {self.note}"
        versus = ""
        if bare is not None and bare is not self and bare.latencies:
            versus = f"{self.rate / bare.rate:5.2f}x bare"
            if self.name in GOALS:
                versus += f" (goal >= {GOALS[self.name]:g}x)"
        return (f"  {self.name:<44} {self.rate:8.0f} {statistics.median(self.latencies) * 1000:9.2f}"
                f" {percentile(self.latencies, 0.99) * 1000:9.2f} {self.size / 1024:9.1f}"
                f" {self.client_cpu * 100:6.0f}%  {versus}{self.note}")


class RawClient:
    """A minimal HTTP/1.1 keep-alive client over one trio socket: GET, a Content-Length body.

    Far cheaper per request than httpx, so that the load generator, which shares
    the machine with the server, takes as little CPU from it as possible. When
    the server ends the connection (hypercorn does after 1,000 requests on one),
    it opens a new one, as a browser or httpx would.
    """

    def __init__(self, host: str, port: int) -> None:
        self._address = (host, port)
        self._stream: trio.SocketStream | None = None
        self._buffer = bytearray()

    @classmethod
    def for_url(cls, base_url: str) -> RawClient:
        url = httpx.URL(base_url)
        assert url.host == "127.0.0.1" and url.port is not None  # loopback only
        return cls(url.host, url.port)

    async def _fill(self) -> bool:
        assert self._stream is not None
        chunk = await self._stream.receive_some(65536)
        self._buffer += chunk
        return bool(chunk)

    async def _reopen(self) -> None:
        await self.aclose()
        self._stream = await trio.open_tcp_stream(*self._address)

    async def get(self, request: bytes) -> tuple[int, bytes]:
        if self._stream is None:
            await self._reopen()
        assert self._stream is not None
        await self._stream.send_all(request)
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if not await self._fill():
                if self._buffer:
                    raise ConnectionError("the server closed the connection in a response")
                await self._reopen()  # closed between two requests: once more on a new connection
                return await self.get(request)
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        fields = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in head[1:])}
        if "content-length" not in fields:
            raise RuntimeError(f"no Content-Length in {head}")
        length = int(fields["content-length"])
        while len(self._buffer) < length:
            if not await self._fill():
                raise ConnectionError("the server closed the connection in a body")
        body = bytes(self._buffer[:length])
        del self._buffer[:length]
        if fields.get("connection", "").lower() == "close":
            await self.aclose()
        return int(head[0].split(" ", 2)[1]), body

    @property
    def local_port(self) -> int | None:
        """This end's port of the open connection (None when closed): which server process holds the other
        end is told by the kernel (``bench/scale.py``)."""
        return None if self._stream is None else int(self._stream.socket.getsockname()[1])

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None
        self._buffer.clear()


def raw_request(base_url: str, path: str, params: dict[str, Any], headers: dict[str, str]) -> bytes:
    url = httpx.URL(base_url).join(path).copy_merge_params(params)
    lines = [f"GET {url.raw_path.decode()} HTTP/1.1", f"Host: {url.netloc.decode()}", "Accept: */*",
             *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def closed_loop(name: str, base_url: str, path: str, params: dict[str, Any], headers: dict[str, str],
                      clients: int, duration: float, kind: str = "raw") -> Result:
    """``clients`` clients, each with its own keep-alive connection, one request at a time, for ``duration`` s."""
    latencies: list[float] = []
    errors = 0
    size = 0
    request = raw_request(base_url, path, params, headers)
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)

    async def send(client: RawClient | httpx.AsyncClient) -> tuple[int, bytes]:
        if isinstance(client, RawClient):
            return await client.get(request)
        response = await client.get(path, params=params, headers=headers)
        return response.status_code, response.content

    async def one_client(client: RawClient | httpx.AsyncClient, until: float) -> None:
        nonlocal errors, size
        while time.perf_counter() < until:
            started = time.perf_counter()
            status, body = await send(client)
            if status != 200:
                errors += 1
                if errors > 100:
                    raise RuntimeError(f"{name}: {status} {body[:300]!r}")
                continue
            latencies.append(time.perf_counter() - started)
            size = len(body)

    opened: list[RawClient | httpx.AsyncClient] = []
    try:
        for _ in range(clients):
            opened.append(RawClient.for_url(base_url) if kind == "raw"
                          else httpx.AsyncClient(base_url=base_url, timeout=30, limits=limits))
        for client in opened:  # connect and warm up outside the measure
            status, body = await send(client)
            if status != 200:
                raise RuntimeError(f"{name}: {status} {body[:300]!r}")
        cpu_before, started = time.process_time(), time.perf_counter()
        until = started + duration
        with trio.fail_after(duration + 60):
            async with trio.open_nursery() as nursery:
                for client in opened:
                    nursery.start_soon(one_client, client, until)
        seconds = time.perf_counter() - started
        cpu = (time.process_time() - cpu_before) / seconds
    finally:
        for client in opened:
            await client.aclose()
    return Result(name, latencies, seconds, size, errors, cpu)


def area(lowercase: bool, centre: tuple[float, float], size: tuple[float, float]) -> dict[str, Any]:
    lat_key, lng_key = ("latdeg", "lngdeg") if lowercase else ("latDeg", "lngDeg")
    return {"lat": centre[0], "lng": centre[1], lat_key: size[0], lng_key: size[1]}


async def measure_knot(base_url: str, clients: int, duration: float, kind: str,
                       profiled: subprocess.Popen[bytes] | None = None, profiled_route: str = "user") -> list[Result]:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        login = await client.post("/api/application/login", json={
            "email": RIDER[0], "password": RIDER[1], "scope": "app", "app_label": "knot"})
        login.raise_for_status()
        rider = {"Authorization": f"Bearer {login.json()['token']}"}
        paths = (await client.get("/openapi.json")).json()["paths"]
    has_areas = "/api/application/clusters/areas" in paths
    public = {"app_label": "knot", "lang": "fr"}
    if profiled is not None:
        user_map = (("GET /map  street view (demo rider)", base_url, "/api/application/map",
                     {**area(True, KLEBER, STREET), "lang": "fr"}, rider, clients) if profiled_route == "user" else
                    ("GET /map/public  street view", base_url, "/api/application/map/public",
                     {**area(False, KLEBER, STREET), **public}, {}, clients))
        await closed_loop(*user_map, min(duration, 2.0), kind)  # warm-up, not profiled
        profiled.send_signal(signal.SIGUSR1)
        try:
            return [await closed_loop(*user_map, duration, kind)]
        finally:
            profiled.send_signal(signal.SIGUSR2)
            await trio.sleep(2)  # the profile is written
    results = [
        await closed_loop("GET /map/public  street view", base_url, "/api/application/map/public",
                          {**area(False, KLEBER, STREET), **public}, {}, clients, duration, kind),
        await closed_loop("GET /map/public  whole city", base_url, "/api/application/map/public",
                          {**area(False, CENTRE, CITY), **public}, {}, clients, duration, kind),
        await closed_loop("GET /map  street view (demo rider)", base_url, "/api/application/map",
                          {**area(True, KLEBER, STREET), "lang": "fr"}, rider, clients, duration, kind),
    ]
    if has_areas:
        results.append(await closed_loop("GET /clusters/areas  street view (rider)", base_url,
                                         "/api/application/clusters/areas",
                                         {**area(False, KLEBER, STREET), "lang": "fr"}, rider, clients,
                                         duration, kind))
    else:
        results.append(Result("GET /clusters/areas", [], 1, 0, 0, 0, "skipped: the server has no such route yet"))
    return results


def seed(server: Server, scale: int) -> tuple[float, dict[str, Any]]:
    import json

    started = time.monotonic()
    done = subprocess.run([str(VENV_BIN / "knot-rt"), "demo", "--scale", str(scale)], env=server.env,
                          capture_output=True, text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise RuntimeError("knot-rt demo failed: " + done.stderr[-2000:])
    return time.monotonic() - started, json.loads(done.stdout)["city"]


def measure_baseline(server: BareServer, name: str, args: argparse.Namespace) -> Result:
    """A baseline server started, measured at its ``/`` like the routes, and stopped."""
    server.start()
    try:
        return trio.run(closed_loop, name, server.base_url, "/", {}, {}, args.clients, args.duration, args.client)
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=33, help="demo city scale (33: about 10,000 vehicles)")
    parser.add_argument("--clients", type=int, default=8, help="concurrent clients (closed loop)")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per route")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="load generator: a minimal keep-alive HTTP/1.1 client (default) or httpx")
    parser.add_argument("--profile", type=Path, metavar="FILE",
                        help="run the server under cProfile into FILE; measure one street view only")
    parser.add_argument("--profile-route", choices=("user", "public"), default="user",
                        help="the street view profiled: logged-in (default) or public")
    args = parser.parse_args()

    with database() as url:
        server = Server(url)
        try:
            seconds, city = seed(server, args.scale)
            if args.profile is not None:
                server.start_profiled(args.profile)
            else:
                server.start()
            try:
                knot = trio.run(measure_knot, server.base_url, args.clients, args.duration, args.client,
                                server.process if args.profile is not None else None, args.profile_route)
                street_body = httpx.get(f"{server.base_url}/api/application/map/public", timeout=30, params={
                    **area(False, KLEBER, STREET), "app_label": "knot", "lang": "fr"}).content
            finally:
                server.stop()
        finally:
            shutil.rmtree(server.data, ignore_errors=True)
    if args.profile is not None:
        for result in knot:
            print(result.row())
        print_profile(args.profile, sum(len(r.latencies) + r.errors for r in knot) + args.clients)
        return
    bare = measure_baseline(BareServer(), "bare ASGI app, hypercorn trio worker", args)
    body_file = Path(tempfile.mkstemp(prefix="knot-floor-", suffix=".json")[1])
    body_file.write_bytes(street_body)
    try:
        floor = measure_baseline(BareServer("bench.maps:quart_floor_app()", {"QUART_FLOOR_BODY": str(body_file)}),
                                 "Quart-trio route, same body, no work", args)
    finally:
        body_file.unlink(missing_ok=True)

    print(f"\ndemo city at scale {args.scale}: {city['clusters']} clusters, {city['stations']} stations,"
          f" {city['spots']} spots, {city['vehicles']} vehicles ({city['free_floating_vehicles']} free-floating),"
          f" {city['parkings']} parkings; seeded in {seconds:.1f} s (`knot-rt demo`, process start included)")
    print(f"{args.clients} closed-loop {args.client} clients over loopback, {args.duration:g} s per route; "
          f"{os.cpu_count()} CPUs shared by server, client and PostgreSQL\n")
    print(f"  {'route':<44} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'KiB':>9} {'client':>7}")
    for result in [*knot, floor, bare]:
        print(result.row(bare))
    print("  (the Quart-trio route answers the public street view's body with no work: the framework's ceiling"
          " on this machine, beside which our routes' own cost shows)")
    errors = sum(r.errors for r in [*knot, floor, bare])
    if errors:
        print(f"\n  {errors} non-200 answers (not counted)")


if __name__ == "__main__":
    main()
