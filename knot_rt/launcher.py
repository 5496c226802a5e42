"""``make run``: the demo city alive — ``knot-rt serve --demo``, and the city's stations and free-floating
vehicles through ``knot-rt simulate``.

Run: ``make run`` (or ``.venv/bin/python -m knot_rt.launcher``). Steps:

1. start ``knot-rt serve --demo`` and echo its banner; the API and station
   gateway addresses are read from it, so ``PORT=0`` and ``KNOT_STATION_PORT=0``
   work too;
2. wait for ``/health``;
3. issue the stations and vehicles files: ``knot-rt demo --stations-file
   <data>/demo-stations.txt --vehicles-file <data>/demo-vehicles.json`` (mode
   600) gives every station and every free-floating vehicle with a module of
   the demo city a new secret — secrets are kept as hashes only, so they are
   issued anew at each start and a simulator left over from an earlier run is
   locked out;
4. start ``knot-rt simulate --stations-file F --vehicles-file V --url <gateway>
   --ride S``: the stations boot, report their docked vehicles and answer
   unlocks, and a vehicle unlocked is docked back at its station S seconds
   later (env ``KNOT_DEMO_RIDE_SECONDS``, default ``RIDE_SECONDS``), so a rent
   started with the demo rider ends and is priced by itself; the free-floating
   vehicles boot on the gateway's vehicle socket, report their status, and ride
   their loop while unlocked (a rider locks them again: they do not lock
   themselves);
5. wait until they are online (``/metrics``, at most ``ONLINE_SECONDS``: past
   that it says how many are and goes on) and print how to rent.

The simulator is a child of this launcher, never of the server: ``knot-rt
serve`` alone (production, the Procfile) connects no fake station.

Stopping: SIGINT (Ctrl-C) or SIGTERM stops the simulator first (its stations
close with 1001, a clean goodbye), then the server (it drains and stops its
embedded PostgreSQL); each gets ``STOP_SECONDS`` before it is killed, and a
second signal kills both at once. The children run in sessions of their own, so
the terminal's Ctrl-C reaches only the launcher, which signals each child
exactly once — a second SIGINT would make them cancel rather than stop
cleanly. The cost: a launcher killed with SIGKILL leaves them running. If a
child exits by itself, the other is stopped and the launcher exits with 1.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import httpx
import trio

from .config import Settings

STATIONS_FILE = "demo-stations.txt"
VEHICLES_FILE = "demo-vehicles.json"
START_SECONDS = 180.0  # the first start of the embedded PostgreSQL runs initdb
ONLINE_SECONDS = 60.0
STOP_SECONDS = 20.0
RIDE_SECONDS = 60.0
API_BANNER = "knot_rt API:"
GATEWAY_BANNER = "station gateway:"


def knot_rt_command() -> list[str]:
    """The ``knot-rt`` beside this Python (the venv's), else the module."""
    script = Path(sys.executable).with_name("knot-rt")
    return [str(script)] if script.exists() else [sys.executable, "-m", "knot_rt.cli"]


@dataclass
class Addresses:
    """What the server's banner says: where its API and its station gateway listen."""

    api: str = ""  # http://HOST:PORT
    gateway: str = ""  # ws://HOST:PORT/api/stations/ws
    known: trio.Event = field(default_factory=trio.Event)

    def read(self, line: str) -> None:
        if line.startswith(API_BANNER) and not self.api:
            self.api = line.split()[-1].removesuffix("/api/application/")
        elif line.startswith(GATEWAY_BANNER):
            self.gateway = line.split()[-1]
            self.known.set()


class ChildExited(Exception):
    """A child process ended before it was asked to."""


@dataclass
class Launcher:
    knot_rt: list[str]
    stations_file: Path
    ride: float = RIDE_SECONDS
    vehicles_file: Path | None = None  # default: VEHICLES_FILE beside the stations file
    out: TextIO = sys.stdout
    server: trio.Process | None = None
    simulator: trio.Process | None = None
    addresses: Addresses = field(default_factory=Addresses)
    stations: int = 0
    vehicles: int = 0

    def __post_init__(self) -> None:
        if self.vehicles_file is None:
            self.vehicles_file = self.stations_file.with_name(VEHICLES_FILE)

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    async def open_child(self, *args: str, stdout: int | None = None) -> trio.Process:
        return await trio.lowlevel.open_process([*self.knot_rt, *args], stdout=stdout, start_new_session=True)

    async def echo_server(self) -> None:
        """Forward the server's stdout line by line, reading its banner on the way."""
        assert self.server is not None and self.server.stdout is not None
        pending = b""
        async for chunk in self.server.stdout:
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.addresses.read(line)
                self.say(line)

    async def bring_up(self, nursery: trio.Nursery) -> None:
        self.server = await self.open_child("serve", "--demo", stdout=subprocess.PIPE)
        nursery.start_soon(self.echo_server)
        nursery.start_soon(self.watch, self.server, "knot-rt serve")
        with trio.fail_after(START_SECONDS):
            await self.addresses.known.wait()
        async with httpx.AsyncClient(base_url=self.addresses.api, timeout=5) as client:
            while (await client.get("/health")).status_code != 200:  # noqa: ASYNC110 - polling another process
                await trio.sleep(0.2)
            self.stations_file.parent.mkdir(parents=True, exist_ok=True)
            assert self.vehicles_file is not None
            issued = await trio.run_process(
                [*self.knot_rt, "demo", "--stations-file", str(self.stations_file),
                 "--vehicles-file", str(self.vehicles_file)], capture_stdout=True, start_new_session=True,
            )
            del issued  # the city's summary: the banner already says what matters
            self.stations = sum(1 for line in self.stations_file.read_text().splitlines() if line.strip())
            self.vehicles = len(json.loads(self.vehicles_file.read_text()))
            self.simulator = await self.open_child(
                "simulate", "--stations-file", str(self.stations_file), "--vehicles-file", str(self.vehicles_file),
                "--url", self.addresses.gateway, "--ride", str(self.ride), "--quiet",
            )
            nursery.start_soon(self.watch, self.simulator, "knot-rt simulate")
            online = await self.wait_online(client)
        self.say(f"demo city live: {online}/{self.stations} stations online through the simulator"
                 f" (pid {self.simulator.pid}); a vehicle unlocked is docked back {self.ride:g} s later;"
                 f" {self.vehicles} free-floating vehicles with a module simulated too")
        self.say(f"rent one as the demo rider: see 'A rent with curl' in README.md (API {self.addresses.api});"
                 " Ctrl-C stops everything")

    async def wait_online(self, client: httpx.AsyncClient) -> int:
        online = 0
        with trio.move_on_after(ONLINE_SECONDS):
            while online < self.stations:
                online = stations_online((await client.get("/metrics")).text)
                if online < self.stations:
                    await trio.sleep(0.2)
        return online

    async def watch(self, process: trio.Process, name: str) -> None:
        code = await process.wait()
        raise ChildExited(f"{name} exited with status {code}")

    async def stop(self) -> None:
        """The simulator first, then the server: SIGTERM, ``STOP_SECONDS``, then SIGKILL."""
        for process in (self.simulator, self.server):
            if process is None or process.returncode is not None:
                continue
            process.send_signal(signal.SIGTERM)
            with trio.move_on_after(STOP_SECONDS):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()

    def kill(self) -> None:
        for process in (self.simulator, self.server):
            if process is not None and process.returncode is None:
                process.kill()


def stations_online(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith("knot_stations_online "):
            return int(float(line.split()[1]))
    return 0


async def launch(launcher: Launcher) -> int:
    """Bring the city up and keep it until a signal or a child's exit; then stop both. The exit status."""
    status = 0
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_cancel_on_signal, signals, nursery.cancel_scope)
                await launcher.bring_up(nursery)
        except* ChildExited as exited:
            for error in exited.exceptions:
                launcher.say(f"knot_rt launcher: {error}")
            status = 1
        except* (trio.TooSlowError, httpx.HTTPError, subprocess.CalledProcessError, OSError) as failed:
            for failure in failed.exceptions:
                launcher.say(f"knot_rt launcher: the demo city did not start: {failure!r}")
            status = 1
        async with trio.open_nursery() as nursery:  # a second signal while stopping kills both
            nursery.start_soon(_kill_on_signal, signals, launcher)
            await launcher.stop()
            nursery.cancel_scope.cancel()
    return status


async def _cancel_on_signal(signals: AsyncIterator[int], scope: trio.CancelScope) -> None:
    async for _ in signals:
        scope.cancel()
        return


async def _kill_on_signal(signals: AsyncIterator[int], launcher: Launcher) -> None:
    async for _ in signals:
        launcher.kill()
        return


def main() -> int:
    settings = Settings.from_env()
    ride = float(os.environ.get("KNOT_DEMO_RIDE_SECONDS") or RIDE_SECONDS)
    launcher = Launcher(knot_rt_command(), settings.data_dir / STATIONS_FILE, ride)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")  # the children's lines reach the terminal as they come
    return trio.run(launch, launcher)


if __name__ == "__main__":
    sys.exit(main())
