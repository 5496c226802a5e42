"""Chat benchmark: a message posted -> the other side's feed push, with 1,000 open chats.

Run: ``make bench-chat`` (or ``.venv/bin/python -m bench.chat --chats 1000 --messages 300``).

It starts a real ``knot-rt serve`` process (on ``DATABASE_URL``, or on a private
PostgreSQL cluster of its own) with ``--chats`` reports, each of its own rider, on
one network served by its support agents. Every rider connects its feed socket
and subscribes to its ``report:<id>`` topic; each agent's socket subscribes to
``support:<network_id>`` (every report's change) — ``--chats`` chats open at once.
Each chat is opened with a message of its rider (so every chat actor is
started, as in a live afternoon), then, one message at a time, round robin over
the chats and alternating the side (``--agents`` agents taking turns, each with its
own socket, so that no one exceeds the per-user limit of 30 messages a minute):

- the agent posts (``POST /reports/{id}/messages``) -> ``message.created`` on
  the rider's socket;
- the rider posts -> ``report.updated`` for that report on the first agent's socket;

each timed from the request to the push, p50 and p99. Beside it, in the same
run, a bare trio-websocket relay with as many receiving sockets open: a sender
socket -> the relay -> the addressed receiver's socket, one at a time — the
floor of the transport alone.

Sessions come from the accounts service directly (the login route's rate
limit would make a bench of the limiter). Only loopback addresses are used;
every loop is bounded in count, and each push waited for at most
``EVENT_SECONDS`` (counted lost past that), the whole phase by ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import trio
from trio_websocket import WebSocketConnection, open_websocket_url, serve_websocket

from bench.rents import server_warnings, with_services
from bench.stations import Server, database, report_latency, seed
from knot_rt.accounts.service import LoginIntent
from knot_rt.accounts.store import Device, insert_user
from knot_rt.context import Services
from knot_rt.services.passwords import Passwords
from knot_rt.services.permissions import grant
from protocols.feed import Topic

API = "/api/application"
EVENT_SECONDS = 20.0
CONNECT_RATE = 100.0  # feed sockets opened per second at start


@dataclass(frozen=True, slots=True)
class Chat:
    report_id: int
    rider_token: str


def chat_world(server: Server, url: str, network: int, count: int, agents: int) -> tuple[list[str], list[Chat]]:
    """``count`` riders with a report each on ``network`` and ``agents`` support agents of it, with their tokens."""

    async def make(services: Services) -> tuple[list[str], list[Chat]]:
        password_hash = await Passwords().hash("bench-chat-password")

        async def create(conn: asyncpg.Connection) -> tuple[list[int], list[tuple[int, int]]]:
            label = await conn.fetchval("SELECT id FROM app_labels WHERE name = 'knot'")
            team = []
            for n in range(agents):
                agent = await insert_user(conn, f"agent{n}@bench.example", password_hash, confirmed=True,
                                          app_label=label)
                await grant(conn, agent, "support", write=True, networks=[network])
                team.append(agent)
            riders = []
            for n in range(count):
                rider = await insert_user(conn, f"chat{n}@bench.example", password_hash, confirmed=True,
                                          app_label=label)
                report = await conn.fetchval(
                    "INSERT INTO reports (user_id, network_id) VALUES ($1, $2) RETURNING id", rider, network
                )
                riders.append((rider, report))
            return team, riders

        team, riders = await services.db.transaction(create)

        async def token(user: int) -> str:
            session = await services.accounts.open_session(user, LoginIntent("app", None, Device(id=f"bench-{user}")))
            return str(session["token"])

        return [await token(a) for a in team], [Chat(report, await token(rider)) for rider, report in riders]

    return with_services(server, url, make)


@dataclass
class Run:
    agent_to_rider: list[float] = field(default_factory=list)  # POST (agent) -> message.created on the rider
    rider_to_agent: list[float] = field(default_factory=list)  # POST (rider) -> report.updated on the agent
    refused: dict[str, int] = field(default_factory=dict)
    lost: int = 0
    elapsed: float = 0.0


class Inbox:
    """One socket's pushes, read in the background; ``wait(key)`` returns once a push with that key came."""

    def __init__(self) -> None:
        self.waiting: dict[Any, trio.Event] = {}

    def expect(self, key: Any) -> trio.Event:
        event = self.waiting[key] = trio.Event()
        return event

    async def read(self, ws: WebSocketConnection, key_of: Any) -> None:
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") == "event" and (key := key_of(frame)) is not None:
                event = self.waiting.pop(key, None)
                if event is not None:
                    event.set()


async def subscribe(ws: WebSocketConnection, topic: str) -> None:
    await ws.send_message(json.dumps({"type": "subscribe", "topic": topic, "ref": "s"}))
    with trio.fail_after(EVENT_SECONDS):
        while True:
            frame = json.loads(await ws.get_message())
            if frame.get("type") == "reply":
                if frame.get("code") != 0:
                    raise RuntimeError(f"subscribe {topic}: {frame}")
                return


async def post(client: httpx.AsyncClient, run: Run, token: str, report: int, text: str) -> bool:
    response = await client.post(f"{API}/reports/{report}/messages", json={"message": text},
                                 headers={"Authorization": f"Bearer {token}"})
    if response.status_code != 200:
        key = f"{response.status_code}/{response.json().get('code') if response.content else None}"
        run.refused[key] = run.refused.get(key, 0) + 1
        return False
    return True


async def chats(server: Server, network: int, agents: list[str], chats: list[Chat], args: argparse.Namespace
                ) -> Run:
    ws_url = server.base_url.replace("http", "ws") + f"{API}/ws"
    run = Run()
    rider_inboxes = [Inbox() for _ in chats]
    agent_inbox = Inbox()

    def rider_key(frame: dict[str, Any]) -> Any:
        data = frame.get("data", {})
        return data.get("body") or data.get("message") if frame.get("event") == "message.created" else None

    def agent_key(frame: dict[str, Any]) -> Any:
        data = frame.get("data", {})
        return data.get("message") if frame.get("event") == "report.updated" else None

    async with trio.open_nursery() as nursery:

        async def connect(token: str, topic: str, inbox: Inbox, key_of: Any,
                          task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            async with open_websocket_url(ws_url, extra_headers=[("Authorization", f"Bearer {token}")]) as ws:
                await subscribe(ws, topic)
                task_status.started()
                await inbox.read(ws, key_of)

        # Every agent's socket gets every report.updated of the network; the first one's are timed.
        await nursery.start(connect, agents[0], str(Topic.support(network)), agent_inbox, agent_key)
        for agent in agents[1:]:
            await nursery.start(connect, agent, str(Topic.support(network)), Inbox(), agent_key)
        with trio.fail_after(60 + len(chats) / CONNECT_RATE):
            for chat, inbox in zip(chats, rider_inboxes, strict=True):
                await nursery.start(connect, chat.rider_token, str(Topic.report(chat.report_id)), inbox, rider_key)
                await trio.sleep(1 / CONNECT_RATE)
        limits = httpx.Limits(max_connections=8)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30, limits=limits) as client:
            # Every chat opened by its rider: its actor started, as in a live afternoon.
            with trio.fail_after(60 + len(chats) / 10):
                for n, chat in enumerate(chats):
                    await post(client, run, chat.rider_token, chat.report_id, f"hello {n}")
            run.refused.clear()
            started = time.perf_counter()
            with trio.move_on_after(args.seconds):
                for n in range(args.messages):
                    chat, inbox = chats[n % len(chats)], rider_inboxes[n % len(chats)]
                    from_agent = n % 2 == 0
                    text = f"m{n} {'agent' if from_agent else 'rider'}"
                    arrived = (inbox if from_agent else agent_inbox).expect(text)
                    since = time.perf_counter()
                    # The agents take turns: each stays under the per-user message limit (30 a minute).
                    author = agents[n // 2 % len(agents)] if from_agent else chat.rider_token
                    if not await post(client, run, author, chat.report_id, text):
                        continue
                    with trio.move_on_after(EVENT_SECONDS) as waited:
                        await arrived.wait()
                    if waited.cancelled_caught:
                        run.lost += 1
                        continue
                    (run.agent_to_rider if from_agent else run.rider_to_agent).append(time.perf_counter() - since)
            run.elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    return run


async def relay_round_trips(receivers: int, count: int) -> list[float]:
    """The floor: a sender socket -> a bare trio-websocket relay -> the addressed one of ``receivers`` sockets."""
    peers: dict[int, Any] = {}
    all_in = trio.Event()

    async def handler(request: Any) -> None:
        ws = await request.accept()
        role = request.path.strip("/")
        try:
            if role == "send":
                while True:
                    message = await ws.get_message()
                    await peers[int(message.split(" ", 1)[0])].send_message(message)
            else:
                peers[int(role)] = ws
                if len(peers) == receivers:
                    all_in.set()
                await ws.get_message()  # held open until the run is over
        except Exception:  # the run is over
            return

    latencies: list[float] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(serve_websocket, handler, "127.0.0.1", 0, None)
        base = f"ws://127.0.0.1:{server.port}"
        sockets: list[WebSocketConnection] = []

        async def hold(n: int, task_status: trio.TaskStatus[WebSocketConnection]) -> None:
            async with open_websocket_url(f"{base}/{n}") as ws:
                task_status.started(ws)
                await trio.sleep_forever()

        with trio.fail_after(120):
            for n in range(receivers):
                sockets.append(await nursery.start(hold, n))
            await all_in.wait()
            async with open_websocket_url(base + "/send") as sender:
                for n in range(count):
                    target = n % receivers
                    started = time.perf_counter()
                    await sender.send_message(f"{target} message {n}")
                    await sockets[target].get_message()
                    latencies.append(time.perf_counter() - started)
        nursery.cancel_scope.cancel()
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chats", type=int, default=1000, help="open chats (a rider's feed socket each)")
    parser.add_argument("--messages", type=int, default=400, help="timed messages, alternating the sides")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop the timed messages after this long")
    parser.add_argument("--agents", type=int, default=20, help="support agents taking turns (a socket each)")
    args = parser.parse_args()
    if args.chats < 1 or args.messages < 1 or args.agents < 1:
        parser.error("--chats, --messages and --agents take 1 or more")
    if args.messages / 2 / args.agents > 25 or args.messages / 2 / args.chats > 25:
        parser.error("more than 25 messages per agent or rider: the 30-a-minute limit would refuse them")
    with database() as url:
        server = Server(url)
        network, _ = asyncio.run(seed(url, 0, 4))
        agents, opened = chat_world(server, url, network, args.chats, args.agents)
        server.start()
        try:
            run = trio.run(chats, server, network, agents, opened, args)
        finally:
            server.stop()
            warnings = server_warnings(server)
            shutil.rmtree(server.data, ignore_errors=True)
    relay = trio.run(relay_round_trips, args.chats, max(100, args.messages))
    print(f"\nchat with {args.chats} open chats (a rider's socket on report:<id> each, {args.agents} agents' sockets"
          f" on support:<n>): {len(run.agent_to_rider) + len(run.rider_to_agent)} messages timed in"
          f" {run.elapsed:.1f} s"
          + (f"; refused {run.refused}" if run.refused else "") + (f"; lost {run.lost}" if run.lost else ""))
    for name, values in (("knot_rt: agent POST -> rider message.created", run.agent_to_rider),
                         ("knot_rt: rider POST -> agent report.updated", run.rider_to_agent)):
        if values:
            print("  " + report_latency(name, values))
    print("  " + report_latency(f"baseline: bare trio-websocket relay, {args.chats} open", relay))
    if warnings:
        print("\nthe server's most frequent warnings and errors:", *warnings, sep="\n  ")


if __name__ == "__main__":
    main()
