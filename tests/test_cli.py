"""The ``knot-rt`` command, run as a subprocess: accounts, demo data, OpenAPI, serve and clean shutdown."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from contextlib import suppress
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from argon2 import PasswordHasher

KNOT_RT = str(Path(sys.executable).with_name("knot-rt"))
START_TIMEOUT = 120  # seconds; generous: the embedded case runs initdb first
STOP_TIMEOUT = 30

# ROUTES.md rows 1, 21-23 and 28-45, then the account routes the spec does not list.
EXPECTED_ROUTES = [
    ("GET", "/api/application/app-labels/store-url"),  # 1
    ("POST", "/api/application/consents"),  # 21
    ("GET", "/api/application/consents/types"),  # 22
    ("POST", "/api/application/consents/unsubscribe"),  # 23
    ("POST", "/api/application/users/email/change"),  # 28
    ("GET", "/api/application/users/email/change"),  # 29
    ("PUT", "/api/application/users/email"),  # 30
    ("POST", "/api/application/users/email/confirmation"),  # 31
    ("PUT", "/api/application/users/email/confirmation"),  # 32
    ("GET", "/api/application/faq"),  # 33
    ("GET", "/api/application/announcements/global"),  # 34
    ("POST", "/api/application/login"),  # 35
    ("POST", "/api/application/login/check"),  # 36
    ("POST", "/api/application/login/refresh"),  # 37
    ("POST", "/api/application/login/apple"),  # 38
    ("POST", "/api/application/login/facebook"),  # 39
    ("POST", "/api/application/login/google"),  # 40
    ("POST", "/api/application/login/password-reset"),  # 41
    ("POST", "/api/application/login/2fa"),  # 42
    ("POST", "/api/application/login/2fa/generate"),  # 43
    ("POST", "/api/application/login/2fa/verify"),  # 44
    ("POST", "/api/application/logout"),  # 45
    ("POST", "/api/application/users"),
    ("GET", "/api/application/users"),
    ("PUT", "/api/application/users/password"),
]

DEMO_TABLES = [
    "organizations", "app_labels", "networks", "network_app_labels", "users", "user_permissions", "ous",
    "consent_types", "faq_categories", "faq_sub_categories", "faq_contents", "announcements",
]


def cli_env(data_dir: Path, database_url: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PORT", "KNOT_STATION_PORT")}
    env.update({"KNOT_DATA_DIR": str(data_dir), "PYTHONUNBUFFERED": "1", **extra})
    if database_url is not None:
        env["DATABASE_URL"] = database_url
    return env


def knot_rt(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KNOT_RT, *args], env=env, capture_output=True, text=True, timeout=STOP_TIMEOUT * 4,
                          check=False)


def query(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    async def run() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(url)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
            return rows
        finally:
            await conn.close()

    return asyncio.run(run())


def test_user_create(database_url: str, data_dir: Path) -> None:
    # Raw SQL: this test runs no service (only the command, as a subprocess) and no command makes a network.
    network = query(database_url, "INSERT INTO networks (name) VALUES ('Lyon') RETURNING id")[0]["id"]
    env = cli_env(data_dir, database_url)
    result = knot_rt(env, "user", "create", "--email", "Op@Example.com", "--password", "operator password",
                     "--perm", "stations:write", "--perm", "maintenance", "--network", str(network))
    assert result.returncode == 0, result.stderr
    created = json.loads(result.stdout)
    assert created["email"] == "op@example.com"

    user = query(database_url, "SELECT * FROM users WHERE id = $1", created["user_id"])[0]
    assert user["email"] == "op@example.com"
    assert user["email_confirmed_at"] is not None
    assert PasswordHasher().verify(user["password_hash"], "operator password")
    perms = query(
        database_url,
        """SELECT p.perm_key, p.write, array_agg(n.network_id) AS networks
           FROM user_permissions p JOIN ou_networks n ON n.ou_id = p.ou_id
           WHERE p.user_id = $1 GROUP BY p.perm_key, p.write""",
        created["user_id"],
    )
    assert {(p["perm_key"], p["write"], tuple(p["networks"])) for p in perms} == {
        ("stations", True, (network,)), ("maintenance", False, (network,)),
    }


def test_user_create_refuses_a_bad_permission(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url)
    result = knot_rt(env, "user", "create", "--email", "x@example.com", "--password", "long enough",
                     "--perm", "bad:mode")
    assert result.returncode == 2
    assert "bad:mode" in result.stderr
    assert query(database_url, "SELECT id FROM users") == []


def test_user_create_reports_failures_in_one_line(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url)
    account = ["user", "create", "--email", "x@example.com", "--password", "long enough"]
    assert knot_rt(env, *account).returncode == 0
    again = knot_rt(env, *account)
    assert again.returncode == 1
    assert "already in use" in again.stderr
    unknown_network = knot_rt(env, "user", "create", "--email", "y@example.com", "--password", "long enough",
                              "--perm", "stations", "--network", "999999")
    assert unknown_network.returncode == 1
    assert "network" in unknown_network.stderr
    assert "Traceback" not in again.stderr + unknown_network.stderr
    assert [row["email"] for row in query(database_url, "SELECT email FROM users")] == ["x@example.com"]


def table_counts(url: str) -> dict[str, int]:
    return {table: query(url, f"SELECT count(*) AS n FROM {table}")[0]["n"] for table in DEMO_TABLES}


def test_demo_is_idempotent(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url)
    first = knot_rt(env, "demo")
    assert first.returncode == 0, first.stderr
    counts = table_counts(database_url)
    assert all(counts[table] > 0 for table in DEMO_TABLES), counts
    second = knot_rt(env, "demo")
    assert second.returncode == 0, second.stderr
    assert json.loads(second.stdout) == json.loads(first.stdout)
    assert table_counts(database_url) == counts


def test_openapi_lists_the_routes(data_dir: Path) -> None:
    result = knot_rt(cli_env(data_dir, None), "openapi")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    present = {(method.upper(), path) for path, operations in document["paths"].items() for method in operations}
    missing = [route for route in EXPECTED_ROUTES if route not in present]
    assert missing == []
    assert document["x-error-codes"]


class Served:
    """``knot-rt serve`` (or ``command``) as a subprocess: its stdout read on a thread, its stderr in a file."""

    def __init__(self, env: dict[str, str], stderr_path: Path, command: list[str] | None = None) -> None:
        self._stderr = stderr_path.open("w")
        self.stderr_path = stderr_path
        self.process = subprocess.Popen(
            command or [KNOT_RT, "serve"], env=env, stdout=subprocess.PIPE, stderr=self._stderr, text=True
        )
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put("")

    def line_starting(self, prefix: str) -> str:
        """The first stdout line starting with ``prefix``, waited for (bounded); the lines read are kept in ``seen``."""
        for line in self.seen:
            if line.startswith(prefix):
                return line
        while True:
            try:
                line = self._lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no {prefix!r} from {self.process.args}: {self.seen} {self.stderr_tail()}")
            if not line:
                pytest.fail(f"{self.process.args} exited with {self.process.wait()}: {self.seen} {self.stderr_tail()}")
            self.seen.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return self.seen[-1]

    def api_base(self) -> str:
        """The bound address, from the banner ``knot_rt API:      http://HOST:PORT/api/application/``."""
        return self.line_starting("knot_rt API:").split()[-1].removesuffix("/api/application/")

    def stderr_tail(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text()[-3000:]

    def terminate(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=STOP_TIMEOUT)

    def __enter__(self) -> Served:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()


def assert_serves_health_then_stops(server: Served) -> None:
    base = server.api_base()
    response = httpx.get(f"{base}/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["code"] == 0
    assert server.terminate() == 0, server.stderr_tail()


def test_serve_answers_health_and_stops_on_sigterm(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url, PORT="0", KNOT_STATION_PORT="0")
    with Served(env, data_dir / "stderr.log") as server:
        assert_serves_health_then_stops(server)


def processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found


def assert_stopped(pgdata: Path) -> None:
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()
    assert processes_mentioning(str(pgdata)) == []


def test_serve_runs_its_own_postgresql(data_dir: Path, pgdata: Path) -> None:
    env = cli_env(data_dir, None, PORT="0", KNOT_STATION_PORT="0")
    with Served(env, data_dir / "stderr.log") as server:
        assert_serves_health_then_stops(server)
    assert_stopped(pgdata)


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    """Until ``path`` exists (or the process ended: then it never will)."""
    while not path.exists() and process.poll() is None:
        with suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.05)


def test_sigterm_during_start_up_stops_the_embedded_postgresql(data_dir: Path, pgdata: Path) -> None:
    env = cli_env(data_dir, None, PORT="0", KNOT_STATION_PORT="0")
    with Served(env, data_dir / "stderr.log") as server:
        wait_for(pgdata / "postmaster.pid", server.process)
        assert server.process.poll() is None, server.stderr_tail()
        assert server.terminate() == 0, server.stderr_tail()
    assert_stopped(pgdata)
