"""``knot-rt simulate``: its options (:func:`add_arguments`) and its run (:func:`run_from_args`).

It simulates the stations given on the command line (``--station ID:SECRET``)
and/or in a file (``--stations-file``, one ``id:secret`` or JSON object a
line, as ``knot-rt station create`` and ``knot-rt demo --stations-file``
write them), and/or the free-floating vehicles of a vehicles file
(``--vehicles-file``, as ``knot-rt demo --vehicles-file`` writes it, see
:func:`read_vehicles_file`), until SIGINT or SIGTERM, printing a live summary
line on stderr, then stops them cleanly and prints the final summary (a line
per kind of device).

Choices: a first signal stops the devices cleanly (each closes with 1001) and
gives them 10 s; a second one cancels at once. The open-file limit is raised
to the number of devices plus some room, as far as the hard limit allows
(one socket per device). Wrong options, credentials or files exit with status
2 and one line on stderr, before anything connects. Stations and vehicles go
to their own gateway paths on one gateway: ``--url`` names the station
socket (as before) and the vehicles' is derived from it (``--vehicles-url``
overrides it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Annotated, Any

import pydantic
import trio
from pydantic import Field

from protocols import station as st
from protocols import vehicle as vh

from .backoff import DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN
from .fleet import Fleet
from .station import DEFAULT_SPOTS, Simulator
from .stats import print_live
from .vehicle import DEFAULT_SPEED, PathMode, VehicleFleet, VehicleSpec


def parse_station(text: str) -> tuple[int, str]:
    """``"ID:SECRET"`` (or a JSON object with ``id``/``station_id`` and ``secret``) -> (id, secret)."""
    text = text.strip()
    if text.startswith("{"):
        data = json.loads(text)
        raw_id, secret = data.get("station_id", data.get("id")), data.get("secret")
    else:
        raw_id, _, secret = text.partition(":")
    try:
        station_id = int(raw_id)
    except (TypeError, ValueError):
        raise ValueError(f"expected ID:SECRET, not {text!r}") from None
    if not isinstance(secret, str) or len(secret) < st.MIN_SECRET_LENGTH:
        raise ValueError(f"station {station_id}: the secret must have at least {st.MIN_SECRET_LENGTH} characters")
    return station_id, secret


def read_stations_file(path: str) -> list[tuple[int, str]]:
    """One station a line (``id:secret`` or JSON); blank lines and ``#`` comments are skipped."""
    stations = []
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    stations.append(parse_station(line))
                except ValueError as exc:
                    raise ValueError(f"{path}:{number}: {exc}") from None
    return stations


_Lat = Annotated[float, Field(strict=True, ge=-90, le=90, allow_inf_nan=False)]
_Lng = Annotated[float, Field(strict=True, ge=-180, le=180, allow_inf_nan=False)]


class _VehicleEntry(pydantic.BaseModel):
    """One entry of a vehicles file; other keys (``vehicle_id``...) are allowed and ignored."""

    serial: Annotated[str, Field(strict=True, min_length=1, max_length=vh.MAX_SERIAL_LENGTH)]
    secret: Annotated[str, Field(strict=True, min_length=vh.MIN_SECRET_LENGTH)]
    lat: _Lat
    lng: _Lng
    path: list[tuple[_Lat, _Lng]] = []


def read_vehicles_file(path: str) -> list[VehicleSpec]:
    """The vehicles of a vehicles file: a JSON list of
    ``{"serial", "secret", "lat", "lng", "path": [[lat, lng], ...]}`` (``path`` may be left out).

    Anything else is a ``ValueError`` naming the file, the entry and what is wrong with it.
    """
    with open(path, encoding="utf-8") as file:
        text = file.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of vehicles, not {type(data).__name__}")
    found: dict[str, VehicleSpec] = {}
    for index, raw in enumerate(data):
        where = f"{path}: vehicle {index}"
        try:
            entry = _VehicleEntry.model_validate(raw)
        except pydantic.ValidationError as exc:
            first = exc.errors()[0]
            at = ".".join(str(part) for part in first["loc"]) or "entry"
            raise ValueError(f"{where}: {at}: {first['msg']}") from None
        if not vh.valid_serial(entry.serial):
            raise ValueError(f"{where}: serial {entry.serial!r} has a colon or a control character")
        if entry.serial in found:
            raise ValueError(f"{where}: serial {entry.serial!r} is given twice")
        found[entry.serial] = VehicleSpec(entry.serial, entry.secret, entry.lat, entry.lng, list(entry.path))
    return list(found.values())


def write_vehicles_file(path: str, vehicles: Sequence[VehicleSpec], extra: Sequence[dict[str, Any]] = ()) -> None:
    """Write a vehicles file (mode 600: it holds secrets); ``extra[i]`` adds keys to entry ``i``."""
    entries = [{"serial": v.serial, "secret": v.secret, "lat": v.lat, "lng": v.lng,
                "path": [list(point) for point in v.path], **(extra[i] if i < len(extra) else {})}
               for i, v in enumerate(vehicles)]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with open(descriptor, "w", encoding="utf-8") as out:
        json.dump(entries, out, indent=1)
        out.write("\n")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``knot-rt simulate``."""
    parser.add_argument("--url", help=f"station gateway URL (default: ws://127.0.0.1:$KNOT_STATION_PORT{st.WS_PATH},"
                                      f" port {st.DEFAULT_PORT})")
    parser.add_argument("--station", action="append", default=[], metavar="ID:SECRET",
                        help="a station to simulate (repeatable)")
    parser.add_argument("--stations-file", "--secrets-file", dest="stations_file", metavar="FILE",
                        help="stations, one 'id:secret' a line (as `knot-rt station create` prints them)")
    parser.add_argument("--stations", type=int, metavar="N", help="simulate the first N stations of the file")
    parser.add_argument("--spots", type=int, default=DEFAULT_SPOTS, help=f"spots per station (default {DEFAULT_SPOTS})")
    parser.add_argument("--vehicles", type=int, metavar="K",
                        help="spots 1..K of each station hold vehicle ID*100+spot at start (default: half the spots)")
    parser.add_argument("--heartbeat", type=float, metavar="S",
                        help="seconds between state messages (default: the boot answer's heartbeat_interval)")
    parser.add_argument("--call-timeout", type=float, default=st.DEFAULT_CALL_TIMEOUT, metavar="S",
                        help="seconds to wait for an answer before reconnecting")
    parser.add_argument("--backoff-min", type=float, default=DEFAULT_BACKOFF_MIN, metavar="S")
    parser.add_argument("--backoff-max", type=float, default=DEFAULT_BACKOFF_MAX, metavar="S")
    parser.add_argument("--ride", type=float, metavar="S",
                        help="a vehicle unlocked at a station is docked back there after S seconds (default: never)")
    parser.add_argument("--ramp", type=float, default=0.0, metavar="S", help="start the stations over S seconds")
    parser.add_argument("--on-replaced", choices=("stop", "reconnect"), default="stop",
                        help="what a device does when closed with 4001 (default: stop)")
    vehicles = parser.add_argument_group("free-floating vehicles")
    vehicles.add_argument("--vehicles-file", metavar="FILE",
                          help='free-floating vehicles: a JSON list of {"serial", "secret", "lat", "lng",'
                               ' "path": [[lat, lng], ...]} (as `knot-rt demo --vehicles-file` writes it)')
    vehicles.add_argument("--vehicles-url", metavar="URL",
                          help=f"vehicle gateway URL (default: --url with {vh.WS_PATH} for {st.WS_PATH})")
    vehicles.add_argument("--status-interval", type=float, metavar="S",
                          help="seconds between status messages (default: the boot answer's heartbeat_interval)")
    vehicles.add_argument("--vehicle-speed", type=float, default=DEFAULT_SPEED, metavar="KMH",
                          help=f"cruising speed of an unlocked vehicle along its path (default {DEFAULT_SPEED:g})")
    vehicles.add_argument("--path-mode", choices=[m.value for m in PathMode], default=PathMode.LOOP.value,
                          help="ride the path round in a loop or back and forth (default: loop)")
    parser.add_argument("--quiet", action="store_true", help="no live summary line")


def _collect_stations(args: argparse.Namespace) -> list[tuple[int, str]]:
    stations = [parse_station(text) for text in args.station]
    if args.stations_file:
        from_file = read_stations_file(args.stations_file)
        if args.stations is not None:
            if args.stations > len(from_file):
                raise ValueError(f"--stations {args.stations}, but {args.stations_file} lists {len(from_file)}")
            from_file = from_file[: args.stations]
        stations += from_file
    elif args.stations is not None:
        raise ValueError("--stations N takes the first N stations of --stations-file")
    return stations


def _raise_file_limit(wanted: int) -> None:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _vehicles_url(args: argparse.Namespace) -> str | None:
    if args.vehicles_url or not args.url:
        return str(args.vehicles_url) if args.vehicles_url else None
    url = str(args.url)
    if not url.endswith(st.WS_PATH):
        raise ValueError(f"--url {url} does not end with {st.WS_PATH}: give --vehicles-url too")
    return url.removesuffix(st.WS_PATH) + vh.WS_PATH


def build_fleets(args: argparse.Namespace) -> list[Fleet[Any]]:
    """The fleets the options ask for (stations, vehicles); ``ValueError`` or ``OSError`` for wrong ones."""
    options: dict[str, Any] = {"call_timeout": args.call_timeout, "backoff_min": args.backoff_min,
                               "backoff_max": args.backoff_max, "stop_when_replaced": args.on_replaced == "stop"}
    fleets: list[Fleet[Any]] = []
    stations = _collect_stations(args)
    if stations:
        fleets.append(Simulator(args.url, stations, spots=args.spots, vehicles=args.vehicles, ramp=args.ramp,
                                heartbeat=args.heartbeat, ride=args.ride, **options))
    if args.vehicles_file:
        vehicles = read_vehicles_file(args.vehicles_file)
        if vehicles:
            fleets.append(VehicleFleet(_vehicles_url(args), vehicles, ramp=args.ramp, heartbeat=args.status_interval,
                                       speed=args.vehicle_speed, mode=PathMode(args.path_mode), **options))
    if not fleets:
        raise ValueError("nothing to simulate: give --station ID:SECRET, --stations-file FILE or --vehicles-file FILE")
    return fleets


def run_from_args(args: argparse.Namespace) -> int:
    """``knot-rt simulate``: run until SIGINT/SIGTERM, then stop cleanly and print the summary."""
    try:
        fleets = build_fleets(args)
    except (ValueError, OSError) as exc:
        print(f"knot-rt simulate: {exc}", file=sys.stderr)
        return 2
    devices = sum(len(fleet.devices) for fleet in fleets)
    _raise_file_limit(devices + 256)
    for fleet in fleets:
        print(f"simulating {len(fleet.devices)} {fleet.noun[:-1]}(s) against {fleet.url}", file=sys.stderr,
              flush=True)
    trio.run(_simulate, fleets, args.quiet)
    for fleet in fleets:
        print(fleet.summary().line(), file=sys.stderr, flush=True)
    return 0


async def _simulate(fleets: list[Fleet[Any]], quiet: bool) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, fleets, nursery.cancel_scope)
        if not quiet:
            nursery.start_soon(print_live, lambda: " || ".join(fleet.summary().line() for fleet in fleets))
        async with trio.open_nursery() as running:
            for fleet in fleets:
                running.start_soon(fleet.run)
        nursery.cancel_scope.cancel()


async def _stop_on_signal(fleets: list[Fleet[Any]], scope: trio.CancelScope) -> None:
    """First signal: stop the devices cleanly (at most 10 s); a second one: cancel at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            break
        for fleet in fleets:
            fleet.stop()
        with trio.move_on_after(10):
            async for _ in signals:
                break
        scope.cancel()
