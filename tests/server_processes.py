"""Real ``knot-rt serve`` processes for the tests of several processes on one database.

Each is a child process of the test (so that a test can kill one), started on port 0 for HTTP and for its
device gateway, with the test's database, SMTP sink and secret key (a token made by the test's harness is
valid on every process). Its banner tells where it listens. Its log goes to a file, printed when a test
fails to start it.
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from knot_rt.config import Settings
from knot_rt.launcher import API_BANNER, GATEWAY_BANNER, knot_rt_command

START_SECONDS = 60.0


@dataclass
class ServerProcess:
    process: trio.Process
    base_url: str  # http://127.0.0.1:PORT
    station_url: str  # ws://127.0.0.1:PORT/api/stations/ws
    log: Path

    @property
    def vehicle_url(self) -> str:
        return self.station_url.replace("/api/stations/ws", "/api/vehicles/ws")

    def kill(self) -> None:
        """As a crash would: no clean-up, its connections (and its advisory locks) end with it."""
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)


def server_env(settings: Settings, data_dir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "DATABASE_URL": settings.database_url or "",
        "KNOT_SECRET_KEY": settings.secret_key,
        "KNOT_DATA_DIR": str(data_dir),
        "KNOT_HOST": "127.0.0.1",
        "PORT": "0",
        "KNOT_STATION_PORT": "0",
        "SMTP_URL": settings.smtp_url or "",
        "KNOT_PUBLIC_URL": settings.public_url,
        "KNOT_CLUSTER": "1",
        **extra,
    })
    return env


@asynccontextmanager
async def server_process(settings: Settings, folder: Path, name: str) -> AsyncIterator[ServerProcess]:
    """One ``knot-rt serve`` in the cluster mode, until the block ends (then stopped, or killed)."""
    data_dir = folder / name
    data_dir.mkdir(parents=True, exist_ok=True)
    log = folder / f"{name}.log"
    receive, send = os.pipe()
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        process = await trio.lowlevel.open_process(
            [*knot_rt_command(), "serve"], env=server_env(settings, data_dir), stdout=send, stderr=log_fd,
        )
    finally:
        os.close(log_fd)
    os.close(send)
    stream = trio.lowlevel.FdStream(receive)
    api = gateway = ""
    try:
        with trio.fail_after(START_SECONDS):
            buffer = b""
            while not (api and gateway):
                chunk = await stream.receive_some(4096)
                if not chunk:
                    raise RuntimeError(f"{name} ended before serving:\n{log.read_text()[-3000:]}")
                buffer += chunk
                *lines, rest = buffer.split(b"\n")
                buffer = rest
                for raw in lines:
                    line = raw.decode(errors="replace")
                    if line.startswith(API_BANNER) and not api:
                        api = line.split()[-1].removesuffix("/api/application/")
                    elif line.startswith(GATEWAY_BANNER):
                        gateway = line.split()[-1]
        yield ServerProcess(process, api, gateway, log)
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                with trio.move_on_after(15):
                    await process.wait()
                if process.returncode is None:
                    process.kill()
                    await process.wait()
            await stream.aclose()
