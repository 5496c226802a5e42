"""``knot-rt``: serve, demo data, OpenAPI, accounts, stations, vehicles."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, TypeVar

import trio

from protocols import station as station_wire

from .config import ConfigError, Settings
from .db import DatabaseUnavailable
from .errors import ApiError
from .logs import configure_logging
from .pgcluster import PgClusterError, ServeLock
from .runner import open_database, run_with_loop, stop_on_signal, tune_gc

T = TypeVar("T")


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings.from_env()
    overrides: dict[str, object] = {}
    for name in ("host", "port", "station_port", "database_url"):
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    if overrides:
        settings = replace(settings, **overrides)  # type: ignore[arg-type]
        if "port" in overrides or "host" in overrides:
            settings = replace(settings, public_url=f"http://{settings.host}:{settings.port}")
    return settings.with_secret()


MAX_WORKERS = 64  # processes of one ``serve --workers N``: beyond, a typo, not a machine


def not_a_listening_socket(fd: int) -> str | None:
    """Why ``fd`` cannot be a worker's inherited socket (a listening TCP socket), or None. A worker is
    started by ``--workers N`` with its parent's sockets; a hand-typed fd gets a clear refusal."""
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as error:
        return error.strerror or repr(error)
    with probe:
        if probe.type != socket.SOCK_STREAM or probe.family not in (socket.AF_INET, socket.AF_INET6):
            return "not a TCP socket"
        if not probe.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return "not listening"
    return None


def cmd_serve(args: argparse.Namespace) -> int:
    from .context import Services
    from .demo import DEMO_ACCOUNTS, load_demo
    from .server import run_server

    if not 1 <= args.workers <= MAX_WORKERS:
        print(f"knot-rt serve: --workers takes 1 to {MAX_WORKERS}", file=sys.stderr)
        return 2
    for flag, fd in (("--http-fd", args.http_fd), ("--gateway-fd", args.gateway_fd)):
        if fd is not None and (why := not_a_listening_socket(fd)):
            print(f"knot-rt serve: {flag} {fd} is not a listening TCP socket ({why})", file=sys.stderr)
            return 2
    if (args.http_fd is None) != (args.gateway_fd is None):
        print("knot-rt serve: --http-fd and --gateway-fd go together", file=sys.stderr)
        return 2
    settings = _settings(args)
    tune_gc()
    worker = args.http_fd is not None
    if worker:  # one of ``--workers N``'s processes: its sockets are the parent's
        settings = replace(settings, http_fd=args.http_fd, gateway_fd=args.gateway_fd, cluster=True)
    serve_lock = ServeLock(settings.data_dir)
    if not settings.database_url:  # the embedded cluster: one server per data folder
        serve_lock.acquire()
    if args.workers > 1 and not worker:
        from .workers import run_workers

        try:
            run_with_loop(lambda: run_workers(settings, args.workers, demo=args.demo))
        finally:
            serve_lock.release()
        return 0

    async def main() -> None:
        async with stop_on_signal() as stopper, open_database(settings) as db:
            if args.demo:
                await load_demo(db)
            svc = Services.build(settings, db)
            async with trio.open_nursery() as nursery:
                bound = await nursery.start(lambda task_status: run_server(
                    svc, shutdown=stopper.shutdown, task_status=task_status))
                stopper.serving()
                if worker:
                    from .workers import READY

                    print(f"{READY} pid={os.getpid()}", flush=True)
                else:
                    for bind in bound.http:
                        print(f"knot_rt API:      {bind}/api/application/", flush=True)
                        print(f"OpenAPI document: {bind}/openapi.json  (docs: {bind}/docs)", flush=True)
                    print(f"station gateway:  {bound.station_url(settings.host)}", flush=True)
                    print(f"vehicle gateway:  {bound.vehicle_url(settings.host)}", flush=True)
                    if args.demo:
                        for email, password, what in DEMO_ACCOUNTS:
                            print(f"demo account:     {email} / {password}  ({what})", flush=True)

    try:
        run_with_loop(main)
    finally:
        serve_lock.release()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    import os

    from .demo import demo_station_secrets, demo_vehicle_secrets, load_demo
    from .demo_city import MAX_SCALE, IssuedVehicle
    from .simulator.cli import write_vehicles_file
    from .simulator.vehicle import VehicleSpec

    settings = _settings(args)
    if not 1 <= args.scale <= MAX_SCALE:
        print(f"--scale takes 1 to {MAX_SCALE}", file=sys.stderr)
        return 2

    async def main() -> tuple[dict[str, Any], list[tuple[int, str]], list[IssuedVehicle]]:
        async with open_database(settings) as db:
            summary = await load_demo(db, scale=args.scale)
            issued = await demo_station_secrets(db) if args.stations_file else []
            vehicles = await demo_vehicle_secrets(db) if args.vehicles_file else []
            return summary, issued, vehicles

    summary, issued, vehicles = run_with_loop(main)
    if args.stations_file:
        descriptor = os.open(args.stations_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(descriptor, "w", encoding="utf-8") as out:
            out.writelines(f"{station}:{secret}\n" for station, secret in issued)
        summary["stations_file"] = args.stations_file
    if args.vehicles_file:
        write_vehicles_file(
            args.vehicles_file,
            [VehicleSpec(v.serial, v.secret, v.latitude, v.longitude, list(v.path)) for v in vehicles],
            [{"vehicle_id": v.vehicle_id} for v in vehicles],
        )
        summary["vehicles_file"] = args.vehicles_file
    print(json.dumps(summary))
    return 0


def cmd_openapi(args: argparse.Namespace) -> int:
    from .api.app import create_app

    app = create_app(None)

    async def main() -> str:
        async with app.test_app():
            client = app.test_client()
            response = await client.get("/openapi.json")
            return await response.get_data(as_text=True)

    document = trio.run(main)
    print(json.dumps(json.loads(document), indent=2))
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    import asyncpg

    from .accounts.store import normalize_email
    from .context import Services
    from .errors import ApiError

    settings = _settings(args)
    perms: list[tuple[str, bool]] = []
    for item in args.perm or []:
        key, _, mode = item.partition(":")
        if not key or mode not in ("", "write", "read"):
            print(f"--perm takes KEY or KEY:write, not {item!r}", file=sys.stderr)
            return 2
        perms.append((key, mode == "write"))

    async def main() -> dict[str, Any]:
        async with open_database(settings) as db:
            accounts = Services.build(settings, db).accounts
            try:
                user_id = await accounts.create_user(
                    args.email, args.password, perms=perms, networks=args.network or []
                )
            except ApiError as exc:
                return {"error": exc.message}
            except asyncpg.ForeignKeyViolationError:
                return {"error": f"unknown network id in {args.network}"}
            return {"user_id": user_id, "email": normalize_email(args.email)}

    result = run_with_loop(main)
    if "error" in result:
        print(f"knot-rt user create: {result['error']}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def _run_or_report(main: Callable[[], Awaitable[T]], command: str) -> T | None:
    """Run ``main``; an ApiError becomes one line on stderr and None (the loop would wrap it in a group)."""

    async def guarded() -> tuple[T | None, str | None]:
        try:
            return await main(), None
        except ApiError as error:
            return None, error.message

    result, error = run_with_loop(guarded)
    if error is not None:
        print(f"knot-rt {command}: {error}", file=sys.stderr)
    return result


def cmd_station_create(args: argparse.Namespace) -> int:
    from .stations.admin import create_station

    settings = _settings(args)
    if not 1 <= args.spots <= 32 or args.count < 1:
        print("--spots takes 1 to 32 and --count at least 1", file=sys.stderr)
        return 2

    async def main() -> list[dict[str, object]]:
        async with open_database(settings) as db:
            created = []
            for _ in range(args.count):
                station = await db.transaction(lambda conn: create_station(conn, args.cluster, args.spots))
                created.append({"station_id": station.station_id, "secret": station.secret,
                                "spots": station.spot_ids})
            return created

    created = _run_or_report(main, "station create")
    if created is None:
        return 1
    for station in created:
        print(json.dumps(station))
    if args.stations_file:
        with open(args.stations_file, "a", encoding="utf-8") as out:
            for station in created:
                out.write(f"{station['station_id']}:{station['secret']}\n")
    return 0


def cmd_station_secret(args: argparse.Namespace) -> int:
    from .stations.admin import rotate_station_secret

    settings = _settings(args)

    async def main() -> str:
        async with open_database(settings) as db:
            return await db.transaction(lambda conn: rotate_station_secret(conn, args.station_id))

    secret = _run_or_report(main, "station secret")
    if secret is None:
        return 1
    print(json.dumps({"station_id": args.station_id, "secret": secret}))
    return 0


def cmd_vehicle_create(args: argparse.Namespace) -> int:
    from .context import Services

    settings = _settings(args)

    async def main() -> dict[str, object]:
        async with open_database(settings) as db:
            vehicles = Services.build(settings, db).vehicles
            return await vehicles.create(args.network, args.serial, vehicle_id=args.id, model_id=args.model,
                                         free_floating=args.free_floating)

    created = _run_or_report(main, "vehicle create")
    if created is None:
        return 2  # an unknown network or model, a serial number or id already used: the input is at fault
    print(json.dumps(created))
    return 0


def cmd_vehicle_secret(args: argparse.Namespace) -> int:
    from .context import Services

    settings = _settings(args)

    async def main() -> tuple[int, str]:
        async with open_database(settings) as db:
            return await Services.build(settings, db).vehicles.rotate_secret(args.serial)

    rotated = _run_or_report(main, "vehicle secret")
    if rotated is None:
        return 2  # an unknown serial number, a vehicle without a module: the input is at fault
    vehicle_id, secret = rotated
    print(json.dumps({"vehicle_id": vehicle_id, "serial_number": args.serial, "secret": secret}))
    return 0


def cmd_maintenance_type_list(args: argparse.Namespace) -> int:
    from .maintenance import store

    settings = _settings(args)

    async def main() -> list[store.MaintenanceType]:
        async with open_database(settings) as db:
            return await db.run(lambda conn: store.list_types(conn, with_deleted=args.all))

    kinds = _run_or_report(main, "maintenance-type list")
    if kinds is None:
        return 1
    for kind in kinds:
        print(json.dumps(kind.as_json(args.lang) | {"names": kind.names}, ensure_ascii=False))
    return 0


def cmd_maintenance_type_create(args: argparse.Namespace) -> int:
    from .maintenance import store

    settings = _settings(args)
    names: dict[str, str] = {}
    for item in args.name or []:
        lang, sep, text = item.partition("=")
        if not sep or len(lang) != 2 or not lang.isalpha() or not text.strip():
            print(f"knot-rt maintenance-type create: --name takes LANG=TEXT (two letters), not {item!r}",
                  file=sys.stderr)
            return 2
        names[lang.lower()] = text.strip()
    if not 1 <= len(args.key) <= 50 or not names:
        print("knot-rt maintenance-type create: a key of 1 to 50 characters and at least one --name",
              file=sys.stderr)
        return 2

    async def main() -> tuple[store.MaintenanceType | None]:
        async with open_database(settings) as db:
            return (await db.transaction(
                lambda conn: store.create_type(conn, args.key, args.target, args.severity, names)
            ),)

    created = _run_or_report(main, "maintenance-type create")
    if created is None:
        return 1
    [kind] = created
    if kind is None:
        print(f"knot-rt maintenance-type create: the maintenance type {args.key!r} already exists", file=sys.stderr)
        return 2
    print(json.dumps(kind.as_json(next(iter(names))) | {"names": kind.names}, ensure_ascii=False))
    return 0


def cmd_maintenance_type_delete(args: argparse.Namespace) -> int:
    from .maintenance import store

    settings = _settings(args)

    async def main() -> bool:
        async with open_database(settings) as db:
            return await db.transaction(lambda conn: store.delete_type(conn, args.key))

    deleted = _run_or_report(main, "maintenance-type delete")
    if deleted is None:
        return 1
    if not deleted:
        print(f"knot-rt maintenance-type delete: no maintenance type {args.key!r} (or already deleted)",
              file=sys.stderr)
        return 2
    print(json.dumps({"type_key": args.key, "deleted": True}))
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from .simulator.cli import run_from_args

    return run_from_args(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="knot-rt", description="knot_rt: the Knot application API")
    sub = parser.add_subparsers(dest="command", required=True)

    def on_database(command: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
        """Finish a command that works on the database: its ``--database-url`` (listed last) and its function."""
        command.add_argument("--database-url", help="PostgreSQL URL (env DATABASE_URL); default: embedded cluster")
        command.set_defaults(func=func)

    def group(name: str, summary: str) -> argparse._SubParsersAction[argparse.ArgumentParser]:
        """A command made of sub-commands (``knot-rt NAME SUB``)."""
        return sub.add_parser(name, help=summary).add_subparsers(dest=f"{name}_command", required=True)

    serve = sub.add_parser("serve", help="run the service")
    serve.add_argument("--host", help="address to bind (env KNOT_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="HTTP port (env PORT, default 8000)")
    serve.add_argument("--station-port", type=int,
                       help=f"station gateway port (env KNOT_STATION_PORT, default {station_wire.DEFAULT_PORT})")
    serve.add_argument("--demo", action="store_true", help="load the demo data first")
    serve.add_argument("--workers", type=int, default=1, metavar="N",
                       help="N server processes sharing the ports and the database (default 1)")
    serve.add_argument("--http-fd", type=int, help=argparse.SUPPRESS)  # a worker's inherited sockets
    serve.add_argument("--gateway-fd", type=int, help=argparse.SUPPRESS)
    on_database(serve, cmd_serve)

    demo = sub.add_parser("demo", help="load the demo data and the city of Strasbourg (idempotent)")
    demo.add_argument("--scale", type=int, default=1, metavar="N",
                      help="a city N times larger, for benchmarks (N=33: about 10,000 vehicles)")
    demo.add_argument("--stations-file", metavar="F",
                      help="issue new secrets to the city's stations and write ID:SECRET lines to F (mode 600),"
                           " for `knot-rt simulate --stations-file F`")
    demo.add_argument("--vehicles-file", metavar="F",
                      help="issue new secrets to the city's free-floating vehicles with a module and write them"
                           " (serial, secret, position, path) to F as JSON (mode 600),"
                           " for `knot-rt simulate --vehicles-file F`")
    on_database(demo, cmd_demo)

    openapi = sub.add_parser("openapi", help="print the OpenAPI document")
    openapi.set_defaults(func=cmd_openapi)

    user_sub = group("user", "manage accounts")
    create = user_sub.add_parser("create", help="create a confirmed account")
    create.add_argument("--email", required=True)
    create.add_argument("--password", required=True)
    create.add_argument("--perm", action="append", metavar="KEY[:write]", help="permission (repeatable)")
    create.add_argument("--network", action="append", type=int, metavar="ID", help="network of the permissions")
    on_database(create, cmd_user_create)
    station_sub = group("station", "manage stations")
    create_station = station_sub.add_parser("create", help="create a station; prints its id and secret")
    create_station.add_argument("--cluster", type=int, required=True, metavar="ID")
    create_station.add_argument("--spots", type=int, required=True, metavar="N", help="1 to 32")
    create_station.add_argument("--count", type=int, default=1, help="how many stations (default 1)")
    create_station.add_argument("--stations-file", metavar="F", help="also append ID:SECRET lines to F")
    on_database(create_station, cmd_station_create)
    secret = station_sub.add_parser("secret", help="rotate a station's secret; prints the new one")
    secret.add_argument("station_id", type=int)
    on_database(secret, cmd_station_secret)

    vehicle_sub = group("vehicle", "manage vehicles")
    create_vehicle = vehicle_sub.add_parser("create", help="add a vehicle to a network; prints it as JSON")
    create_vehicle.add_argument("--network", type=int, required=True, metavar="ID")
    create_vehicle.add_argument("--serial", required=True, metavar="S", help="its serial number (unique)")
    create_vehicle.add_argument("--id", type=int, metavar="N",
                                help="the id the stations read from the vehicle (default: the next free one)")
    create_vehicle.add_argument("--model", type=int, metavar="ID", help="its vehicle model")
    create_vehicle.add_argument("--free-floating", action="store_true",
                                help="it has its own IoT module (vehicle-protocol.md): also prints its secret, once")
    on_database(create_vehicle, cmd_vehicle_create)
    vehicle_secret = vehicle_sub.add_parser("secret", help="rotate a free-floating vehicle's secret; prints the new one")
    vehicle_secret.add_argument("serial", metavar="SERIAL", help="its serial number")
    on_database(vehicle_secret, cmd_vehicle_secret)

    type_sub = group("maintenance-type", "manage maintenance types")
    type_list = type_sub.add_parser("list", help="print the maintenance types, one JSON line each")
    type_list.add_argument("--lang", default="en", help="the language of type_name (default en)")
    type_list.add_argument("--all", action="store_true", help="also the deleted ones")
    on_database(type_list, cmd_maintenance_type_list)
    type_create = type_sub.add_parser(
        "create", help="create a maintenance type (or bring back a deleted one with new values)")
    type_create.add_argument("key", help="its key (type_key), 1 to 50 characters")
    type_create.add_argument("--target", required=True, choices=["station", "spot", "vehicle"])
    type_create.add_argument("--severity", default="low", choices=["info", "low", "high"],
                             help="its default severity (default low)")
    type_create.add_argument("--name", action="append", metavar="LANG=TEXT", help="a localized name (repeatable)")
    on_database(type_create, cmd_maintenance_type_create)
    type_delete = type_sub.add_parser("delete", help="delete a maintenance type (its maintenances keep it)")
    type_delete.add_argument("key")
    on_database(type_delete, cmd_maintenance_type_delete)

    from .simulator.cli import add_arguments as simulate_arguments

    simulate = sub.add_parser("simulate", help="simulate stations and vehicles over real sockets until Ctrl-C")
    simulate_arguments(simulate)
    simulate.set_defaults(func=cmd_simulate)
    return parser


def _user_error(error: BaseException) -> ConfigError | PgClusterError | DatabaseUnavailable | None:
    """The configuration or embedded-database error inside ``error`` (Trio may wrap it in groups)."""
    if isinstance(error, ConfigError | PgClusterError | DatabaseUnavailable):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _user_error(inner)
            if found is not None:
                return found
    return None


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except BaseException as error:  # one clear line for what the user can fix, a traceback for the rest
        found = _user_error(error)
        if found is None:
            raise
        message = "; ".join(line.strip() for line in str(found).splitlines() if line.strip())
        if isinstance(found, DatabaseUnavailable):
            message = f"the database cannot be reached: {message}"
        print(f"knot-rt {args.command}: {message}", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
