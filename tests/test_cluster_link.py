"""What the database itself tells every server process (the triggers of migration 130), heard through a real
cluster link: a session revoked, the catalog changed, a user's access changed, and nothing for a change that
was rolled back; calls between processes under malformed rows and notifications; a storm of claims of
devices' locks.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import asyncpg
import pytest
import trio

from knot_rt.cluster.calls import RemoteCalls
from knot_rt.cluster.link import ACCESS, CATALOG, SESSIONS, ClusterLink, node_channel
from knot_rt.cluster.ownership import Ownership
from knot_rt.errors import ApiError
from knot_rt.services.permissions import grant
from protocols.errors import ErrorCode
from tests.support import Harness, bearer, eventually

EMAIL = "ada@example.com"


class RolledBack(Exception):
    pass


async def test_the_database_tells_every_process_what_changed_at_commit(harness: Harness) -> None:
    told: list[tuple[str, str]] = []
    link = ClusterLink(harness.db)
    for channel in (SESSIONS, CATALOG, ACCESS):
        link.listen(channel, partial(lambda channel, payload: told.append((channel, payload)), channel))

    async def heard(item: tuple[str, str]) -> None:
        await eventually(lambda: item in told)

    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        network = await harness.create_network()
        await heard((CATALOG, "networks"))
        await harness.make.cluster(network)
        await heard((CATALOG, "clusters"))

        await harness.create_app_label()
        user = await harness.create_user(EMAIL)
        await harness.db.transaction(partial(grant, user_id=user, perm_key="stations", write=True))
        await heard((ACCESS, str(user)))
        await harness.make.organization("Knot SAS")
        await heard((ACCESS, "*"))

        login = await harness.login(EMAIL)
        session = harness.svc.signer.read_access(login["token"]).session_id
        response = await harness.client.post("/api/application/logout", json={}, headers=bearer(login["token"]))
        assert response.status_code == 200, response.text
        await heard((SESSIONS, str(session)))

        # A change rolled back tells nothing: notifications come in commit order, so once the next commit's
        # is heard, the rolled-back one would have come before it.
        async def speed_zone_then_fail(conn: asyncpg.Connection) -> None:
            await conn.execute("DELETE FROM speed_zones")
            raise RolledBack

        with pytest.raises(RolledBack):
            await harness.db.transaction(speed_zone_then_fail)
        count = sum(1 for item in told if item == (ACCESS, "*"))
        await harness.make.organization("Knot GmbH")
        await eventually(lambda: sum(1 for item in told if item == (ACCESS, "*")) > count)
        assert (CATALOG, "speed_zones") not in told
        nursery.cancel_scope.cancel()


async def test_calls_between_processes_survive_malformed_rows_and_notifications(harness: Harness) -> None:
    """Two links on one database (two processes' seats): a call is served and answered; an unknown operation,
    malformed arguments, a row that is not an object and garbage on a process's own channel get a clear
    error or nothing, and the next call is served as before."""
    a, b = ClusterLink(harness.db), ClusterLink(harness.db)
    calls_a, calls_b = RemoteCalls(harness.db, a), RemoteCalls(harness.db, b)

    async def double(args: dict[str, Any]) -> dict[str, Any]:
        return {"x": int(args["x"]) * 2}

    calls_b.handle("double", double)
    async with trio.open_nursery() as nursery:
        await nursery.start(a.run)
        await nursery.start(b.run)
        assert await calls_a.call(b.node, "double", {"x": 21}, timeout=10) == {"x": 42}

        with pytest.raises(ApiError) as refused:
            await calls_a.call(b.node, "no.such.op", {}, timeout=10)
        assert refused.value.code is ErrorCode.INTERNAL and "unknown operation" in (refused.value.message or "")
        for args in ({}, {"x": "twelve"}, {"x": None}, {"x": [1] * 1000}):
            with pytest.raises(ApiError) as failed:
                await calls_a.call(b.node, "double", args, timeout=10)
            assert failed.value.code is ErrorCode.INTERNAL, args

        # A row whose arguments are not an object, written by hand and told to b: answered with an error.
        call_id = await harness.db.fetchval(
            """INSERT INTO cluster_calls (caller, callee, op, args) VALUES ($1, $2, 'double', '[1, 2]'::jsonb)
               RETURNING id""", a.node, b.node)
        for payload in ("", "call", "call x", "call -1", "call 99999999999999999999", "reply 12", "x" * 7000,
                        f"call {call_id}", f"call {call_id}"):
            await harness.db.execute("SELECT pg_notify($1, $2)", node_channel(b.node), payload)
        await eventually(lambda: harness.db.fetchval("SELECT answered FROM cluster_calls WHERE id = $1", call_id))
        row = await harness.db.fetchrow("SELECT error_code, error_message FROM cluster_calls WHERE id = $1", call_id)
        assert row["error_code"] == int(ErrorCode.INTERNAL) and "not an object" in row["error_message"]

        assert await calls_a.call(b.node, "double", {"x": 5}, timeout=10) == {"x": 10}
        nursery.cancel_scope.cancel()


async def advisory_locks_held(harness: Harness, pid: int) -> int:
    count: int = await harness.db.fetchval(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND pid = $1", pid)
    return count


async def test_a_storm_of_claims_takes_each_lock_once_in_a_few_statements(harness: Harness) -> None:
    """500 stations claimed at once, each twice (a socket and an operator's command racing): a handful of
    statements on the link, every device held once, and after they stop, every lock given back (a lock taken
    twice by a session would need two unlocks, and would stay held)."""
    link = ClusterLink(harness.db)
    ownership = Ownership(link, RemoteCalls(harness.db, link))
    ids = range(1, 501)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        nursery.start_soon(ownership.run)
        async with trio.open_nursery() as claims:
            for station_id in [*ids, *ids]:
                claims.start_soon(partial(ownership.claim, "station", station_id, socket=True))
        assert all(ownership.holds("station", station_id) for station_id in ids)
        assert await advisory_locks_held(harness, link.node) == 500
        assert ownership._locks.statements < 100
        for station_id in ids:
            ownership.left("station", str(station_id))
        node = link.node

        async def all_given_back() -> bool:
            return await advisory_locks_held(harness, node) == 0

        await eventually(all_given_back)
        nursery.cancel_scope.cancel()
