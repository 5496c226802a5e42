"""Rent benchmark: riders renting and returning vehicles through simulated stations.

Run: ``make bench-rents`` (or ``.venv/bin/python -m bench.rents --stations 1000 --riders 50 --rents 500``);
about a minute and a half with the defaults.

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

Beside them, the same three hops through a bare trio-websocket relay (request
socket -> station socket -> feed socket, ``bench.stations``) measured in the
same run, one round trip at a time: the floor of the transport alone.

Choices: vehicles are docked in the database where the stations report them
(as after a restart), so connecting is no first inventory. The heartbeat
defaults to 60 s (17 state events/s at 1,000 stations; the protocol's default is
1,800 s): with 5 s (200 state events/s, each recorded), 1,000 stations did not
all come online on the shared 2-core machine this was written on — the
database pool ran dry and stations reconnected in a storm. Riders get their
sessions from the accounts service directly (the login route's limit of 10 a
minute per address would make a bench of the rate limiter). Only loopback
addresses are used; each phase stops at its count or after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import trio
import trio_asyncio
from trio_websocket import WebSocketConnection, open_websocket_url

from bench.stations import Server, connect_all, database, relay_round_trips, report_latency, seed
from knot_rt.accounts.service import LoginIntent
from knot_rt.accounts.store import Device, insert_user
from knot_rt.config import Settings
from knot_rt.context import Services
from knot_rt.db import Database
from knot_rt.services.passwords import Passwords
from knot_rt.simulator.station import Simulator

UNLOCK_FEE, PER_MINUTE = 1.00, 0.25


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


def rider_tokens(server: Server, url: str, count: int) -> list[str]:
    """``count`` riders of the ``knot`` app, and an access token for each (a session opened by the service)."""

    async def run() -> list[str]:
        settings = Settings(database_url=url, secret_key=server.env["KNOT_SECRET_KEY"], data_dir=server.data)
        db = await Database.connect(url, max_size=2)
        try:
            accounts = Services.build(settings, db).accounts
            password_hash = await Passwords().hash("bench-rider-password")

            async def create(conn: asyncpg.Connection) -> list[int]:
                label = await conn.fetchval("SELECT id FROM app_labels WHERE name = 'knot'")
                return [await insert_user(conn, f"rider{n}@bench.example", password_hash, confirmed=True,
                                          app_label=label) for n in range(count)]

            users = await db.transaction(create)
            tokens = []
            for user in users:
                session = await accounts.open_session(user, LoginIntent("app", None, Device(id=f"bench-{user}")))
                tokens.append(str(session["token"]))
            return tokens
        finally:
            await db.close()

    return trio_asyncio.run(run)


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stations", type=int, default=1000)
    parser.add_argument("--spots", type=int, default=4)
    parser.add_argument("--riders", type=int, default=50, help="riders renting at once, each on its own stations")
    parser.add_argument("--rents", type=int, default=500, help="rents to start by all riders together")
    parser.add_argument("--round-trips", type=int, default=100, help="rents of one rider alone, one at a time")
    parser.add_argument("--heartbeat", type=float, default=60.0, help="state interval of every station (s)")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop renting after this long at most")
    parser.add_argument("--ramp-rate", type=float, default=20.0, help="stations connecting per second at start")
    args = parser.parse_args()
    if not 1 <= args.riders <= args.stations:
        parser.error("--riders takes 1 to --stations")
    with database() as url:
        server = Server(url)
        network, stations = asyncio.run(seed(url, args.stations, args.spots))
        asyncio.run(open_to_riders(url, network))
        tokens = rider_tokens(server, url, args.riders)
        server.start()
        try:
            alone, crowd = trio.run(rents, server, stations, tokens, args)
        finally:
            server.stop()
            shutil.rmtree(server.data, ignore_errors=True)
    relay_started = time.perf_counter()
    relay = trio.run(relay_round_trips, max(alone.started, 100))
    relay_rate = len(relay) / (time.perf_counter() - relay_started)
    print(f"\nrents with {args.stations} stations connected, each reporting state every {args.heartbeat:g} s"
          f" ({args.stations / args.heartbeat:.0f} state events/s)")
    for line in [*report_run(alone), *report_run(crowd)]:
        print("  " + line)
    print("  " + report_latency("baseline: bare trio-websocket relay, 3 hops", relay)
          + f"   ({relay_rate:.0f} round trips/s, one at a time)")


if __name__ == "__main__":
    main()
