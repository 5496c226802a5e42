"""The demo city of Strasbourg: idempotent, big enough, consistent, at scale, and alive through real stations."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from knot_rt.demo import DEMO_ACCOUNTS, demo_station_secrets, load_demo
from knot_rt.demo_city import CENTER, NETWORK_SHAPE, city_plan, contains
from knot_rt.devices.credentials import device_secret_matches, hash_device_secret
from knot_rt.simulator.cli import read_vehicles_file
from tests.station_client import station_socket
from tests.support import Harness, wait_station_online

KNOT_RT = str(Path(sys.executable).with_name("knot-rt"))
TABLES = ["organizations", "app_labels", "networks", "network_app_labels", "users", "user_permissions", "clusters",
          "stations", "spots", "vehicle_models", "vehicles", "virtual_parkings", "speed_zones",
          "exceptional_out_of_orders", "faq_contents", "consent_types", "maintenances"]

CATHEDRAL = (48.58187, 7.75050)
NEUDORF_MARKET = (48.57010, 7.75745)


async def counts(harness: Harness) -> dict[str, int]:
    return {table: await harness.db.fetchval(f"SELECT count(*) FROM {table}") for table in TABLES}


async def inconsistent_docks(harness: Harness) -> int:
    """Spots and vehicles that disagree on which vehicle is docked where."""
    found: int = await harness.db.fetchval(
        """SELECT count(*) FROM spots s FULL JOIN vehicles v ON v.spot_id = s.id
           WHERE (s.vehicle_id IS NOT NULL OR v.spot_id IS NOT NULL) AND s.vehicle_id IS DISTINCT FROM v.id"""
    )
    return found


async def test_the_demo_city_is_idempotent_and_big_enough(harness: Harness) -> None:
    first = await load_demo(harness.db)
    before = await counts(harness)
    second = await load_demo(harness.db)
    assert second == first
    assert await counts(harness) == before
    json.dumps(first)  # printable as the command's summary

    city = first["city"]
    assert city["clusters"] >= 30 and city["stations"] >= 60 and city["spots"] >= 400 and city["vehicles"] >= 300
    assert city["parkings"] >= 5 and city["speed_zones"] >= 3
    assert city["docked_vehicles"] > 0 and city["free_floating_vehicles"] > 0
    assert city["docked_vehicles"] + city["free_floating_vehicles"] == city["vehicles"]
    assert await inconsistent_docks(harness) == 0

    network = await harness.db.fetchrow("SELECT * FROM networks WHERE id = $1", first["network"])
    assert (network["name"], network["currency"], network["is_public"]) == ("Strasbourg", "EUR", True)
    assert (network["center_latitude"], network["center_longitude"]) == CENTER == (48.5734, 7.7521)
    assert network["shape"] == NETWORK_SHAPE and contains(network["shape"], *CENTER)
    # Rentable at once: a tariff in the network's currency, no bank guarantee asked (payments do not exist yet).
    assert (network["unlock_fee"], network["price_per_minute"], network["min_guarantee"]) == (1, 0.25, 0)

    clusters = await harness.db.fetch("SELECT * FROM clusters WHERE network_id = $1", first["network"])
    names = {c["name"] for c in clusters}
    assert {"Place Kléber", "Gare Centrale", "Homme de Fer", "Cathédrale", "Université", "Esplanade",
            "Parlement européen", "Neudorf", "Krutenau", "Orangerie"} <= names
    assert all(contains(NETWORK_SHAPE, c["latitude"], c["longitude"]) for c in clusters)
    assert all(set(c["description"]) == {"en", "fr", "de"} for c in clusters)
    kleber = next(c for c in clusters if c["name"] == "Place Kléber")
    assert abs(kleber["latitude"] - 48.5834) < 0.001 and abs(kleber["longitude"] - 7.7458) < 0.001

    models = await harness.db.fetch("SELECT DISTINCT vehicle_type FROM vehicle_models")
    assert {m["vehicle_type"] for m in models} == {"kick-scooter", "e-bike"}
    assert await harness.db.fetchval("SELECT count(*) FROM vehicles WHERE model_id IS NULL") == 0
    free = await harness.db.fetch("SELECT latitude, longitude FROM vehicles WHERE spot_id IS NULL")
    assert all(contains(NETWORK_SHAPE, v["latitude"], v["longitude"]) for v in free)
    # Stations follow the simulator: 8 spots, vehicles id * 100 + spot in spots 1..4, hashes only.
    assert await harness.db.fetchval("SELECT count(*) FROM stations WHERE spot_count <> 8") == 0
    assert await harness.db.fetchval(
        """SELECT count(*) FROM spots WHERE vehicle_id IS DISTINCT FROM
               CASE WHEN number <= 4 THEN station_id * 100 + number END"""
    ) == 0
    assert await harness.db.fetchval("SELECT count(*) FROM stations WHERE length(secret_hash) <> 64") == 0

    parkings = await harness.db.fetch(
        """SELECT p.shape, c.latitude, c.longitude FROM virtual_parkings p JOIN clusters c ON c.id = p.cluster_id"""
    )
    assert len(parkings) == city["parkings"]
    for parking in parkings:  # near their cluster: within about 100 m
        lat = sum(point[1] for point in parking["shape"]) / len(parking["shape"])
        lng = sum(point[0] for point in parking["shape"]) / len(parking["shape"])
        assert abs(lat - parking["latitude"]) < 0.001 and abs(lng - parking["longitude"]) < 0.001

    labels = await harness.db.fetch(
        """SELECT a.name, a.android_store_url, a.ios_store_url FROM app_labels a
           JOIN network_app_labels l ON l.app_label_id = a.id WHERE l.network_id = $1 ORDER BY a.name""",
        first["network"],
    )
    assert [label["name"] for label in labels] == ["knot", "ruban"]
    assert all(label["android_store_url"].startswith("https://play.google.com/") and
               label["ios_store_url"].startswith("https://apps.apple.com/") for label in labels)
    rider = await harness.db.fetchrow(
        "SELECT u.id, a.name FROM users u JOIN app_labels a ON a.id = u.app_label_id WHERE email = $1",
        DEMO_ACCOUNTS[0][0],
    )
    assert rider["name"] == "knot"
    operator_networks = await harness.db.fetch(
        """SELECT DISTINCT p.perm_key, n.network_id FROM users u JOIN user_permissions p ON p.user_id = u.id
           JOIN ou_networks n ON n.ou_id = p.ou_id WHERE u.email = $1""",
        DEMO_ACCOUNTS[1][0],
    )
    assert {(p["perm_key"], p["network_id"]) for p in operator_networks} >= {("stations", first["network"]),
                                                                             ("clusters", first["network"])}


async def test_the_demo_city_has_open_maintenances(harness: Harness) -> None:
    summary = await load_demo(harness.db)
    assert summary["city"]["open_maintenances"] == 3
    svc = harness.svc.maintenance
    rows = await harness.db.fetch(
        """SELECT m.id, m.target_type, m.severity, m.started_by, m.started_by_uid, m.automatic_code_description,
                  m.report_id, m.started_at < now() AS in_the_past, c.name AS cluster
           FROM maintenances m JOIN clusters c ON c.id = m.cluster_id WHERE m.stopped_at IS NULL ORDER BY m.id""")
    operator = await harness.db.fetchval("SELECT id FROM users WHERE email = $1", DEMO_ACCOUNTS[1][0])
    by_kind = {r["target_type"]: r for r in rows}
    assert set(by_kind) == {"spot", "vehicle", "station"} and len(rows) == 3
    spot, vehicle, station = by_kind["spot"], by_kind["vehicle"], by_kind["station"]
    assert (spot["severity"], spot["started_by"], spot["started_by_uid"], spot["cluster"]) == (
        "high", "user", operator, "Gare Centrale")
    assert (vehicle["severity"], vehicle["started_by"], vehicle["cluster"]) == ("low", "user", "Place Kléber")
    brake_report = await harness.db.fetchval(
        "SELECT report_id FROM report_messages WHERE body LIKE '%brakes badly%'")
    assert vehicle["report_id"] == brake_report is not None
    assert (station["started_by"], station["started_by_uid"], station["automatic_code_description"],
            station["cluster"]) == ("automatic", None, "abnormal-low-voltage", "Homme de Fer")
    assert all(r["in_the_past"] for r in rows)
    # The service sees them as its own, on their targets, in the spec's shape.
    for row in rows:
        found = await svc.get(row["id"])
        assert found is not None and found.is_open
        [ongoing] = await svc.ongoing_of(await svc.target_of(found))
        assert ongoing.as_json()["maintenance_id"] == row["id"]
    # A resolved demo maintenance stays resolved when the demo is loaded again; nothing is opened twice.
    await svc.resolve(spot["id"], by_user_id=operator)
    assert (await load_demo(harness.db))["city"]["open_maintenances"] == 2
    assert await harness.db.fetchval("SELECT count(*) FROM maintenances") == 3


async def test_the_pedestrian_centre_is_a_slow_zone(harness: Harness) -> None:
    await load_demo(harness.db)
    zones = await harness.db.fetch("SELECT shape, max_speed FROM speed_zones")
    assert [z["max_speed"] for z in zones if contains(z["shape"], *CATHEDRAL)] == [10]
    assert [z for z in zones if contains(z["shape"], *NEUDORF_MARKET)] == []
    assert not contains(NETWORK_SHAPE, 48.5726, 7.8153)  # Kehl, across the Rhine, is not in the network


async def test_the_maps_show_the_demo_city(harness: Harness) -> None:
    summary = await load_demo(harness.db)
    await harness.svc.catalog.reload()
    city = summary["city"]
    whole = {"lat": CENTER[0], "lng": CENTER[1], "latDeg": 0.2, "lngDeg": 0.2}
    for label in ("knot", "ruban"):
        response = await harness.client.get("/api/application/map/public", params={**whole, "app_label": label})
        assert response.status_code == 200
        body = response.json()
        assert len(body["clusters"]) == city["clusters"]
        # a vehicle with its own module is shown once its module is connected: none is here
        assert len(body["vehicle"]) == city["free_floating_vehicles"] - city["module_vehicles"]
        assert len(body["parkings"]) == city["parkings"] and len(body["speed_zones"]) == city["speed_zones"]
        assert [n["name"] for n in body["networks"]] == ["Strasbourg"]
    login = await harness.client.post("/api/application/login", json={
        "email": DEMO_ACCOUNTS[0][0], "password": DEMO_ACCOUNTS[0][1], "scope": "app", "app_label": "knot"})
    assert login.status_code == 200, login.text
    token = login.json()["token"]
    response = await harness.client.get(
        "/api/application/map", params={"lat": 48.5834, "lng": 7.7458, "latdeg": 0.01, "lngdeg": 0.015},
        headers={"Authorization": f"Bearer {token}"})
    body = response.json()
    assert "Place Kléber" in {c["name"] for c in body["clusters"]}
    assert all(c["cluster_is_accessible"] for c in body["clusters"])
    broglie = next(c for c in body["clusters"] if c["name"] == "Place Broglie")
    assert broglie["exceptional_out_of_order"]["type"] == "event"


async def test_a_larger_scale_adds_whole_units_once(harness: Harness) -> None:
    one = (await load_demo(harness.db))["city"]
    two = (await load_demo(harness.db, scale=2))["city"]
    for key in ("clusters", "stations", "spots", "vehicles", "docked_vehicles", "free_floating_vehicles"):
        assert two[key] == 2 * one[key], key
    assert two["parkings"] > one["parkings"] and two["speed_zones"] == one["speed_zones"]
    assert (await load_demo(harness.db, scale=2))["city"] == two
    assert (await load_demo(harness.db))["city"] == two  # a smaller scale removes nothing
    assert await inconsistent_docks(harness) == 0
    assert await harness.db.fetchval("SELECT count(DISTINCT name) FROM clusters") == two["clusters"]
    clusters = await harness.db.fetch("SELECT latitude, longitude FROM clusters")
    assert all(contains(NETWORK_SHAPE, c["latitude"], c["longitude"]) for c in clusters)

    small, large = city_plan(2), city_plan(33)
    assert large.clusters[: len(small.clusters)] == small.clusters  # deterministic, unit by unit
    assert len(large.free_vehicles) + sum(c.stations for c in large.clusters) * 4 >= 10_000
    assert len({v.vehicle_id for v in large.free_vehicles}) == len(large.free_vehicles)
    assert len({c.name for c in large.clusters}) == len(large.clusters)
    with pytest.raises(ValueError):
        city_plan(0)


async def test_issued_secrets_let_the_stations_of_the_city_connect(harness: Harness) -> None:
    summary = await load_demo(harness.db)
    issued = await demo_station_secrets(harness.db)
    assert len(issued) == summary["city"]["stations"]
    station_id, secret = issued[0]
    cluster = await harness.db.fetchval("SELECT cluster_id FROM stations WHERE id = $1", station_id)
    async with station_socket(harness.station_url, station_id, secret) as station:
        answer = await station.boot(spots=8)
        assert answer[2]["status"] == "accepted"
        # What `knot-rt simulate` reports at start: vehicles id * 100 + spot in spots 1..4.
        await station.state({n: station_id * 100 + n if n <= 4 else None for n in range(1, 9)})
        await wait_station_online(harness, station_id, online=True)
        availability = harness.svc.stations.live.cluster(cluster)
        assert availability.available_vehicles >= 4 and availability.cluster_is_down is False
    assert await inconsistent_docks(harness) == 0


# the command ----------------------------------------------------------------------------------------


def run_cli(database_url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PORT", "KNOT_STATION_PORT")}
    env.update({"DATABASE_URL": database_url, "KNOT_DATA_DIR": str(data_dir)})
    return subprocess.run([KNOT_RT, "demo", *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


def fetch(url: str, sql: str) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return list(await conn.fetch(sql))
        finally:
            await conn.close()

    return asyncio.run(run())


def test_demo_command_scale_and_stations_file(database_url: str, data_dir: Path) -> None:
    stations_file = data_dir / "stations.txt"
    result = run_cli(database_url, data_dir, "--scale", "2", "--stations-file", str(stations_file))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["city"]["clusters"] == 2 * len(city_plan(1).clusters)
    assert stat.S_IMODE(stations_file.stat().st_mode) == 0o600
    lines = stations_file.read_text().splitlines()
    assert len(lines) == summary["city"]["stations"]
    hashes = {r["id"]: r["secret_hash"] for r in fetch(database_url, "SELECT id, secret_hash FROM stations")}
    for line in lines:
        station_id, _, secret = line.partition(":")
        assert device_secret_matches(secret, hashes[int(station_id)])
        assert secret not in result.stdout + result.stderr  # nothing secret is printed

    again = run_cli(database_url, data_dir, "--scale", "2")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["city"] == summary["city"]
    refused = run_cli(database_url, data_dir, "--scale", "0")
    assert refused.returncode == 2 and "--scale" in refused.stderr


def test_demo_vehicles_file_holds_the_module_vehicles_in_their_parkings(database_url: str, data_dir: Path) -> None:
    vehicles_file = data_dir / "vehicles.json"
    result = run_cli(database_url, data_dir, "--vehicles-file", str(vehicles_file))
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["vehicles_file"] == str(vehicles_file)
    assert stat.S_IMODE(vehicles_file.stat().st_mode) == 0o600
    vehicles = read_vehicles_file(str(vehicles_file))  # what `knot-rt simulate --vehicles-file` reads
    assert len(vehicles) == summary["city"]["module_vehicles"] == len(city_plan(1).module_vehicles) == 6
    rows = {r["serial_number"]: r for r in fetch(
        database_url, "SELECT id, serial_number, secret_hash, free_floating, locked, network_id FROM vehicles"
                      " WHERE free_floating")}
    parkings = [r["shape"] for r in fetch(database_url, "SELECT shape FROM virtual_parkings")]
    written = json.loads(vehicles_file.read_text())
    for vehicle, entry in zip(vehicles, written, strict=True):
        row = rows[vehicle.serial]
        assert entry["vehicle_id"] == row["id"] and row["locked"] is True
        assert hash_device_secret(vehicle.secret) == row["secret_hash"]
        assert vehicle.secret not in result.stdout + result.stderr  # nothing secret is printed
        assert any(contains(json.loads(shape), vehicle.lat, vehicle.lng) for shape in parkings)
        assert len(vehicle.path) == 3 and all(contains(NETWORK_SHAPE, *point) for point in vehicle.path)

    again = run_cli(database_url, data_dir, "--vehicles-file", str(vehicles_file))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["city"] == summary["city"]  # nothing added the second time
    renewed = {v.serial: v.secret for v in read_vehicles_file(str(vehicles_file))}
    assert renewed.keys() == {v.serial for v in vehicles}
    assert all(renewed[v.serial] != v.secret for v in vehicles)  # new secrets: the old ones stop working
