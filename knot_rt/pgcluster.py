"""A private PostgreSQL cluster in a data folder, for `make run`, the CLI and `make test`.

Used when no ``DATABASE_URL`` is given. It runs the machine's PostgreSQL
binaries. PostgreSQL refuses to run as root, so under root the server runs as
the ``postgres`` system user (through ``runuser``) with its folder owned by it.

Choices:

- Shared, counted use. Every process that needs the cluster (``knot-rt serve``,
  a CLI command run beside it, the test harness) calls ``start()``, which starts
  the server or attaches to the one already running on that data folder, and
  ``stop()``, which stops the server only when no other process still uses it.
  Users hold a shared ``flock`` on ``.pg-users.lock``; starts and stops are
  serialised by an exclusive ``flock`` on ``.pg-admin.lock``. Locks die with
  their process, so a crashed user never keeps the cluster pinned, and a server
  left running by a crash is simply attached to next time.
- Where the cluster lives. In ``<data>/pg`` when the ``postgres`` user can reach
  that folder; under root with a data folder inside a private one (a home folder
  with mode 0700), it lives in ``/var/lib/knot-rt/clusters/<hash of the data
  folder>`` instead, and ``<data>/pg-location`` records where. No permission of
  the user's own folders is changed.
- Access. TCP on 127.0.0.1 only, with a password (SCRAM) generated once and kept
  in ``<data>/pg-password`` (mode 0600); the Unix socket lives in a folder only
  the cluster's owner (and root) can enter, and is the one way in without the
  password (used here to set it).
- Durable by default: fsync, synchronous commit and full-page writes stay on.
  ``durable=False`` (test suites only) turns them off for speed.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from .files import write_private_file

log = logging.getLogger(__name__)

ROLE = "knot"
DATABASE = "knot"
SHARED_ROOT = Path("/var/lib/knot-rt/clusters")
LOCK_TIMEOUT = 120.0  # seconds to wait for another process's start or stop of the cluster
_MAX_SOCKET_PATH = 100  # sun_path holds 107 bytes; PostgreSQL appends "/.s.PGSQL.NNNNN"

HBA = """# Written by knot-rt at every start.
# The socket folder is private to the cluster's owner: the socket needs no password.
local   all   all                 trust
host    all   all   127.0.0.1/32  scram-sha-256
host    all   all   ::1/128       scram-sha-256
"""


class PgClusterError(RuntimeError):
    """The embedded cluster cannot be used; the message is one line meant for the user."""


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


class _Lock:
    """An ``flock`` on a file of the data folder, held by this process until released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = None

    def acquire(self, mode: int, *, wait: float = LOCK_TIMEOUT) -> bool:
        """Take the lock (``fcntl.LOCK_SH`` or ``LOCK_EX``); False if not had within ``wait`` seconds."""
        if self._file is None:
            self._file = open(self.path, "a+", encoding="utf-8")  # held until release()
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(self._file, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    self.release()
                    return False
                time.sleep(0.05)

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    @property
    def held(self) -> bool:
        return self._file is not None

    @contextlib.contextmanager
    def exclusive(self, what: str) -> Iterator[None]:
        if not self.acquire(fcntl.LOCK_EX):
            raise PgClusterError(f"another process has been {what} the embedded PostgreSQL for {LOCK_TIMEOUT:.0f} s")
        try:
            yield
        finally:
            self.release()


class PgCluster:
    """initdb on first use, start (or attach to the running server) on a loopback port, stop when the last user leaves."""

    def __init__(self, data_dir: Path, port: int | None = None, *, durable: bool = True) -> None:
        self.data_dir = data_dir.resolve()
        self.durable = durable
        self._wanted_port = port
        self.port = 0
        self.bindir = find_bindir()
        self._user: str | None = None
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PgClusterError("running as root needs a 'postgres' system user") from exc
            self._user = "postgres"
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PgClusterError(f"cannot create the data folder {self.data_dir}: {exc.strerror}") from exc
        self._admin = _Lock(self.data_dir / ".pg-admin.lock")
        self._users = _Lock(self.data_dir / ".pg-users.lock")
        self._password: str | None = None
        self.pgdata = self._locate()

    # Where and how -------------------------------------------------------

    def _locate(self) -> Path:
        """The cluster's folder: ``<data>/pg``, or the shared place when the cluster's owner cannot reach it."""
        pointer = self.data_dir / "pg-location"
        if pointer.exists():
            return Path(pointer.read_text(encoding="utf-8").strip())
        local = self.data_dir / "pg"
        if self._user is None or (local / "PG_VERSION").exists() or self._reachable(self.data_dir):
            return local
        digest = hashlib.sha256(str(self.data_dir).encode()).hexdigest()[:16]
        return SHARED_ROOT / digest / "pg"

    def _reachable(self, folder: Path) -> bool:
        """Whether the cluster's owner can enter ``folder`` (every folder above it included)."""
        probe = subprocess.run(["runuser", "-u", str(self._user), "--", "test", "-x", str(folder)],
                               capture_output=True, check=False)
        return probe.returncode == 0

    @property
    def url(self) -> str:
        return self.admin_url(DATABASE)

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    @property
    def password(self) -> str:
        if self._password is None:
            self._password = write_private_file(self.data_dir / "pg-password", secrets.token_hex(24)).strip()
        return self._password

    def _run(self, *args: str, check: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            cmd = ["runuser", "-u", self._user, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, input=stdin)

    def _chown(self, path: Path) -> None:
        if self._user:
            entry = pwd.getpwnam(self._user)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _socket_dir(self) -> Path:
        sockdir = self.pgdata / "run"
        if len(str(sockdir)) > _MAX_SOCKET_PATH - 16:  # too long for a socket path: a short one, the same each start
            sockdir = Path(tempfile.gettempdir()) / f"knot-pg-{hashlib.sha256(str(self.pgdata).encode()).hexdigest()[:16]}"
        sockdir.mkdir(mode=0o700, exist_ok=True)
        if sockdir.is_symlink() or not sockdir.is_dir():
            raise PgClusterError(f"the socket folder {sockdir} is not a plain folder; remove it")
        os.chmod(sockdir, 0o700)
        self._chown(sockdir)
        return sockdir

    # Start and stop ------------------------------------------------------

    def start(self) -> str:
        """Start the cluster, or attach to the one already running; returns its URL.

        Called again on the same object (after the server was stopped under it), it
        starts the server again on the same port.
        """
        with self._admin.exclusive("starting or stopping"):
            running = self._running_port()
            if running is None:
                self._start_server()
            else:
                self.port = running
                log.info("embedded PostgreSQL running on 127.0.0.1:%s: using it", running)
            if not self._users.held:
                self._users.acquire(fcntl.LOCK_SH)
        return self.url

    def stop(self) -> None:
        """Leave the cluster; stop it if no other process uses it (also when this object never started it)."""
        with self._admin.exclusive("starting or stopping"):
            self._users.release()
            if not self._users.acquire(fcntl.LOCK_EX, wait=0):
                log.info("embedded PostgreSQL still used by another process: left running")
                return
            try:
                if (self.pgdata / "postmaster.pid").exists():
                    self._run("pg_ctl", "-D", str(self.pgdata), "stop", "-m", "fast", "-w", check=False)
            finally:
                self._users.release()

    def _running_port(self) -> int | None:
        """The port of the server running on this folder, or None."""
        pidfile = self.pgdata / "postmaster.pid"
        if not pidfile.exists():
            return None
        status = self._run("pg_ctl", "-D", str(self.pgdata), "status", check=False)
        if status.returncode != 0:
            return None
        lines = pidfile.read_text().splitlines()
        return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None

    def _initdb(self) -> None:
        parent = self.pgdata.parent
        if not parent.exists():
            parent.mkdir(parents=True, mode=0o755)
        if self.pgdata.parent.parent == SHARED_ROOT:
            write_private_file(self.data_dir / "pg-location", f"{self.pgdata}\n")
            log.info("the data folder is not reachable by the postgres user: PostgreSQL data in %s", self.pgdata)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        result = self._run(
            "initdb", "-D", str(self.pgdata), "-U", ROLE, "--auth=trust", "--encoding=UTF8", "--locale=C",
            check=False,
        )
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["unknown error"])[-1]
            raise PgClusterError(f"initdb failed in {self.pgdata}: {reason}")

    def _start_server(self) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb()
        hba = self.pgdata / "pg_hba.conf"
        hba.write_text(HBA)
        self._chown(hba)
        sockdir = self._socket_dir()
        self.port = self.port or self._wanted_port or _free_port()
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={sockdir} " \
                  "-c max_connections=200 -c password_encryption=scram-sha-256"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        result = self._run(
            "pg_ctl", "-D", str(self.pgdata), "-o", options, "-l", str(self.pgdata / "server.log"),
            "-w", "-t", "60", "start", check=False,
        )
        if result.returncode != 0:
            reason = self._log_tail() or result.stderr.strip() or "unknown error"
            raise PgClusterError(f"PostgreSQL did not start (log in {self.pgdata / 'server.log'}): {reason}")
        self._prepare(sockdir)
        log.info("embedded PostgreSQL on 127.0.0.1:%s (data in %s)", self.port, self.pgdata)

    def _log_tail(self) -> str:
        logfile = self.pgdata / "server.log"
        with contextlib.suppress(OSError):
            lines = [line for line in logfile.read_text().splitlines() if "FATAL" in line or "ERROR" in line]
            return lines[-1].strip() if lines else ""
        return ""

    def _prepare(self, sockdir: Path) -> None:
        """Over the private socket: set the role's password, create the database if missing."""
        psql = ["psql", "-h", str(sockdir), "-p", str(self.port), "-U", ROLE, "-d", "postgres", "-v",
                "ON_ERROR_STOP=1", "-qtA"]
        # The password travels on standard input, never on a command line.
        statements = (
            f"ALTER ROLE {ROLE} PASSWORD '{self.password}';\n"
            f"SELECT 'CREATE DATABASE {DATABASE}' WHERE NOT EXISTS "
            f"(SELECT FROM pg_database WHERE datname = '{DATABASE}') \\gexec\n"
        )
        result = self._run(*psql, "-f", "-", check=False, stdin=statements)
        if result.returncode != 0:
            raise PgClusterError(f"preparing the embedded PostgreSQL failed: {result.stderr.strip()}")


class ServeLock:
    """One ``knot-rt serve`` per data folder: an exclusive ``flock`` on ``<data>/.serve.lock`` holding its pid."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir.resolve() / ".serve.lock"
        self._lock = _Lock(self.path)

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self._lock.acquire(fcntl.LOCK_EX, wait=0):
            holder = self.path.read_text(encoding="utf-8").strip() or "unknown"
            raise PgClusterError(
                f"another knot-rt serve (pid {holder}) is using the data folder {self.path.parent}; "
                "stop it first or set KNOT_DATA_DIR to another folder"
            )
        self.path.write_text(f"{os.getpid()}\n", encoding="utf-8")

    def release(self) -> None:
        self._lock.release()
