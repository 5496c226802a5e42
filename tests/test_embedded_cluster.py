"""The embedded PostgreSQL of `make run`: shared by the server and the CLI, durable, private, from any folder."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import asyncpg
import httpx
import pytest

from knot_rt.config import ConfigError, Settings
from knot_rt.pgcluster import SHARED_ROOT, PgCluster
from tests.test_cli import Served, assert_stopped, cli_env, knot_rt, processes_mentioning

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the finding is about running as root")


def fetchval(url: str, sql: str) -> object:
    async def run() -> object:
        conn = await asyncpg.connect(url)
        try:
            return await conn.fetchval(sql)
        finally:
            await conn.close()

    return asyncio.run(run())


def demo_login(base: str) -> httpx.Response:
    """A route that reads the database (the account written by `knot-rt demo`)."""
    return httpx.post(f"{base}/api/application/login", timeout=30, json={
        "email": "rider@knot.demo", "password": "knot-demo-rider", "app_label": "knot"})


def test_a_command_beside_the_server_uses_its_cluster_and_never_stops_it(data_dir: Path, pgdata: Path) -> None:
    env = cli_env(data_dir, None, PORT="0", KNOT_STATION_PORT="0")
    with Served(env, data_dir / "serve.log") as server:
        base = server.api_base()

        demo = knot_rt(env, "demo")
        assert demo.returncode == 0, demo.stderr
        created = knot_rt(env, "station", "create", "--cluster", "1", "--spots", "2")
        assert created.returncode == 0, created.stderr
        station = json.loads(created.stdout)
        rotated = knot_rt(env, "station", "secret", str(station["station_id"]))
        assert rotated.returncode == 0, rotated.stderr

        # The server's database is still there, with what the commands wrote.
        answer = demo_login(base)
        assert answer.status_code == 200, answer.text
        assert answer.json()["code"] == 0
        assert server.process.poll() is None

        second = knot_rt(env, "serve")
        assert second.returncode == 1
        assert second.stderr.strip().splitlines() == [
            f"knot-rt serve: another knot-rt serve (pid {server.process.pid}) is using the data folder "
            f"{data_dir.resolve()}; stop it first or set KNOT_DATA_DIR to another folder"
        ]
        assert demo_login(base).json()["code"] == 0

        assert server.terminate() == 0, server.stderr_tail()
    assert_stopped(pgdata)


def test_a_command_alone_starts_and_stops_the_cluster(data_dir: Path, pgdata: Path) -> None:
    env = cli_env(data_dir, None)
    created = knot_rt(env, "user", "create", "--email", "alone@example.com", "--password", "long enough")
    assert created.returncode == 0, created.stderr
    assert_stopped(pgdata)
    # The data is kept: the next command finds the account.
    again = knot_rt(env, "user", "create", "--email", "alone@example.com", "--password", "long enough")
    assert again.returncode == 1
    assert "already in use" in again.stderr
    assert_stopped(pgdata)


def test_the_cluster_is_durable_and_needs_a_password(data_dir: Path) -> None:
    cluster = PgCluster(data_dir)
    url = cluster.start()
    try:
        assert fetchval(url, "SHOW fsync") == "on"
        assert fetchval(url, "SHOW synchronous_commit") == "on"
        assert fetchval(url, "SHOW full_page_writes") == "on"
        assert fetchval(url, "SHOW listen_addresses") == "127.0.0.1"
        without_password = url.replace(f":{cluster.password}@", "@")
        with pytest.raises(asyncpg.InvalidPasswordError):
            fetchval(without_password, "SELECT 1")
        assert (os.stat(data_dir / "pg-password").st_mode & 0o777) == 0o600
    finally:
        cluster.stop()


def test_users_are_counted_across_cluster_objects(data_dir: Path) -> None:
    first, second = PgCluster(data_dir), PgCluster(data_dir)
    url = first.start()
    assert second.start() == url  # attached, same server
    first.stop()
    assert fetchval(url, "SELECT 1") == 1  # still used by the second
    second.stop()
    assert not (first.pgdata / "postmaster.pid").exists()


@pytest.fixture
def private_home() -> Iterator[Path]:
    """A folder like root's home: mode 0700, so the postgres user cannot enter it."""
    folder = Path(tempfile.mkdtemp(prefix="knot-home-"))
    assert (folder.stat().st_mode & 0o777) == 0o700
    try:
        yield folder
    finally:
        location = folder / "knot" / ".knot-data" / "pg-location"
        if location.exists():
            pgdata = Path(location.read_text().strip())
            if (pgdata / "postmaster.pid").exists():
                PgCluster(folder / "knot" / ".knot-data").stop()
            shutil.rmtree(pgdata.parent, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)


@as_root
def test_serve_as_root_from_a_private_folder(private_home: Path) -> None:
    data_dir = private_home / "knot" / ".knot-data"
    env = cli_env(data_dir, None, PORT="0", KNOT_STATION_PORT="0")
    demo = knot_rt(env, "demo")
    assert demo.returncode == 0, demo.stderr
    with Served(env, private_home / "serve.log") as server:
        assert demo_login(server.api_base()).json()["code"] == 0
        assert server.terminate() == 0, server.stderr_tail()
    pgdata = Path((data_dir / "pg-location").read_text().strip())
    assert pgdata.is_relative_to(SHARED_ROOT)
    assert (pgdata / "PG_VERSION").exists()
    assert not (pgdata / "postmaster.pid").exists()
    assert processes_mentioning(str(pgdata)) == []
    # The user's folder kept its mode.
    assert (private_home.stat().st_mode & 0o777) == 0o700


def test_a_failure_of_the_cluster_is_one_clear_line(data_dir: Path) -> None:
    (data_dir / "pg").mkdir()
    (data_dir / "pg" / "PG_VERSION").write_text("15\n")  # a cluster folder that is not one
    result = knot_rt(cli_env(data_dir, None, PORT="0", KNOT_STATION_PORT="0"), "serve")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("knot-rt serve: PostgreSQL did not start"), result.stderr
    assert "Traceback" not in result.stderr


def test_a_short_secret_key_is_refused(data_dir: Path) -> None:
    result = knot_rt(cli_env(data_dir, None, KNOT_SECRET_KEY="too short"), "demo")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "knot-rt demo: the secret key in KNOT_SECRET_KEY is shorter than 32 bytes"
    )
    (data_dir / "secret_key").write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 32 bytes"):
        Settings(data_dir=data_dir).with_secret()


def test_the_secret_key_is_made_once_even_by_racing_processes(data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir / "fresh")
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: settings.with_secret().secret_key, range(16)))
    assert len(keys) == 1
    path = data_dir / "fresh" / "secret_key"
    assert (os.stat(path).st_mode & 0o777) == 0o600
    assert path.read_text().strip() == keys.pop()
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left


def test_an_unusable_data_folder_is_one_clear_line(data_dir: Path) -> None:
    blocker = data_dir / "file"
    blocker.write_text("")
    result = knot_rt(cli_env(blocker / "data", None), "demo")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"knot-rt demo: cannot write the secret key in {blocker / 'data'}: Not a directory"
    ]


def test_an_unreachable_database_is_one_clear_line(data_dir: Path) -> None:
    result = knot_rt(cli_env(data_dir, "postgresql://knot@127.0.0.1:1/knot"), "demo")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("knot-rt demo: the database cannot be reached: "), result.stderr
