"""Support chat over real HTTP and real feed sockets: a rider and a support agent of the report's network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
import trio

from actors.chat import Crash
from knot_rt.config import RateLimits
from tests.feed_client import FeedClient, open_feed
from tests.support import Harness, bearer, eventually, open_test_session

API = "/api/application"


@pytest.fixture
def rate_limits() -> RateLimits:
    return RateLimits(report_per_user="8/hour", report_message_per_user="40/minute")


@dataclass
class World:
    network: int
    cluster: int
    rider: str  # tokens
    agent: str
    other_rider: str
    foreign_agent: str
    rider_id: int
    agent_id: int


async def make_world(harness: Harness) -> World:
    label = await harness.make.app_label_once("knot")
    network = await harness.make.network(labels=[label])
    other_network = await harness.make.network("Kehl", labels=[label])
    cluster = await harness.make.cluster(network, "Gare")
    rider_id = await harness.create_user("rider@example.com", app_label=label)
    other_id = await harness.create_user("other@example.com", app_label=label)
    agent_id = await harness.create_user("agent@example.com", perms=[("support", True)], networks=[network])
    foreign_id = await harness.create_user("foreign@example.com", perms=[("support", True)], networks=[other_network])
    return World(
        network=network, cluster=cluster,
        rider=await open_test_session(harness, rider_id), agent=await open_test_session(harness, agent_id),
        other_rider=await open_test_session(harness, other_id),
        foreign_agent=await open_test_session(harness, foreign_id), rider_id=rider_id, agent_id=agent_id,
    )


async def call(harness: Harness, method: str, path: str, token: str, body: Any = None,
               params: dict[str, Any] | None = None, status: int = 200) -> dict[str, Any]:
    response = await harness.client.request(method, API + path, json=body, params=params, headers=bearer(token))
    assert response.status_code == status, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def open_report(harness: Harness, world: World, text: str = "The scooter will not unlock") -> int:
    answer = await call(harness, "POST", "/reports", world.rider, {"message": text, "cluster_id": world.cluster})
    report_id: int = answer["data"]["report_id"]
    return report_id


async def post(harness: Harness, token: str, report_id: int, text: str, status: int = 200) -> dict[str, Any]:
    return await call(harness, "POST", f"/reports/{report_id}/messages", token, {"message": text}, status=status)


async def messages_on(feed: FeedClient, count: int) -> list[dict[str, Any]]:
    """The next ``count`` message.created events (other events skipped; each must carry a seq)."""
    found: list[dict[str, Any]] = []
    with trio.fail_after(20):
        while len(found) < count:
            frame = await feed.receive()
            if frame.get("type") == "event" and frame["event"] == "message.created":
                found.append(frame)
    return found


async def test_opening_a_report_shows_the_spec_shape(harness: Harness) -> None:
    world = await make_world(harness)
    answer = await call(harness, "POST", "/reports", world.rider, {"message": "Broken brake", "cluster_id": world.cluster})
    report = answer["data"]
    assert {"report_id", "message", "sender", "date", "report_date", "resolved", "unread", "allow_reopen"} <= set(report)
    assert (report["message"], report["sender"], report["resolved"], report["unread"], report["allow_reopen"]) == (
        "Broken brake", "user", False, False, True)
    assert report["network_id"] == world.network
    listed = (await call(harness, "GET", "/reports", world.rider))["data"]
    assert [r["report_id"] for r in listed] == [report["report_id"]]
    one = (await call(harness, "GET", f"/reports/{report['report_id']}", world.rider))["data"]
    assert one == listed[0]
    # The agent sees it, unread on the support side.
    seen = (await call(harness, "GET", f"/reports/{report['report_id']}", world.agent))["data"]
    assert (seen["unread"], seen["unread_count"]) == (True, 1)


async def test_twenty_interleaved_messages_reach_both_sides_once_in_one_order(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    topic = f"report:{report_id}"
    async with open_feed(harness.base_url, world.rider) as rider_feed, \
            open_feed(harness.base_url, world.agent) as agent_feed:
        assert (await rider_feed.subscribe(topic))["code"] == 0
        assert (await agent_feed.subscribe(topic))["code"] == 0

        async def talk(token: str, who: str) -> None:
            for i in range(10):
                await post(harness, token, report_id, f"{who} {i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(talk, world.rider, "rider")
            nursery.start_soon(talk, world.agent, "agent")
        seen_by_rider = await messages_on(rider_feed, 20)
        seen_by_agent = await messages_on(agent_feed, 20)
    rider_order = [(e["seq"], e["data"]["message_id"], e["data"]["message"]) for e in seen_by_rider]
    agent_order = [(e["seq"], e["data"]["message_id"], e["data"]["message"]) for e in seen_by_agent]
    assert rider_order == agent_order
    ids = [m for _, m, _ in rider_order]
    assert ids == sorted(ids) and len(set(ids)) == 20
    texts = [t for _, _, t in rider_order]
    assert sorted(texts) == sorted([f"rider {i}" for i in range(10)] + [f"agent {i}" for i in range(10)])
    for who in ("rider", "agent"):  # each side's own order kept
        assert [t for t in texts if t.startswith(who)] == [f"{who} {i}" for i in range(10)]
    sides = {e["data"]["message"].split()[0]: e["data"]["side"] for e in seen_by_rider}
    assert sides == {"rider": "user", "agent": "support"}
    history = (await call(harness, "GET", f"/reports/{report_id}/messages", world.rider, params={"limit": 100}))["data"]
    assert [m["message_id"] for m in history][:20] == list(reversed(ids))  # newest first


async def test_typing_reaches_the_other_side_and_is_never_replayed(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    topic = f"report:{report_id}"
    async with open_feed(harness.base_url, world.rider) as rider_feed, \
            open_feed(harness.base_url, world.agent) as agent_feed:
        assert (await agent_feed.subscribe(topic))["code"] == 0
        assert (await rider_feed.request({"type": "typing", "topic": topic}))["code"] == 0
        (typing,) = await agent_feed.events(1)
        assert typing["event"] == "typing" and "seq" not in typing
        assert typing["data"]["side"] == "user" and isinstance(typing["data"]["until"], int)
        # Resubscribing from the start replays the durable events only.
        assert (await agent_feed.request({"type": "unsubscribe", "topic": topic}))["code"] == 0
        assert (await agent_feed.subscribe(topic, since=0))["code"] == 0
        await post(harness, world.rider, report_id, "marker")
        replayed: list[dict[str, Any]] = []
        with trio.fail_after(10):
            while not replayed or replayed[-1]["data"].get("message") != "marker":
                frame = await agent_feed.receive()
                if frame.get("type") == "event":
                    replayed.append(frame)
    assert [e["event"] for e in replayed] == ["message.created", "message.created"]
    assert [e["seq"] for e in replayed] == [1, 2]


async def test_read_markers_and_unread_counts(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    topic = f"report:{report_id}"
    async with open_feed(harness.base_url, world.rider) as rider_feed, \
            open_feed(harness.base_url, world.agent) as agent_feed:
        assert (await rider_feed.subscribe("user"))["code"] == 0
        assert (await agent_feed.subscribe(topic))["code"] == 0
        first = await post(harness, world.agent, report_id, "Which scooter?")
        second = await post(harness, world.agent, report_id, "Its serial, please")
        updates = [e for e in await rider_feed.events(2) if e["event"] == "report.updated"]
        assert [u["data"]["unread_count"] for u in updates] == [1, 2]
        rider_view = (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]
        assert (rider_view["unread"], rider_view["unread_count"], rider_view["sender"]) == (True, 2, "support")
        agent_view = (await call(harness, "GET", f"/reports/{report_id}", world.agent))["data"]
        assert (agent_view["unread"], agent_view["unread_count"]) == (False, 0)  # answering read the rider's
        # The rider reads the first over the feed, the second over HTTP.
        assert (await rider_feed.subscribe(topic))["code"] == 0
        reply = await rider_feed.request({"type": "read", "topic": topic, "message_id": first["data"]["message_id"]})
        assert reply["code"] == 0
        (read,) = [e for e in await agent_feed.events(3) if e["event"] == "message.read"]
        assert read["data"] == {"report_id": report_id, "side": "user", "message_id": first["data"]["message_id"]}
        assert (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]["unread_count"] == 1
        marked = await call(harness, "POST", f"/reports/{report_id}/read", world.rider,
                            {"message_id": second["data"]["message_id"]})
        assert marked["data"] == {"report_id": report_id, "side": "user",
                                  "read_up_to": second["data"]["message_id"], "unread_count": 0}
        # Never backwards.
        again = await call(harness, "POST", f"/reports/{report_id}/read", world.rider, {"message_id": 1})
        assert again["data"]["read_up_to"] == second["data"]["message_id"]
    rider_view = (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]
    assert (rider_view["unread"], rider_view["unread_count"]) == (False, 0)


async def test_history_pages_newest_first(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world, "m0")
    for i in range(1, 8):
        await post(harness, world.rider if i % 2 else world.agent, report_id, f"m{i}")
    pages: list[list[str]] = []
    before: int | None = None
    for _ in range(10):  # bounded
        params: dict[str, Any] = {"limit": 3} | ({"before": before} if before else {})
        page = (await call(harness, "GET", f"/reports/{report_id}/messages", world.agent, params=params))["data"]
        if not page:
            break
        pages.append([m["message"] for m in page])
        before = page[-1]["message_id"]
    assert pages == [["m7", "m6", "m5"], ["m4", "m3", "m2"], ["m1", "m0"]]


async def test_writing_reopens_within_seven_days_then_409_46(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    await harness.db.execute("UPDATE reports SET status = 'resolved', resolved_at = now() - interval '6 days' "
                             "WHERE id = $1", report_id)
    async with open_feed(harness.base_url, world.agent) as agent_feed:
        assert (await agent_feed.subscribe(f"report:{report_id}"))["code"] == 0
        await post(harness, world.rider, report_id, "Still broken")
        events = await agent_feed.events(2)
    assert [e["event"] for e in events] == ["report.reopened", "message.created"]
    view = (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]
    assert (view["resolved"], view["allow_reopen"], view["message"]) == (False, True, "Still broken")
    await harness.db.execute("UPDATE reports SET status = 'resolved', resolved_at = now() - interval '8 days' "
                             "WHERE id = $1", report_id)
    refused = await post(harness, world.rider, report_id, "Hello?", status=409)
    assert refused["code"] == 46
    view = (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]
    assert (view["resolved"], view["allow_reopen"]) == (True, False)


async def test_others_see_nothing(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    for token in (world.other_rider, world.foreign_agent):
        for method, path, body in (
            ("GET", f"/reports/{report_id}", None),
            ("GET", f"/reports/{report_id}/messages", None),
            ("POST", f"/reports/{report_id}/messages", {"message": "hi"}),
            ("POST", f"/reports/{report_id}/read", {"message_id": 1}),
        ):
            assert (await call(harness, method, path, token, body, status=404))["code"] == 4
        assert (await call(harness, "GET", f"/reports/{report_id + 1000}", token, status=404))["code"] == 4
        async with open_feed(harness.base_url, token) as feed:
            assert (await feed.subscribe(f"report:{report_id}"))["code"] == 13
            assert (await feed.request({"type": "typing", "topic": f"report:{report_id}"}))["code"] == 13
    assert (await call(harness, "GET", "/reports", world.other_rider))["data"] == []


async def test_context_is_checked_against_what_the_rider_sees(harness: Harness) -> None:
    world = await make_world(harness)
    hidden = await harness.make.network("Hidden", public=False)
    hidden_cluster = await harness.make.cluster(hidden, "Secret")
    await harness.make.vehicle(hidden, 9001, "HID-1")
    for context in ({"cluster_id": hidden_cluster}, {"serial_number": "HID-1"}, {"vehicle_id": 9001},
                    {"station_id": 424242}, {"trip_id": 424242}):
        answer = await call(harness, "POST", "/reports", world.rider, {"message": "?", **context}, status=404)
        assert answer["code"] == 4
    # No context, no rent: a report of no network, which no agent sees.
    bare = (await call(harness, "POST", "/reports", world.rider, {"message": "General question"}))["data"]
    assert bare["network_id"] is None
    await call(harness, "GET", f"/reports/{bare['report_id']}", world.agent, status=404)


async def test_a_chat_actor_crash_loses_nothing(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    async with open_feed(harness.base_url, world.rider) as rider_feed:
        assert (await rider_feed.subscribe(f"report:{report_id}"))["code"] == 0
        for i in range(3):
            await post(harness, world.agent, report_id, f"before {i}")
        ref = harness.svc.support.running_actor(report_id)
        assert ref is not None
        with pytest.raises(Exception, match="forced crash"):
            await ref.ask(Crash())
        await eventually(lambda: harness.svc.support.metrics.restarts_total == 1)
        for i in range(3):
            await post(harness, world.rider if i % 2 else world.agent, report_id, f"after {i}")
        events = await messages_on(rider_feed, 6)
    assert [e["data"]["message"] for e in events] == [f"before {i}" for i in range(3)] + [f"after {i}" for i in range(3)]
    assert [e["seq"] for e in events] == list(range(events[0]["seq"], events[0]["seq"] + 6))
    view = (await call(harness, "GET", f"/reports/{report_id}", world.rider))["data"]
    assert view["unread_count"] == 1  # "after 2" from support; the rider's own "after 1" read what came before
    history = (await call(harness, "GET", f"/reports/{report_id}/messages", world.rider))["data"]
    assert len(history) == 7


@pytest.mark.parametrize("body", [
    {"message": ""}, {"message": "   \n\t "}, {"message": "bell \x07"}, {"message": "esc \x1b[31m red"},
    {"message": "nul \x00"}, {"message": "c1 \x85"}, {"message": "x" * 2001}, {"message": 5}, {},
    {"message": "cr \r"},
])
async def test_hostile_bodies_are_refused(harness: Harness, body: dict[str, Any]) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    assert (await call(harness, "POST", f"/reports/{report_id}/messages", world.rider, body, status=400))["code"] == 2
    assert (await call(harness, "POST", "/reports", world.rider, body, status=400))["code"] == 2


async def test_newlines_tabs_and_the_longest_text_pass(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    for text in ("two\nlines\tand a tab", "é" * 2000):
        assert (await post(harness, world.rider, report_id, text))["data"]["message"] == text


async def test_rate_limits_on_reports_and_messages(harness: Harness) -> None:
    world = await make_world(harness)
    codes = [(await harness.client.post(f"{API}/reports", json={"message": "x"}, headers=bearer(world.rider))
              ).status_code for _ in range(9)]
    assert codes == [200] * 8 + [429]
    report_id = (await call(harness, "GET", "/reports", world.rider))["data"][0]["report_id"]
    statuses = []
    for i in range(41):  # the limit is 40 a minute
        response = await harness.client.post(f"{API}/reports/{report_id}/messages", json={"message": f"{i}"},
                                             headers=bearer(world.rider))
        statuses.append(response.status_code)
    assert statuses == [200] * 40 + [429]


async def test_a_read_only_agent_reads_but_may_not_write(harness: Harness) -> None:
    world = await make_world(harness)
    report_id = await open_report(harness, world)
    reader = await harness.create_user("reader@example.com", perms=[("support", False)], networks=[world.network])
    token = await open_test_session(harness, reader)
    history = (await call(harness, "GET", f"/reports/{report_id}/messages", token))["data"]
    assert [m["side"] for m in history] == ["user"]
    assert (await post(harness, token, report_id, "hi", status=403))["code"] == 13
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.subscribe(f"report:{report_id}"))["code"] == 0


async def test_the_network_comes_from_the_ongoing_rent_or_an_own_trip(harness: Harness) -> None:
    world = await make_world(harness)
    await harness.make.vehicle(world.network, 5001, "SN-5001")
    rent_id = await harness.db.fetchval(
        "INSERT INTO rents (user_id, vehicle_id, network_id) VALUES ($1, 5001, $2) RETURNING id",
        world.rider_id, world.network)
    bare = (await call(harness, "POST", "/reports", world.rider, {"message": "Will not lock"}))["data"]
    assert bare["network_id"] == world.network
    await harness.db.execute("UPDATE rents SET state = 'ended', ended_at = now() WHERE id = $1", rent_id)
    trip = (await call(harness, "POST", "/reports", world.rider, {"message": "Overcharged", "trip_id": rent_id}))["data"]
    assert trip["network_id"] == world.network
    other = await call(harness, "POST", "/reports", world.other_rider, {"message": "?", "trip_id": rent_id}, status=404)
    assert other["code"] == 4
    by_serial = (await call(harness, "POST", "/reports", world.rider, {"message": "!", "serial_number": "SN-5001"}))
    assert by_serial["data"]["network_id"] == world.network
