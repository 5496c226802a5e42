"""The map (ROUTES rows 61-62) over the real server, with real station sockets and vehicle actors.

The city comes from ``tests.test_networks.make_city`` (see its docstring for who
sees what).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from actors.vehicle import VEHICLE, Positioned
from knot_rt.api.catalog_models import MapClusterOut, NetworkOut, PublicClusterOut
from knot_rt.api.maps import (
    MapOut,
    MapParkingOut,
    MapVehicleOut,
    PassOut,
    PublicMapOut,
    PublicParkingOut,
    PublicVehicleOut,
    RentOut,
    SpeedZoneOut,
)
from tests.station_client import station_socket
from tests.support import Harness, eventually, wait_station_online
from tests.test_networks import API, City, make_city

CENTRE = {"lat": 48.5820, "lng": 7.7500, "latdeg": 0.1, "lngdeg": 0.2}  # the whole of Strasbourg and Kehl
PUBLIC_CENTRE = {"lat": 48.5820, "lng": 7.7500, "latDeg": 0.1, "lngDeg": 0.2}

MAP_KEYS = {"code", "clusters", "vehicles", "parkings", "rents", "passes", "networks", "speed_zones"}
PUBLIC_MAP_KEYS = {"code", "clusters", "vehicle", "parkings", "networks", "speed_zones"}

SPEC_MAP_CLUSTER = {
    "cluster_id", "latitude", "longitude", "name", "available_vehicles", "total_spots", "free_spots",
    "cluster_is_down", "network_id", "soon_to_be_available", "commissioning_date", "exceptional_out_of_order",
    "description", "cluster_is_accessible", "has_badge_reader"}
SPEC_PUBLIC_CLUSTER = SPEC_MAP_CLUSTER - {"cluster_is_accessible", "has_badge_reader"}
SPEC_PUBLIC_VEHICLE = {
    "vehicle_id", "serial_number", "latitude", "longitude", "connected", "network_id", "battery_level",
    "vehicle_type", "model_id", "model_name", "manufacturer"}
SPEC_MAP_VEHICLE = SPEC_PUBLIC_VEHICLE | {
    "state", "is_accessible", "is_available", "exceptional_out_of_order", "has_freefloat_to_station_reward"}
SPEC_RENT = {
    "vehicle_id", "serial_number", "free_floating", "being_rented", "displayed_number", "lock_status", "trip_id",
    "time_start", "billing_time_stop", "on_hold_since", "on_hold_activated", "network_id", "battery_level",
    "min_battery_to_slow_down", "min_battery_to_auto_lock", "avg_max_range", "external_locks", "vehicle_model_id",
    "vehicle_model_name", "vehicle_manufacturer", "vehicle_type"}


async def user_map(harness: Harness, city: City, who: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    response = await harness.client.get(f"{API}/map", params=params or CENTRE, headers=city.auth(who))
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    MapOut.model_validate(body)  # every field, and no other (the models forbid extras)
    return body


async def public_map(harness: Harness, **params: Any) -> dict[str, Any]:
    response = await harness.client.get(f"{API}/map/public", params={**PUBLIC_CENTRE, **params})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    PublicMapOut.model_validate(body)
    return body


def ids(items: list[dict[str, Any]], key: str) -> list[int]:
    return [item[key] for item in items]


def by_id(items: list[dict[str, Any]], key: str) -> dict[int, dict[str, Any]]:
    return {item[key]: item for item in items}


# shapes ------------------------------------------------------------------------------------------


async def test_the_map_has_the_spec_shape_field_for_field(harness: Harness) -> None:
    city = await make_city(harness)
    body = await user_map(harness, city, "rider")
    assert set(body) == MAP_KEYS and body["code"] == 0
    assert set(MapClusterOut.model_fields) == SPEC_MAP_CLUSTER
    assert set(MapVehicleOut.model_fields) == SPEC_MAP_VEHICLE
    assert set(RentOut.model_fields) == SPEC_RENT
    for cluster in body["clusters"]:
        assert set(cluster) == SPEC_MAP_CLUSTER
    for vehicle in body["vehicles"]:
        assert set(vehicle) == SPEC_MAP_VEHICLE
    for parking in body["parkings"]:
        assert set(parking) == set(MapParkingOut.model_fields) == {
            "virtual_parking_id", "cluster_id", "network_id", "shape", "is_accessible"}
    for rent in body["rents"]:
        assert set(rent) == SPEC_RENT
    for a_pass in body["passes"]:
        assert set(a_pass) == set(PassOut.model_fields) == {"pass_id", "end_date", "in_use"}
    for network in body["networks"]:
        assert set(network) == set(NetworkOut.model_fields)
    for zone in body["speed_zones"]:
        assert set(zone) == set(SpeedZoneOut.model_fields) == {"speed_zone_id", "shape", "max_speed"}
    assert all(body[key] for key in MAP_KEYS - {"code"})  # the rider's map has something of every kind

    kleber = by_id(body["clusters"], "cluster_id")[city.clusters["kleber"]]
    assert kleber == {
        "cluster_id": city.clusters["kleber"], "latitude": 48.58336, "longitude": 7.74583, "name": "Place Kléber",
        "available_vehicles": 0, "total_spots": 0, "free_spots": 0, "cluster_is_down": True,
        "network_id": city.networks["strasbourg"], "soon_to_be_available": False, "commissioning_date": None,
        "exceptional_out_of_order": None, "description": "In front of the Aubette.", "cluster_is_accessible": True,
        "has_badge_reader": True,
    }
    free = by_id(body["vehicles"], "vehicle_id")[city.vehicles["free"]]
    assert free == {
        "vehicle_id": 501, "serial_number": "SN-501", "latitude": 48.582, "longitude": 7.748, "connected": False,
        "network_id": city.networks["strasbourg"], "battery_level": 70, "vehicle_type": "kick-scooter",
        "model_id": free["model_id"], "model_name": "Max G30", "manufacturer": "Segway-Ninebot",
        "state": "available", "is_accessible": True, "is_available": True, "exceptional_out_of_order": None,
        "has_freefloat_to_station_reward": False,
    }
    assert isinstance(free["model_id"], int)
    zone = by_id(body["speed_zones"], "speed_zone_id")[city.zones["centre"]]
    assert zone["max_speed"] == 10 and zone["shape"][0] == [7.7365, 48.5782]


async def test_the_public_map_has_the_spec_shape_and_a_singular_vehicle_key(harness: Harness) -> None:
    city = await make_city(harness)
    body = await public_map(harness, app_label="knot")
    assert set(body) == PUBLIC_MAP_KEYS and body["code"] == 0
    assert set(PublicClusterOut.model_fields) == SPEC_PUBLIC_CLUSTER
    assert set(PublicVehicleOut.model_fields) == SPEC_PUBLIC_VEHICLE
    assert body["clusters"] and all(set(c) == SPEC_PUBLIC_CLUSTER for c in body["clusters"])
    assert body["vehicle"] and all(set(v) == SPEC_PUBLIC_VEHICLE for v in body["vehicle"])
    assert body["parkings"] and all(
        set(p) == set(PublicParkingOut.model_fields) == {"virtual_parking_id", "cluster_id", "network_id", "shape"}
        for p in body["parkings"])
    assert all(set(n) == set(NetworkOut.model_fields) for n in body["networks"])
    assert city.clusters


# who sees what -------------------------------------------------------------------------------------


async def test_each_user_sees_the_networks_access_gives_them(harness: Harness) -> None:
    city = await make_city(harness)
    c, n, v = city.clusters, city.networks, city.vehicles

    rider = await user_map(harness, city, "rider")
    assert ids(rider["clusters"], "cluster_id") == [c["kleber"], c["gare"], c["esplanade"]]
    accessible = {x["cluster_id"]: x["cluster_is_accessible"] for x in rider["clusters"]}
    assert accessible == {c["kleber"]: True, c["gare"]: True, c["esplanade"]: False}  # Campus: members only
    assert ids(rider["networks"], "network_id") == [n["strasbourg"], n["campus"]]
    assert ids(rider["parkings"], "virtual_parking_id") == [city.parkings["kleber"], city.parkings["campus"]]
    assert [p["is_accessible"] for p in rider["parkings"]] == [True, False]
    assert ids(rider["speed_zones"], "speed_zone_id") == [city.zones["centre"]]
    # Free-floating vehicles of seen networks, with a position: 502 is seen but not usable; the rider's own
    # rented 505 is shown; 506 is out of order; 507 has no position; 101 is docked.
    assert ids(rider["vehicles"], "vehicle_id") == [v["free"], v["campus"], v["rented"], v["broken"]]
    vehicles = by_id(rider["vehicles"], "vehicle_id")
    assert vehicles[v["campus"]]["is_accessible"] is False
    assert (vehicles[v["rented"]]["state"], vehicles[v["rented"]]["is_available"]) == ("rented", False)
    broken = vehicles[v["broken"]]
    assert broken["is_available"] is False
    assert broken["exceptional_out_of_order"]["type"] == "maintenance"
    assert broken["exceptional_out_of_order"]["reason"] == "flat tyre"

    member = await user_map(harness, city, "member")
    assert ids(member["clusters"], "cluster_id") == [c["kleber"], c["gare"], c["esplanade"]]
    assert all(x["cluster_is_accessible"] for x in member["clusters"])
    # Someone else's ride is not shown: its position is its rider's.
    assert ids(member["vehicles"], "vehicle_id") == [v["free"], v["campus"], v["broken"]]
    assert all(x["is_accessible"] for x in member["vehicles"])

    operator = await user_map(harness, city, "operator")
    assert ids(operator["clusters"], "cluster_id") == [c["depot"]]
    assert ids(operator["vehicles"], "vehicle_id") == [v["depot"]]
    assert ids(operator["networks"], "network_id") == [n["depot"]]
    assert ids(operator["parkings"], "virtual_parking_id") == [city.parkings["depot"]]
    assert operator["clusters"][0]["cluster_is_accessible"] is True
    assert operator["rents"] == [] and operator["passes"] == []

    stranger = await user_map(harness, city, "stranger")
    assert stranger == {"code": 0, "clusters": [], "vehicles": [], "parkings": [], "rents": [], "passes": [],
                        "networks": [], "speed_zones": []}


async def test_the_public_map_shows_the_public_networks_of_the_label(harness: Harness) -> None:
    city = await make_city(harness)
    c, n, v = city.clusters, city.networks, city.vehicles
    knot = await public_map(harness, app_label="knot")
    assert ids(knot["clusters"], "cluster_id") == [c["kleber"], c["gare"], c["esplanade"]]
    assert ids(knot["vehicle"], "vehicle_id") == [v["free"], v["campus"]]  # available ones only
    assert ids(knot["networks"], "network_id") == [n["strasbourg"], n["campus"]]
    assert ids(knot["parkings"], "virtual_parking_id") == [city.parkings["kleber"], city.parkings["campus"]]
    assert ids(knot["speed_zones"], "speed_zone_id") == [city.zones["centre"]]

    only_campus = await public_map(harness, app_label="knot", network_id=n["campus"])
    assert ids(only_campus["clusters"], "cluster_id") == [c["esplanade"]]
    assert ids(only_campus["vehicle"], "vehicle_id") == [v["campus"]]
    assert ids(only_campus["networks"], "network_id") == [n["campus"]]
    assert ids(only_campus["parkings"], "virtual_parking_id") == [city.parkings["campus"]]
    assert only_campus["speed_zones"] == []

    other = await public_map(harness, app_label="other")
    assert ids(other["clusters"], "cluster_id") == [c["kehl"]]
    assert ids(other["vehicle"], "vehicle_id") == [v["kehl"]]
    assert ids(other["speed_zones"], "speed_zone_id") == [city.zones["kehl"]]

    # The depot (not public) and another label's network are never on a public map.
    for network in ("depot", "kehl"):
        hidden = await public_map(harness, app_label="knot", network_id=n[network])
        assert hidden == {"code": 0, "clusters": [], "vehicle": [], "parkings": [], "networks": [],
                          "speed_zones": []}
    unknown = await harness.client.get(f"{API}/map/public", params={**PUBLIC_CENTRE, "app_label": "nope"})
    assert unknown.status_code == 404 and unknown.json()["code"] == 12


async def test_only_the_area_is_answered_and_descriptions_follow_lang(harness: Harness) -> None:
    city = await make_city(harness)
    around_gare = {"lat": 48.58485, "lng": 7.73453, "latdeg": 0.002, "lngdeg": 0.002}
    body = await user_map(harness, city, "rider", around_gare)
    assert ids(body["clusters"], "cluster_id") == [city.clusters["gare"]]
    assert body["vehicles"] == [] and body["parkings"] == []
    assert ids(body["networks"], "network_id") == [city.networks["strasbourg"]]
    assert len(body["rents"]) == 1  # the caller's rents, wherever they are

    french = await user_map(harness, city, "rider", {**CENTRE, "lang": "fr"})
    german = await user_map(harness, city, "rider", {**CENTRE, "lang": "de"})
    assert by_id(french["clusters"], "cluster_id")[city.clusters["kleber"]]["description"] == "Devant l'Aubette."
    assert by_id(german["clusters"], "cluster_id")[city.clusters["kleber"]]["description"] == (
        "In front of the Aubette.")  # English when not translated
    public = await public_map(harness, app_label="knot", lang="fr")
    assert by_id(public["clusters"], "cluster_id")[city.clusters["kleber"]]["description"] == "Devant l'Aubette."


# rents and passes ----------------------------------------------------------------------------------


async def test_rents_and_passes_are_only_the_callers(harness: Harness) -> None:
    city = await make_city(harness)
    rider = await user_map(harness, city, "rider")
    assert len(rider["rents"]) == 1
    rent = rider["rents"][0]
    started = datetime.fromisoformat(rent.pop("time_start"))
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=5)
    model_id = rent.pop("vehicle_model_id")
    assert isinstance(model_id, int)
    assert rent == {
        "vehicle_id": city.vehicles["rented"], "serial_number": "SN-505", "free_floating": True, "being_rented": True,
        "displayed_number": None, "lock_status": None, "trip_id": city.rents["rider"], "billing_time_stop": None,
        "on_hold_since": None, "on_hold_activated": False, "network_id": city.networks["strasbourg"],
        "battery_level": 70, "min_battery_to_slow_down": 15, "min_battery_to_auto_lock": 5, "avg_max_range": 40,
        "external_locks": [], "vehicle_model_name": "Max G30", "vehicle_manufacturer": "Segway-Ninebot",
        "vehicle_type": "kick-scooter",
    }
    assert [(p["pass_id"], p["in_use"]) for p in rider["passes"]] == [
        (city.passes["current"], True), (city.passes["upcoming"], False)]
    assert all(datetime.fromisoformat(p["end_date"]) > datetime.now(UTC) for p in rider["passes"])

    member = await user_map(harness, city, "member")
    assert [r["trip_id"] for r in member["rents"]] == [city.rents["member"]]
    paused = member["rents"][0]
    assert (paused["free_floating"], paused["being_rented"], paused["on_hold_activated"]) == (False, False, True)
    assert paused["on_hold_since"] is not None
    assert (paused["displayed_number"], paused["lock_status"]) == (1, 1)  # the spot, as the database knows it
    assert [p["pass_id"] for p in member["passes"]] == [city.passes["member"]]


# live values ----------------------------------------------------------------------------------------


async def test_clusters_and_rents_follow_the_station_live(harness: Harness) -> None:
    city = await make_city(harness)
    station_id, secret = city.station
    kleber = city.clusters["kleber"]

    async def kleber_on(who: str) -> dict[str, Any]:
        return by_id((await user_map(harness, city, who))["clusters"], "cluster_id")[kleber]

    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        await station.state({1: 101, 2: 102, 3: None, 4: None}, battery=64)
        await wait_station_online(harness, station_id, online=True)
        live = await kleber_on("rider")
        assert (live["available_vehicles"], live["free_spots"], live["total_spots"], live["cluster_is_down"]) == (
            2, 2, 4, False)
        public = by_id((await public_map(harness, app_label="knot"))["clusters"], "cluster_id")[kleber]
        assert (public["available_vehicles"], public["free_spots"], public["cluster_is_down"]) == (2, 2, False)
        async def rent_battery_read() -> bool:  # the battery comes through the vehicle's actor
            return bool((await user_map(harness, city, "member"))["rents"][0]["battery_level"] == 64)

        await eventually(rent_battery_read)
        paused = (await user_map(harness, city, "member"))["rents"][0]
        assert (paused["lock_status"], paused["battery_level"], paused["displayed_number"]) == (1, 64, 1)

        await station.call("unlocked", {"spot": 1, "unlock": 0, "vehicle": 101})
        out_of_its_spot = (await user_map(harness, city, "member"))["rents"][0]
        assert (out_of_its_spot["lock_status"], out_of_its_spot["displayed_number"]) == (None, None)
        assert (await kleber_on("rider"))["available_vehicles"] == 1

    await wait_station_online(harness, station_id, online=False)
    down = await kleber_on("rider")
    assert (down["available_vehicles"], down["cluster_is_down"]) == (0, True)


async def test_free_floating_vehicles_move_on_the_map_without_a_reload(harness: Harness) -> None:
    city = await make_city(harness)
    v = city.vehicles
    station_id, secret = city.station

    async def shown() -> list[int]:
        return ids((await user_map(harness, city, "member"))["vehicles"], "vehicle_id")

    assert v["lost"] not in await shown()
    ref = await harness.svc.stations.registry.get(VEHICLE, str(v["lost"]))
    await ref.ask(Positioned(48.5830, 7.7470))  # the vehicle reports where it is
    assert v["lost"] in await shown()
    found = by_id((await user_map(harness, city, "member"))["vehicles"], "vehicle_id")[v["lost"]]
    assert (found["latitude"], found["longitude"]) == (48.5830, 7.7470)
    assert v["lost"] in ids((await public_map(harness, app_label="knot"))["vehicle"], "vehicle_id")

    # The free-floating 501 is pushed into spot 3 of the Kléber station: it leaves the street.
    async with station_socket(harness.station_url, station_id, secret) as station:
        await station.boot()
        await station.state({1: 101, 2: None, 3: v["free"], 4: None})
        await wait_station_online(harness, station_id, online=True)

        async def off_the_street() -> bool:
            return v["free"] not in await shown()

        await eventually(off_the_street)  # its vehicle actor follows the station's report
        # ... and a catalog reload (after some write) keeps it off the street.
        await harness.svc.catalog.reload()
        assert v["free"] not in await shown()
        assert v["lost"] in await shown()


# bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("params", [
    {"lat": 48.58, "lng": 7.75, "latdeg": -0.1, "lngdeg": 0.1},  # reversed
    {"lat": 48.58, "lng": 7.75, "latdeg": 0.1, "lngdeg": -0.1},
    {"lat": 48.58, "lng": 7.75, "latdeg": 3, "lngdeg": 0.1},  # oversized
    {"lat": 48.58, "lng": 7.75, "latdeg": 0.1, "lngdeg": 2.5},
    {"lat": 48.58, "lng": 7.75, "latdeg": 0.1},  # missing
    {"lng": 7.75, "latdeg": 0.1, "lngdeg": 0.1},
    {"lat": 90.5, "lng": 7.75, "latdeg": 0.1, "lngdeg": 0.1},
    {"lat": 48.58, "lng": 180.5, "latdeg": 0.1, "lngdeg": 0.1},
    {"lat": "nan", "lng": 7.75, "latdeg": 0.1, "lngdeg": 0.1},
    {"lat": 48.58, "lng": 7.75, "latdeg": "nan", "lngdeg": 0.1},
    {"lat": 48.58, "lng": 7.75, "latdeg": 0.1, "lngdeg": "infinity"},
    {"lat": "here", "lng": 7.75, "latdeg": 0.1, "lngdeg": 0.1},
    {"lat": 48.58, "lng": 7.75, "latdeg": 0.1, "lngdeg": 0.1, "lang": "french"},
])
async def test_bad_areas_answer_400(harness: Harness, params: dict[str, Any]) -> None:
    city = await make_city(harness)
    response = await harness.client.get(f"{API}/map", params=params, headers=city.auth("rider"))
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2 and response.json()["message"]
    public = {("latDeg" if k == "latdeg" else "lngDeg" if k == "lngdeg" else k): value
              for k, value in params.items()}
    response = await harness.client.get(f"{API}/map/public", params={**public, "app_label": "knot"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2


async def test_names_and_rights_of_the_parameters(harness: Harness) -> None:
    city = await make_city(harness)
    # The logged-in map takes latdeg/lngdeg, the public one latDeg/lngDeg (exactly the spec's names).
    wrong_case = await harness.client.get(f"{API}/map", params=PUBLIC_CENTRE, headers=city.auth("rider"))
    assert wrong_case.status_code == 400
    wrong_case = await harness.client.get(f"{API}/map/public", params={**CENTRE, "app_label": "knot"})
    assert wrong_case.status_code == 400
    no_label = await harness.client.get(f"{API}/map/public", params=PUBLIC_CENTRE)
    assert no_label.status_code == 400 and no_label.json()["code"] == 2
    bad_network = await harness.client.get(f"{API}/map/public", params={**PUBLIC_CENTRE, "app_label": "knot",
                                                                       "network_id": 0})
    assert bad_network.status_code == 400
    unknown_network = await public_map(harness, app_label="knot", network_id=999999)
    assert unknown_network["clusters"] == [] and unknown_network["networks"] == []
    anonymous = await harness.client.get(f"{API}/map", params=CENTRE)
    assert anonymous.status_code == 401 and anonymous.json()["code"] == 3
    forged = await harness.client.get(f"{API}/map", params=CENTRE, headers={"Authorization": "Bearer nope"})
    assert forged.status_code == 401 and forged.json()["code"] == 3

    document = (await harness.client.get("/openapi.json")).json()
    for path, names in (("/map", {"lat", "lng", "latdeg", "lngdeg", "lang"}),
                        ("/map/public", {"lat", "lng", "latDeg", "lngDeg", "network_id", "lang", "app_label"})):
        operation = document["paths"][API + path]["get"]
        assert operation["tags"] == ["Map"]
        assert {p["name"] for p in operation["parameters"]} == names
        schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
        assert schema
