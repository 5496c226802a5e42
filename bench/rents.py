"""Rent benchmark: riders renting and returning vehicles through simulated stations, then free-floating vehicles.

Run: ``make bench-rents`` (or ``.venv/bin/python -m bench.rents --stations 1000 --riders 50 --rents 500``);
about two minutes with the defaults (``--free-floating-only``: the free-floating part alone, half a minute;
``--vehicles 0``: the stations alone).

It starts a real ``knot-rt serve`` process (on ``DATABASE_URL``, or on a private
PostgreSQL cluster of its own), connects ``--stations`` simulated stations to it
from this process over loopback (``--ramp-rate`` a second, each reporting its
state every ``--heartbeat`` seconds), and lets riders rent, each on its own
stations: ``POST /vehicles/unlock``, the ``rent.started`` event on the rider's
``user`` feed, then the station docks the vehicle back (``locked``) and the
rider waits for ``rent.ended`` before the next rent (the network allows one
rent at a time). Two phases, with the same stations connected:

- one rider alone, ``--round-trips`` rents one after the other: ``POST
  /vehicles/unlock`` -> ``rent.started`` on the feed, p50 and p99 — the round
  trip without queueing;
- ``--riders`` riders at once until ``--rents`` rents started: whole rents
  (unlock, start, return, end and price) per second over the wall time, and
  the same round trip under that load.

Then, the stations gone, free-floating rents on another network (an area and
one virtual parking, made through the services): ``--vehicles`` vehicles with
their own module (``SimulatedVehicle`` in a ``VehicleFleet``, each reporting its
status every ``--vehicle-heartbeat`` seconds) stand still inside the parking,
and a rider rents one where it stands: ``POST /vehicles/unlock`` with its
position -> the vehicle's ``unlocked`` -> ``rent.started`` on the feed, then
``POST /vehicles/freefloat/lock`` -> the vehicle's ``locked`` -> ``rent.ended``
(it may end there: it stands in the parking). Three phases with the same
vehicles connected, each rider on its own vehicles: one rider alone
(``--ff-round-trips`` rents), ``--ff-riders`` at once until ``--ff-rents``
rents started, and one rider who pauses (``POST .../freefloat/lock/temporary``
-> ``rent.paused``) and resumes (``PUT /trips/{id}/resume`` -> ``rent.resumed``)
every rent once (``--ff-pauses`` rents). Each prints whole rents per second
and the latencies request -> feed event, p50 and p99; refusals are counted by
route, status, code and message, a feed event not there within EVENT_SECONDS
as lost (that rider stops, its rent left open); with either, the server's
and the simulator's count of connected vehicles is printed.

Beside them, the same three hops through a bare trio-websocket relay (request
socket -> station socket -> feed socket, ``bench.stations``) measured in the
same run, one round trip at a time: the floor of the transport alone. Last,
the server log's most frequent warnings and errors, if any.

Choices: vehicles are docked in the database where the stations report them
(as after a restart), so connecting is no first inventory. The heartbeat
defaults to 60 s (17 state events/s at 1,000 stations; the protocol's default is
1,800 s): with 5 s (200 state events/s, each recorded), 1,000 stations did not
all come online on the shared 2-core machine this was written on — the
database pool ran dry and stations reconnected in a storm. The same holds for
free-floating vehicles: 1,000 of them reporting every 2 s (500 status/s) ran,
every second (1,000 status/s) did not (the pool ran dry, the modules' events
timed out and they reconnected in a storm; rents were refused 409/30 and 503).
The free-floating phases run without the stations, so their figures are the
rent path's alone. Riders get their sessions from the accounts service directly
(the login route's limit of 10 a minute per address would make a bench of the
rate limiter). Only loopback addresses are used; each phase stops at its count
or after ``--seconds``, and each rider after ten times its phase's count of
tries.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg
import httpx
import trio
import trio_asyncio
from trio_websocket import WebSocketConnection, open_websocket_url

from bench.stations import Server, connect_all, database, metric, relay_round_trips, report_latency, seed
from knot_rt.accounts.service import LoginIntent
from knot_rt.accounts.store import Device, insert_user
from knot_rt.config import Settings
from knot_rt.context import Services
from knot_rt.db import Database
from knot_rt.services.passwords import Passwords
from knot_rt.simulator.station import Simulator
from knot_rt.simulator.vehicle import VehicleFleet, VehicleSpec

T = TypeVar("T")
UNLOCK_FEE, PER_MINUTE = 1.00, 0.25
API = "/api/application"
# The free-floating network: its area (a box around Strasbourg's centre) and its one virtual parking, shapes as
# [[lng, lat], ...]; its vehicles stand on a grid inside the parking, MARGIN degrees from its edges.
AREA = [[7.70, 48.56], [7.76, 48.56], [7.76, 48.60], [7.70, 48.60]]
PARKING = [[7.730, 48.580], [7.732, 48.580], [7.732, 48.582], [7.730, 48.582]]
MARGIN = 0.0002
EVENT_SECONDS = 20.0  # a feed event not there this long after its request is counted lost (the rider stops)
RETRIES = 10  # tries of a refused lock, pause or resume before the rider gives up (its rent stays open)


async def open_to_riders(url: str, network: int) -> None:
    """The bench network as a rider's app sees it: shown by the ``knot`` label, a tariff, one rent at a time."""
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """UPDATE networks SET is_public = true, max_simultaneous_rented_vehicle = 1, min_guarantee = 0,
                   unlock_fee = $2, price_per_minute = $3, currency = 'EUR' WHERE id = $1""",
            network, UNLOCK_FEE, PER_MINUTE,
        )
        await conn.execute(
            "INSERT INTO network_app_labels SELECT $1, id FROM app_labels WHERE name = 'knot' ON CONFLICT DO NOTHING",
            network,
        )
        # The vehicles already docked where the simulated stations report them (spots 1..spots/2), as after a
        # restart: connecting measures the stations coming back, not a first inventory of 2,000 vehicles.
        await conn.execute(
            """UPDATE spots SET vehicle_id = station_id * 100 + number, lock_status = 1
               WHERE number <= (SELECT spot_count FROM stations s WHERE s.id = station_id) / 2"""
        )
        await conn.execute(
            "UPDATE vehicles v SET spot_id = p.id FROM spots p WHERE p.vehicle_id = v.id AND v.network_id = $1",
            network,
        )
    finally:
        await conn.close()


def with_services(server: Server, url: str, job: Callable[[Services], Awaitable[T]]) -> T:
    """``job`` on the services of this process (two database connections), as the server's own code would."""

    async def run() -> T:
        settings = Settings(database_url=url, secret_key=server.env["KNOT_SECRET_KEY"], data_dir=server.data)
        db = await Database.connect(url, max_size=2)
        try:
            return await job(Services.build(settings, db))
        finally:
            await db.close()

    return trio_asyncio.run(run)


def rider_tokens(server: Server, url: str, count: int) -> list[str]:
    """``count`` riders of the ``knot`` app, and an access token for each (a session opened by the service)."""

    async def make(services: Services) -> list[str]:
        password_hash = await Passwords().hash("bench-rider-password")

        async def create(conn: asyncpg.Connection) -> list[int]:
            label = await conn.fetchval("SELECT id FROM app_labels WHERE name = 'knot'")
            return [await insert_user(conn, f"rider{n}@bench.example", password_hash, confirmed=True,
                                      app_label=label) for n in range(count)]

        users = await services.db.transaction(create)
        tokens = []
        for user in users:
            session = await services.accounts.open_session(user, LoginIntent("app", None, Device(id=f"bench-{user}")))
            tokens.append(str(session["token"]))
        return tokens

    return with_services(server, url, make)


@dataclass
class Run:
    riders: int
    wanted: int
    latencies: list[float] = field(default_factory=list)  # unlock -> rent.started
    ended: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # HTTP status -> count
    elapsed: float = 0.0

    @property
    def started(self) -> int:
        return len(self.latencies)


async def next_event(feed: WebSocketConnection, name: str, trip: int) -> dict[str, Any]:
    while True:
        frame: dict[str, Any] = json.loads(await feed.get_message())
        if frame.get("event") == name and frame["data"].get("trip_id") == trip:
            return frame


async def ride(client: httpx.AsyncClient, ws_url: str, token: str, simulator: Simulator, stations: list[int],
               run: Run) -> None:
    """One rider: rent at each of its stations in turn, returning the vehicle to the spot it left, until done."""
    auth = {"Authorization": f"Bearer {token}"}
    async with open_websocket_url(ws_url, extra_headers=[("Authorization", f"Bearer {token}")]) as feed:
        await feed.send_message(json.dumps({"type": "subscribe", "topic": "user", "ref": 1}))
        while json.loads(await feed.get_message()).get("type") != "reply":
            pass
        turn = 0
        while run.started < run.wanted:
            station = simulator.station(stations[turn % len(stations)])
            turn += 1
            spot = next((s for s in station.spots if s.vehicle is not None), None)
            if spot is None or spot.vehicle is None:
                continue
            vehicle = spot.vehicle
            started = time.perf_counter()
            response = await client.post("/api/application/vehicles/unlock", headers=auth, json={
                "serial_number": f"B{vehicle}", "lat": 48.5, "lng": 7.7})
            if response.status_code != 200:
                run.refused[response.status_code] = run.refused.get(response.status_code, 0) + 1
                await trio.sleep(0.05)
                continue
            trip = response.json()["data"]["trip_id"]
            await next_event(feed, "rent.started", trip)
            run.latencies.append(time.perf_counter() - started)
            await station.return_vehicle(spot.spot, vehicle)
            await next_event(feed, "rent.ended", trip)
            run.ended += 1


async def phase(client: httpx.AsyncClient, ws_url: str, tokens: list[str], simulator: Simulator, ids: list[int],
                wanted: int, seconds: float) -> Run:
    """``len(tokens)`` riders at once, each on its own share of the stations, until ``wanted`` rents started."""
    run = Run(len(tokens), wanted)
    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as riders:
            for n, token in enumerate(tokens):
                riders.start_soon(ride, client, ws_url, token, simulator, ids[n::len(tokens)], run)
    run.elapsed = time.perf_counter() - started
    return run


async def rents(server: Server, stations: list[tuple[int, str]], tokens: list[str], args: argparse.Namespace
                ) -> tuple[Run, Run]:
    """With every station connected: one rider alone (the round trip), then all riders at once (the rate)."""
    async with trio.open_nursery() as nursery:
        simulator = await nursery.start(connect_all, server, stations, args.spots, args.heartbeat, args.ramp_rate)
        ids = [station_id for station_id, _ in stations]
        ws_url = server.base_url.replace("http", "ws") + "/api/application/ws"
        limits = httpx.Limits(max_connections=len(tokens) + 4)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
            alone = await phase(client, ws_url, tokens[:1], simulator, ids, args.round_trips, args.seconds)
            crowd = await phase(client, ws_url, tokens, simulator, ids, args.rents, args.seconds)
        simulator.stop()
    return alone, crowd


def report_run(run: Run) -> list[str]:
    lines = [f"{run.riders} rider(s) at once: {run.started} rents started, {run.ended} ended in {run.elapsed:.1f} s,"
             f" {run.ended / run.elapsed:.1f} whole rents/s (unlock, start, return, end, price)"
             + (f"; refused {run.refused}" if run.refused else "")]
    if run.latencies:
        lines.append(report_latency(f"knot_rt: POST unlock -> rent.started, {run.riders} rider(s)", run.latencies))
    return lines


# --------------------------------------------------------------------------
# Free-floating rents: vehicles with their own IoT module, rented where they stand and returned in a parking


@dataclass(frozen=True, slots=True)
class Scooter:
    """A free-floating vehicle of the bench: its id (the lock routes') and how its module connects and stands."""

    vehicle_id: int
    spec: VehicleSpec


def parking_grid(count: int) -> list[tuple[float, float]]:
    """``count`` points (lat, lng) on a grid inside PARKING, MARGIN from its edges (several per cell past a
    grid of 1,000: vehicles may stand on one another)."""
    south, north = PARKING[0][1] + MARGIN, PARKING[2][1] - MARGIN
    west, east = PARKING[0][0] + MARGIN, PARKING[1][0] - MARGIN
    side = max(1, min(32, math.ceil(math.sqrt(count))))
    step_lat, step_lng = (north - south) / max(1, side - 1), (east - west) / max(1, side - 1)
    return [(round(south + (n // side % side) * step_lat, 7), round(west + (n % side) * step_lng, 7))
            for n in range(count)]


def free_floating_town(server: Server, url: str, count: int) -> list[Scooter]:
    """Through the services: a network shown by the ``knot`` app with an area, one parking and the bench's tariff
    (one rent at a time), and ``count`` free-floating vehicles (serials ``FF0``..) standing inside the parking."""

    async def make(services: Services) -> list[Scooter]:
        label = await services.content.app_label_id("knot")
        network = await services.catalog_service.create_network(
            "Bench free-floating", shape=AREA, center=(48.58, 7.73), app_labels=[label], rules={
                "unlock_fee": Decimal(str(UNLOCK_FEE)), "price_per_minute": Decimal(str(PER_MINUTE)),
                "max_simultaneous_rented_vehicle": 1})
        await services.catalog_service.create_parking(network, None, PARKING)
        scooters = []
        for n, (lat, lng) in enumerate(parking_grid(count)):
            row = await services.vehicles.create(network, f"FF{n}", free_floating=True)
            scooters.append(Scooter(int(row["vehicle_id"]), VehicleSpec(f"FF{n}", str(row["secret"]), lat, lng)))
        return scooters

    return with_services(server, url, make)


@dataclass
class FreeRun:
    riders: int
    wanted: int
    pauses: bool  # each rent paused and resumed once before its end
    started: list[float] = field(default_factory=list)  # POST unlock -> rent.started
    ended: list[float] = field(default_factory=list)  # POST freefloat/lock -> rent.ended
    paused: list[float] = field(default_factory=list)  # POST freefloat/lock/temporary -> rent.paused
    resumed: list[float] = field(default_factory=list)  # PUT trips/{id}/resume -> rent.resumed
    refused: dict[str, int] = field(default_factory=dict)  # "<route> <status>/<code>" -> count
    lost: dict[str, int] = field(default_factory=dict)  # feed event -> times it did not come
    stuck: int = 0  # riders that gave up with a rent open
    elapsed: float = 0.0
    fleet: str = ""  # the simulated fleet's summary line at the phase's end
    connected: float = 0.0  # the server's knot_vehicles_connected at the phase's end

    def count(self, table: dict[str, int], key: str) -> None:
        table[key] = table.get(key, 0) + 1


async def request_ok(client: httpx.AsyncClient, run: FreeRun, name: str, method: str, path: str,
                     auth: dict[str, str], body: dict[str, Any] | None, tries: int) -> httpx.Response | None:
    """``method path`` until it answers 200, ``tries`` times at most 0.05 s apart; each refusal counted as
    ``name`` with its status and code. None if it never did."""
    for _ in range(tries):
        response = await client.request(method, path, headers=auth, json=body)
        if response.status_code == 200:
            return response
        try:
            body_back = response.json()
        except ValueError:
            body_back = {}
        message = re.sub(r"\d+", "N", str(body_back.get("message", "")))  # one key for every vehicle and trip
        run.count(run.refused, f"{name} {response.status_code}/{body_back.get('code')} {message}".rstrip())
        await trio.sleep(0.05)
    return None


async def feed_event(feed: WebSocketConnection, run: FreeRun, name: str, trip: int, since: float,
                     latencies: list[float]) -> bool:
    """Wait for ``name`` of ``trip`` on the feed (EVENT_SECONDS at most) and record the time since ``since``;
    False (counted lost) if it did not come."""
    with trio.move_on_after(EVENT_SECONDS):
        await next_event(feed, name, trip)
        latencies.append(time.perf_counter() - since)
        return True
    run.count(run.lost, name)
    return False


async def ride_free(client: httpx.AsyncClient, ws_url: str, token: str, scooters: list[Scooter], run: FreeRun
                    ) -> None:
    """One rider: a whole free-floating rent of each of its vehicles in turn (unlock where it stands, optionally
    a pause and a resume, lock it where it stands: in the parking), until the run has its count."""
    auth = {"Authorization": f"Bearer {token}"}
    async with open_websocket_url(ws_url, extra_headers=[("Authorization", f"Bearer {token}")]) as feed:
        await feed.send_message(json.dumps({"type": "subscribe", "topic": "user", "ref": 1}))
        while json.loads(await feed.get_message()).get("type") != "reply":
            pass
        for turn in range(run.wanted * 10):  # refusals included; the phase's time bounds it too
            if len(run.started) >= run.wanted:
                return
            scooter = scooters[turn % len(scooters)]
            body = {"serial_number": scooter.spec.serial, "lat": scooter.spec.lat, "lng": scooter.spec.lng}
            since = time.perf_counter()
            response = await request_ok(client, run, "unlock", "POST", f"{API}/vehicles/unlock", auth, body, 1)
            if response is None:
                continue
            trip = int(response.json()["data"]["trip_id"])
            if not await feed_event(feed, run, "rent.started", trip, since, run.started):
                run.stuck += 1
                return
            lock = {"vehicle_id": scooter.vehicle_id}
            steps = [
                ("pause", "POST", f"{API}/vehicles/freefloat/lock/temporary", lock, "rent.paused", run.paused),
                ("resume", "PUT", f"{API}/trips/{trip}/resume", None, "rent.resumed", run.resumed),
            ] if run.pauses else []
            steps.append(("lock", "POST", f"{API}/vehicles/freefloat/lock", lock, "rent.ended", run.ended))
            for name, method, path, payload, event, latencies in steps:
                since = time.perf_counter()
                if await request_ok(client, run, name, method, path, auth, payload, RETRIES) is None \
                        or not await feed_event(feed, run, event, trip, since, latencies):
                    run.stuck += 1
                    return


async def free_phase(client: httpx.AsyncClient, ws_url: str, tokens: list[str], fleet: VehicleFleet,
                     scooters: list[Scooter], wanted: int, seconds: float, *, pauses: bool = False) -> FreeRun:
    """``len(tokens)`` riders at once, each on its own share of the vehicles, until ``wanted`` rents started;
    the fleet's summary and the server's count of connected vehicles taken at the end."""
    run = FreeRun(len(tokens), wanted, pauses)
    started = time.perf_counter()
    with trio.move_on_after(seconds):
        async with trio.open_nursery() as riders:
            for n, token in enumerate(tokens):
                riders.start_soon(ride_free, client, ws_url, token, scooters[n::len(tokens)], run)
    run.elapsed = time.perf_counter() - started
    run.fleet = fleet.summary().line()
    run.connected = await metric(client, "knot_vehicles_connected")
    return run


async def connect_vehicles(server: Server, scooters: list[Scooter], heartbeat: float, ramp_rate: float, *,
                           task_status: trio.TaskStatus[VehicleFleet]) -> None:
    """The vehicles' modules connected over a ramp, each reporting its status every ``heartbeat`` seconds;
    started once the server counts them all connected."""
    fleet = VehicleFleet(server.vehicle_url, [s.spec for s in scooters], ramp=len(scooters) / ramp_rate,
                         heartbeat=heartbeat, backoff_min=0.5, backoff_max=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(fleet.run)
        connected = 0.0
        async with httpx.AsyncClient(base_url=server.base_url) as client:
            with trio.move_on_after(120):
                while (connected := await metric(client, "knot_vehicles_connected")) < len(scooters):  # noqa: ASYNC110
                    await trio.sleep(0.2)
                task_status.started(fleet)
                return
        raise RuntimeError(f"the vehicles did not all connect within 120 s: the server counts {connected:.0f};"
                           f" simulator: {fleet.summary().line()}")


async def free_floating_rents(server: Server, scooters: list[Scooter], tokens: list[str], args: argparse.Namespace
                              ) -> list[FreeRun]:
    """With every vehicle connected: one rider alone, all riders at once, then one rider pausing and resuming."""
    async with trio.open_nursery() as nursery:
        fleet = await nursery.start(connect_vehicles, server, scooters, args.vehicle_heartbeat, args.ramp_rate)
        await trio.sleep(1)  # the first status reports: where each vehicle stands
        ws_url = server.base_url.replace("http", "ws") + f"{API}/ws"
        limits = httpx.Limits(max_connections=len(tokens) + 4)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
            runs = [await free_phase(client, ws_url, tokens[:1], fleet, scooters, args.ff_round_trips, args.seconds),
                    await free_phase(client, ws_url, tokens, fleet, scooters, args.ff_rents, args.seconds)]
            if args.ff_pauses:
                runs.append(await free_phase(client, ws_url, tokens[:1], fleet, scooters, args.ff_pauses,
                                             args.seconds, pauses=True))
        fleet.stop()
    return runs


def report_free_run(run: FreeRun) -> list[str]:
    what = "unlock, start, pause, resume, lock, end, price" if run.pauses else "unlock, start, lock, end, price"
    lines = [f"{run.riders} rider(s) at once{' (a pause and a resume in each rent)' if run.pauses else ''}:"
             f" {len(run.started)} rents started, {len(run.ended)} ended in {run.elapsed:.1f} s,"
             f" {len(run.ended) / run.elapsed:.1f} whole rents/s ({what})"]
    for name, table in (("refused", run.refused), ("lost", run.lost)):
        if table:
            lines.append(f"  {name}: {table}")
    if run.stuck:
        lines.append(f"  {run.stuck} rider(s) gave up with a rent open")
    if run.refused or run.lost or run.stuck:  # what the vehicles' sockets were doing
        lines.append(f"  server: {run.connected:.0f} vehicles connected; simulator: {run.fleet}")
    for name, values in (("POST unlock -> rent.started", run.started), ("POST lock -> rent.ended", run.ended),
                         ("POST lock/temporary -> rent.paused", run.paused),
                         ("PUT resume -> rent.resumed", run.resumed)):
        if values:
            lines.append(report_latency(f"knot_rt: {name}, {run.riders} rider(s)", values))
    return lines


def server_warnings(server: Server, most: int = 5) -> list[str]:
    """The server log's WARNING and ERROR lines (but the expected one of no SMTP), counted alike once their
    numbers are blanked out: the ``most`` frequent, most first."""
    path = server.data / "server.log"
    counts: dict[str, int] = {}
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if (" WARNING " in line or " ERROR " in line) and "SMTP_URL not set" not in line:
            key = re.sub(r"\d+", "N", line.split(" ", 2)[-1])[:200]
            counts[key] = counts.get(key, 0) + 1
    return [f"{n:>6} x {key}" for key, n in sorted(counts.items(), key=lambda kv: -kv[1])[:most]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--spots", type=int, default=4)
    parser.add_argument("--riders", type=int, default=50, help="riders renting at once, each on its own stations")
    parser.add_argument("--rents", type=int, default=500, help="rents to start by all riders together")
    parser.add_argument("--round-trips", type=int, default=100, help="rents of one rider alone, one at a time")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="state interval of every station (s)")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop renting after this long at most")
    parser.add_argument("--ramp-rate", type=float, default=20.0, help="devices connecting per second at start")
    parser.add_argument("--free-floating-only", action="store_true", help="no stations: free-floating rents only")
    parser.add_argument("--vehicles", type=int, default=40, help="free-floating vehicles (0: no free-floating rents)")
    parser.add_argument("--ff-riders", type=int, default=20, help="riders renting free-floating vehicles at once")
    parser.add_argument("--ff-rents", type=int, default=400, help="free-floating rents to start by all riders")
    parser.add_argument("--ff-round-trips", type=int, default=100, help="free-floating rents of one rider alone")
    parser.add_argument("--ff-pauses", type=int, default=50,
                        help="free-floating rents of one rider, each paused and resumed once (0: none)")
    parser.add_argument("--vehicle-heartbeat", type=float, default=5.0, help="status interval of every vehicle (s)")
    args = parser.parse_args()
    stations_too = not args.free_floating_only
    if stations_too and not 1 <= args.riders <= args.stations:
        parser.error("--riders takes 1 to --stations")
    if not stations_too and args.vehicles < 1:
        parser.error("--free-floating-only needs --vehicles")
    if args.vehicles and not 1 <= args.ff_riders <= args.vehicles:
        parser.error("--ff-riders takes 1 to --vehicles")
    station_runs: list[Run] = []
    free_runs: list[FreeRun] = []
    with database() as url:
        server = Server(url)
        network, stations = asyncio.run(seed(url, args.stations if stations_too else 0, args.spots))
        asyncio.run(open_to_riders(url, network))
        scooters = free_floating_town(server, url, args.vehicles) if args.vehicles else []
        tokens = rider_tokens(server, url, max(args.riders if stations_too else 0,
                                               args.ff_riders if scooters else 0))
        server.start()
        try:
            if stations_too:
                station_runs = list(trio.run(rents, server, stations, tokens[:args.riders], args))
            if scooters:
                free_runs = trio.run(free_floating_rents, server, scooters, tokens[:args.ff_riders], args)
        finally:
            server.stop()
            warnings = server_warnings(server)
            shutil.rmtree(server.data, ignore_errors=True)
    relay_started = time.perf_counter()
    relay = trio.run(relay_round_trips, max([100, *(r.started for r in station_runs[:1]),
                                             *(len(r.started) for r in free_runs[:1])]))
    relay_rate = len(relay) / (time.perf_counter() - relay_started)
    if station_runs:
        print(f"\nrents with {args.stations} stations connected, each reporting state every {args.heartbeat:g} s"
              f" ({args.stations / args.heartbeat:.0f} state events/s)")
        for line in [line for run in station_runs for line in report_run(run)]:
            print("  " + line)
    if free_runs:
        print(f"\nfree-floating rents with {args.vehicles} vehicles connected (no station), each reporting its"
              f" status every {args.vehicle_heartbeat:g} s ({args.vehicles / args.vehicle_heartbeat:.0f}"
              " status reports/s)")
        for line in [line for run in free_runs for line in report_free_run(run)]:
            print("  " + line)
    print("\n  " + report_latency("baseline: bare trio-websocket relay, 3 hops", relay)
          + f"   ({relay_rate:.0f} round trips/s, one at a time)")
    if warnings:
        print("\nthe server's most frequent warnings and errors:", *warnings, sep="\n  ")

if __name__ == "__main__":
    main()
