"""Badges over real sockets: linking at a station's reader, the feed's answer, list, rename, delete, unlocks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
import trio
import trio_asyncio

from knot_rt.badges.service import UnlockRefused
from knot_rt.config import Settings
from knot_rt.simulator.station import SimulatedStation
from tests.feed_client import FeedClient, open_feed, rider_seeing
from tests.station_client import RawStation, next_call, station_socket
from tests.support import Harness, bearer, eventually, open_test_session, serving, wait_station_online

UID = "04A1B2C3D4E5F6"  # a 7-byte ISO 14443A UID
OTHER_UID = "0badcafe"
LINKED, STARTED, FAILURE = 1, 0, 2


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, station_call_timeout=2.0)


@dataclass
class Station:
    station_id: int
    secret: str
    spot_ids: list[int]


@dataclass
class Site:
    network: int
    v6_cluster: int  # a badge reader per spot
    v5_cluster: int  # one badge reader per station
    readerless_cluster: int
    v6: Station
    v5: Station
    rider: int
    token: str
    others: dict[str, str] = field(default_factory=dict)  # email -> token


async def cluster(harness: Harness, network: int, name: str, *, reader: bool) -> int:
    return await harness.make.cluster(network, name, has_badge_reader=reader)


async def station(harness: Harness, cluster_id: int, version: str) -> Station:
    made = await harness.make.station(cluster_id, 4, version=version)
    return Station(made.station_id, made.secret, made.spot_ids)


async def make_site(harness: Harness) -> Site:
    network = await harness.make.network()
    v6_cluster = await cluster(harness, network, "Gare", reader=True)
    v5_cluster = await cluster(harness, network, "Parc", reader=True)
    readerless = await cluster(harness, network, "Quai", reader=False)
    v6 = await station(harness, v6_cluster, "v6")
    v5 = await station(harness, v5_cluster, "v5")
    await station(harness, readerless, "v6")
    rider = await rider_seeing(harness, network)  # its app label shows the network: the clusters above are seen
    return Site(network, v6_cluster, v5_cluster, readerless, v6, v5, rider, await open_test_session(harness, rider))


async def another_rider(harness: Harness, email: str) -> tuple[int, str]:
    user = await harness.create_user(email, app_label=await harness.make.app_label_once("knot"))
    return user, await open_test_session(harness, user)


@asynccontextmanager
async def booted(harness: Harness, where: Station) -> AsyncIterator[RawStation]:
    async with station_socket(harness.station_url, where.station_id, where.secret) as socket:
        answer = await socket.boot()
        assert answer[2]["status"] == "accepted"
        yield socket


@asynccontextmanager
async def user_feed(harness: Harness, token: str) -> AsyncIterator[FeedClient]:
    async with open_feed(harness.base_url, token) as feed:
        assert (await feed.subscribe("user"))["code"] == 0
        yield feed


async def feedback(socket: RawStation) -> dict[str, Any]:
    """The next ``badge-feedback`` CALL, answered; its payload."""
    call = await next_call(socket)
    assert call[2] == "badge-feedback", call
    await socket.answer(call)
    payload: dict[str, Any] = call[3]
    return payload


async def show_badge(socket: RawStation, uid: str, spot: int | None = None) -> list[list[Any]]:
    """Send ``badge-rfid``; returns the backend's CALLs that came before its RESULT (unanswered), in order."""
    call_id = socket.next_id()
    payload: dict[str, Any] = {"badge_id": uid} if spot is None else {"badge_id": uid, "spot": spot}
    await socket.send([2, call_id, "badge-rfid", payload])
    calls: list[list[Any]] = []
    while True:
        frame = await socket.receive()
        if frame[0] == 2:
            calls.append(frame)
        elif frame[1] == call_id:
            assert frame == [3, call_id, {}], frame
            return calls


async def badge_feedback_after(socket: RawStation, early: list[list[Any]]) -> dict[str, Any]:
    """The ``badge-feedback`` that follows a ``badge-rfid``: one that came before its RESULT, or the next."""
    if early:
        call = early.pop(0)
        assert call[2] == "badge-feedback", call
        await socket.answer(call)
        payload: dict[str, Any] = call[3]
        return payload
    return await feedback(socket)


async def start_link(
    harness: Harness, socket: RawStation | None, token: str, body: dict[str, Any]
) -> tuple[httpx.Response, dict[str, Any] | None]:
    """``POST /badges/link``; the station (when given) answers the LINK_STARTED it gets. (answer, its payload)."""
    answers: list[httpx.Response] = []
    started: list[dict[str, Any]] = []

    async def rider() -> None:
        answers.append(await harness.client.post("/api/application/badges/link", json=body, headers=bearer(token)))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(rider)
        if socket is not None:
            started.append(await feedback(socket))
    return answers[0], started[0] if started else None


async def link_badge(
    harness: Harness, socket: RawStation, token: str, body: dict[str, Any], uid: str, spot: int | None
) -> dict[str, Any]:
    """A whole link: start, show the badge, LINKED; the ``badge.linked`` event of the user's feed."""
    async with user_feed(harness, token) as feed:
        answer, started = await start_link(harness, socket, token, body)
        assert answer.status_code == 200 and answer.json() == {"code": 0}, answer.text
        assert started == ({"status": STARTED} if spot is None else {"status": STARTED, "spot": spot})
        linked = await badge_feedback_after(socket, await show_badge(socket, uid, spot))
        assert linked["status"] == LINKED
        [event] = await feed.events(1)
    assert event["event"] == "badge.linked"
    data: dict[str, Any] = event["data"]
    return data


async def badges_of(harness: Harness, token: str) -> httpx.Response:
    return await harness.client.get("/api/application/badges", headers=bearer(token))


# --------------------------------------------------------------------------
# Linking


async def test_link_at_a_spot_reader_then_list_masked(harness: Harness) -> None:
    site = await make_site(harness)
    async with booted(harness, site.v6) as socket:
        body = {"cluster_id": site.v6_cluster, "name": "Work", "spot_id": site.v6.spot_ids[1]}
        data = await link_badge(harness, socket, site.token, body, UID.lower(), spot=2)
    assert data["name"] == "Work" and data["masked_uid"] == "••••••E5F6"
    listed = await badges_of(harness, site.token)
    assert listed.status_code == 200
    [badge] = listed.json()["data"]
    assert badge["badge_id"] == data["badge_id"] and badge["name"] == "Work"
    assert badge["masked_uid"] == "••••••E5F6" and badge["created_at"]
    assert UID not in listed.text and UID.lower() not in listed.text
    stored = await harness.db.fetchrow("SELECT * FROM badges")
    assert UID.encode() not in bytes(stored["uid_hash"]) and UID not in str(dict(stored))


async def test_link_at_a_v5_station_without_spot(harness: Harness) -> None:
    site = await make_site(harness)
    async with booted(harness, site.v5) as socket:
        data = await link_badge(harness, socket, site.token, {"cluster_id": site.v5_cluster, "name": "Keys"},
                                UID, spot=None)
        assert data["name"] == "Keys"
        # The same badge linked again by its owner keeps its id and takes the new name.
        again = await link_badge(harness, socket, site.token, {"cluster_id": site.v5_cluster, "name": "Home"},
                                 UID, spot=None)
    assert again["badge_id"] == data["badge_id"]
    assert [b["name"] for b in (await badges_of(harness, site.token)).json()["data"]] == ["Home"]


async def test_no_badge_within_the_window_fails_the_link(settings: Settings) -> None:
    async with trio_asyncio.open_loop(), serving(replace(settings, badge_link_seconds=0.3)) as harness:
        site = await make_site(harness)
        async with booted(harness, site.v6) as socket, user_feed(harness, site.token) as feed:
            body = {"cluster_id": site.v6_cluster, "name": "Late", "spot_id": site.v6.spot_ids[0]}
            answer, _ = await start_link(harness, socket, site.token, body)
            assert answer.status_code == 200
            assert await feedback(socket) == {"status": FAILURE, "spot": 1}
            [event] = await feed.events(1)
            assert event["event"] == "badge.link_failed"
            assert event["data"] == {"name": "Late", "reason": "timeout"}
            # Nothing was linked, and the reader is free again.
            assert await harness.db.fetchval("SELECT count(*) FROM badges") == 0
            answer, started = await start_link(harness, socket, site.token, body)
            assert answer.status_code == 200 and started == {"status": STARTED, "spot": 1}


async def test_a_badge_of_another_account_fails_the_link(harness: Harness) -> None:
    site = await make_site(harness)
    _, other_token = await another_rider(harness, "other@example.com")
    spot = site.v6.spot_ids[2]
    async with booted(harness, site.v6) as socket:
        first = await link_badge(harness, socket, site.token, {"cluster_id": site.v6_cluster, "name": "Mine",
                                                               "spot_id": spot}, UID, spot=3)
        async with user_feed(harness, other_token) as feed:
            answer, _ = await start_link(
                harness, socket, other_token, {"cluster_id": site.v6_cluster, "name": "Stolen", "spot_id": spot}
            )
            assert answer.status_code == 200
            failed = await badge_feedback_after(socket, await show_badge(socket, UID, 3))
            assert failed == {"status": FAILURE, "spot": 3}
            [event] = await feed.events(1)
    assert event["event"] == "badge.link_failed" and event["data"] == {"name": "Stolen", "reason": "taken"}
    assert (await badges_of(harness, other_token)).json()["data"] == []
    assert [b["badge_id"] for b in (await badges_of(harness, site.token)).json()["data"]] == [first["badge_id"]]


async def test_a_second_link_at_the_same_reader_waits_its_turn(harness: Harness) -> None:
    site = await make_site(harness)
    _, other_token = await another_rider(harness, "other@example.com")
    body = {"cluster_id": site.v6_cluster, "name": "First", "spot_id": site.v6.spot_ids[0]}
    async with booted(harness, site.v6) as socket:
        answer, _ = await start_link(harness, socket, site.token, body)
        assert answer.status_code == 200
        second, _ = await start_link(harness, None, other_token, {**body, "name": "Second"})
        assert second.status_code == 409 and second.json()["code"] == 38
        # Another spot's reader is free.
        other_spot, started = await start_link(harness, socket, other_token,
                                               {**body, "spot_id": site.v6.spot_ids[1]})
        assert other_spot.status_code == 200 and started == {"status": STARTED, "spot": 2}


async def test_a_spot_of_a_v5_station_names_its_one_reader(harness: Harness) -> None:
    site = await make_site(harness)
    async with booted(harness, site.v5) as socket:
        answer, started = await start_link(
            harness, socket, site.token, {"cluster_id": site.v5_cluster, "name": "A", "spot_id": site.v5.spot_ids[2]}
        )
        assert answer.status_code == 200 and started == {"status": STARTED}
        busy, _ = await start_link(harness, None, site.token, {"cluster_id": site.v5_cluster, "name": "B"})
        assert busy.status_code == 409 and busy.json()["code"] == 38


async def test_where_there_is_no_reader(harness: Harness) -> None:
    site = await make_site(harness)
    async with booted(harness, site.v6):
        for body in (
            {"cluster_id": site.readerless_cluster, "name": "Card"},  # a cluster without reader
            {"cluster_id": site.v6_cluster, "name": "Card"},  # v6 stations: a reader per spot, no spot_id
        ):
            answer, _ = await start_link(harness, None, site.token, body)
            assert answer.status_code == 409 and answer.json()["code"] == 37, (body, answer.text)


async def test_unknown_unseen_and_offline_places(harness: Harness) -> None:
    site = await make_site(harness)
    hidden_network = await harness.make.network("Hidden")  # shown by no app: the rider does not see it
    hidden = await cluster(harness, hidden_network, "Secret", reader=True)
    await station(harness, hidden, "v5")
    for body in (
        {"cluster_id": hidden, "name": "Card"},  # not seen by the rider
        {"cluster_id": 10**12, "name": "Card"},  # unknown
        {"cluster_id": site.v6_cluster, "name": "Card", "spot_id": site.v5.spot_ids[0]},  # another cluster's spot
    ):
        answer, _ = await start_link(harness, None, site.token, body)
        assert answer.status_code == 404 and answer.json()["code"] == 4, (body, answer.text)
    offline, _ = await start_link(harness, None, site.token, {"cluster_id": site.v5_cluster, "name": "Card"})
    assert offline.status_code == 503 and offline.json()["code"] == 50


async def test_a_station_that_refuses_link_started_frees_its_reader(harness: Harness) -> None:
    site = await make_site(harness)
    body = {"cluster_id": site.v5_cluster, "name": "Card"}
    async with booted(harness, site.v5) as socket:
        answers: list[httpx.Response] = []

        async def rider() -> None:
            answers.append(await harness.client.post("/api/application/badges/link", json=body,
                                                     headers=bearer(site.token)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(rider)
            call = await next_call(socket)
            await socket.send([4, call[1], "GenericError", "busy", {}])
        assert answers[0].status_code == 409 and answers[0].json()["code"] == 41
        again, started = await start_link(harness, socket, site.token, body)
        assert again.status_code == 200 and started == {"status": STARTED}


# --------------------------------------------------------------------------
# The rider's badges


async def test_rename_and_delete_only_ones_own(harness: Harness) -> None:
    site = await make_site(harness)
    _, other_token = await another_rider(harness, "other@example.com")
    async with booted(harness, site.v5) as socket:
        badge = await link_badge(harness, socket, site.token, {"cluster_id": site.v5_cluster, "name": "Old"},
                                 UID, spot=None)
    badge_id = badge["badge_id"]
    for token, unknown in ((other_token, badge_id), (site.token, badge_id + 1000)):
        renamed = await harness.client.put("/api/application/badges/name", json={"badge_id": unknown, "name": "X"},
                                           headers=bearer(token))
        assert renamed.status_code == 404 and renamed.json()["code"] == 4
        deleted = await harness.client.delete(f"/api/application/badges?badge_id={unknown}", headers=bearer(token))
        assert deleted.status_code == 404 and deleted.json()["code"] == 4
    assert [b["name"] for b in (await badges_of(harness, site.token)).json()["data"]] == ["Old"]

    renamed = await harness.client.put("/api/application/badges/name", json={"badge_id": badge_id, "name": "Bike"},
                                       headers=bearer(site.token))
    assert renamed.status_code == 200 and renamed.json() == {"code": 0}
    assert [b["name"] for b in (await badges_of(harness, site.token)).json()["data"]] == ["Bike"]
    deleted = await harness.client.delete(f"/api/application/badges?badge_id={badge_id}", headers=bearer(site.token))
    assert deleted.status_code == 200 and deleted.json() == {"code": 0}
    assert (await badges_of(harness, site.token)).json()["data"] == []


async def test_badge_routes_need_a_user(harness: Harness) -> None:
    for method, url in (("GET", "/api/application/badges"), ("DELETE", "/api/application/badges?badge_id=1"),
                        ("POST", "/api/application/badges/link"), ("PUT", "/api/application/badges/name")):
        answer = await harness.client.request(method, url, json={})
        assert answer.status_code == 401 and answer.json()["code"] == 3, (method, url)


async def test_hostile_input_is_refused(harness: Harness) -> None:
    site = await make_site(harness)
    headers = bearer(site.token)
    link, name = "/api/application/badges/link", "/api/application/badges/name"
    c = site.v5_cluster
    bad: list[tuple[str, str, str | None]] = [  # raw JSON text, as a hostile client writes it
        ("POST", link, f'{{"cluster_id": {c}, "name": "a\\u0000b"}}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": "{"x" * 31}"}}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": ""}}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": "\\ud800"}}'),
        ("POST", link, '{"cluster_id": 18446744073709551616, "name": "Card"}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": "Card", "spot_id": 9223372036854775808}}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": "Card", "spot_id": 0}}'),
        ("POST", link, f'{{"cluster_id": {c}, "name": "Card", "spot_id": NaN}}'),
        ("POST", link, '{"name": "Card"}'),
        ("PUT", name, f'{{"badge_id": 1, "name": "{"x" * 31}"}}'),
        ("PUT", name, '{"badge_id": -1, "name": "Card"}'),
        ("PUT", name, '{"badge_id": 1000000000000000000000000000000, "name": "Card"}'),
        ("PUT", name, '{"badge_id": 1, "name": "Card\\u0000"}'),
        ("DELETE", "/api/application/badges?badge_id=99999999999999999999999", None),
        ("DELETE", "/api/application/badges?badge_id=%00", None),
        ("DELETE", "/api/application/badges?badge_id=0", None),
        ("DELETE", "/api/application/badges", None),
    ]
    for method, url, body in bad:
        answer = await harness.client.request(
            method, url, content=body, headers={**headers, "Content-Type": "application/json"} if body else headers,
        )
        assert answer.status_code == 400 and answer.json()["code"] == 2, (method, url, body, answer.text)
    # A name of 30 characters, of any script, is a name.
    async with booted(harness, site.v5) as socket:
        data = await link_badge(harness, socket, site.token, {"cluster_id": site.v5_cluster, "name": "é" * 30},
                                OTHER_UID, spot=None)
    assert data["name"] == "é" * 30 and data["masked_uid"] == "••••••CAFE"


# --------------------------------------------------------------------------
# A badge shown with no link waiting: an unlock


@dataclass
class RecordingUnlocker:
    """Stands in for the rents domain until it lands: records each badge unlock, refuses as told."""

    refusal: UnlockRefused | None = None
    calls: list[tuple[int, int, int | None]] = field(default_factory=list)
    seen: trio.Event = field(default_factory=trio.Event)

    async def unlock_for_badge(self, user_id: int, station_id: int, spot: int | None) -> UnlockRefused | None:
        self.calls.append((user_id, station_id, spot))
        self.seen.set()
        return self.refusal


async def test_an_unknown_badge_gets_failure_feedback(harness: Harness) -> None:
    site = await make_site(harness)
    unlocker = RecordingUnlocker()
    harness.svc.badges.unlocker = unlocker
    async with booted(harness, site.v6) as socket:
        failed = await badge_feedback_after(socket, await show_badge(socket, OTHER_UID, 4))
    assert failed == {"status": FAILURE, "spot": 4}
    assert unlocker.calls == []


async def test_a_linked_badge_unlocks_for_its_user(harness: Harness) -> None:
    site = await make_site(harness)
    unlocker = RecordingUnlocker()
    harness.svc.badges.unlocker = unlocker
    async with booted(harness, site.v6) as socket:
        await link_badge(harness, socket, site.token,
                         {"cluster_id": site.v6_cluster, "name": "Card", "spot_id": site.v6.spot_ids[0]}, UID, 1)
        assert await show_badge(socket, UID, 3) == []
        with trio.fail_after(10):
            await unlocker.seen.wait()
        assert unlocker.calls == [(site.rider, site.v6.station_id, 3)]
        # Refused by the rents domain: the reader shows a failure.
        unlocker.refusal = UnlockRefused("vehicle not available")
        failed = await badge_feedback_after(socket, await show_badge(socket, UID, 2))
    assert failed == {"status": FAILURE, "spot": 2}


async def test_a_badge_at_a_docked_vehicle_starts_its_users_rent(harness: Harness) -> None:
    """The whole path with the rents domain wired in (``RentService.unlock_for_badge``) and a simulated station."""
    make = harness.make
    label = await make.app_label_once("knot")
    network = await make.network(labels=[label], center=(48.58, 7.73))
    cluster_id = await make.cluster(network, has_badge_reader=True)
    made = await make.station(cluster_id, 4)
    await make.vehicles(network, [101])
    await harness.svc.catalog.reload()
    rider = await harness.create_user("rider@example.com", app_label=label)
    token = await open_test_session(harness, rider)
    sim = SimulatedStation(made.station_id, made.secret, harness.station_url, spots=4, vehicles={1: 101},
                           heartbeat=3600)
    async with trio.open_nursery() as nursery, user_feed(harness, token) as feed:
        await nursery.start(sim.run)
        await sim.wait_connected()
        await wait_station_online(harness, made.station_id)
        await eventually(lambda: harness.svc.vehicles.state(101).online)
        linked = await harness.client.post(
            "/api/application/badges/link", json={"cluster_id": cluster_id, "name": "Card",
                                                  "spot_id": made.spot_ids[1]}, headers=bearer(token))
        assert linked.status_code == 200, linked.text
        await (await sim.badge(UID, 2)).wait()
        assert [e["event"] for e in await feed.events(1)] == ["badge.linked"]
        await (await sim.badge(UID, 1)).wait()  # at the docked vehicle's spot
        assert [e["event"] for e in await feed.events(2)] == ["vehicle.unlocked", "rent.started"]
        sim.stop()
    assert [(f.status, f.spot) for f in sim.badge_feedback] == [(STARTED, 2), (LINKED, 2)]
