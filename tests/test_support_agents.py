"""Support agents over the real server and real feed sockets: their reports, assign, resolve, reopen, the
refusals for agents of other networks, and the offline-rider mail."""

from __future__ import annotations

from typing import Any

import httpx

from knot_rt.demo import DEMO_ACCOUNTS, DEMO_REPORTS, load_demo
from knot_rt.uow import UnitOfWork
from protocols.feed import Topic
from tests.feed_client import open_feed
from tests.support import Harness, SmtpSink, bearer, body_of, eventually, open_test_session


async def open_report(harness: Harness, rider: int, network: int, texts: list[tuple[str, str]]) -> int:
    """A report of ``rider`` on ``network`` with messages ``(side, text)``, written as the chat's store would.

    (Straight rows: the rider's report routes belong to the chat part; these tests are about what agents do
    with reports, not how they are opened.)
    """

    async def write(uow: UnitOfWork) -> int:
        report_id: int = await uow.conn.fetchval(
            "INSERT INTO reports (user_id, network_id) VALUES ($1, $2) RETURNING id", rider, network
        )
        last = None
        for side, text in texts:
            last = await uow.conn.fetchval(
                "INSERT INTO report_messages (report_id, side, author_id, body) VALUES ($1, $2, $3, $4) RETURNING id",
                report_id, side, rider if side == "user" else None, text,
            )
        await uow.conn.execute("UPDATE reports SET last_message_id = $2 WHERE id = $1", report_id, last)
        return report_id

    return await harness.svc.work.run(write)


async def world(harness: Harness) -> dict[str, Any]:
    """Two networks, an agent of each (write), a read-only agent of the first, a rider, and tokens."""
    first = await harness.make.network("Strasbourg")
    second = await harness.make.network("Colmar")
    agent = await harness.create_user("agent@support.test", perms=[("support", True)], networks=[first])
    reader = await harness.create_user("reader@support.test", perms=[("support", False)], networks=[first])
    other = await harness.create_user("other@support.test", perms=[("support", True)], networks=[second])
    rider = await harness.create_user("rider@example.com")
    tokens = {name: await open_test_session(harness, uid) for name, uid in
              [("agent", agent), ("reader", reader), ("other", other), ("rider", rider)]}
    return {"first": first, "second": second, "agent": agent, "reader": reader, "other": other, "rider": rider,
            "tokens": tokens}


async def get_reports(client: httpx.AsyncClient, token: str, **query: Any) -> httpx.Response:
    return await client.get("/api/application/support/reports", params=query, headers=bearer(token))


async def put(client: httpx.AsyncClient, token: str, report_id: int, action: str, body: Any = None) -> httpx.Response:
    return await client.put(
        f"/api/application/support/reports/{report_id}/{action}", json=body if body is not None else {},
        headers=bearer(token),
    )


async def test_agent_lists_their_networks_reports_with_unread_counts_and_pages(harness: Harness) -> None:
    w = await world(harness)
    client, token = harness.client, w["tokens"]["agent"]
    ids = [await open_report(harness, w["rider"], w["first"], [("user", f"broken {i}"), ("user", "help")])
           for i in range(5)]
    answered = await open_report(harness, w["rider"], w["first"], [("user", "hi"), ("support", "hello")])
    await open_report(harness, w["rider"], w["second"], [("user", "elsewhere")])

    response = await get_reports(client, token, limit=3)
    assert response.status_code == 200, response.text
    page = response.json()["data"]
    assert [r["report_id"] for r in page] == [answered, ids[4], ids[3]]
    assert page[0]["unread"] == 1 and page[0]["message"] == "hello" and page[0]["sender"] == "support"
    assert page[1]["unread"] == 2 and page[1]["message"] == "help"
    assert page[1]["author"] == {"user_id": w["rider"], "email": "rider@example.com"}
    more = (await get_reports(client, token, limit=3, before=page[-1]["report_id"])).json()["data"]
    assert [r["report_id"] for r in more] == [ids[2], ids[1], ids[0]]
    assert (await get_reports(client, token, status="resolved")).json()["data"] == []
    assert len((await get_reports(client, token, status="all", limit=100)).json()["data"]) == 6

    for bad in ({"limit": 0}, {"limit": 101}, {"status": "closed"}):
        assert (await get_reports(client, token, **bad)).json()["code"] == 2
    refused = await get_reports(client, token, network_id=w["second"])
    assert (refused.status_code, refused.json()["code"]) == (403, 13)
    rider = await get_reports(client, w["tokens"]["rider"])
    assert (rider.status_code, rider.json()["code"]) == (403, 13)
    # The agent of the second network sees its one report only.
    theirs = (await get_reports(client, w["tokens"]["other"], status="all")).json()["data"]
    assert len(theirs) == 1 and theirs[0]["message"] == "elsewhere"


async def test_assign_resolve_reopen_are_seen_live_on_both_topics(harness: Harness) -> None:
    w = await world(harness)
    client, token = harness.client, w["tokens"]["agent"]
    report = await open_report(harness, w["rider"], w["first"], [("user", "the scooter beeps")])
    support_topic, report_topic = str(Topic.support(w["first"])), str(Topic.report(report))
    async with open_feed(harness.base_url, token) as agent_feed, \
            open_feed(harness.base_url, w["tokens"]["rider"]) as rider_feed:
        assert (await agent_feed.subscribe(support_topic))["code"] == 0
        assert (await agent_feed.subscribe(report_topic))["code"] == 0
        assert (await rider_feed.subscribe("user"))["code"] == 0

        assert (await put(client, token, report, "assign", {"agent_id": w["agent"]})).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.assigned"), (support_topic, "report.updated")]
        assert events[0]["data"]["assigned_to"] == w["agent"]
        assert events[1]["data"]["assigned_to"] == w["agent"] and events[1]["data"]["unread"] == 1
        rider_event = (await rider_feed.events(1))[0]
        assert rider_event["event"] == "report.updated" and rider_event["data"]["report_id"] == report

        assert (await put(client, token, report, "resolve")).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.resolved"), (support_topic, "report.updated")]
        assert events[1]["data"]["resolved"] is True
        assert (await rider_feed.events(1))[0]["data"]["resolved"] is True
        resolved = (await get_reports(client, token, status="resolved")).json()["data"]
        assert [r["report_id"] for r in resolved] == [report]

        assert (await put(client, token, report, "reopen")).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.reopened"), (support_topic, "report.updated")]
        assert events[1]["data"]["status"] == "open"

        assert (await put(client, token, report, "assign", {"agent_id": None})).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert events[0]["event"] == "report.assigned" and events[0]["data"]["assigned_to"] is None
        listed = (await get_reports(client, token)).json()["data"]
        assert listed[0]["assigned_to"] is None and listed[0]["status"] == "open"

    # An assignee must be an agent of the report's network.
    bad = await put(client, token, report, "assign", {"agent_id": w["other"]})
    assert (bad.status_code, bad.json()["code"]) == (400, 2)


async def test_agents_of_another_network_and_riders_see_nothing(harness: Harness) -> None:
    w = await world(harness)
    client = harness.client
    report = await open_report(harness, w["rider"], w["first"], [("user", "private")])
    for who in ("other", "rider", "reader"):  # the reader may read, not act
        for action in ("assign", "resolve", "reopen"):
            response = await put(client, w["tokens"][who], report, action, {"agent_id": None})
            assert (response.status_code, response.json()["code"]) == (404, 4), (who, action)
    unknown = await put(client, w["tokens"]["agent"], report + 1000, "resolve")
    assert (unknown.status_code, unknown.json()["code"]) == (404, 4)
    for who in ("other", "rider"):
        async with open_feed(harness.base_url, w["tokens"][who]) as feed:
            assert (await feed.subscribe(str(Topic.support(w["first"]))))["code"] == 13
    async with open_feed(harness.base_url, w["tokens"]["reader"]) as feed:
        assert (await feed.subscribe(str(Topic.support(w["first"]))))["code"] == 0


async def mail_if_offline(harness: Harness, report: int) -> bool:
    """What the chat service does in the unit of work of a support message."""

    async def change(uow: UnitOfWork) -> bool:
        return await harness.svc.agents.mail_rider_if_offline(uow, report)

    return await harness.svc.work.run(change)


async def test_offline_rider_is_mailed_once_an_hour_and_not_while_online(
    harness: Harness, smtp_sink: SmtpSink,
) -> None:
    w = await world(harness)
    report = await open_report(harness, w["rider"], w["first"], [("user", "hello?")])
    async with open_feed(harness.base_url, w["tokens"]["rider"]) as feed:
        assert (await feed.request({"type": "ping"}))["type"] == "pong"
        assert await mail_if_offline(harness, report) is False  # the rider's feed is open
    # The socket is closed: the hub forgets the rider once the server saw it go.
    await eventually(lambda: not harness.svc.hub.is_online(w["rider"]))
    assert await mail_if_offline(harness, report) is True
    mails = await smtp_sink.wait_for("rider@example.com")
    assert f"#{report}" in body_of(mails[0])
    assert await mail_if_offline(harness, report) is False  # within the hour
    # An hour later (the marker moved back), one more.
    await harness.db.execute("UPDATE reports SET mailed_at = mailed_at - interval '61 minutes' WHERE id = $1", report)
    assert await mail_if_offline(harness, report) is True
    await smtp_sink.wait_for("rider@example.com", 2)
    assert len(smtp_sink.messages("rider@example.com")) == 2



async def test_the_demo_support_agent_sees_the_demo_reports(harness: Harness) -> None:
    summary = await load_demo(harness.db)
    await load_demo(harness.db)  # idempotent: the reports are written once
    await harness.svc.catalog.reload()
    email, password, _ = next(a for a in DEMO_ACCOUNTS if a[0].startswith("support@"))
    login = await harness.client.post("/api/application/login", json={
        "email": email, "password": password, "scope": "app", "app_label": "knot"})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    everything = (await get_reports(harness.client, token, status="all")).json()["data"]
    assert len(everything) == len(DEMO_REPORTS)
    assert {r["network_id"] for r in everything} == {summary["network"]}
    assert {r["author"]["email"] for r in everything} == {DEMO_ACCOUNTS[0][0]}
    opened = (await get_reports(harness.client, token)).json()["data"]
    assert [r["unread"] for r in opened] == [1, 1]
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.subscribe(str(Topic.support(summary["network"]))))["code"] == 0
