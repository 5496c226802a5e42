"""Two server processes on one database (``knot_rt/cluster``): real ``knot-rt serve`` processes, a station
over a real socket, feed clients on either process.

The test's own harness (one more process-like server, alone) only builds the world through the services
and signs the tokens; the stations, the commands and the feeds go to the two processes under test.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed

from knot_rt.cli import build_parser, cmd_serve
from knot_rt.cluster.link import APPLICATION_NAME
from knot_rt.config import Settings
from knot_rt.launcher import knot_rt_command
from tests.feed_client import FeedClient, open_feed
from tests.server_processes import ServerProcess, server_env, server_process
from tests.station_client import next_call, station_socket, unlock_by_operator
from tests.support import Harness, bearer, eventually, open_test_session
from tests.test_reports import make_world, open_report
from tests.test_stations import Site, make_site


@asynccontextmanager
async def two_processes(settings: Settings, tmp_path: Path) -> AsyncIterator[tuple[ServerProcess, ServerProcess]]:
    async with server_process(settings, tmp_path, "a") as first, server_process(settings, tmp_path, "b") as second:
        yield first, second


async def post(base_url: str, path: str, token: str, body: dict[str, Any] | None = None) -> httpx.Response:
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as client:
        return await client.post(f"/api/application{path}", json=body, headers=bearer(token))


async def test_an_unlock_through_one_process_reaches_a_station_on_the_other(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    site: Site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    async with two_processes(settings, tmp_path) as (a, b):
        async with station_socket(a.station_url, station_id, secret) as station, \
                open_feed(b.base_url, site.operator_token) as feed:
            assert (await feed.subscribe(f"station:{station_id}"))["code"] == 0
            await station.boot()
            await station.state({1: 101, 2: None, 3: 102, 4: None})
            command, response = await unlock_by_operator(b.base_url, site.operator_token, station, station_id, 1)
            assert response.status_code == 200, response.text
            assert response.json()["data"]["unlock"] == command[3]["unlock"]
            await station.call("unlocked", {"spot": 1, "unlock": command[3]["unlock"], "vehicle": 101})
            assert (await station.call("locked", locked(2, 103)))[0] == 3
            await station.call("unexpected-unlock", {"spot": 3})
            # A command for the station through B that the station refuses: its code crosses back.
            refused: list[httpx.Response] = []

            async def ping() -> None:
                refused.append(await post(b.base_url, f"/stations/{station_id}/reboot", site.operator_token))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping)
                reboot = await next_call(station)
                await station.answer(reboot, {"status": "rejected"})
            assert (refused[0].status_code, refused[0].json()["code"]) == (409, 41)
            events = await events_up_to_the_last(harness, feed, f"station:{station_id}")
    written = await harness.db.fetch(  # (the station.offline of its going away is not awaited)
        "SELECT seq, event FROM feed_events WHERE topic = $1 AND seq <= $2 ORDER BY seq", f"station:{station_id}",
        events[-1]["seq"],
    )
    # Every event the station's process wrote, in order, none twice, to a subscriber of the other process.
    assert [(e["seq"], e["event"]) for e in events] == [(r["seq"], r["event"]) for r in written]
    unlocked = [e for e in events if e["event"] == "spot.unlocked" and e["data"].get("unlock") == command[3]["unlock"]]
    assert len(unlocked) == 1 and unlocked[0]["data"]["spot"] == 1


def locked(spot: int, vehicle: int) -> dict[str, Any]:
    return {"spot": spot, "vehicle": vehicle, "time": int(time.time() * 1000), "cache_accepted": False}


async def events_up_to_the_last(harness: Harness, feed: FeedClient, topic: str) -> list[dict[str, Any]]:
    """The feed's events of ``topic`` until it has had the last one written (bounded wait)."""
    last = await harness.db.fetchval("SELECT last_seq FROM feed_topics WHERE topic = $1", topic)
    found: list[dict[str, Any]] = []
    while not found or found[-1]["seq"] < last:
        found += [e for e in await feed.events(1, timeout=20) if e["topic"] == topic]
    return found


async def test_logout_limits_and_catalog_changes_reach_every_process(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    await harness.create_app_label()
    user = await harness.create_user("rider@example.com")
    token = await open_test_session(harness, user)
    network = await harness.make.network()
    operator = await harness.create_user("operator@example.com", perms=[("clusters", True)], networks=[network])
    operator_token = await open_test_session(harness, operator)
    async with two_processes(settings, tmp_path) as (a, b):
        # Logout through A closes the feed socket held by B, and the token is refused by both at once.
        async with open_feed(b.base_url, token) as feed:
            assert (await feed.subscribe("user"))["code"] == 0
            response = await post(a.base_url, "/logout", token)
            assert response.status_code == 200, response.text
            closed: ConnectionClosed | None = None
            with trio.fail_after(10):
                try:
                    while True:
                        await feed.ws.get_message()
                except ConnectionClosed as exc:
                    closed = exc
            assert closed is not None and closed.reason is not None and closed.reason.code == 4401
        for server in (a, b):
            async with httpx.AsyncClient(base_url=server.base_url) as client:
                refused = await client.get("/api/application/reports", headers=bearer(token))
            assert (refused.status_code, refused.json()["code"]) == (401, 3)
        # Wrong passwords spread over both count against one limit (10 a minute per address).
        answers = []
        for server in [a] * 6 + [b] * 5:
            async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as client:
                answer = await client.post("/api/application/login", json={
                    "email": "rider@example.com", "password": "not the password", "app_label": "knot"})
            answers.append(answer.status_code)
        assert answers == [401] * 10 + [429], answers
        # A cluster created by another process (here the test's) is on both maps without waiting for a reload.
        created = await harness.make.cluster(network, "Nouvelle gare", 48.6, 7.7)
        for server in (a, b):
            async with httpx.AsyncClient(base_url=server.base_url) as client:

                async def seen(client: httpx.AsyncClient = client) -> bool:
                    found = await client.get(f"/api/application/clusters/{created}", headers=bearer(operator_token))
                    return found.status_code == 200

                await eventually(seen, timeout=10)


async def test_a_station_moves_when_its_process_dies_with_no_event_lost_or_applied_twice(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    site: Site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    topic = f"station:{station_id}"
    async with server_process(settings, tmp_path, "b") as b, open_feed(b.base_url, site.operator_token) as feed:
        assert (await feed.subscribe(topic))["code"] == 0
        async with server_process(settings, tmp_path, "a") as a:
            async with station_socket(a.station_url, station_id, secret) as station:
                await station.boot()
                assert (await station.call("locked", locked(1, 101), call_id="c-1"))[0] == 3
                # A call sent, then the process holding the station dies before the station reads its answer.
                await station.send([2, "c-2", "locked", locked(2, 102)])
                await eventually(lambda: _recorded(harness, station_id, "c-2"))
                a.kill()
                with trio.fail_after(10):
                    try:
                        while True:
                            await station.receive()
                    except (ConnectionClosed, trio.TooSlowError):
                        pass
        # The station reconnects, to B this time, and sends its unanswered call again.
        async with station_socket(b.station_url, station_id, secret) as station:
            await station.boot()
            again = await station.call("locked", locked(2, 102), call_id="c-2")
            assert again[0] == 3, again  # answered from the record: applied once
            assert (await station.call("locked", locked(3, 103), call_id="c-3"))[0] == 3
            async with httpx.AsyncClient(base_url=b.base_url) as client:
                view = await client.get(f"/api/application/stations/{station_id}",
                                        headers=bearer(site.operator_token))
            assert view.status_code == 200, view.text
            spots = {s["spot"]: s["vehicle"] for s in view.json()["data"]["spots"]}
            assert (spots[1], spots[2], spots[3]) == (101, 102, 103)
            events = [e for e in await feed.events(6, timeout=20) if e["event"] == "spot.locked"]
            while len(events) < 3:
                events += [e for e in await feed.events(1, timeout=20) if e["event"] == "spot.locked"]
    assert [e["data"]["spot"] for e in events] == [1, 2, 3]  # spot 2 once, in order
    rows = await harness.db.fetch(
        "SELECT seq, event, data FROM feed_events WHERE topic = $1 AND event = 'spot.locked' ORDER BY seq", topic
    )
    assert [r["data"]["spot"] for r in rows] == [1, 2, 3]


async def _recorded(harness: Harness, station_id: int, message_id: str) -> bool:
    found = await harness.db.fetchval(
        "SELECT count(*) FROM station_messages WHERE station_id = $1 AND message_id = $2", station_id, message_id
    )
    return bool(found)


async def test_serve_with_two_workers_shares_its_ports(harness: Harness, settings: Settings, tmp_path: Path) -> None:
    """``knot-rt serve --workers 2``: one HTTP port and one gateway port for both processes; whichever
    worker a request lands on, the station's commands reach it; SIGTERM stops them all."""
    site: Site = await make_site(harness, stations=1)
    station_id, secret = site.stations[0]
    receive, send = os.pipe()
    process = await trio.lowlevel.open_process(
        [*knot_rt_command(), "serve", "--workers", "2"], env=server_env(settings, tmp_path / "w"), stdout=send,
        stderr=subprocess.DEVNULL,
    )
    os.close(send)
    try:
        async with trio.lowlevel.FdStream(receive) as stream:
            banner = b""
            with trio.fail_after(90):
                while b"vehicle gateway:" not in banner:
                    chunk = await stream.receive_some(4096)
                    assert chunk, banner
                    banner += chunk
            lines = banner.decode().splitlines()
            api = next(line.split()[2] for line in lines if line.startswith("knot_rt API:"))
            base_url = api.removesuffix("/api/application/")
            gateway = next(line.split()[-1] for line in lines if line.startswith("station gateway:"))
            async with station_socket(gateway, station_id, secret) as station:
                await station.boot()
                answered = 0
                pings: list[httpx.Response] = []

                async def ping() -> None:
                    pings.append(await post(base_url, f"/stations/{station_id}/ping", site.operator_token))

                for _ in range(6):  # a new connection each time: they land on either worker

                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(ping)
                        call = await next_call(station)
                        assert call[2] == "ping", call
                        await station.answer(call, {})
                    assert pings[-1].status_code == 200, pings[-1].text
                    answered += 1
            assert answered == 6
            workers = await harness.db.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1",
                APPLICATION_NAME,
            )
            assert workers == 2
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(40):
                await process.wait()
            assert process.returncode == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_chat_between_a_rider_and_an_agent_on_two_processes(
    harness: Harness, settings: Settings, tmp_path: Path
) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    topic = f"report:{report_id}"
    async with two_processes(settings, tmp_path) as (a, b), \
            open_feed(a.base_url, world.rider) as rider_feed, open_feed(b.base_url, world.agent) as agent_feed:
        assert (await rider_feed.subscribe(topic))["code"] == 0
        assert (await agent_feed.subscribe(topic))["code"] == 0
        # The rider types on A: the agent's feed on B shows it (an ephemeral event, never stored).
        assert (await rider_feed.request({"type": "typing", "topic": topic}))["code"] == 0
        (typing,) = await agent_feed.events(1)
        assert typing["event"] == "typing" and typing["data"]["side"] == "user" and "seq" not in typing
        # The agent answers through B, the rider answers through A: both feeds get both, in one order.
        answer = await post(b.base_url, f"/reports/{report_id}/messages", world.agent, {"message": "On my way"})
        assert answer.status_code == 200, answer.text
        reply = await post(a.base_url, f"/reports/{report_id}/messages", world.rider, {"message": "Thanks"})
        assert reply.status_code == 200, reply.text

        async def messages(feed: FeedClient) -> list[tuple[int, str]]:
            found: list[tuple[int, str]] = []
            while len(found) < 2:
                found += [(e["seq"], e["data"]["message"]) for e in await feed.events(1, timeout=20)
                          if e["event"] == "message.created"]
            return found

        seen_by_rider = await messages(rider_feed)
        seen_by_agent = await messages(agent_feed)
    assert [text for _, text in seen_by_rider] == ["On my way", "Thanks"]
    assert seen_by_agent == seen_by_rider


async def test_serve_refuses_worker_arguments_it_cannot_use(
    settings: Settings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The hidden worker flags take only inherited listening TCP sockets, and --workers a sane count: anything
    else is one clear line and exit code 2, never a traceback or a fork bomb. Once through the command, the
    other cases through its function in this process (the sockets are this process's)."""
    with trio.fail_after(60):
        result = await trio.run_process(
            [*knot_rt_command(), "serve", "--http-fd", "999", "--gateway-fd", "998"],
            env=server_env(settings, tmp_path), capture_stdout=True, capture_stderr=True, check=False,
            stdin=subprocess.DEVNULL,
        )
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr, stderr
    assert stderr.strip() == "knot-rt serve: --http-fd 999 is not a listening TCP socket (Bad file descriptor)"

    bound = socket.socket()  # bound, never listening
    bound.bind(("127.0.0.1", 0))
    unix, other = socket.socketpair()
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    listening.listen()
    cases = {
        ("--http-fd", str(bound.fileno()), "--gateway-fd", str(bound.fileno())): "not listening",
        ("--http-fd", str(unix.fileno()), "--gateway-fd", str(unix.fileno())): "not a TCP socket",
        ("--http-fd", str(listening.fileno()), "--gateway-fd", str(unix.fileno())): "--gateway-fd",
        ("--http-fd", str(listening.fileno())): "--http-fd and --gateway-fd go together",
        ("--workers", "0"): "--workers takes 1 to",
        ("--workers", "100000"): "--workers takes 1 to",
    }
    try:
        for arguments, expected in cases.items():
            assert cmd_serve(build_parser().parse_args(["serve", *arguments])) == 2, arguments
            stderr = capsys.readouterr().err
            assert expected in stderr and len(stderr.strip().splitlines()) == 1, (arguments, stderr)
    finally:
        for sock in (bound, unix, other, listening):
            sock.close()
