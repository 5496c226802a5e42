"""Cluster routes (ROUTES rows 11-20) over the real server, with live stations over real sockets.

The city: around Strasbourg, four networks —
- ``public``: public, shown by the app label ``knot``;
- ``unlinked``: public, shown by another label only;
- ``org_only``: public and shown by ``knot``, but usable by the members of Corp only;
- ``private``: not public, of Corp (seen by its members and its operators).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import httpx
import pytest

from tests.station_client import station_socket
from tests.support import Harness, bearer, eventually_value, open_test_session

T = TypeVar("T")

API = "/api/application"

# Field sets, copied from the spec's response samples.
AREA_KEYS = {
    "cluster_id", "latitude", "longitude", "name", "available_vehicles", "total_spots", "free_spots",
    "cluster_is_down", "network_id", "soon_to_be_available", "commissioning_date", "exceptional_out_of_order",
    "description", "cluster_is_accessible", "has_badge_reader", "balancing_type",
}
DETAILS_KEYS = AREA_KEYS
PUBLIC_KEYS = {
    "cluster_id", "latitude", "longitude", "name", "available_vehicles", "total_spots", "free_spots",
    "cluster_is_down", "network_id", "soon_to_be_available", "commissioning_date", "exceptional_out_of_order",
    "description",
}
CLOSEST_KEYS = {
    "cluster_id", "latitude", "longitude", "name", "available_vehicles", "total_spots", "free_spots",
    "cluster_is_down", "network_id", "cluster_is_accessible", "distance", "has_badge_reader",
}
OUT_OF_ORDER_KEYS = {"exceptional_out_of_order_id", "type", "reason", "custom_reason"}
SPOT_KEYS = {"spot_id", "station_id", "displayed_number", "in_maintenance", "is_accessible"}
VEHICLE_KEYS = {
    "vehicle_id", "serial_number", "battery_level", "avg_max_range", "vehicle_type", "vehicle_online", "spot_id",
    "station_id", "displayed_number", "in_maintenance", "is_accessible", "model_id", "model_name", "manufacturer",
}

# The area of the city: 0.04 degrees around this centre.
CENTRE: dict[str, Any] = {"lat": 48.585, "lng": 7.745, "latDeg": 0.04, "lngDeg": 0.04}


@dataclass
class City:
    label: int
    networks: dict[str, int]
    clusters: dict[str, int]
    out_of_order: int
    tokens: dict[str, str]


async def build_city(harness: Harness) -> City:
    corp = await harness.make.organization("Corp", "corp.example")
    knot = await harness.create_app_label("knot")
    other = await harness.create_app_label("other", "Other")
    networks = {
        "public": await harness.make.network("Strasbourg", labels=(knot,)),
        "unlinked": await harness.make.network("Elsewhere", labels=(other,)),
        "org_only": await harness.make.network("Corp campus", organization=corp, organization_only=True, labels=(knot,)),
        "private": await harness.make.network("Corp private", organization=corp, public=False, labels=(knot,)),
    }
    out_of_order = await harness.make.out_of_order("weather", "storm", "Closed during the storm")
    clusters = {
        "gare": await harness.make.cluster(
            networks["public"], "Gare", 48.5850, 7.7350,
            description={"en": "Main station", "fr": "Gare centrale"},
            commissioning_date=datetime(2019, 8, 24, 14, 15, 22, tzinfo=UTC), soon_to_be_available=True,
            has_badge_reader=True, balancing_type="donor", exceptional_out_of_order_id=out_of_order,
        ),
        "cathedrale": await harness.make.cluster(networks["public"], "Cathédrale", 48.5818, 7.7509),
        "paris": await harness.make.cluster(networks["public"], "Paris", 48.8566, 2.3522),
        "unlinked": await harness.make.cluster(networks["unlinked"], "Elsewhere", 48.5830, 7.7400),
        "org_only": await harness.make.cluster(networks["org_only"], "Campus", 48.5840, 7.7450,
                                   description={"fr": "Campus seulement"}),
        "private": await harness.make.cluster(networks["private"], "Private", 48.5860, 7.7500),
    }
    await harness.svc.catalog.reload()
    users = {
        "rider": await harness.create_user("rider@example.com", app_label=knot),
        "member": await harness.create_user("alice@corp.example", app_label=knot),
        "operator": await harness.create_user("op@example.com", perms=[("clusters", True)],
                                              networks=[networks["public"]]),
        "other_operator": await harness.create_user("op2@example.com", perms=[("clusters", True)],
                                                    networks=[networks["unlinked"]]),
        "reader": await harness.create_user("reader@example.com", perms=[("clusters", False)],
                                            networks=[networks["public"]]),
        "stranger": await harness.create_user("nobody@example.com"),
    }
    tokens = {name: await open_test_session(harness, user_id) for name, user_id in users.items()}
    return City(knot, networks, clusters, out_of_order, tokens)


async def get(harness: Harness, path: str, token: str | None = None, **params: Any) -> httpx.Response:
    return await harness.client.get(API + path, params=params, headers=bearer(token) if token else {})


async def put(harness: Harness, path: str, token: str, body: Any) -> httpx.Response:
    return await harness.client.put(API + path, json=body, headers=bearer(token))


async def ok_data(response: httpx.Response) -> Any:
    body = response.json()
    assert response.status_code == 200 and body["code"] == 0, body
    return body["data"]


def refused(response: httpx.Response, status: int, code: int) -> None:
    body = response.json()
    assert (response.status_code, body["code"]) == (status, code), body
    assert isinstance(body["message"], str) and body["message"]


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    """The test's own great-circle distance (not the service's)."""
    r = 6_371_000.0
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lng2 - lng1) / 2) ** 2
    return 2 * r * math.asin(math.sqrt(a))


# areas ------------------------------------------------------------------------------------------


async def test_areas_show_what_each_user_sees_with_the_spec_fields(harness: Harness) -> None:
    city = await build_city(harness)
    c, t = city.clusters, city.tokens

    rider = await ok_data(await get(harness, "/clusters/areas", t["rider"], **CENTRE))
    assert {x["cluster_id"]: x["cluster_is_accessible"] for x in rider} == {
        c["gare"]: True, c["cathedrale"]: True, c["org_only"]: False,
    }
    assert all(set(x) == AREA_KEYS for x in rider)

    member = await ok_data(await get(harness, "/clusters/areas", t["member"], **CENTRE))
    assert {x["cluster_id"]: x["cluster_is_accessible"] for x in member} == {
        c["gare"]: True, c["cathedrale"]: True, c["org_only"]: True, c["private"]: True,
    }
    operator = await ok_data(await get(harness, "/clusters/areas", t["operator"], **CENTRE))
    assert {x["cluster_id"]: x["cluster_is_accessible"] for x in operator} == {c["gare"]: True, c["cathedrale"]: True}
    other = await ok_data(await get(harness, "/clusters/areas", t["other_operator"], **CENTRE))
    assert [x["cluster_id"] for x in other] == [c["unlinked"]]
    assert await ok_data(await get(harness, "/clusters/areas", t["stranger"], **CENTRE)) == []

    gare = next(x for x in rider if x["cluster_id"] == c["gare"])
    assert gare == {
        "cluster_id": c["gare"], "latitude": 48.585, "longitude": 7.735, "name": "Gare",
        "available_vehicles": 0, "total_spots": 0, "free_spots": 0, "cluster_is_down": True,
        "network_id": city.networks["public"], "soon_to_be_available": True,
        "commissioning_date": gare["commissioning_date"],
        "exceptional_out_of_order": {"exceptional_out_of_order_id": city.out_of_order, "type": "weather",
                                     "reason": "storm", "custom_reason": "Closed during the storm"},
        "description": "Main station", "cluster_is_accessible": True, "has_badge_reader": True,
        "balancing_type": "donor",
    }
    assert gare["commissioning_date"].startswith("2019-08-24T14:15:22")
    assert set(gare["exceptional_out_of_order"]) == OUT_OF_ORDER_KEYS
    cathedrale = next(x for x in rider if x["cluster_id"] == c["cathedrale"])
    assert cathedrale["exceptional_out_of_order"] is None and cathedrale["description"] is None
    assert cathedrale["balancing_type"] == "neutral" and cathedrale["commissioning_date"] is None

    # A smaller box holds only what is inside it; Paris is never in the Strasbourg box.
    small = await ok_data(await get(harness, "/clusters/areas", t["member"], lat=48.585, lng=7.735, latDeg=0.002,
                                    lngDeg=0.002))
    assert [x["cluster_id"] for x in small] == [c["gare"]]


async def test_area_descriptions_are_localized_with_an_english_fallback(harness: Harness) -> None:
    city = await build_city(harness)

    async def descriptions(lang: str) -> dict[int, str | None]:
        found = await ok_data(await get(harness, "/clusters/areas", city.tokens["member"], **CENTRE, lang=lang))
        return {x["cluster_id"]: x["description"] for x in found}

    fr, de = await descriptions("fr"), await descriptions("de")
    assert fr[city.clusters["gare"]] == "Gare centrale" and fr[city.clusters["org_only"]] == "Campus seulement"
    assert de[city.clusters["gare"]] == "Main station"  # no German: English
    assert de[city.clusters["org_only"]] is None  # neither German nor English
    assert (await descriptions("FR"))[city.clusters["gare"]] == "Gare centrale"


BAD_AREAS: list[dict[str, Any]] = [
    {**CENTRE, "lat": 91},
    {**CENTRE, "lng": -181},
    {k: v for k, v in CENTRE.items() if k != "lng"},
    {k: v for k, v in CENTRE.items() if k != "latDeg"},
    {**CENTRE, "lat": "abc"},
    {**CENTRE, "lat": "nan"},
    {**CENTRE, "latDeg": -0.04},  # reversed
    {**CENTRE, "lngDeg": -0.04},
    {**CENTRE, "latDeg": 3},  # oversized
    {**CENTRE, "lngDeg": 2.5},
    {**CENTRE, "lang": "fra"},
]


async def test_bad_areas_are_refused_as_invalid_input(harness: Harness) -> None:
    city = await build_city(harness)
    for params in BAD_AREAS:
        refused(await get(harness, "/clusters/areas", city.tokens["rider"], **params), 400, 2)
        refused(await get(harness, "/clusters/areas/public", app_label="knot", **params), 400, 2)


async def test_user_routes_need_a_token(harness: Harness) -> None:
    city = await build_city(harness)
    cluster = city.clusters["gare"]
    for path, params in [("/clusters/areas", CENTRE), ("/clusters/closests", {"lat": 48.5, "lng": 7.7}),
                         (f"/clusters/{cluster}", {}), (f"/clusters/{cluster}/spots", {}),
                         (f"/clusters/{cluster}/vehicles", {})]:
        refused(await get(harness, path, **params), 401, 3)
        refused(await get(harness, path, "not-a-token", **params), 401, 3)


# closests ------------------------------------------------------------------------------------------


async def test_closests_are_the_nearest_seen_clusters_by_true_distance(harness: Harness) -> None:
    city = await build_city(harness)
    c, t = city.clusters, city.tokens
    here = {"lat": 48.5850, "lng": 7.7350}

    rider = await ok_data(await get(harness, "/clusters/closests", t["rider"], **here))
    assert all(set(x) == CLOSEST_KEYS for x in rider)
    assert [x["cluster_id"] for x in rider] == [c["gare"], c["org_only"], c["cathedrale"], c["paris"]]
    assert [x["cluster_is_accessible"] for x in rider] == [True, False, True, True]
    by_id = {x["cluster_id"]: x for x in rider}
    assert by_id[c["gare"]]["distance"] == 0
    for x in rider:
        assert isinstance(x["distance"], int)
        assert abs(x["distance"] - haversine_m(here["lat"], here["lng"], x["latitude"], x["longitude"])) <= 2
    assert 395_000 < by_id[c["paris"]]["distance"] < 400_000  # Strasbourg to Paris, as the crow flies
    assert by_id[c["gare"]]["has_badge_reader"] is True and by_id[c["gare"]]["cluster_is_down"] is True

    assert await ok_data(await get(harness, "/clusters/closests", t["stranger"], **here)) == []
    member = await ok_data(await get(harness, "/clusters/closests", t["member"], **here))
    assert c["private"] in {x["cluster_id"] for x in member} and c["unlinked"] not in {x["cluster_id"] for x in member}


async def test_closests_are_at_most_twenty_sorted_by_distance(harness: Harness) -> None:
    city = await build_city(harness)
    # 30 more clusters east of the point, about 1 km apart, alternately 17 km south and north of it.
    for g in range(1, 31):
        await harness.make.cluster(city.networks["public"], f"Line {g}", 47.0 + (g % 2) * 0.3, 8.0 + g * 0.013)
    here = {"lat": 47.15, "lng": 8.2}
    found = await ok_data(await get(harness, "/clusters/closests", city.tokens["rider"], **here))
    assert len(found) == 20
    distances = [x["distance"] for x in found]
    assert distances == sorted(distances)
    everything = [(haversine_m(here["lat"], here["lng"], x.latitude, x.longitude), x.id)
                  for x in harness.svc.catalog.clusters.values()
                  if x.network_id in (city.networks["public"], city.networks["org_only"])]
    expected = [cluster_id for _, cluster_id in sorted(everything)[:20]]
    assert [x["cluster_id"] for x in found] == expected


async def test_closests_refuse_bad_coordinates(harness: Harness) -> None:
    city = await build_city(harness)
    for params in ({"lat": 91, "lng": 7}, {"lat": 48}, {"lat": "abc", "lng": 7}, {"lat": 48, "lng": 181}, {}):
        refused(await get(harness, "/clusters/closests", city.tokens["rider"], **params), 400, 2)


# public areas ---------------------------------------------------------------------------------------


async def test_public_areas_show_the_public_networks_of_the_app_label(harness: Harness) -> None:
    city = await build_city(harness)
    c, n = city.clusters, city.networks

    knot = await ok_data(await get(harness, "/clusters/areas/public", app_label="knot", **CENTRE))
    assert all(set(x) == PUBLIC_KEYS for x in knot)
    assert [x["cluster_id"] for x in knot] == sorted([c["gare"], c["cathedrale"], c["org_only"]])
    gare = next(x for x in knot if x["cluster_id"] == c["gare"])
    assert gare["description"] == "Main station" and gare["exceptional_out_of_order"]["reason"] == "storm"

    french = await ok_data(await get(harness, "/clusters/areas/public", app_label="knot", lang="fr", **CENTRE))
    assert next(x for x in french if x["cluster_id"] == c["gare"])["description"] == "Gare centrale"

    only = await ok_data(await get(harness, "/clusters/areas/public", app_label="knot", network_id=n["org_only"],
                                   **CENTRE))
    assert [x["cluster_id"] for x in only] == [c["org_only"]]
    # A network the label does not show gives nothing, never its clusters.
    for hidden in (n["private"], n["unlinked"]):
        assert await ok_data(await get(harness, "/clusters/areas/public", app_label="knot", network_id=hidden,
                                       **CENTRE)) == []
    other = await ok_data(await get(harness, "/clusters/areas/public", app_label="other", **CENTRE))
    assert [x["cluster_id"] for x in other] == [c["unlinked"]]

    refused(await get(harness, "/clusters/areas/public", app_label="nope", **CENTRE), 404, 12)
    # A label created after the catalog was loaded is found all the same (it shows no network yet).
    await harness.create_app_label("late", "Late")
    assert await ok_data(await get(harness, "/clusters/areas/public", app_label="late", **CENTRE)) == []
    refused(await get(harness, "/clusters/areas/public", **CENTRE), 400, 2)
    refused(await get(harness, "/clusters/areas/public", app_label="knot", network_id=0, **CENTRE), 400, 2)


# details -----------------------------------------------------------------------------------------------


async def test_details_of_a_seen_cluster_and_404_for_the_others(harness: Harness) -> None:
    city = await build_city(harness)
    c, t = city.clusters, city.tokens

    gare = await ok_data(await get(harness, f"/clusters/{c['gare']}", t["rider"], lang="fr"))
    assert set(gare) == DETAILS_KEYS
    assert gare["description"] == "Gare centrale" and gare["cluster_is_accessible"] is True
    assert gare["balancing_type"] == "donor" and gare["exceptional_out_of_order"]["type"] == "weather"
    campus = await ok_data(await get(harness, f"/clusters/{c['org_only']}", t["rider"]))
    assert campus["cluster_is_accessible"] is False
    assert (await ok_data(await get(harness, f"/clusters/{c['org_only']}", t["member"])))["cluster_is_accessible"]
    assert (await ok_data(await get(harness, f"/clusters/{c['private']}", t["member"])))["name"] == "Private"

    # Unseen clusters answer exactly as unknown ones.
    for token, cluster in [("rider", c["private"]), ("rider", c["unlinked"]), ("stranger", c["gare"]),
                           ("other_operator", c["gare"]), ("rider", 999_999), ("rider", 0)]:
        for suffix in ("", "/spots", "/vehicles"):
            refused(await get(harness, f"/clusters/{cluster}{suffix}", t[token]), 404, 4)
    refused(await get(harness, f"/clusters/{c['gare']}", t["rider"], lang="french"), 400, 2)


# spots, vehicles and live availability -----------------------------------------------------------


async def test_spots_vehicles_and_live_availability_follow_the_stations(harness: Harness) -> None:
    city = await build_city(harness)
    c, t = city.clusters, city.tokens
    gare = c["gare"]
    first = await harness.make.station(gare, 4)
    second = await harness.make.station(gare, 2, first_displayed_number=5)
    campus = await harness.make.station(c["org_only"], 2)
    model = await harness.make.vehicle_model("Kick 2", "Acme")
    await harness.make.vehicles(city.networks["public"], range(101, 105), model=model, avg_max_range=40000)
    # Spots under maintenance or not accessible: no service sets these yet (maintenance is to come).
    await harness.db.execute("UPDATE spots SET in_maintenance = true WHERE id = $1", first.spot_ids[1])
    await harness.db.execute("UPDATE spots SET is_accessible = false WHERE id = $1", second.spot_ids[1])
    await harness.svc.catalog.reload()

    spots = await ok_data(await get(harness, f"/clusters/{gare}/spots", t["rider"]))
    assert all(set(s) == SPOT_KEYS for s in spots)
    assert [(s["spot_id"], s["station_id"], s["displayed_number"], s["in_maintenance"], s["is_accessible"])
            for s in spots] == [
        (first.spot_ids[0], first.station_id, 1, False, True),
        (first.spot_ids[1], first.station_id, 2, True, True),
        (first.spot_ids[2], first.station_id, 3, False, True),
        (first.spot_ids[3], first.station_id, 4, False, True),
        (second.spot_ids[0], second.station_id, 5, False, True),
        (second.spot_ids[1], second.station_id, 6, False, False),
    ]
    # The campus is seen by the rider but not usable: none of its spots is accessible to them.
    rider_campus = await ok_data(await get(harness, f"/clusters/{c['org_only']}/spots", t["rider"]))
    assert [s["is_accessible"] for s in rider_campus] == [False, False]
    member_campus = await ok_data(await get(harness, f"/clusters/{c['org_only']}/spots", t["member"]))
    assert [s["spot_id"] for s in member_campus] == campus.spot_ids
    assert [s["is_accessible"] for s in member_campus] == [True, True]
    assert await ok_data(await get(harness, f"/clusters/{gare}/vehicles", t["rider"])) == []

    async def details() -> dict[str, Any]:
        found: dict[str, Any] = await ok_data(await get(harness, f"/clusters/{gare}", t["rider"]))
        return found

    async with station_socket(harness.station_url, first.station_id, first.secret) as one, \
            station_socket(harness.station_url, second.station_id, second.secret) as two:
        await one.boot(spots=4)
        await two.boot(spots=2)
        assert (await one.state({1: 101, 2: None, 3: 102, 4: None}, battery=77))[0] == 3
        assert (await two.state({1: 103, 2: None}, battery=55))[0] == 3
        live = await eventually_value(details, lambda d: d["available_vehicles"] == 3)
        # Spot 2 of the first station is in maintenance and spot 6 is closed to riders: neither is free.
        assert (live["available_vehicles"], live["free_spots"], live["total_spots"], live["cluster_is_down"]) == (
            3, 1, 6, False)
        in_area = await ok_data(await get(harness, "/clusters/areas", t["rider"], **CENTRE))
        assert {k: v for k, v in next(x for x in in_area if x["cluster_id"] == gare).items()
                if k in ("available_vehicles", "free_spots", "total_spots", "cluster_is_down")} == {
            "available_vehicles": 3, "free_spots": 1, "total_spots": 6, "cluster_is_down": False}
        public = await ok_data(await get(harness, "/clusters/areas/public", app_label="knot", **CENTRE))
        assert next(x for x in public if x["cluster_id"] == gare)["available_vehicles"] == 3
        closest = await ok_data(await get(harness, "/clusters/closests", t["rider"], lat=48.585, lng=7.735))
        assert closest[0]["cluster_id"] == gare and closest[0]["available_vehicles"] == 3

        vehicles = await ok_data(await get(harness, f"/clusters/{gare}/vehicles", t["rider"]))
        assert all(set(v) == VEHICLE_KEYS for v in vehicles)
        assert vehicles[0] == {
            "vehicle_id": 101, "serial_number": "SN101", "battery_level": 77, "avg_max_range": 40000,
            "vehicle_type": "kick-scooter", "vehicle_online": True, "spot_id": first.spot_ids[0],
            "station_id": first.station_id, "displayed_number": 1, "in_maintenance": False, "is_accessible": True,
            "model_id": model, "model_name": "Kick 2", "manufacturer": "Acme",
        }
        assert [(v["vehicle_id"], v["station_id"], v["displayed_number"], v["battery_level"]) for v in vehicles] == [
            (101, first.station_id, 1, 77), (102, first.station_id, 3, 77), (103, second.station_id, 5, 55)]

        # The second station leaves: its vehicle no longer counts, the cluster stays up.
        await two.ws.aclose()
        after_two = await eventually_value(details, lambda d: d["available_vehicles"] == 2)
        assert after_two["cluster_is_down"] is False and after_two["total_spots"] == 6

        # A vehicle taken out of the first station leaves the list.
        await one.state({1: None, 2: None, 3: 102, 4: None}, battery=70)
        after_take = await eventually_value(details, lambda d: d["available_vehicles"] == 1 and d["free_spots"] == 2)
        assert after_take["cluster_is_down"] is False
        vehicles = await ok_data(await get(harness, f"/clusters/{gare}/vehicles", t["rider"]))
        assert [(v["vehicle_id"], v["battery_level"], v["vehicle_online"]) for v in vehicles] == [
            (102, 70, True), (103, 55, False)]

    down = await eventually_value(details, lambda d: d["cluster_is_down"])
    assert down["available_vehicles"] == 0
    vehicles = await ok_data(await get(harness, f"/clusters/{gare}/vehicles", t["rider"]))
    assert [(v["vehicle_id"], v["vehicle_online"]) for v in vehicles] == [(102, False), (103, False)]


# writes ----------------------------------------------------------------------------------------------------


async def test_create_a_cluster(harness: Harness) -> None:
    city = await build_city(harness)
    t, n = city.tokens, city.networks
    body = {"lat": 48.59, "lng": 7.75, "name": "  Knot Headquarters ", "network_id": n["public"],
            "id": 5, "is_admin": True}
    response = await harness.client.post(f"{API}/clusters", json=body, headers=bearer(t["operator"]))
    assert response.status_code == 200 and response.json() == {"code": 0}
    row = await harness.db.fetchrow("SELECT * FROM clusters WHERE name = 'Knot Headquarters'")
    assert row is not None and (row["network_id"], row["latitude"], row["longitude"]) == (n["public"], 48.59, 7.75)
    # In the catalog at once: the riders see it.
    seen = await ok_data(await get(harness, f"/clusters/{row['id']}", t["rider"]))
    assert seen["name"] == "Knot Headquarters" and seen["cluster_is_down"] is True

    async def post(token: str, changes: dict[str, Any]) -> httpx.Response:
        return await harness.client.post(f"{API}/clusters", json={**body, **changes}, headers=bearer(token))

    refused(await post(t["operator"], {"network_id": 999_999}), 404, 4)
    for who in ("other_operator", "reader", "rider", "stranger"):
        refused(await post(t[who], {}), 403, 13)
    refused(await post(t["operator"], {"network_id": n["unlinked"]}), 403, 13)
    for bad in ({"name": ""}, {"name": "   "}, {"name": "x" * 51}, {"lat": 91}, {"lng": "abc"},
                {"network_id": 0}, {"network_id": None}):
        refused(await post(t["operator"], bad), 400, 2)
    missing = {k: v for k, v in body.items() if k != "lat"}
    refused(await harness.client.post(f"{API}/clusters", json=missing, headers=bearer(t["operator"])), 400, 2)
    assert await harness.db.fetchval("SELECT count(*) FROM clusters") == 7


async def test_rename_a_cluster(harness: Harness) -> None:
    city = await build_city(harness)
    t, c = city.tokens, city.clusters
    path = f"/clusters/{c['gare']}/name"
    assert (await put(harness, path, t["operator"], {"name": "x" * 50})).json() == {"code": 0}
    assert (await ok_data(await get(harness, f"/clusters/{c['gare']}", t["rider"])))["name"] == "x" * 50
    assert (await put(harness, path, t["operator"], {"name": "Gare centrale"})).json() == {"code": 0}
    assert harness.svc.catalog.clusters[c["gare"]].name == "Gare centrale"

    for who in ("other_operator", "reader", "rider"):
        refused(await put(harness, path, t[who], {"name": "Mine"}), 403, 13)
    refused(await put(harness, f"/clusters/{c['unlinked']}/name", t["operator"], {"name": "Mine"}), 403, 13)
    refused(await put(harness, "/clusters/999999/name", t["operator"], {"name": "Mine"}), 404, 4)
    for bad in ({"name": "x" * 51}, {"name": ""}, {}, {"name": 5}):
        refused(await put(harness, path, t["operator"], bad), 400, 2)
    assert await harness.db.fetchval("SELECT name FROM clusters WHERE id = $1", c["gare"]) == "Gare centrale"


async def test_a_permission_on_one_cluster_covers_that_cluster_only(harness: Harness) -> None:
    city = await build_city(harness)
    c = city.clusters
    keeper = await harness.create_user("keeper@example.com", perms=[("clusters", True)], clusters=[c["cathedrale"]])
    token = await open_test_session(harness, keeper)
    assert (await put(harness, f"/clusters/{c['cathedrale']}/name", token, {"name": "Dom"})).json() == {"code": 0}
    refused(await put(harness, f"/clusters/{c['gare']}/name", token, {"name": "Dom"}), 403, 13)
    create = {"lat": 48.59, "lng": 7.75, "name": "New", "network_id": city.networks["public"]}
    refused(await harness.client.post(f"{API}/clusters", json=create, headers=bearer(token)), 403, 13)


async def test_move_a_cluster_and_the_parkings_that_follow_it(harness: Harness) -> None:
    city = await build_city(harness)
    t, c, n = city.tokens, city.clusters, city.networks
    square = [[7.7505, 48.5815], [7.7513, 48.5815], [7.7513, 48.5821], [7.7505, 48.5821]]
    following = [await harness.make.parking(n["public"], c["cathedrale"], square) for _ in range(2)]
    alone = await harness.make.parking(n["public"], None, square)

    path = f"/clusters/{c['cathedrale']}/location"
    moved = await ok_data(await put(harness, path, t["operator"], {"lat": 48.5918, "lng": 7.7409}))
    assert moved == {"parkings": following}
    details = await ok_data(await get(harness, f"/clusters/{c['cathedrale']}", t["rider"]))
    assert (details["latitude"], details["longitude"]) == (48.5918, 7.7409)
    for parking in following:
        shape = await harness.db.fetchval("SELECT shape FROM virtual_parkings WHERE id = $1", parking)
        expected = [[lng - 0.01, lat + 0.01] for lng, lat in square]  # moved by (-0.01 lng, +0.01 lat)
        assert len(shape) == len(expected)
        for point, want in zip(shape, expected, strict=True):
            assert point == pytest.approx(want, abs=1e-9)
        assert harness.svc.catalog.parkings[parking].shape == shape
    assert await harness.db.fetchval("SELECT shape FROM virtual_parkings WHERE id = $1", alone) == square
    # A cluster without parkings moves alone.
    assert await ok_data(await put(harness, f"/clusters/{c['gare']}/location", t["operator"],
                                   {"lat": 48.6, "lng": 7.7})) == {"parkings": []}

    for who in ("other_operator", "reader", "rider"):
        refused(await put(harness, path, t[who], {"lat": 48.0, "lng": 7.0}), 403, 13)
    refused(await put(harness, "/clusters/999999/location", t["operator"], {"lat": 48.0, "lng": 7.0}), 404, 4)
    for bad in ({"lat": 91, "lng": 7.0}, {"lat": 48.0}, {"lat": "abc", "lng": 7.0}, {"lat": 48.0, "lng": 181}):
        refused(await put(harness, path, t["operator"], bad), 400, 2)
    assert harness.svc.catalog.clusters[c["cathedrale"]].latitude == 48.5918


async def test_max_unlock_distance(harness: Harness) -> None:
    city = await build_city(harness)
    t, c = city.tokens, city.clusters
    path = f"/clusters/{c['gare']}/max-unlock-distance"

    async def stored() -> int | None:
        value: int | None = await harness.db.fetchval("SELECT max_unlock_distance FROM clusters WHERE id = $1",
                                                      c["gare"])
        assert harness.svc.catalog.clusters[c["gare"]].max_unlock_distance == value
        return value

    for value in (10, 1000, None, 250):
        assert (await put(harness, path, t["operator"], {"new_distance": value})).json() == {"code": 0}
        assert await stored() == value
    for bad in ({"new_distance": 5}, {"new_distance": 9}, {"new_distance": 1001}, {"new_distance": 12.5},
                {"new_distance": "far"}, {}):
        refused(await put(harness, path, t["operator"], bad), 400, 2)
    for who in ("other_operator", "reader", "member"):
        refused(await put(harness, path, t[who], {"new_distance": 20}), 403, 13)
    refused(await put(harness, "/clusters/999999/max-unlock-distance", t["operator"], {"new_distance": 20}), 404, 4)
    assert await stored() == 250


async def test_writes_need_a_token_and_a_json_body(harness: Harness) -> None:
    city = await build_city(harness)
    cluster = city.clusters["gare"]
    for path, body in [(f"/clusters/{cluster}/name", {"name": "x"}), (f"/clusters/{cluster}/location",
                       {"lat": 1, "lng": 1}), (f"/clusters/{cluster}/max-unlock-distance", {"new_distance": 10})]:
        refused(await harness.client.put(API + path, json=body), 401, 3)
        response = await harness.client.put(API + path, content=b"{not json", headers={
            **bearer(city.tokens["operator"]), "Content-Type": "application/json"})
        refused(response, 400, 2)
    refused(await harness.client.post(f"{API}/clusters", json={}), 401, 3)


async def test_openapi_documents_the_cluster_routes(harness: Harness) -> None:
    paths = (await harness.client.get("/openapi.json")).json()["paths"]
    areas = paths[f"{API}/clusters/areas"]["get"]
    assert {p["name"] for p in areas["parameters"]} == {"lat", "lng", "latDeg", "lngDeg", "lang"}
    assert areas["tags"] == ["Clusters"] and areas["security"] == [{"bearer": []}]
    public = paths[f"{API}/clusters/areas/public"]["get"]
    assert {p["name"] for p in public["parameters"]} == {"lat", "lng", "latDeg", "lngDeg", "lang", "network_id",
                                                         "app_label"}
    assert "security" not in public
    assert {p["name"] for p in paths[f"{API}/clusters/closests"]["get"]["parameters"]} == {"lat", "lng"}
    assert "requestBody" in paths[f"{API}/clusters"]["post"]
    for suffix in ("name", "location", "max-unlock-distance"):
        operation = paths[f"{API}/clusters/{{cluster_id}}/{suffix}"]["put"]
        assert "requestBody" in operation and "200" in operation["responses"]
    for suffix in ("", "/spots", "/vehicles"):
        assert "200" in paths[f"{API}/clusters/{{cluster_id}}{suffix}"]["get"]["responses"]
