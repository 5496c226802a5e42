"""A private PostgreSQL cluster in a data folder, for `make run` and `make test`.

Used when no ``DATABASE_URL`` is given. It runs the machine's PostgreSQL
binaries; PostgreSQL refuses to run as root, so under root the server runs as the
``postgres`` system user (through ``runuser``) with the data folder owned by it.
"""

from __future__ import annotations

import glob
import logging
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


class PgClusterError(RuntimeError):
    pass


def find_bindir() -> Path:
    """The folder of the newest installed PostgreSQL server binaries."""
    env = os.environ.get("KNOT_PG_BINDIR")
    candidates = [env] if env else []
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key, reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(str(Path(initdb).resolve().parent))
    for folder in candidates:
        if folder and (Path(folder) / "initdb").exists() and (Path(folder) / "pg_ctl").exists():
            return Path(folder)
    raise PgClusterError(
        "no PostgreSQL server binaries found: install PostgreSQL (Debian: postgresql) or set DATABASE_URL"
    )


def _version_key(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgCluster:
    """initdb on first use, start on a free loopback port, stop on exit."""

    def __init__(self, data_dir: Path, port: int | None = None) -> None:
        self.data_dir = data_dir.resolve()
        self.pgdata = self.data_dir / "pg"
        self.port = port or _free_port()
        self.bindir = find_bindir()
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgClusterError("running as root needs a 'postgres' system user") from exc
            self._user = "postgres"

    @property
    def url(self) -> str:
        return f"postgresql://knot@127.0.0.1:{self.port}/knot"

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://knot@127.0.0.1:{self.port}/{database}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def _chown(self, path: Path) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def start(self) -> str:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            self.pgdata.mkdir(mode=0o700, exist_ok=True)
            self._chown(self.pgdata)
            result = self._run(
                "initdb", "-D", str(self.pgdata), "-U", "knot", "--auth=trust",
                "--encoding=UTF8", "--locale=C", check=False,
            )
            if result.returncode != 0:
                raise PgClusterError(f"initdb failed: {result.stderr.strip()}")
        sockdir = self.pgdata / "run"
        sockdir.mkdir(exist_ok=True)
        self._chown(sockdir)
        self._run("pg_ctl", "-D", str(self.pgdata), "stop", "-m", "immediate", check=False)
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockdir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        result = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(self.pgdata / "server.log"),
            "-w", "-t", "60", "start", check=False,
        )
        if result.returncode != 0:
            log_tail = ""
            logfile = self.pgdata / "server.log"
            if logfile.exists():
                log_tail = logfile.read_text()[-2000:]
            raise PgClusterError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log_tail}")
        self._wait_ready()
        self._ensure_database("knot")
        log.info("embedded PostgreSQL on 127.0.0.1:%s (data in %s)", self.port, self.pgdata)
        return self.url

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            result = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                capture_output=True,
                check=False,
            )
            if result.returncode == 0:
                return
            time.sleep(0.1)
        raise PgClusterError("PostgreSQL did not become ready")

    def _ensure_database(self, name: str) -> None:
        psql = [str(self.bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "knot", "-d", "postgres",
                "-tAc"]
        exists = subprocess.run([*psql, f"SELECT 1 FROM pg_database WHERE datname = '{name}'"],
                                capture_output=True, text=True, check=True)
        if exists.stdout.strip() != "1":
            subprocess.run([*psql, f'CREATE DATABASE "{name}"'], capture_output=True, text=True, check=True)

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.pgdata), "stop", "-m", "fast", "-w", check=False)
