"""Maintenances (issue 13): types, open/update/resolve/history of stations, spots and vehicles, over the real
server (hypercorn on port 0, real PostgreSQL) and the real feed socket."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from knot_rt.maintenance.service import UnknownMaintenance, WrongType
from knot_rt.maintenance.store import Target
from protocols.feed import Topic
from tests.feed_client import open_feed
from tests.support import Harness, bearer, open_test_session


async def test_service_opens_resolves_and_refuses_a_second_automatic_one(harness: Harness) -> None:
    network = await harness.make.network()
    cluster = await harness.make.cluster(network)
    [(station_id, _)] = await harness.make.stations(cluster, 1, 2)
    svc = harness.svc.maintenance
    spot = await svc.spot_by_number(station_id, 1)
    assert spot is not None and spot.network_id == network and spot.station_id == station_id
    seen: list[tuple[int, bool]] = []
    svc.hooks.append(lambda m, high: seen.append((m.id, high)))
    first = await svc.open_automatic(spot, "charge-fault", "charge-fault")
    assert first is not None and first.started_by == "automatic" and first.opened_by == "station"
    assert await svc.open_automatic(spot, "charge-fault", "charge-fault") is None
    with pytest.raises(WrongType):
        await svc.open(spot, "flat-tyre", by_user_id=None, automatic_code="x")
    assert [m.id for m in await svc.ongoing_of(spot)] == [first.id]
    resolved = await svc.resolve_automatic(spot, "charge-fault")
    assert resolved is not None and resolved.stopped_by == "automatic" and not resolved.is_open
    assert await svc.ongoing_of(spot) == []
    assert [m.id for m in await svc.history(spot)] == [first.id]
    assert seen == [(first.id, False), (first.id, False)]
    with pytest.raises(UnknownMaintenance):
        await svc.resolve(10**9, by_user_id=None)


# over HTTP --------------------------------------------------------------------------------------------------

API = "/api/application/maintenances"


@dataclass
class World:
    network: int
    other_network: int
    station: int
    spots: list[int]
    other_station: int
    other_spot: int
    tokens: dict[str, str]
    report: int
    other_report: int


async def make_world(harness: Harness) -> World:
    network = await harness.make.network("Strasbourg")
    other = await harness.make.network("Colmar")
    cluster = await harness.make.cluster(network, "Gare")
    other_cluster = await harness.make.cluster(other, "Unterlinden")
    [(station, _)] = await harness.make.stations(cluster, 1, 3)
    [(other_station, _)] = await harness.make.stations(other_cluster, 1, 2)
    await harness.make.vehicles(network, [101, 102], prefix="SCOOT")
    await harness.make.vehicles(other, [201], prefix="SCOOT")
    users = {
        "operator": await harness.create_user("op@example.com", perms=[("maintenance", True), ("support", False)],
                                              networks=[network]),
        "reader": await harness.create_user("reader@example.com", perms=[("maintenance", False)],
                                            networks=[network]),
        "other": await harness.create_user("other@example.com", perms=[("maintenance", True)], networks=[other]),
        "stations": await harness.create_user("st@example.com", perms=[("stations", True)], networks=[network]),
        "rider": await harness.create_user("rider@example.com"),
    }
    tokens = {name: await open_test_session(harness, uid) for name, uid in users.items()}
    spots = [r["id"] for r in await harness.db.fetch(
        "SELECT id FROM spots WHERE station_id = $1 ORDER BY number", station)]
    other_spot = await harness.db.fetchval("SELECT min(id) FROM spots WHERE station_id = $1", other_station)
    # Reports as a rider opens them (the support chat's table): one on each network.
    report = await harness.db.fetchval(
        "INSERT INTO reports (user_id, network_id) VALUES ($1, $2) RETURNING id", users["rider"], network)
    other_report = await harness.db.fetchval(
        "INSERT INTO reports (user_id, network_id) VALUES ($1, $2) RETURNING id", users["rider"], other)
    return World(network, other, station, spots, other_station, other_spot, tokens, report, other_report)


async def call(harness: Harness, method: str, path: str, token: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
    answer = await harness.client.request(method, API + path, headers=bearer(token), **kwargs)
    return answer.status_code, answer.json()


async def test_types_are_localized_and_need_the_permission(harness: Harness) -> None:
    w = await make_world(harness)
    status, body = await call(harness, "GET", "/types", w.tokens["reader"], params={"lang": "fr"})
    assert status == 200 and body["code"] == 0
    by_key = {t["type_key"]: t for t in body["data"]}
    assert by_key["flat-tyre"] == {**by_key["flat-tyre"], "target_type": "vehicle", "severity": "high",
                                   "type_name": "Pneu crevé", "deletion_date": None}
    assert by_key["lock-stuck"]["target_type"] == "spot"
    assert by_key["station-offline"]["target_type"] == "station"
    assert by_key["flat-tyre"]["creation_date"]
    _, english = await call(harness, "GET", "/types", w.tokens["reader"], params={"lang": "zz"})
    assert {t["type_key"]: t["type_name"] for t in english["data"]}["flat-tyre"] == "Flat tyre"
    assert (await call(harness, "GET", "/types", w.tokens["stations"], params={"lang": "en"}))[1]["code"] == 13
    status, body = await call(harness, "GET", "/types", w.tokens["reader"])
    assert (status, body["code"]) == (400, 2)
    # A deleted type lists with its deletion date and opens nothing.
    assert await harness.svc.maintenance.delete_type("cleaning")
    _, listed = await call(harness, "GET", "/types", w.tokens["reader"], params={"lang": "en"})
    assert {t["type_key"]: t for t in listed["data"]}["cleaning"]["deletion_date"] is not None
    status, body = await call(harness, "POST", "/vehicles", w.tokens["operator"],
                              json={"maintenance_type": "cleaning", "vehicle_id": 101})
    assert (status, body["code"]) == (400, 47)


async def test_spot_maintenance_lifecycle(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    spot = w.spots[0]
    status, body = await call(harness, "POST", "/spots", op, json={
        "maintenance_type": "lock-stuck", "comment": "the lock hangs", "spot_id": spot, "report_id": w.report,
        "unknown_field": "ignored"})
    assert status == 200 and body["code"] == 0, body
    opened = body["data"]
    operator_id = await harness.db.fetchval("SELECT id FROM users WHERE email = 'op@example.com'")
    assert opened == {**opened, "spot_id": spot, "station_id": w.station, "vehicle_id": None,
                      "maintenance_type": "lock-stuck", "comment": "the lock hangs", "severity": "high",
                      "started_by": "user", "started_by_uid": operator_id, "automatic_code_description": None,
                      "report_id": w.report}
    mid = opened["maintenance_id"]
    _, ongoing = await call(harness, "GET", f"/spots/{spot}", w.tokens["reader"], params={"lang": "de"})
    assert [(m["maintenance_id"], m["type_name"]) for m in ongoing["data"]] == [(mid, "Schloss klemmt")]
    assert "stop_date" not in ongoing["data"][0]
    # Another spot and the station itself have none.
    assert (await call(harness, "GET", f"/spots/{w.spots[1]}", op, params={"lang": "en"}))[1]["data"] == []
    assert (await call(harness, "GET", f"/stations/{w.station}", op, params={"lang": "en"}))[1]["data"] == []

    assert (await call(harness, "PUT", f"/{mid}", op, json={"severity": "low"}))[1] == {"code": 0}
    assert (await call(harness, "PUT", f"/{mid}", op, json={"comment": "fixed soon"}))[1] == {"code": 0}
    _, ongoing = await call(harness, "GET", f"/spots/{spot}", op, params={"lang": "en"})
    assert (ongoing["data"][0]["severity"], ongoing["data"][0]["comment"]) == ("low", "fixed soon")

    assert (await call(harness, "DELETE", f"/{mid}", op))[1] == {"code": 0}
    assert (await call(harness, "GET", f"/spots/{spot}", op, params={"lang": "en"}))[1]["data"] == []
    _, history = await call(harness, "GET", f"/spots/{spot}/history", op, params={"lang": "en"})
    [done] = history["data"]
    assert done == {**done, "maintenance_id": mid, "stopped_by": "user", "stopped_by_uid": operator_id}
    assert done["stop_date"] >= done["start_date"]
    # Resolving again changes nothing; deleting removes it from history, then it is unknown.
    assert (await call(harness, "DELETE", f"/{mid}", op))[1] == {"code": 0}
    assert (await call(harness, "DELETE", f"/{mid}", op, params={"delete_from_history": "true"}))[1] == {"code": 0}
    assert (await call(harness, "GET", f"/spots/{spot}/history", op, params={"lang": "en"}))[1]["data"] == []
    for method, kwargs in (("DELETE", {}), ("PUT", {"json": {"comment": "x"}})):
        status, body = await call(harness, method, f"/{mid}", op, **kwargs)
        assert (status, body["code"]) == (404, 4)
    # An open maintenance deleted from history is resolved and hidden at once.
    _, body = await call(harness, "POST", "/spots", op, json={"maintenance_type": "spot-cleaning", "spot_id": spot})
    assert body["data"]["severity"] == "info"
    second = body["data"]["maintenance_id"]
    assert (await call(harness, "DELETE", f"/{second}", op, params={"delete_from_history": "true"}))[1]["code"] == 0
    assert (await call(harness, "GET", f"/spots/{spot}", op, params={"lang": "en"}))[1]["data"] == []
    assert (await call(harness, "GET", f"/spots/{spot}/history", op, params={"lang": "en"}))[1]["data"] == []


async def test_vehicle_maintenances_by_id_or_serial(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    _, body = await call(harness, "POST", "/vehicles", op, json={
        "maintenance_type": "flat-tyre", "serial_number": "SCOOT101", "severity": "info"})
    assert body["code"] == 0 and body["data"]["vehicle_id"] == 101 and body["data"]["severity"] == "info"
    mid = body["data"]["maintenance_id"]
    by_id = (await call(harness, "GET", "/vehicles", op, params={"vehicle_id": 101, "lang": "en"}))[1]
    by_serial = (await call(harness, "GET", "/vehicles", op, params={"serial_number": "SCOOT101", "lang": "en"}))[1]
    assert [m["maintenance_id"] for m in by_id["data"]] == [m["maintenance_id"] for m in by_serial["data"]] == [mid]
    both = (await call(harness, "GET", "/vehicles", op,
                       params={"vehicle_id": 102, "serial_number": "SCOOT101", "lang": "en"}))
    assert (both[0], both[1]["code"]) == (404, 4)  # the two name different vehicles: no such vehicle
    assert (await call(harness, "DELETE", f"/{mid}", op))[1]["code"] == 0
    _, history = await call(harness, "GET", "/vehicles/history", op, params={"serial_number": "SCOOT101",
                                                                             "lang": "en"})
    assert [m["maintenance_id"] for m in history["data"]] == [mid]
    status, body = await call(harness, "GET", "/vehicles", op, params={"lang": "en"})
    assert (status, body["code"]) == (400, 2)
    status, body = await call(harness, "POST", "/vehicles", op, json={"maintenance_type": "flat-tyre"})
    assert (status, body["code"]) == (400, 2)


async def test_station_maintenances_are_the_station_s_own(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    _, body = await call(harness, "POST", "/stations", op, json={
        "maintenance_type": "power-supply", "station_id": w.station, "comment": "no power"})
    assert body["code"] == 0 and body["data"]["station_id"] == w.station and body["data"]["spot_id"] is None
    mid = body["data"]["maintenance_id"]
    await call(harness, "POST", "/spots", op, json={"maintenance_type": "charge-fault", "spot_id": w.spots[1]})
    _, ongoing = await call(harness, "GET", f"/stations/{w.station}", op, params={"lang": "en"})
    assert [m["maintenance_id"] for m in ongoing["data"]] == [mid]
    assert (await call(harness, "DELETE", f"/{mid}", op))[1]["code"] == 0
    _, history = await call(harness, "GET", f"/stations/{w.station}/history", op, params={"lang": "en"})
    assert [m["maintenance_id"] for m in history["data"]] == [mid]


async def test_history_pages_in_both_directions(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    spot = w.spots[2]
    made = []
    for _ in range(7):
        _, body = await call(harness, "POST", "/spots", op, json={"maintenance_type": "spot-cleaning",
                                                                  "spot_id": spot})
        made.append(body["data"]["maintenance_id"])
        await call(harness, "DELETE", f"/{made[-1]}", op)
    svc = harness.svc.maintenance
    target = await svc.spot(spot)
    assert target is not None
    newest_first = await svc.history(target, limit=3)
    assert [m.id for m in newest_first] == made[::-1][:3]
    assert [m.id for m in await svc.history(target, last_id=newest_first[-1].id, limit=3)] == made[::-1][3:6]
    assert [m.id for m in await svc.history(target, last_id=made[0], direction="ASC", limit=3)] == made[1:4]

    async def page(**params: Any) -> list[int]:
        _, body = await call(harness, "GET", f"/spots/{spot}/history", op, params={"lang": "en", **params})
        return [m["maintenance_id"] for m in body["data"]]

    assert await page() == made[::-1]
    assert await page(direction="DESC") == made[::-1]
    assert await page(direction="ASC") == made
    assert await page(direction="ASC", last_maintenance_id=made[3]) == made[4:]
    assert await page(direction="DESC", last_maintenance_id=made[3]) == made[:3][::-1]
    assert await page(direction="DESC", last_maintenance_id=made[0]) == []
    status, body = await call(harness, "GET", f"/spots/{spot}/history", op,
                              params={"lang": "en", "direction": "sideways"})
    assert (status, body["code"]) == (400, 2)


async def test_unknown_first_then_rights_then_type(harness: Harness) -> None:
    w = await make_world(harness)
    op, other, reader = w.tokens["operator"], w.tokens["other"], w.tokens["reader"]
    _, body = await call(harness, "POST", "/spots", op, json={"maintenance_type": "lock-stuck",
                                                              "spot_id": w.spots[0]})
    mid = body["data"]["maintenance_id"]
    forbidden: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", f"/spots/{w.spots[0]}", {"params": {"lang": "en"}}),
        ("GET", f"/spots/{w.spots[0]}/history", {"params": {"lang": "en"}}),
        ("POST", "/spots", {"json": {"maintenance_type": "lock-stuck", "spot_id": w.spots[0]}}),
        ("GET", "/vehicles", {"params": {"vehicle_id": 101, "lang": "en"}}),
        ("GET", "/vehicles/history", {"params": {"serial_number": "SCOOT101", "lang": "en"}}),
        ("POST", "/vehicles", {"json": {"maintenance_type": "brake", "vehicle_id": 101}}),
        ("GET", f"/stations/{w.station}", {"params": {"lang": "en"}}),
        ("GET", f"/stations/{w.station}/history", {"params": {"lang": "en"}}),
        ("POST", "/stations", {"json": {"maintenance_type": "power-supply", "station_id": w.station}}),
        ("PUT", f"/{mid}", {"json": {"comment": "mine now"}}),
        ("DELETE", f"/{mid}", {}),
    ]
    for method, path, kwargs in forbidden:
        for token in (other, w.tokens["stations"], w.tokens["rider"]):
            status, body = await call(harness, method, path, token, **kwargs)
            assert (status, body["code"]) == (403, 13), (method, path, body)
    # Read-only: reads pass, writes are refused.
    for method, path, kwargs in forbidden:
        status, body = await call(harness, method, path, reader, **kwargs)
        expected = (200, 0) if method == "GET" else (403, 13)
        assert (status, body["code"]) == expected, (method, path, body)
    unknown: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/spots/999999", {"params": {"lang": "en"}}),
        ("GET", "/spots/999999/history", {"params": {"lang": "en"}}),
        ("POST", "/spots", {"json": {"maintenance_type": "lock-stuck", "spot_id": 999999}}),
        ("POST", "/spots", {"json": {"maintenance_type": "lock-stuck", "spot_id": 0}}),
        ("GET", "/vehicles", {"params": {"vehicle_id": 999999, "lang": "en"}}),
        ("GET", "/vehicles/history", {"params": {"serial_number": "NOSUCHONE", "lang": "en"}}),
        ("POST", "/vehicles", {"json": {"maintenance_type": "brake", "serial_number": "NOSUCHONE"}}),
        ("GET", "/stations/999999", {"params": {"lang": "en"}}),
        ("GET", "/stations/999999/history", {"params": {"lang": "en"}}),
        ("POST", "/stations", {"json": {"maintenance_type": "power-supply", "station_id": 999999}}),
        ("PUT", "/999999", {"json": {"comment": "x"}}),
        ("DELETE", "/999999", {}),
    ]
    for method, path, kwargs in unknown:
        for token in (op, other, w.tokens["rider"]):  # 404 before 403
            status, body = await call(harness, method, path, token, **kwargs)
            assert (status, body["code"]) == (404, 4), (method, path, body)
    # The type: of another target, or unknown, after the rights.
    for path, payload in (("/spots", {"spot_id": w.spots[0], "maintenance_type": "flat-tyre"}),
                          ("/stations", {"station_id": w.station, "maintenance_type": "lock-stuck"}),
                          ("/vehicles", {"vehicle_id": 101, "maintenance_type": "station-offline"}),
                          ("/vehicles", {"vehicle_id": 101, "maintenance_type": "no-such-type"})):
        status, body = await call(harness, "POST", path, op, json=payload)
        assert (status, body["code"]) == (400, 47), (path, body)
        status, body = await call(harness, "POST", path, other, json=payload)
        assert (status, body["code"]) == (403, 13)
    # A report the operator may not read (another network's) names nothing.
    status, body = await call(harness, "POST", "/spots", op, json={
        "maintenance_type": "lock-stuck", "spot_id": w.spots[0], "report_id": w.other_report})
    assert (status, body["code"]) == (404, 4)
    status, body = await call(harness, "POST", "/spots", op, json={
        "maintenance_type": "lock-stuck", "spot_id": w.spots[0], "report_id": 999999})
    assert (status, body["code"]) == (404, 4)
    # The other network's operator works on their own objects.
    _, body = await call(harness, "POST", "/spots", other, json={"maintenance_type": "lock-stuck",
                                                                 "spot_id": w.other_spot})
    assert body["code"] == 0


async def test_hostile_bodies_are_refused(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    bad_bodies: list[Any] = [
        {"maintenance_type": "", "spot_id": w.spots[0]},
        {"maintenance_type": "x" * 51, "spot_id": w.spots[0]},
        {"maintenance_type": "lock-stuck", "spot_id": w.spots[0], "comment": ""},
        {"maintenance_type": "lock-stuck", "spot_id": w.spots[0], "comment": "c" * 1025},
        {"maintenance_type": "lock-stuck", "spot_id": w.spots[0], "severity": "urgent"},
        {"maintenance_type": "lock-stuck", "spot_id": str(w.spots[0]) + "x"},
        {"maintenance_type": "lock-stuck", "spot_id": -1},
        {"maintenance_type": "lock-stuck", "spot_id": 2**64},
        {"maintenance_type": "lock-stuck", "spot_id": w.spots[0], "report_id": 0},
        {"maintenance_type": ["lock-stuck"], "spot_id": w.spots[0]},
        {"spot_id": w.spots[0]},
        [],
        "lock-stuck",
    ]
    for payload in bad_bodies:
        status, body = await call(harness, "POST", "/spots", op, json=payload)
        assert (status, body["code"]) == (400, 2), (payload, body)
    for payload in ({}, {"severity": "none"}, {"comment": ""}, {"comment": 5}):
        status, body = await call(harness, "PUT", "/1", op, json=payload)
        assert (status, body["code"]) == (400, 2), (payload, body)
    status, body = await call(harness, "POST", "/vehicles", op,
                              json={"maintenance_type": "brake", "serial_number": "abc"})
    assert (status, body["code"]) == (400, 2)
    status, body = await call(harness, "DELETE", "/1", op, params={"delete_from_history": "maybe"})
    assert (status, body["code"]) == (400, 2)
    status, body = await call(harness, "GET", f"/spots/{w.spots[0]}", op, params={"lang": "eng"})
    assert (status, body["code"]) == (400, 2)
    # Nothing was opened by any of them.
    assert await harness.db.fetchval("SELECT count(*) FROM maintenances") == 0


async def test_events_reach_both_topics_in_order(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    network_topic, station_topic = str(Topic.maintenance(w.network)), str(Topic.station(w.station))
    async with open_feed(harness.base_url, op) as feed, open_feed(harness.base_url, w.tokens["reader"]) as reader:
        assert (await feed.subscribe(network_topic))["code"] == 0
        assert (await feed.subscribe(station_topic))["code"] == 0
        assert (await reader.subscribe(network_topic))["code"] == 0
        for token in (w.tokens["other"], w.tokens["stations"], w.tokens["rider"]):
            async with open_feed(harness.base_url, token) as stranger:
                assert (await stranger.subscribe(network_topic))["code"] == 13
        _, body = await call(harness, "POST", "/spots", op, json={"maintenance_type": "lock-stuck",
                                                                  "spot_id": w.spots[0]})
        mid = body["data"]["maintenance_id"]
        await call(harness, "PUT", f"/{mid}", op, json={"severity": "low"})
        _, body = await call(harness, "POST", "/vehicles", op, json={"maintenance_type": "brake",
                                                                     "vehicle_id": 102})
        vid = body["data"]["maintenance_id"]
        await call(harness, "DELETE", f"/{mid}", op)
        await harness.svc.maintenance.open_automatic(await _station_target(harness, w.station), "station-offline",
                                                     "offline")
        events = await feed.events(9)
        on_network = [(e["event"], e["data"]["maintenance_id"], e["data"]["opened_by"])
                      for e in events if e["topic"] == network_topic]
        on_station = [(e["event"], e["data"]["maintenance_id"]) for e in events if e["topic"] == station_topic]
        auto = next(e["data"] for e in events if e["data"]["started_by"] == "automatic")
        assert on_network == [
            ("maintenance.opened", mid, "user"), ("maintenance.updated", mid, "user"),
            ("maintenance.opened", vid, "user"), ("maintenance.resolved", mid, "user"),
            ("maintenance.opened", auto["maintenance_id"], "station"),
        ]
        assert on_station == [("maintenance.opened", mid), ("maintenance.updated", mid),
                              ("maintenance.resolved", mid), ("maintenance.opened", auto["maintenance_id"])]
        assert auto["automatic_code_description"] == "offline" and auto["severity"] == "high"
        seqs = [e["seq"] for e in events if e["topic"] == network_topic]
        assert seqs == sorted(seqs)
        resolved = next(e["data"] for e in events if e["event"] == "maintenance.resolved")
        assert resolved["stopped_by"] == "user" and resolved["stop_date"] and resolved["network_id"] == w.network
        read = await reader.events(5)
        assert [e["event"] for e in read] == [e for e, _, _ in on_network]


async def _station_target(harness: Harness, station_id: int) -> Target:
    target = await harness.svc.maintenance.station(station_id)
    assert target is not None
    return target


async def test_a_docked_vehicle_s_maintenance_reaches_its_station_topic(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    # Vehicle 101 is docked in the station's second spot (as the station would have reported it).
    await harness.db.execute("UPDATE vehicles SET spot_id = $1 WHERE id = 101", w.spots[1])
    station_topic = str(Topic.station(w.station))
    async with open_feed(harness.base_url, op) as feed:
        assert (await feed.subscribe(station_topic))["code"] == 0
        _, body = await call(harness, "POST", "/vehicles", op, json={"maintenance_type": "broken-screen",
                                                                     "vehicle_id": 101})
        opened = body["data"]
        assert (opened["vehicle_id"], opened["spot_id"], opened["station_id"]) == (101, w.spots[1], w.station)
        [event] = await feed.events(1)
        assert (event["topic"], event["event"], event["data"]["maintenance_id"]) == (
            station_topic, "maintenance.opened", opened["maintenance_id"])
    # It is the vehicle's, not the spot's nor the station's.
    assert (await call(harness, "GET", f"/spots/{w.spots[1]}", op, params={"lang": "en"}))[1]["data"] == []
    assert (await call(harness, "GET", f"/stations/{w.station}", op, params={"lang": "en"}))[1]["data"] == []
    _, listed = await call(harness, "GET", "/vehicles", op, params={"vehicle_id": 101, "lang": "en"})
    assert [m["maintenance_id"] for m in listed["data"]] == [opened["maintenance_id"]]


async def test_automatic_maintenances_list_as_such_and_users_may_resolve_them(harness: Harness) -> None:
    w = await make_world(harness)
    op = w.tokens["operator"]
    svc = harness.svc.maintenance
    spot = await svc.spot(w.spots[0])
    assert spot is not None
    opened = await svc.open_automatic(spot, "lock-stuck", "locker-stuck")
    assert opened is not None
    _, listed = await call(harness, "GET", f"/spots/{w.spots[0]}", op, params={"lang": "en"})
    [m] = listed["data"]
    assert m == {**m, "started_by": "automatic", "started_by_uid": None,
                 "automatic_code_description": "locker-stuck", "severity": "high"}
    assert (await call(harness, "DELETE", f"/{opened.id}", op))[1]["code"] == 0
    # Resolved by a user: the station's "disappeared" finds nothing left to resolve; a new alert opens anew.
    assert await svc.resolve_automatic(spot, "locker-stuck") is None
    again = await svc.open_automatic(spot, "lock-stuck", "locker-stuck")
    assert again is not None and again.id != opened.id
