"""Country at a position (ROUTES row 24) and the seeding of the countries table."""

from __future__ import annotations

from typing import Any

import pytest
import trio_asyncio

from knot_rt.catalog.countries import all_countries
from knot_rt.catalog.store import ensure_countries
from knot_rt.config import Settings
from knot_rt.runner import open_database
from knot_rt.services.geo import COUNTRY_FINDER, country_of_zone, distance_m
from tests.support import Harness

POSITION = "/api/application/countries/position"

PLACES = [
    ("Strasbourg", 48.5734, 7.7521, "FR"),
    ("Kehl", 48.5724, 7.8150, "DE"),  # across the Rhine from Strasbourg
    ("Basel", 47.5596, 7.5886, "CH"),
    ("Geneva", 46.2044, 6.1432, "CH"),
    ("Monaco", 43.7384, 7.4246, "MC"),
    ("Büsingen", 47.6967, 8.6908, "DE"),  # German enclave inside Switzerland
    ("Paris", 48.8566, 2.3522, "FR"),
    ("Tokyo", 35.6762, 139.6503, "JP"),
    ("Buenos Aires", -34.6037, -58.3816, "AR"),
]

AT_SEA = [
    ("North Sea", 55.5, 3.5),
    ("middle of the Atlantic", 30.0, -40.0),
    ("Pacific", 0.0, -150.0),
]


async def country_at(harness: Harness, lat: Any, lng: Any) -> tuple[int, dict[str, Any]]:
    response = await harness.client.get(POSITION, params={"lat": lat, "lng": lng})
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def seeded(harness: Harness) -> None:
    await harness.db.transaction(ensure_countries)


@pytest.mark.parametrize(("place", "lat", "lng", "iso_2"), PLACES, ids=[p[0] for p in PLACES])
async def test_country_at_a_place(harness: Harness, place: str, lat: float, lng: float, iso_2: str) -> None:
    await seeded(harness)
    status, body = await country_at(harness, lat, lng)
    assert status == 200, body
    assert body["code"] == 0
    assert body["data"]["iso_2"] == iso_2, place
    row = await harness.db.fetchrow("SELECT id, name, iso_3, phone_prefix FROM countries WHERE iso_2 = $1", iso_2)
    assert row is not None
    assert body["data"] == {
        "country_id": row["id"], "name": row["name"], "iso_2": iso_2, "iso_3": row["iso_3"],
        "phone_prefix": row["phone_prefix"],
    }


async def test_both_sides_of_the_rhine(harness: Harness) -> None:
    await seeded(harness)
    _, strasbourg = await country_at(harness, 48.5734, 7.7521)
    _, kehl = await country_at(harness, 48.5724, 7.8150)
    assert distance_m(48.5734, 7.7521, 48.5724, 7.8150) < 5_000
    assert strasbourg["data"] == {
        "country_id": strasbourg["data"]["country_id"], "name": "France", "iso_2": "FR", "iso_3": "FRA",
        "phone_prefix": "+33",
    }
    assert kehl["data"] == {
        "country_id": kehl["data"]["country_id"], "name": "Germany", "iso_2": "DE", "iso_3": "DEU",
        "phone_prefix": "+49",
    }


@pytest.mark.parametrize(("place", "lat", "lng"), AT_SEA, ids=[p[0] for p in AT_SEA])
async def test_no_country_at_sea(harness: Harness, place: str, lat: float, lng: float) -> None:
    await seeded(harness)
    status, body = await country_at(harness, lat, lng)
    assert status == 404, place
    assert body["code"] == 25
    assert body["message"]


async def test_answers_without_seeding_at_start(harness: Harness) -> None:
    """A database that was only migrated (not started by the runner) still answers, with a stable id."""
    assert await harness.db.fetchval("SELECT count(*) FROM countries") == 0
    _, first = await country_at(harness, 48.5734, 7.7521)
    assert first["data"]["iso_2"] == "FR"
    await seeded(harness)
    _, again = await country_at(harness, 48.5734, 7.7521)
    assert again["data"] == first["data"]


@pytest.mark.parametrize(("params", "field"), [
    ({}, "lat"),
    ({"lat": "48.5"}, "lng"),
    ({"lng": "7.7"}, "lat"),
    ({"lat": "91", "lng": "7.7"}, "lat"),
    ({"lat": "-90.01", "lng": "7.7"}, "lat"),
    ({"lat": "48.5", "lng": "180.5"}, "lng"),
    ({"lat": "48.5", "lng": "-181"}, "lng"),
    ({"lat": "north", "lng": "7.7"}, "lat"),
    ({"lat": "48.5", "lng": ""}, "lng"),
    ({"lat": "nan", "lng": "7.7"}, "lat"),
    ({"lat": "48.5", "lng": "inf"}, "lng"),
])
async def test_bad_coordinates(harness: Harness, params: dict[str, str], field: str) -> None:
    response = await harness.client.get(POSITION, params=params)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == 2
    assert field in body["message"]


async def test_poles_and_antimeridian_are_valid_input(harness: Harness) -> None:
    for lat, lng in [(90, 0), (-90, 0), (0, 180), (0, -180)]:
        status, body = await country_at(harness, lat, lng)
        assert status in (200, 404), body
        assert body["code"] in (0, 25)


async def test_seeding_is_idempotent_and_keeps_ids(harness: Harness) -> None:
    added = await harness.db.transaction(ensure_countries)
    assert added == len(all_countries()) >= 249
    before = {r["iso_2"]: r["id"] for r in await harness.db.fetch("SELECT iso_2, id FROM countries")}
    assert await harness.db.transaction(ensure_countries) == 0
    after = {r["iso_2"]: r["id"] for r in await harness.db.fetch("SELECT iso_2, id FROM countries")}
    assert after == before
    rows = {r["iso_2"]: dict(r) for r in await harness.db.fetch("SELECT iso_2, iso_3, name, phone_prefix FROM countries")}
    assert rows["FR"] == {"iso_2": "FR", "iso_3": "FRA", "name": "France", "phone_prefix": "+33"}
    assert rows["MC"]["phone_prefix"] == "+377"
    assert rows["BO"]["name"] == "Bolivia"  # the common name, not "Bolivia, Plurinational State of"
    assert rows["AQ"]["phone_prefix"] == ""  # no calling code


async def test_seeding_keeps_rows_added_earlier(harness: Harness) -> None:
    await harness.db.execute(  # raw on purpose: a row from before the seeding, as an older install had it
        "INSERT INTO countries (iso_2, iso_3, name, phone_prefix) VALUES ('FR', 'FRA', 'La France', '+33')"
    )
    fr_id = await harness.db.fetchval("SELECT id FROM countries WHERE iso_2 = 'FR'")
    await harness.db.transaction(ensure_countries)
    assert await harness.db.fetchval("SELECT name FROM countries WHERE id = $1", fr_id) == "La France"
    assert await harness.db.fetchval("SELECT count(*) FROM countries WHERE iso_2 = 'FR'") == 1


async def test_runner_seeds_countries_after_migrating(settings: Settings) -> None:
    async with trio_asyncio.open_loop(), open_database(settings) as db:
        count = await db.fetchval("SELECT count(*) FROM countries")
    assert count == len(all_countries())


async def test_every_land_zone_of_the_shipped_data_has_a_country() -> None:
    """Guards package upgrades: a new land zone without a country would silently answer 'no country'."""
    finder = await COUNTRY_FINDER.finder()
    seeded_codes = {c.iso_2 for c in all_countries()}
    for zone in finder.timezone_names:
        country = country_of_zone(zone)
        if zone.startswith("Etc/"):
            assert country is None
        else:
            assert country in seeded_codes, zone


def test_distance() -> None:
    assert distance_m(48.5734, 7.7521, 48.5734, 7.7521) == 0
    # Paris - London, about 344 km
    assert 340_000 < distance_m(48.8566, 2.3522, 51.5074, -0.1278) < 346_000
    # a quarter of a meridian, about 10,008 km
    assert distance_m(0, 0, 90, 0) == pytest.approx(10_007_543, rel=1e-4)
    # across the antimeridian: 1 degree of longitude at the equator, about 111 km
    assert distance_m(0, 179.5, 0, -179.5) == pytest.approx(111_195, rel=1e-3)
