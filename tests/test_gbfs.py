"""GBFS v3.0 public feeds (issue 15), over the real server, validated against the official schemas.

The schemas are MobilityData's, kept unchanged in ``../shared/gbfs-v3.0-schemas/`` and read from there
(``jsonschema``, draft 7, with its format checker: ``email``, ``date``, and here ``date-time`` and ``uri``). Two worlds: the demo city (loaded before the server starts, as ``knot-rt serve --demo`` does)
and a small town built here with a station that goes offline and a free-floating vehicle rented over a
real vehicle socket (the simulator's vehicle).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import pytest
import trio
import trio_asyncio
from jsonschema import Draft7Validator, FormatChecker

from knot_rt.config import Settings
from knot_rt.db import Database
from knot_rt.demo import load_demo
from knot_rt.gbfs.service import FILES
from knot_rt.stations.store import load_all_stations
from tests.station_client import booted_station
from tests.support import Harness, eventually, serving, wait_station_online
from tests.tcp_proxy import TcpProxy
from tests.test_free_floating_rents import (
    IN_AREA_ONLY,
    IN_PARKING,
    Town,
    lock,
    make_town,
    on_the_street,
    position,
    unlock,
)

# shared/ beside the repository (the work tree here, the clone in CI)
SCHEMAS = next(
    (folder for folder in (
        Path(os.environ.get("KNOT_SHARED", "/nonexistent")) / "gbfs-v3.0-schemas",
        Path(__file__).resolve().parents[2] / "shared" / "gbfs-v3.0-schemas",
        Path("/work/shared/gbfs-v3.0-schemas"),  # this machine's shared folder, wherever CI cloned to
    ) if (folder / "gbfs.json").exists()),
    Path(__file__).resolve().parents[2] / "shared" / "gbfs-v3.0-schemas",
)
NETWORK_FILES = list(FILES)  # gbfs and every file it lists
GUARD = 15.0  # a hang guard for one request (not a timing assertion)


# jsonschema checks ``date-time`` and ``uri`` only with optional packages; the two checks here stand in.
FORMATS = FormatChecker()
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


@FORMATS.checks("date-time")
def is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    return bool(RFC3339.match(value)) and datetime.fromisoformat(value.replace("Z", "+00:00")) is not None


@FORMATS.checks("uri")
def is_uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


def validator(name: str) -> Draft7Validator:
    schema = json.loads((SCHEMAS / f"{name}.json").read_text())
    return Draft7Validator(schema, format_checker=FORMATS)


VALIDATORS = {name: validator(name) for name in [*NETWORK_FILES, "manifest"]}


def valid(name: str, body: dict[str, Any]) -> dict[str, Any]:
    errors = sorted(VALIDATORS[name].iter_errors(body), key=lambda e: list(e.absolute_path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.absolute_path)}: {e.message}" for e in errors[:5])
    assert body["version"] == "3.0"
    datetime.fromisoformat(body["last_updated"].replace("Z", "+00:00"))  # RFC 3339, whatever the checkers
    return body


async def fetch(harness: Harness, path: str, **headers: str) -> httpx.Response:
    with trio.fail_after(GUARD):
        response: httpx.Response = await harness.client.get(path, headers=headers)
        return response


async def feed(harness: Harness, network: int, name: str) -> dict[str, Any]:
    response = await fetch(harness, f"/gbfs/v3/{network}/{name}.json")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    assert response.headers["cache-control"] == f"public, max-age={body['ttl']}"
    assert response.headers["etag"].startswith('"')
    return valid(name, body)


async def manifest(harness: Harness) -> dict[str, Any]:
    response = await fetch(harness, "/gbfs/v3/manifest.json")
    assert response.status_code == 200, response.text
    return valid("manifest", response.json())


def not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, response.text
    body = response.json()
    assert body["code"] == 4 and body["message"], body


# --------------------------------------------------------------------------
# The demo city


@pytest.fixture
async def demo_harness(settings: Settings) -> AsyncIterator[Harness]:
    """The server over the demo city, loaded before it starts."""
    async with trio_asyncio.open_loop():
        db = await Database.connect(settings.database_url or "", min_size=1, max_size=2)
        try:
            await load_demo(db)
        finally:
            await db.close()
        async with serving(settings) as harness:
            yield harness


async def test_every_file_of_the_demo_city_validates(demo_harness: Harness) -> None:
    harness = demo_harness
    network = await harness.db.fetchval("SELECT id FROM networks WHERE name = 'Strasbourg'")
    await eventually(lambda: network in harness.svc.gbfs.tariffs)
    found = (await manifest(harness))["data"]["datasets"]
    assert {"system_id": f"knot-{network}",
            "versions": [{"version": "3.0", "url": f"http://knot.test/gbfs/v3/{network}/gbfs.json"}]} in found

    files = {name: (await feed(harness, network, name))["data"] for name in NETWORK_FILES}
    assert [(f["name"], f["url"]) for f in files["gbfs"]["feeds"]] == [
        (name, f"http://knot.test/gbfs/v3/{network}/{name}.json") for name in NETWORK_FILES if name != "gbfs"]
    info = files["system_information"]
    assert (info["name"][0]["text"], info["timezone"], info["languages"]) == ("Strasbourg", "Europe/Paris",
                                                                             ["de", "en", "fr"])
    assert info["manifest_url"] == "http://knot.test/gbfs/v3/manifest.json"

    stations = files["station_information"]["stations"]
    assert len(stations) == 61
    kleber = next(s for s in stations if s["name"][0]["text"] == "Place Kléber")
    assert {n["language"] for n in kleber["name"]} == {"en", "fr", "de"} and kleber["capacity"] == 8
    statuses = files["station_status"]["stations"]
    assert {s["station_id"] for s in statuses} == {s["station_id"] for s in stations}
    # No station is connected: none rents, each is an alert.
    assert not any(s["is_renting"] or s["is_returning"] for s in statuses)
    offline = {a["station_ids"][0] for a in files["system_alerts"]["alerts"] if a["alert_id"].endswith("-offline")}
    assert offline == {s["station_id"] for s in stations}

    types = {t["vehicle_type_id"]: t for t in files["vehicle_types"]["vehicle_types"]}
    assert {(t["form_factor"], t["propulsion_type"]) for t in types.values()} == {
        ("scooter_standing", "electric"), ("bicycle", "electric_assist")}
    assert {t["max_range_meters"] for t in types.values()} == {65_000, 50_000, 80_000}

    vehicles = files["vehicle_status"]
    serials = {r["serial_number"] for r in await harness.db.fetch("SELECT serial_number FROM vehicles")}
    ids = {str(r["id"]) for r in await harness.db.fetch("SELECT id FROM vehicles")}
    assert len(vehicles["vehicles"]) == 66
    assert not {v["vehicle_id"] for v in vehicles["vehicles"]} & (serials | ids)
    assert all(v["vehicle_type_id"] in types for v in vehicles["vehicles"])

    [plan] = files["system_pricing_plans"]["plans"]
    assert (plan["currency"], plan["price"], plan["per_min_pricing"]) == (
        "EUR", 1.0, [{"start": 0, "rate": 0.25, "interval": 1}])

    zones = files["geofencing_zones"]
    rules = [f["properties"]["rules"][0] for f in zones["geofencing_zones"]["features"]]
    assert [r["maximum_speed_kph"] for r in rules if "maximum_speed_kph" in r] == [10, 10, 15, 20]
    assert sum(1 for r in rules if r["ride_end_allowed"] and "maximum_speed_kph" not in r) == 8  # the parkings
    assert zones["global_rules"] == [
        {"ride_start_allowed": True, "ride_end_allowed": False, "ride_through_allowed": True}]


# --------------------------------------------------------------------------
# A town with a station going offline and a vehicle rented

DESCRIPTION = {"en": "By the fountain.", "fr": "Près de la fontaine."}


async def make_gbfs_town(harness: Harness) -> tuple[Town, int, list[tuple[int, str]]]:
    """``make_town``'s network (area, a parking, free-floating vehicles 201..205, docked 101) with a speed
    zone and a cluster of two stations of four spots."""
    town = await make_town(harness, "Gbfs")
    make = harness.make
    await make.speed_zone(town.network, [[7.72, 48.57], [7.74, 48.57], [7.74, 48.59], [7.72, 48.59]], 12)
    cluster = await make.cluster(town.network, "Fontaine", 48.585, 7.735, description=DESCRIPTION)
    stations = await make.stations(cluster, 2)
    await harness.svc.catalog.reload()
    await position(harness, 203, *IN_AREA_ONLY)  # a second vehicle on the street, without a socket
    # What the station service does every 30 s: stations created since start join the live view.
    harness.svc.stations.live.add_missing(await harness.db.run(load_all_stations))
    await eventually(lambda: town.network in harness.svc.gbfs.tariffs)
    return town, cluster, stations


async def all_valid(harness: Harness, network: int) -> dict[str, dict[str, Any]]:
    return {name: (await feed(harness, network, name))["data"] for name in NETWORK_FILES}


def status_of(files: dict[str, dict[str, Any]], station: int) -> dict[str, Any]:
    [found] = [s for s in files["station_status"]["stations"] if s["station_id"] == str(station)]
    return found


def alert_ids(files: dict[str, dict[str, Any]]) -> set[str]:
    return {a["alert_id"] for a in files["system_alerts"]["alerts"]}


async def test_a_station_going_offline_and_a_vehicle_rented(harness: Harness) -> None:
    town, _, [(first, first_secret), (second, _)] = await make_gbfs_town(harness)
    network = town.network
    _, token = await town.rider(harness, "rider@example.com")
    info = await all_valid(harness, network)
    names = next(s for s in info["station_information"]["stations"] if s["station_id"] == str(first))["name"]
    assert names == [{"text": "Fontaine", "language": "en"}, {"text": "Fontaine", "language": "fr"}]

    async with booted_station(harness.station_url, first, first_secret) as station:
        assert (await station.state({1: 101, 2: None, 3: None, 4: None}))[0] == 3
        await wait_station_online(harness, first)
        async with on_the_street(harness, town, 201, *IN_PARKING) as sim:
            files = await all_valid(harness, network)
            up = status_of(files, first)
            assert (up["is_renting"], up["is_returning"], up["num_vehicles_available"], up["num_docks_available"],
                    up["is_installed"]) == (True, True, 1, 3, True)
            assert up["vehicle_types_available"] == [{"vehicle_type_id": "type-kick-scooter", "count": 1}]
            assert f"station-{first}-offline" not in alert_ids(files)
            assert f"station-{second}-offline" in alert_ids(files)  # never connected
            assert not status_of(files, second)["is_renting"]
            before = {v["vehicle_id"]: v for v in files["vehicle_status"]["vehicles"]}
            assert len(before) == 2  # the two with a position: 201 (connected) and 203
            [(old_id, standing)] = [(k, v) for k, v in before.items() if (v["lat"], v["lon"]) == IN_PARKING]
            [(other_id, other)] = [(k, v) for k, v in before.items() if (v["lat"], v["lon"]) == IN_AREA_ONLY]
            assert standing["is_disabled"] is False  # connected: rentable
            assert other["is_disabled"] is True  # its module is not connected: not rentable now

            # Rented: gone from vehicle_status (the others keep their ids).
            response = await unlock(harness, token, "SN201", *IN_PARKING)
            assert response.status_code == 200, response.text
            await eventually(lambda: harness.svc.vehicles.state(201).rent is not None)
            riding = await all_valid(harness, network)
            during = {v["vehicle_id"] for v in riding["vehicle_status"]["vehicles"]}
            assert during == {other_id}

            # Back after the trip, under a new id.
            assert (await lock(harness, token, 201)).json() == {"code": 0}
            await eventually(lambda: harness.svc.vehicles.state(201).rent is None)
            after = {v["vehicle_id"]: v for v in (await all_valid(harness, network))["vehicle_status"]["vehicles"]}
            assert len(after) == 2 and old_id not in after and other_id in after
            [new_id] = set(after) - during
            assert (after[new_id]["lat"], after[new_id]["lon"]) == IN_PARKING
            sim.stop()
        # The station goes offline.
    await wait_station_online(harness, first, online=False)
    files = await all_valid(harness, network)
    down = status_of(files, first)
    assert (down["is_renting"], down["is_returning"], down["num_vehicles_available"], down["num_docks_available"]) == (
        False, False, 0, 0)
    assert f"station-{first}-offline" in alert_ids(files)
    [alert] = [a for a in files["system_alerts"]["alerts"] if a["alert_id"] == f"station-{first}-offline"]
    assert alert["type"] == "station_closure" and alert["station_ids"] == [str(first)] and alert["times"]


async def test_a_trip_nobody_watched_still_rotates_the_vehicle_id(harness: Harness) -> None:
    town, _, _ = await make_gbfs_town(harness)
    _, token = await town.rider(harness, "rider@example.com")
    async with on_the_street(harness, town, 202, *IN_PARKING):
        first = {v["vehicle_id"] for v in (await feed(harness, town.network, "vehicle_status"))["data"]["vehicles"]}
        response = await unlock(harness, token, "SN202", *IN_PARKING)
        assert response.status_code == 200, response.text
        await eventually(lambda: harness.svc.vehicles.state(202).rent is not None)
        await trio.sleep(2 * harness.svc.gbfs.watch_seconds)  # the watch sees the rent (no GBFS read meanwhile)
        assert (await lock(harness, token, 202)).json() == {"code": 0}
        await eventually(lambda: harness.svc.vehicles.state(202).rent is None)
        again = {v["vehicle_id"] for v in (await feed(harness, town.network, "vehicle_status"))["data"]["vehicles"]}
    assert len(again) == len(first) == 2 and len(again - first) == 1  # 202's id is new, 203's is kept


# --------------------------------------------------------------------------
# HTTP: caching, 304, who sees what, hostile ids


async def test_etag_304_and_cache_control(harness: Harness) -> None:
    town, _, _ = await make_gbfs_town(harness)
    for name in [*NETWORK_FILES]:
        path = f"/gbfs/v3/{town.network}/{name}.json"
        first = await fetch(harness, path)
        etag = first.headers["etag"]
        ttl = first.json()["ttl"]
        assert first.headers["cache-control"] == f"public, max-age={ttl}"
        assert (0 <= ttl <= 60) if name.endswith("_status") or name == "system_alerts" else ttl >= 60
        again = await fetch(harness, path)
        assert again.headers["etag"] == etag and again.content == first.content  # from the cache
        for header in [etag, f"W/{etag}", f'"nope", {etag}', "*"]:
            cached = await fetch(harness, path, **{"If-None-Match": header})
            assert cached.status_code == 304 and cached.content == b"", header
            assert cached.headers["etag"] == etag
        assert (await fetch(harness, path, **{"If-None-Match": '"other"'})).status_code == 200
    manifest_etag = (await fetch(harness, "/gbfs/v3/manifest.json")).headers["etag"]
    assert (await fetch(harness, "/gbfs/v3/manifest.json", **{"If-None-Match": manifest_etag})).status_code == 304


async def test_a_change_gives_a_new_etag(harness: Harness) -> None:
    town, cluster, _ = await make_gbfs_town(harness)
    path = f"/gbfs/v3/{town.network}/station_information.json"
    before = await fetch(harness, path)
    await harness.svc.catalog_service.rename_cluster(cluster, "Grande Fontaine")
    after = await fetch(harness, path)
    assert after.headers["etag"] != before.headers["etag"]
    assert {n["text"] for s in after.json()["data"]["stations"] for n in s["name"]} == {"Grande Fontaine"}
    assert (await fetch(harness, path, **{"If-None-Match": before.headers["etag"]})).status_code == 200


async def test_private_and_organisation_networks_never_appear(harness: Harness) -> None:
    make = harness.make
    label = await make.app_label_once("knot")
    public = await make.network("Public", labels=[label])
    private = await make.network("Private", public=False, labels=[label])
    org = await make.organization("Org")
    members = await make.network("Members", organization=org, organization_only=True, labels=[label])
    for network in (private, members):
        await make.cluster(network, "Hidden")
    await harness.svc.catalog.reload()
    systems = {d["system_id"] for d in (await manifest(harness))["data"]["datasets"]}
    assert f"knot-{public}" in systems
    assert not systems & {f"knot-{private}", f"knot-{members}"}
    for network in (private, members, 999_999):
        for name in NETWORK_FILES:
            not_found(await fetch(harness, f"/gbfs/v3/{network}/{name}.json"))
    await feed(harness, public, "system_information")


async def test_unknown_files_and_hostile_ids_answer_json_errors(harness: Harness) -> None:
    town, _, _ = await make_gbfs_town(harness)
    paths = [
        f"/gbfs/v3/{town.network}/free_bike_status.json", f"/gbfs/v3/{town.network}/gbfs",
        f"/gbfs/v3/{town.network}/system_regions.json", f"/gbfs/v3/{town.network}/../gbfs.json",
        "/gbfs/v3/99999999999999999999999999/gbfs.json", "/gbfs/v3/9223372036854775808/gbfs.json",
        "/gbfs/v3/-1/gbfs.json", "/gbfs/v3/abc/gbfs.json", "/gbfs/v3/%00/gbfs.json", "/gbfs/v3/1%00/gbfs.json",
        "/gbfs/v3/%F0%9F%9A%B2/gbfs.json", "/gbfs/v3/1e3/gbfs.json", "/gbfs/v3/ 1/gbfs.json", "/gbfs/v3/gbfs.json",
        "/gbfs/v2/manifest.json", "/gbfs/v3/0/gbfs.json",
    ]
    for path in paths:
        response = await fetch(harness, path)
        assert response.status_code in (400, 404), (path, response.status_code, response.text)
        body = response.json()
        assert isinstance(body["code"], int) and body["message"], (path, body)
    response = await harness.client.post(f"/gbfs/v3/{town.network}/gbfs.json")
    assert response.status_code == 405 and response.json()["code"]


# --------------------------------------------------------------------------
# No query per request: the feeds answer while every reply of the database is swallowed


def through(url: str, port: int) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)
    host = f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=f"{netloc[0]}@{host}" if len(netloc) == 2 else host))


async def test_the_feeds_answer_while_the_database_does_not(settings: Settings) -> None:
    upstream = urlsplit(settings.database_url or "").port or 5432
    proxy = TcpProxy(upstream)
    async with trio_asyncio.open_loop(), trio.open_nursery() as nursery:
        port = await nursery.start(proxy.run)
        proxied = replace(settings, database_url=through(settings.database_url or "", port))
        async with serving(proxied, command_timeout=60.0) as harness:
            town, _, _ = await make_gbfs_town(harness)
            await manifest(harness)
            warm = await all_valid(harness, town.network)
            proxy.hold_downstream = True  # any query now waits (60 s) for an answer that never comes
            try:
                assert await all_valid(harness, town.network) == warm
                await manifest(harness)
                # The database is really away: a route that reads it does not answer within the guard.
                with trio.move_on_after(3) as waited:
                    await harness.client.get("/api/application/faq", params={"lang": "en"})
                assert waited.cancelled_caught
            finally:
                proxy.hold_downstream = False
        await proxy.cut()  # the server is gone: its connections that lost an answer go with the proxy
        nursery.cancel_scope.cancel()


def test_the_feed_names_are_the_schemas_names() -> None:
    for name in [*NETWORK_FILES, "manifest"]:
        assert (SCHEMAS / f"{name}.json").is_file(), name
        assert re.fullmatch(r"[a-z_]+", name)


async def test_a_station_in_maintenance_neither_rents_nor_takes_returns(harness: Harness) -> None:
    town, _, [(station, secret), _] = await make_gbfs_town(harness)
    async with booted_station(harness.station_url, station, secret) as raw:
        assert (await raw.state({1: 101, 2: None, 3: None, 4: None}))[0] == 3
        await wait_station_online(harness, station)
        assert status_of(await all_valid(harness, town.network), station)["is_renting"] is True
        # What a ``high`` maintenance of the station does (``maintenance.live``): every spot out of service.
        for spot in range(1, 5):
            await harness.svc.stations.set_spot_maintenance(station, spot, True)
        files = await all_valid(harness, town.network)
        down = status_of(files, station)
        assert (down["is_renting"], down["is_returning"], down["num_vehicles_available"],
                down["num_docks_available"], down["num_vehicles_disabled"], down["num_docks_disabled"]) == (
            False, False, 0, 0, 1, 3)
        assert f"station-{station}-maintenance" in alert_ids(files)
        await harness.svc.stations.set_spot_maintenance(station, 2, False)
        back = status_of(await all_valid(harness, town.network), station)
        assert (back["is_renting"], back["num_docks_available"], back["num_vehicles_available"]) == (True, 1, 0)
