"""``knot-rt station create`` and ``knot-rt station secret``, run as subprocesses against the test database.

The secrets they print are tried against the running station gateway of the
``harness`` (the same database), over a real socket.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trio
from trio_websocket import ConnectionRejected

from protocols import station as wire
from tests.station_client import station_socket
from tests.support import Harness

KNOT_RT = str(Path(sys.executable).with_name("knot-rt"))
TIMEOUT = 60  # seconds; a run takes about one


def cli_env(database_url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PORT", "KNOT_STATION_PORT")}
    env.update(DATABASE_URL=database_url, KNOT_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1")
    return env


async def knot_rt(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [KNOT_RT, *args], env=cli_env(database_url, data_dir), capture_stdout=True, capture_stderr=True,
            check=False,
        )


def printed(result: subprocess.CompletedProcess[bytes]) -> list[dict[str, Any]]:
    assert result.returncode == 0, result.stderr.decode()
    return [json.loads(line) for line in result.stdout.decode().splitlines()]


def error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The one line a failed command writes on stderr."""
    stderr = result.stderr.decode()
    assert result.returncode != 0, result.stdout.decode()
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert result.stdout == b""
    return lines[0]


async def new_cluster(harness: Harness) -> int:
    return await harness.make.cluster(await harness.make.network(), "Gare", 48.58, 7.73)


async def boots(harness: Harness, station_id: int, secret: str, spots: int) -> bool:
    """The gateway lets the station in and accepts its boot."""
    async with station_socket(harness.station_url, station_id, secret) as station:
        answer = await station.boot(spots)
        await station.ws.aclose()
    assert answer[0] == wire.MessageType.RESULT, answer
    return bool(answer[2]["status"] == "accepted")


async def refused_status(harness: Harness, station_id: int, secret: str) -> int:
    with pytest.raises(ConnectionRejected) as rejected:
        async with station_socket(harness.station_url, station_id, secret):
            pass
    return int(rejected.value.status_code)


async def test_station_create_prints_the_station_and_its_secret_opens_the_gateway(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    cluster = await new_cluster(harness)
    stations_file = tmp_path / "stations.txt"
    stations_file.write_text("7:an-earlier-line-kept-as-is\n")
    result = await knot_rt(database_url, tmp_path, "station", "create", "--cluster", str(cluster), "--spots", "3",
                           "--count", "2", "--stations-file", str(stations_file))
    created = printed(result)

    assert len(created) == 2
    for station in created:
        assert set(station) == {"station_id", "secret", "spots"}
        assert isinstance(station["secret"], str) and len(station["secret"]) >= wire.MIN_SECRET_LENGTH
        assert len(station["spots"]) == 3
    assert created[0]["station_id"] != created[1]["station_id"]
    assert created[0]["secret"] != created[1]["secret"]
    assert stations_file.read_text().splitlines() == [
        "7:an-earlier-line-kept-as-is", *(f"{s['station_id']}:{s['secret']}" for s in created)
    ]

    for station in created:
        row = await harness.db.fetchrow(
            "SELECT cluster_id, spot_count, enabled, secret_hash FROM stations WHERE id = $1", station["station_id"]
        )
        assert row is not None
        assert (row["cluster_id"], row["spot_count"], row["enabled"]) == (cluster, 3, True)
        spots = await harness.db.fetch("SELECT id, number FROM spots WHERE station_id = $1 ORDER BY number",
                                       station["station_id"])
        assert [(s["id"], s["number"]) for s in spots] == list(zip(station["spots"], [1, 2, 3], strict=True))
        assert station["secret"] not in row["secret_hash"]  # only a hash is stored

    first = created[0]
    assert await boots(harness, first["station_id"], first["secret"], spots=3)
    assert await refused_status(harness, first["station_id"], "w" * 32) == 401
    assert await refused_status(harness, first["station_id"], created[1]["secret"]) == 401  # another's secret


async def test_station_secret_prints_a_new_secret_and_the_old_one_is_refused(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    cluster = await new_cluster(harness)
    [created] = printed(await knot_rt(database_url, tmp_path, "station", "create", "--cluster", str(cluster),
                                      "--spots", "2"))
    station_id, old = created["station_id"], created["secret"]
    assert await boots(harness, station_id, old, spots=2)

    [rotated] = printed(await knot_rt(database_url, tmp_path, "station", "secret", str(station_id)))
    assert rotated["station_id"] == station_id
    new = rotated["secret"]
    assert isinstance(new, str) and len(new) >= wire.MIN_SECRET_LENGTH and new != old
    assert await refused_status(harness, station_id, old) == 401
    assert await boots(harness, station_id, new, spots=2)


async def test_a_spot_count_out_of_range_fails_with_one_line_and_creates_nothing(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    cluster = await new_cluster(harness)
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def create(spots: str, count: str) -> None:
        results.append(await knot_rt(database_url, tmp_path, "station", "create", "--cluster", str(cluster),
                                     "--spots", spots, "--count", count))

    async with trio.open_nursery() as nursery:  # independent runs, side by side
        for spots, count in (("33", "1"), ("0", "1"), ("4", "0")):
            nursery.start_soon(create, spots, count)
    for result in results:
        assert "--spots" in error_line(result)
    assert await trio.to_thread.run_sync(_count_stations, database_url) == 0



async def test_an_unknown_cluster_fails_with_one_line_and_creates_nothing(database_url: str, tmp_path: Path) -> None:
    result = await knot_rt(database_url, tmp_path, "station", "create", "--cluster", "999999", "--spots", "4")
    assert await trio.to_thread.run_sync(_count_stations, database_url) == 0
    assert "cluster 999999" in error_line(result)


async def test_the_secret_of_an_unknown_station_fails_with_one_line(database_url: str, tmp_path: Path) -> None:
    result = await knot_rt(database_url, tmp_path, "station", "secret", "999999")
    assert "station 999999" in error_line(result)


def _count_stations(database_url: str) -> int:
    import asyncio

    async def work() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            count: int = await conn.fetchval("SELECT count(*) FROM stations")
            return count
        finally:
            await conn.close()

    return asyncio.run(work())
