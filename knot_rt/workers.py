"""``knot-rt serve --workers N``: N server processes on one machine, sharing the HTTP port and the device
gateway's port.

The parent binds one HTTP and one gateway listening socket per child, all on the same two ports with
SO_REUSEPORT, and hands each child its own pair (inherited file descriptors). The kernel spreads new
connections over the children's sockets by a hash of their addresses, so a burst of connections does not
all land on whichever child happened to wake first (as with one shared socket, where one child took all
of a benchmark's 8 keep-alive clients). The children run in the cluster mode (``knot_rt/cluster``): a
device's actor lives in the child that accepted its socket, its ownership is a PostgreSQL advisory lock, and requests, feed events,
revocations and catalog changes cross children through PostgreSQL. Nothing else is shared.

The parent itself serves nothing: it migrates the database and loads the demo data once (so that the
children do not race at it), starts the embedded PostgreSQL when no ``DATABASE_URL`` is given, prints
the banners once every child is ready, restarts a child that dies (after a back-off: 1 s doubling to
30 s; a crashed child's stations reconnect to the others meanwhile), and on SIGINT/SIGTERM stops them
all (SIGTERM, then SIGKILL after ``STOP_SECONDS``).

Choices: the parent binds every socket (rather than each child binding its own), so that port 0 works
(the first socket picks the port, the others join it), a child restarted after a crash gets the same
socket back (the parent keeps a copy open: connections the kernel gave it meanwhile wait in its queue, not
refused), and no other process can join the group unnoticed. The price of hashing: a spread of a few
long-lived connections is uneven by chance; it evens out with many.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass, field, replace

import trio

from protocols import station, vehicle

from .config import Settings
from .db import Backoff
from .launcher import knot_rt_command
from .runner import database_url, open_database, stop_on_signal

log = logging.getLogger(__name__)

READY = "knot_rt worker ready"
READY_SECONDS = 120.0
STOP_SECONDS = 20.0
PR_SET_PDEATHSIG = 1


def listening_sockets(host: str, port: int, count: int) -> list[socket.socket]:
    """``count`` listening sockets on one port (SO_REUSEPORT; port 0: the first one's), to be inherited."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            sock.bind((host, sockets[0].getsockname()[1] if len(sockets) > 1 else port))
            sock.listen(4096)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


@dataclass
class Worker:
    index: int
    process: subprocess.Popen[bytes] | None = None
    ready: trio.Event = field(default_factory=trio.Event)


async def run_workers(settings: Settings, count: int, *, demo: bool) -> None:
    """Serve with ``count`` worker processes until a signal stops them."""
    from .demo import DEMO_ACCOUNTS, load_demo

    async with stop_on_signal() as stopper, database_url(settings) as url:
        settings = replace(settings, database_url=url)
        async with open_database(settings) as db:  # migrated once, here
            if demo:
                await load_demo(db)
        http = listening_sockets(settings.host, settings.port, count)
        gateway = listening_sockets(settings.host, settings.station_port, count)
        env = dict(os.environ)
        env.update({
            "DATABASE_URL": url, "KNOT_CLUSTER": "1", "KNOT_SECRET_KEY": settings.secret_key,
            "KNOT_DATA_DIR": str(settings.data_dir), "KNOT_HOST": settings.host,
            "KNOT_PUBLIC_URL": settings.public_url,
        })
        workers = [Worker(i) for i in range(count)]
        async with trio.open_nursery() as nursery:
            for worker in workers:
                command = [*knot_rt_command(), "serve", "--http-fd", str(http[worker.index].fileno()),
                           "--gateway-fd", str(gateway[worker.index].fileno())]
                nursery.start_soon(_keep_running, worker, command, env, stopper.shutdown)
            with trio.move_on_after(READY_SECONDS):
                for worker in workers:
                    await worker.ready.wait()
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            http_port, gateway_port = http[0].getsockname()[1], gateway[0].getsockname()[1]
            print(f"knot_rt API:      http://{host}:{http_port}/api/application/  ({count} workers)", flush=True)
            print(f"OpenAPI document: http://{host}:{http_port}/openapi.json", flush=True)
            print(f"station gateway:  ws://{host}:{gateway_port}{station.WS_PATH}", flush=True)
            print(f"vehicle gateway:  ws://{host}:{gateway_port}{vehicle.WS_PATH}", flush=True)
            if demo:
                for email, password, what in DEMO_ACCOUNTS:
                    print(f"demo account:     {email} / {password}  ({what})", flush=True)
            stopper.serving()
            await stopper.shutdown.wait()
            with trio.CancelScope(shield=True):
                await _stop_all(workers)
            nursery.cancel_scope.cancel()
        for sock in (*http, *gateway):
            sock.close()


async def _keep_running(worker: Worker, command: list[str], env: dict[str, str], stopping: trio.Event) -> None:
    backoff = Backoff(first=1.0, cap=30.0)
    while not stopping.is_set():
        receive, send = os.pipe()
        try:
            # Forked from this thread (trio's), on purpose, not with trio's ``open_process``: Linux sends the
            # parent-death signal (``_end_with_parent``) when the *thread* that forked the child ends, and
            # ``open_process`` forks in a thread of trio's cache, which ends after 10 s idle: every worker
            # got SIGTERM 10 s after its start. A fork takes a few milliseconds of the loop, at start only.
            process = subprocess.Popen(  # noqa: ASYNC220 -- on purpose, see above
                command, env=env, stdout=send, pass_fds=_inherited(command), preexec_fn=_end_with_parent,
            )
        finally:
            os.close(send)
        worker.process = process
        async with trio.lowlevel.FdStream(receive) as stream:
            await _read_banner(worker, stream)
            await _wait(process)
        if stopping.is_set():
            return
        log.warning("worker %s (pid %s) ended with %s; restarting it", worker.index, process.pid, process.returncode)
        await backoff.sleep()


async def _wait(process: subprocess.Popen[bytes]) -> None:
    """Until ``process`` has ended (waited for in a thread, left behind if cancelled: it ends with the child)."""
    await trio.to_thread.run_sync(process.wait, abandon_on_cancel=True)


def _end_with_parent() -> None:
    """In the child, before exec: SIGTERM when the parent dies, however it dies (Linux; elsewhere nothing).
    Linux ties it to the thread that forks: the child must be forked by a thread that lives as long as the
    parent (see ``_keep_running``)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _inherited(command: list[str]) -> tuple[int, ...]:
    return tuple(int(command[i + 1]) for i, arg in enumerate(command) if arg in ("--http-fd", "--gateway-fd"))


async def _read_banner(worker: Worker, stream: trio.lowlevel.FdStream) -> None:
    """Wait for the child's ready line, then pass whatever else it prints on (its logs go to stderr)."""
    buffer = b""
    while True:
        chunk = await stream.receive_some(4096)
        if not chunk:
            return
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            if text.startswith(READY):
                worker.ready.set()
            else:
                print(text, file=sys.stdout, flush=True)


async def _stop_all(workers: list[Worker]) -> None:
    running = [w.process for w in workers if w.process is not None and w.process.returncode is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    with trio.move_on_after(STOP_SECONDS):
        for process in running:
            await _wait(process)
    for process in running:
        if process.returncode is None:
            process.kill()
            await _wait(process)
