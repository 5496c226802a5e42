"""Test harness: a real PostgreSQL, the real server on port 0, a real SMTP sink.

PostgreSQL: ``DATABASE_URL`` when set, else a private cluster started for the
session. Migrations are applied once to a template database; every test gets
a fresh database copied from it.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
import trio_asyncio

from knot_rt.config import RateLimits, Settings
from knot_rt.db import apply_migrations
from knot_rt.pgcluster import PgCluster
from tests.stripe_server import StripeServer, running_localstripe
from tests.support import Harness, SmtpSink, running, serving

# One template per test run, so that runs sharing a server never drop each other's template.
TEMPLATE = f"knot_test_template_{uuid.uuid4().hex[:8]}"


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    given = os.environ.get("DATABASE_URL")
    if given:
        yield given
        return
    folder = Path(tempfile.mkdtemp(prefix="knot-test-pg-"))
    os.chmod(folder, 0o755)
    cluster = PgCluster(folder, durable=False)  # a test cluster: speed over crash safety
    url = cluster.start()
    try:
        yield url
    finally:
        cluster.stop()
        shutil.rmtree(folder, ignore_errors=True)


def _on_server(pg_server_url: str, *statements: str) -> None:
    """Run statements on the server's own database, one by one (CREATE and DROP DATABASE refuse a transaction)."""
    async def run() -> None:
        admin = await asyncpg.connect(pg_server_url)
        try:
            for statement in statements:
                await admin.execute(statement)
        finally:
            await admin.close()

    asyncio.run(run())


@pytest.fixture(scope="session")
def template_url(pg_server_url: str) -> Iterator[str]:
    _on_server(pg_server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}"', f'CREATE DATABASE "{TEMPLATE}"')

    async def migrate() -> None:
        conn = await asyncpg.connect(_with_database(pg_server_url, TEMPLATE))
        try:
            await apply_migrations(conn)
        finally:
            await conn.close()

    asyncio.run(migrate())
    yield _with_database(pg_server_url, TEMPLATE)
    _on_server(pg_server_url, f'DROP DATABASE IF EXISTS "{TEMPLATE}" WITH (FORCE)')


@pytest.fixture
def database_url(pg_server_url: str, template_url: str) -> Iterator[str]:
    name = f"knot_test_{uuid.uuid4().hex[:12]}"
    _on_server(pg_server_url, f'CREATE DATABASE "{name}" TEMPLATE "{TEMPLATE}"')
    yield _with_database(pg_server_url, name)
    _on_server(pg_server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with running(SmtpSink()) as sink:
        yield sink


@pytest.fixture(scope="session")
def stripe_server() -> Iterator[StripeServer]:
    """localstripe, a Stripe-compatible fake server, on a free loopback port for the session (tests/stripe_server.py).

    A test module that pays overrides ``settings`` with ``stripe=stripe_server.config()``.
    """
    with running_localstripe() as server:
        yield server


@pytest.fixture
def rate_limits() -> RateLimits:
    """Override in a test module to tighten limits."""
    return RateLimits()


@pytest.fixture
def settings(database_url: str, smtp_sink: SmtpSink, rate_limits: RateLimits, tmp_path: Path) -> Settings:
    return Settings(
        host="127.0.0.1",
        port=0,
        station_port=0,
        database_url=database_url,
        smtp_url=smtp_sink.url,
        secret_key="test-secret-" + uuid.uuid4().hex,
        data_dir=tmp_path / "data",
        public_url="http://knot.test",
        rate_limits=rate_limits,
        mail_retry_seconds=0.2,
    )


@pytest.fixture
async def harness(settings: Settings) -> AsyncIterator[Harness]:
    async with trio_asyncio.open_loop():
        async with serving(settings) as harness:
            yield harness


@pytest.fixture
def client(harness: Harness) -> httpx.AsyncClient:
    return harness.client


@pytest.fixture
def data_dir() -> Iterator[Path]:
    """A data folder the ``postgres`` user can traverse (pytest's tmp_path is private to root)."""
    folder = Path(tempfile.mkdtemp(prefix="knot-cli-"))
    os.chmod(folder, 0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pgdata(data_dir: Path) -> Iterator[Path]:
    """The embedded cluster's folder; stopped after the test if the service left it running."""
    folder = data_dir / "pg"
    yield folder
    if (folder / "postmaster.pid").exists():
        PgCluster(data_dir).stop()
