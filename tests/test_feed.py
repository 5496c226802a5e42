"""The app feed over a real WebSocket: auth, topics and their rights, replay, resync, slow readers."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import trio
from trio_websocket import ConnectionClosed

from knot_rt.config import Settings
from protocols.feed import EventFrame, EventName, Topic, parse_server_frame
from tests.feed_client import open_feed
from tests.support import Harness, bearer, open_test_session


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, feed_queue_capacity=16)


async def knot_label(harness: Harness) -> int:
    """The app label the riders of these tests use (created once per test)."""
    return await harness.make.app_label_once("knot")


async def add_cluster(harness: Harness, network: int, name: str = "Gare") -> int:
    return await harness.make.cluster(network, name, 48.58, 7.73)  # in the catalog once made


async def make_cluster(harness: Harness) -> tuple[int, int]:
    """A cluster of a public network shown by the riders' app label: every rider sees it."""
    network = await harness.make.network(labels=[await knot_label(harness)])
    return network, await add_cluster(harness, network)


async def make_station(harness: Harness, cluster: int) -> int:
    return (await harness.make.station(cluster, 4)).station_id


async def rider_token(harness: Harness, email: str = "rider@example.com") -> str:
    return await open_test_session(harness, await harness.create_user(email, app_label=await knot_label(harness)))


async def test_header_auth_subscribe_and_receive_in_order(harness: Harness) -> None:
    _, cluster = await make_cluster(harness)
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        assert await feed.subscribe(f"cluster:{cluster}") == {"type": "reply", "ref": "r1", "code": 0}
        for free in (3, 2, 1):
            await harness.svc.work.publish(f"cluster:{cluster}", "cluster.updated", {"free_spots": free})
        events = await feed.events(3)
    assert [(e["topic"], e["seq"], e["event"], e["data"]["free_spots"]) for e in events] == [
        (f"cluster:{cluster}", 1, "cluster.updated", 3),
        (f"cluster:{cluster}", 2, "cluster.updated", 2),
        (f"cluster:{cluster}", 3, "cluster.updated", 1),
    ]


async def test_first_frame_auth_and_ping(harness: Harness) -> None:
    async with open_feed(harness.base_url) as feed:
        assert (await feed.request({"type": "auth", "token": await rider_token(harness)}))["code"] == 0
        assert await feed.request({"type": "ping"}) == {"type": "pong", "ref": "r2"}


@pytest.mark.parametrize("token", ["not-a-jwt", None])
async def test_bad_token_closes_with_4401(harness: Harness, token: str | None) -> None:
    async with open_feed(harness.base_url, token or "x.y.z") as feed:
        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
    assert closed.value.reason.code == 4401


async def test_nothing_but_auth_is_accepted_first(harness: Harness) -> None:
    async with open_feed(harness.base_url) as feed:
        await feed.send({"type": "subscribe", "topic": "cluster:1", "ref": "early"})
        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
    assert closed.value.reason.code == 4401


async def test_station_topic_needs_the_permission_on_its_network(harness: Harness) -> None:
    network, cluster = await make_cluster(harness)
    other_network = await harness.create_network("Kehl")
    station = await make_station(harness, cluster)
    operator = await harness.create_user("op@example.com", perms=[("stations", False)], networks=[network])
    foreign = await harness.create_user("foreign@example.com", perms=[("stations", True)], networks=[other_network])
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        assert (await feed.subscribe(f"station:{station}"))["code"] == 13
    async with open_feed(harness.base_url, await open_test_session(harness, foreign)) as feed:
        assert (await feed.subscribe(f"station:{station}"))["code"] == 13
    async with open_feed(harness.base_url, await open_test_session(harness, operator)) as feed:
        assert (await feed.subscribe(f"station:{station}"))["code"] == 0
        await harness.svc.work.publish(f"station:{station}", "station.online", {"station_id": station})
        (event,) = await feed.events(1)
        assert event["event"] == "station.online"


async def test_bad_frames_get_a_reply_and_the_socket_stays(harness: Harness) -> None:
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        await feed.ws.send_message("not json")
        assert (await feed.receive())["code"] == 2
        assert (await feed.subscribe("cluster:abc"))["code"] == 2
        assert (await feed.subscribe("cluster:999999"))["code"] == 4
        assert (await feed.request({"type": "ping"}))["type"] == "pong"


async def test_user_topic_is_private(harness: Harness) -> None:
    alice = await harness.create_user("alice@example.com")
    bob = await harness.create_user("bob@example.com")
    async with open_feed(harness.base_url, await open_test_session(harness, alice)) as feed:
        assert (await feed.subscribe("user"))["code"] == 0
        await harness.svc.work.publish(f"user:{bob}", "rent.started", {"trip_id": 1})
        await harness.svc.work.publish(f"user:{alice}", "rent.started", {"trip_id": 2})
        (event,) = await feed.events(1)
    assert (event["topic"], event["data"]) == ("user", {"trip_id": 2})


async def test_resume_with_since_delivers_exactly_the_missed_events(harness: Harness) -> None:
    _, cluster = await make_cluster(harness)
    topic = f"cluster:{cluster}"
    token = await rider_token(harness)
    async with open_feed(harness.base_url, token) as feed:
        await feed.subscribe(topic)
        await harness.svc.work.publish(topic, "cluster.updated", {"n": 1})
        (seen,) = await feed.events(1)
    for n in (2, 3, 4):
        await harness.svc.work.publish(topic, "cluster.updated", {"n": n})
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.subscribe(topic, since=seen["seq"]))["code"] == 0
        await harness.svc.work.publish(topic, "cluster.updated", {"n": 5})
        events = await feed.events(4)
    assert [(e["seq"], e["data"]["n"]) for e in events] == [(2, 2), (3, 3), (4, 4), (5, 5)]


async def test_resync_when_the_events_are_gone(harness: Harness) -> None:
    _, cluster = await make_cluster(harness)
    topic = f"cluster:{cluster}"
    for n in range(3):
        await harness.svc.work.publish(topic, "cluster.updated", {"n": n})
    await harness.db.execute("UPDATE feed_events SET created_at = now() - interval '3 days'")
    assert await harness.svc.bus.prune() == 3
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        await feed.subscribe(topic, since=1)
        (event,) = await feed.events(1)
    assert (event["event"], event["seq"]) == ("resync", 3)


async def test_resync_of_a_topic_without_events_is_a_frame_of_the_protocol(harness: Harness) -> None:
    _, cluster = await make_cluster(harness)
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        await feed.subscribe(f"cluster:{cluster}", since=4)  # ahead of a topic that has no event yet
        (event,) = await feed.events(1)
    assert (event["event"], event["seq"]) == ("resync", 0)
    assert parse_server_frame(json.dumps(event)) == EventFrame(
        topic=Topic.cluster(cluster), seq=0, event=EventName.RESYNC, data={}
    )


async def test_a_stalled_reader_is_dropped_while_others_keep_receiving(harness: Harness) -> None:
    _, cluster = await make_cluster(harness)
    topic = f"cluster:{cluster}"
    token = await rider_token(harness)
    padding = "x" * 60_000
    async with open_feed(harness.base_url, token) as stalled, open_feed(harness.base_url, token) as healthy:
        await stalled.subscribe(topic)
        await healthy.subscribe(topic)
        received: list[int] = []

        async def read_healthy() -> None:
            while True:
                received.extend(e["seq"] for e in await healthy.events(1))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_healthy)
            published = 0
            with trio.fail_after(60):
                # The stalled client reads nothing; its server-side inbox overflows at some point.
                while not harness.svc.bus._topics[topic].subscribers or len(
                    harness.svc.bus._topics[topic].subscribers
                ) > 1:
                    published += 1
                    await harness.svc.work.publish(topic, "cluster.updated", {"padding": padding, "n": published})
                    assert published < 2000
            for _ in range(3):
                published += 1
                await harness.svc.work.publish(topic, "cluster.updated", {"n": published})
            with trio.fail_after(10):
                while published not in received:  # noqa: ASYNC110
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                await stalled.receive()
    assert closed.value.reason.code == 4408
    assert received == list(range(1, published + 1))


async def test_logout_closes_the_sessions_sockets(harness: Harness) -> None:
    user = await harness.create_user("leaving@example.com")
    token = await open_test_session(harness, user)
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.request({"type": "ping"}))["type"] == "pong"
        response = await harness.client.post("/api/application/logout", headers=bearer(token))
        assert response.status_code == 200, response.text
        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
    assert closed.value.reason.code == 4401


async def test_cluster_topic_follows_the_http_visibility_of_the_cluster(harness: Harness) -> None:
    """``cluster:<id>`` for exactly those who get 200 from GET /clusters/{id}; others get the unknown-cluster reply."""
    label = await knot_label(harness)
    corp = await harness.make.organization("Corp", "corp.example")
    public = await harness.make.network("Strasbourg", labels=[label])
    private = await harness.make.network("Corp private", organization=corp, public=False, labels=[label])
    org_only = await harness.make.network("Corp campus", organization=corp, organization_only=True, labels=[label])
    unlinked = await harness.make.network("Elsewhere")
    clusters = {name: await add_cluster(harness, network, name) for name, network in
                {"public": public, "private": private, "org_only": org_only, "unlinked": unlinked}.items()}
    users = {
        "rider": await harness.create_user("rider@example.com", app_label=label),
        "member": await harness.create_user("alice@corp.example", app_label=label),
        "operator": await harness.create_user("op@example.com", perms=[("clusters", False)], networks=[private]),
        "stranger": await harness.create_user("nobody@example.com"),
    }
    unknown = max(clusters.values()) + 1000
    seen_by_http: dict[tuple[str, str], bool] = {}
    for user, user_id in users.items():
        token = await open_test_session(harness, user_id)
        async with open_feed(harness.base_url, token) as feed:
            unknown_reply = await feed.subscribe(f"cluster:{unknown}")
            assert (unknown_reply["code"], unknown_reply["message"]) == (4, f"no cluster {unknown}")
            for name, cluster in clusters.items():
                http = await harness.client.get(f"/api/application/clusters/{cluster}", headers=bearer(token))
                assert http.status_code in (200, 404), http.text
                seen_by_http[user, name] = http.status_code == 200
                reply = await feed.subscribe(f"cluster:{cluster}")
                if seen_by_http[user, name]:
                    assert reply["code"] == 0, (user, name, reply)
                else:  # exactly the unknown cluster's answer: the cluster's existence does not show
                    assert {**reply, "ref": None, "message": reply["message"].replace(str(cluster), "N")} == {
                        **unknown_reply, "ref": None,
                        "message": unknown_reply["message"].replace(str(unknown), "N")}, (user, name, reply)
                    assert reply["message"] == f"no cluster {cluster}"
    # The rules of services/access.py, seen from both sides.
    assert {name for (user, name), seen in seen_by_http.items() if user == "rider" and seen} == {"public", "org_only"}
    assert {name for (user, name), seen in seen_by_http.items() if user == "member" and seen} == {
        "public", "private", "org_only"}
    assert {name for (user, name), seen in seen_by_http.items() if user == "operator" and seen} == {"private"}
    assert not any(seen for (user, _), seen in seen_by_http.items() if user == "stranger")


async def test_an_unseen_cluster_sends_no_event(harness: Harness) -> None:
    """A refused subscription delivers nothing of the cluster's availability."""
    private = await harness.create_network("Private")
    await harness.db.execute("UPDATE networks SET is_public = false WHERE id = $1", private)
    hidden = await add_cluster(harness, private, "Hidden")
    _, shown = await make_cluster(harness)
    async with open_feed(harness.base_url, await rider_token(harness)) as feed:
        assert (await feed.subscribe(f"cluster:{hidden}"))["code"] == 4
        assert (await feed.subscribe(f"cluster:{shown}"))["code"] == 0
        await harness.svc.work.publish(f"cluster:{hidden}", "cluster.updated", {"free_spots": 1})
        await harness.svc.work.publish(f"cluster:{shown}", "cluster.updated", {"free_spots": 2})
        (event,) = await feed.events(1)
        assert (event["topic"], event["data"]) == (f"cluster:{shown}", {"free_spots": 2})
        assert (await feed.request({"type": "ping"}))["type"] == "pong"  # and nothing else arrived meanwhile


@pytest.mark.parametrize("size", [5 * 1024, 200 * 1024])
async def test_a_large_frame_before_auth_closes_the_socket(harness: Harness, size: int) -> None:
    """Before auth, a frame of more than a few KiB is refused unread: the socket closes (4401, or 1009 when huge)."""
    token = await rider_token(harness)
    async with open_feed(harness.base_url) as feed:
        await feed.send({"type": "auth", "token": token, "padding": "x" * size, "ref": "big"})
        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
    assert closed.value.reason.code in ((4401,) if size < 64 * 1024 else (4401, 1009))


async def test_a_small_auth_frame_with_padding_is_still_accepted(harness: Harness) -> None:
    token = await rider_token(harness)
    async with open_feed(harness.base_url) as feed:
        reply = await feed.request({"type": "auth", "token": token, "padding": "x" * 1024})
        assert reply["code"] == 0
