"""Support agents over the real server and real feed sockets: their reports, assign, resolve, reopen, the
refusals for agents of other networks, and the offline-rider mail."""

from __future__ import annotations

from typing import Any

import httpx

from knot_rt.demo import DEMO_ACCOUNTS, DEMO_REPORTS, load_demo
from knot_rt.support.store import ReportContext, Side
from protocols.feed import Topic
from tests.feed_client import open_feed
from tests.support import Harness, SmtpSink, bearer, body_of, eventually, open_test_session


async def open_report(harness: Harness, w: dict[str, Any], network: str, texts: list[tuple[str, str]]) -> int:
    """A report of the rider on ``network`` ("first" or "second", through one of its clusters), opened and
    written through the chat service: ``texts`` as ``(side, text)``, the first one the rider's."""
    support = harness.svc.support
    side, first = texts[0]
    assert side == "user"
    report = await support.open_report(w["rider"], first, ReportContext(cluster_id=w["clusters"][network]))
    for side, text in texts[1:]:
        current, _ = await support.access(w["rider"], report.id)
        author = w["rider"] if side == "user" else w["agent" if network == "first" else "other"]
        await support.post_message(current, Side(side), author, text)
    return report.id


async def world(harness: Harness) -> dict[str, Any]:
    """Two networks the rider sees (a cluster each), an agent of each (write), a read-only agent of the first,
    the rider, and a token for each."""
    label = await harness.make.app_label_once("knot")
    first = await harness.make.network("Strasbourg", labels=[label])
    second = await harness.make.network("Colmar", labels=[label])
    clusters = {"first": await harness.make.cluster(first, "Gare", 48.58, 7.73),
                "second": await harness.make.cluster(second, "Unterlinden", 48.08, 7.35)}
    agent = await harness.create_user("agent@support.test", perms=[("support", True)], networks=[first])
    reader = await harness.create_user("reader@support.test", perms=[("support", False)], networks=[first])
    other = await harness.create_user("other@support.test", perms=[("support", True)], networks=[second])
    rider = await harness.create_user("rider@example.com", app_label=label)
    tokens = {name: await open_test_session(harness, uid) for name, uid in
              [("agent", agent), ("reader", reader), ("other", other), ("rider", rider)]}
    return {"first": first, "second": second, "clusters": clusters, "agent": agent, "reader": reader,
            "other": other, "rider": rider, "tokens": tokens}


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
    ids = [await open_report(harness, w, "first", [("user", f"broken {i}"), ("user", "help")])
           for i in range(5)]
    answered = await open_report(harness, w, "first", [("user", "hi"), ("support", "hello")])
    await open_report(harness, w, "second", [("user", "elsewhere")])

    response = await get_reports(client, token, limit=3)
    assert response.status_code == 200, response.text
    page = response.json()["data"]
    assert [r["report_id"] for r in page] == [answered, ids[4], ids[3]]
    # Answered: support has read up to its answer. The others: the rider's two messages unread.
    assert (page[0]["unread"], page[0]["unread_count"], page[0]["message"], page[0]["sender"]) == (
        False, 0, "hello", "support")
    assert (page[1]["unread"], page[1]["unread_count"], page[1]["message"], page[1]["sender"]) == (
        True, 2, "help", "user")
    assert page[1]["author"] == {"user_id": w["rider"], "email": "rider@example.com"}
    more = (await get_reports(client, token, limit=3, before=page[-1]["report_id"])).json()["data"]
    assert [r["report_id"] for r in more] == [ids[2], ids[1], ids[0]]
    assert (await get_reports(client, token, status="resolved")).json()["data"] == []
    assert len((await get_reports(client, token, status="all", limit=100)).json()["data"]) == 6
    assert len((await get_reports(client, token, network_id=w["first"], limit=100)).json()["data"]) == 6

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
    report = await open_report(harness, w, "first", [("user", "the scooter beeps")])
    support_topic, report_topic = str(Topic.support(w["first"])), str(Topic.report(report))
    async with open_feed(harness.base_url, token) as agent_feed, \
            open_feed(harness.base_url, w["tokens"]["rider"]) as rider_feed:
        assert (await agent_feed.subscribe(support_topic))["code"] == 0
        assert (await agent_feed.subscribe(report_topic))["code"] == 0
        assert (await rider_feed.subscribe("user"))["code"] == 0

        # A new report of the network, live.
        newer = await open_report(harness, w, "first", [("user", "and another thing")])
        created = (await agent_feed.events(1))[0]
        assert (created["topic"], created["event"], created["data"]["report_id"]) == (
            support_topic, "report.created", newer)

        assert (await put(client, token, report, "assign", {"agent_id": w["agent"]})).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.assigned"), (support_topic, "report.updated")]
        assert (events[0]["data"]["assigned_to"], events[0]["data"]["by"], events[0]["data"]["agent_id"]) == (
            w["agent"], "support", w["agent"])
        updated = events[1]["data"]
        assert (updated["report_id"], updated["assigned_to"], updated["unread_count"]) == (report, w["agent"], 1)
        assert updated["author"] == {"user_id": w["rider"], "email": "rider@example.com"}

        assert (await put(client, token, report, "resolve")).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.resolved"), (support_topic, "report.updated")]
        assert events[1]["data"]["resolved"] is True
        # The rider hears of the status (not of the assignment before it).
        rider_event = (await rider_feed.events(1))[0]
        assert (rider_event["event"], rider_event["data"]["report_id"], rider_event["data"]["resolved"]) == (
            "report.updated", report, True)
        resolved = (await get_reports(client, token, status="resolved")).json()["data"]
        assert [r["report_id"] for r in resolved] == [report]

        assert (await put(client, token, report, "reopen")).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert [(e["topic"], e["event"]) for e in events] == [
            (report_topic, "report.reopened"), (support_topic, "report.updated")]
        assert events[1]["data"]["status"] == "open"
        assert (await rider_feed.events(1))[0]["data"]["resolved"] is False
        # Reopening an open report changes nothing and says nothing (the next event is the release's).
        assert (await put(client, token, report, "reopen")).json() == {"code": 0}

        assert (await put(client, token, report, "assign", {"agent_id": None})).json() == {"code": 0}
        events = await agent_feed.events(2)
        assert events[0]["event"] == "report.assigned" and events[0]["data"]["assigned_to"] is None
        listed = {r["report_id"]: r for r in (await get_reports(client, token)).json()["data"]}
        assert listed[report]["assigned_to"] is None and listed[report]["status"] == "open"

    # An assignee must be an agent of the report's network.
    bad = await put(client, token, report, "assign", {"agent_id": w["other"]})
    assert (bad.status_code, bad.json()["code"]) == (400, 2)


async def test_agents_of_another_network_and_riders_see_nothing(harness: Harness) -> None:
    w = await world(harness)
    client = harness.client
    report = await open_report(harness, w, "first", [("user", "private")])
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


async def outbox_to(harness: Harness, address: str) -> int:
    """Mails written for ``address`` (in the transaction of the message that asked for them)."""
    count: int = await harness.db.fetchval("SELECT count(*) FROM outbox WHERE to_addr = $1", address)
    return count


async def test_offline_rider_is_mailed_once_an_hour_and_not_while_online(
    harness: Harness, smtp_sink: SmtpSink,
) -> None:
    w = await world(harness)
    report = await open_report(harness, w, "first", [("user", "hello?")])

    async def answer(text: str) -> None:
        current, side = await harness.svc.support.access(w["agent"], report, write=True)
        assert side is Side.SUPPORT
        await harness.svc.support.post_message(current, side, w["agent"], text)

    async with open_feed(harness.base_url, w["tokens"]["rider"]) as feed:
        assert (await feed.subscribe("user"))["code"] == 0
        await answer("we are looking into it")
        pushed = (await feed.events(1))[0]
        assert (pushed["event"], pushed["data"]["unread_count"]) == ("report.updated", 1)
        assert await outbox_to(harness, "rider@example.com") == 0  # the rider's feed is open: no mail
    # The socket closed: the hub forgets the rider once the server saw it go.
    await eventually(lambda: not harness.svc.hub.is_online(w["rider"]))
    await answer("found it: the brake cable")
    assert await outbox_to(harness, "rider@example.com") == 1
    mails = await smtp_sink.wait_for("rider@example.com")
    assert f"#{report}" in body_of(mails[0])
    await answer("and it is fixed")
    assert await outbox_to(harness, "rider@example.com") == 1  # within the hour: no second mail
    # An hour later (the marker moved back), one more.
    await harness.db.execute("UPDATE reports SET mailed_at = mailed_at - interval '61 minutes' WHERE id = $1", report)
    await answer("anything else?")
    assert await outbox_to(harness, "rider@example.com") == 2
    await smtp_sink.wait_for("rider@example.com", 2)
    # The rider's own messages never mail anyone.
    await harness.db.execute("UPDATE reports SET mailed_at = NULL WHERE id = $1", report)
    current, _ = await harness.svc.support.access(w["rider"], report, write=True)
    await harness.svc.support.post_message(current, Side.USER, w["rider"], "no, thanks")
    assert await outbox_to(harness, "rider@example.com") == 2


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
    assert [(r["unread"], r["unread_count"], r["status"]) for r in opened] == [(True, 1, "open")] * 2
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.subscribe(str(Topic.support(summary["network"]))))["code"] == 0
