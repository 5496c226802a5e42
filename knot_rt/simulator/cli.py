"""``knot-rt simulate``: its options (:func:`add_arguments`) and its run (:func:`run_from_args`).

It simulates the stations given on the command line (``--station ID:SECRET``)
and/or in a file (``--stations-file``, one ``id:secret`` or JSON object a
line, as ``knot-rt station create`` and ``knot-rt demo --stations-file``
write them) until SIGINT or SIGTERM, printing a live summary line on stderr,
then stops them cleanly and prints the final summary.

Choices: a first signal stops the stations cleanly (each closes with 1001) and
gives them 10 s; a second one cancels at once. The open-file limit is raised
to the number of stations plus some room, as far as the hard limit allows
(one socket per station). Wrong options or credentials exit with status 2 and
one line on stderr, before anything connects.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

import trio

from protocols import station as st

from .backoff import DEFAULT_BACKOFF_MAX, DEFAULT_BACKOFF_MIN
from .station import DEFAULT_SPOTS, Simulator
from .stats import print_live


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
                        help="what a station does when closed with 4001 (default: stop)")
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
    if not stations:
        raise ValueError("no station: give --station ID:SECRET or --stations-file FILE")
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


def run_from_args(args: argparse.Namespace) -> int:
    """``knot-rt simulate``: run until SIGINT/SIGTERM, then stop cleanly and print the summary."""
    try:
        stations = _collect_stations(args)
        simulator = Simulator(
            args.url, stations, spots=args.spots, vehicles=args.vehicles, ramp=args.ramp,
            heartbeat=args.heartbeat, call_timeout=args.call_timeout, backoff_min=args.backoff_min,
            backoff_max=args.backoff_max, stop_when_replaced=args.on_replaced == "stop", ride=args.ride,
        )
    except (ValueError, OSError) as exc:
        print(f"knot-rt simulate: {exc}", file=sys.stderr)
        return 2
    _raise_file_limit(len(stations) + 256)
    print(f"simulating {len(stations)} station(s) against {simulator.url}", file=sys.stderr, flush=True)
    trio.run(_simulate, simulator, args.quiet)
    print(simulator.summary().line(), file=sys.stderr, flush=True)
    return 0


async def _simulate(simulator: Simulator, quiet: bool) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_stop_on_signal, simulator, nursery.cancel_scope)
        if not quiet:
            nursery.start_soon(print_live, simulator.summary)
        await simulator.run()
        nursery.cancel_scope.cancel()


async def _stop_on_signal(simulator: Simulator, scope: trio.CancelScope) -> None:
    """First signal: stop the stations cleanly (at most 10 s); a second one: cancel at once."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            break
        simulator.stop()
        with trio.move_on_after(10):
            async for _ in signals:
                break
        scope.cancel()
