"""Cluster writes update the in-memory catalog in a targeted way (the catalog service, issue 8).

Over the real server and PostgreSQL: a rename or a move is in the map and area
answers at once, and a row inserted behind the service's back (raw SQL, as
another process would) stays unseen after the write: the write updated its own
cluster and parkings, it did not reload every row. A full reload then shows it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import pytest
import trio_asyncio

from knot_rt.config import Settings
from tests.support import Harness, eventually, serving
from tests.test_clusters import CENTRE, build_city, get, ok_data, put

MAP = {"lat": CENTRE["lat"], "lng": CENTRE["lng"], "latdeg": CENTRE["latDeg"], "lngdeg": CENTRE["lngDeg"]}


async def _map(harness: Harness, token: str) -> dict[str, Any]:
    response = await get(harness, "/map", token, **MAP)
    body: dict[str, Any] = response.json()
    assert response.status_code == 200 and body["code"] == 0, body
    return body


async def _area_names(harness: Harness, token: str) -> dict[int, str]:
    found = await ok_data(await get(harness, "/clusters/areas", token, **CENTRE))
    return {c["cluster_id"]: c["name"] for c in found}


async def test_a_rename_is_seen_at_once_and_reloads_nothing_else(harness: Harness) -> None:
    city = await build_city(harness)
    t, c, n = city.tokens, city.clusters, city.networks
    # Raw SQL on purpose: rows written behind the service's back (another process), which only a full reload finds.
    hidden: int = await harness.db.fetchval(
        "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, 'Behind', 48.583, 7.745) RETURNING id",
        n["public"],
    )
    await harness.db.execute("UPDATE clusters SET name = 'Renamed behind' WHERE id = $1", c["cathedrale"])

    assert (await put(harness, f"/clusters/{c['gare']}/name", t["operator"], {"name": "Gare centrale"})).json() == {
        "code": 0
    }
    names = await _area_names(harness, t["rider"])
    assert names[c["gare"]] == "Gare centrale"  # the write, at once
    assert hidden not in names and names[c["cathedrale"]] == "Cathédrale"  # nothing else was read again
    mapped = await _map(harness, t["rider"])
    assert {x["cluster_id"]: x["name"] for x in mapped["clusters"]}[c["gare"]] == "Gare centrale"

    await harness.svc.catalog.reload()  # the full reload, for contrast, finds what the service did not touch
    names = await _area_names(harness, t["rider"])
    assert names[hidden] == "Behind" and names[c["cathedrale"]] == "Renamed behind"


async def test_a_move_carries_its_parkings_on_the_map_at_once(harness: Harness) -> None:
    city = await build_city(harness)
    t, c, n = city.tokens, city.clusters, city.networks
    square = [[7.7505, 48.5815], [7.7513, 48.5815], [7.7513, 48.5821], [7.7505, 48.5821]]
    following = await harness.make.parking(n["public"], c["cathedrale"], square)
    # Raw SQL on purpose: a parking written behind the service (not followed, not reloaded): never on the map
    # until a reload.
    behind: int = await harness.db.fetchval(
        "INSERT INTO virtual_parkings (network_id, cluster_id, shape) VALUES ($1, NULL, $2) RETURNING id",
        n["public"], square,
    )

    moved = await ok_data(await put(harness, f"/clusters/{c['cathedrale']}/location", t["operator"],
                                    {"lat": 48.5918, "lng": 7.7409}))
    assert moved == {"parkings": [following]}
    mapped = await _map(harness, t["rider"])
    clusters = {x["cluster_id"]: x for x in mapped["clusters"]}
    assert (clusters[c["cathedrale"]]["latitude"], clusters[c["cathedrale"]]["longitude"]) == (48.5918, 7.7409)
    parkings = {p["virtual_parking_id"]: p["shape"] for p in mapped["parkings"]}
    assert behind not in parkings
    assert parkings[following] == await harness.db.fetchval(
        "SELECT shape FROM virtual_parkings WHERE id = $1", following
    )
    assert parkings[following] != square
    # The cluster left its old cell of the grid: an area around its old place no longer finds it.
    old_place = {"lat": 48.5818, "lng": 7.7509, "latDeg": 0.002, "lngDeg": 0.002}
    assert c["cathedrale"] not in {x["cluster_id"] for x in await ok_data(
        await get(harness, "/clusters/areas", t["rider"], **old_place))}


@pytest.fixture
async def refreshing_harness(settings: Settings) -> AsyncIterator[Harness]:
    """The server with a catalog that reads everything again every 0.2 s."""
    async with trio_asyncio.open_loop(), serving(replace(settings, catalog_refresh_seconds=0.2)) as harness:
        yield harness


async def test_what_changed_behind_the_catalog_arrives_with_its_periodic_read(
    refreshing_harness: Harness,
) -> None:
    harness = refreshing_harness
    city = await build_city(harness)
    hidden: int = await harness.db.fetchval(  # raw on purpose: another process, behind the service's catalog
        "INSERT INTO clusters (network_id, name, latitude, longitude) VALUES ($1, 'Behind', 48.583, 7.745) RETURNING id",
        city.networks["public"],
    )

    async def shown() -> bool:
        return hidden in await _area_names(harness, city.tokens["operator"])

    await eventually(shown)
