"""FAQ (ROUTES row 33)."""

from __future__ import annotations

from typing import Any

import pytest

from knot_rt.demo import load_demo
from tests.support import Harness

FAQ = "/api/application/faq"


async def get_faq(harness: Harness, **params: str) -> list[dict[str, Any]]:
    response = await harness.client.get(FAQ, params=params)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0
    data: list[dict[str, Any]] = body["data"]
    return data


@pytest.fixture
async def faq(harness: Harness) -> dict[str, int]:
    """Two labels; shared entries, one category for each label; inserted out of order."""
    knot = await harness.create_app_label("knot")
    city = await harness.create_app_label("citybike", "City Bike")
    await harness.make.faq_category("payment", {"en": "Payment", "fr": "Paiement"}, sort_order=2)
    await harness.make.faq_category("renting", {"en": "Renting", "fr": "Location", "de": "Mieten"}, sort_order=1)
    await harness.make.faq_category("knot-only", {"en": "Knot club"}, sort_order=3, app_label=knot)
    await harness.make.faq_category("city-only", {"en": "City Bike club"}, sort_order=0, app_label=city)
    await harness.make.faq_sub_category("renting.end", "renting", {"en": "Ending a rent", "fr": "Finir une location"},
                           sort_order=2)
    await harness.make.faq_sub_category("renting.start", "renting", {"en": "Starting with {app-label}"},
                           sort_order=1, replacements=["app-label"])
    await harness.make.faq_sub_category("renting.spacer", "renting", {"en": ""}, sort_order=3, is_spacer=True)
    await harness.make.faq_content("renting.start.2", "renting.start", {"en": "Unlock it.", "fr": "Déverrouillez-la."},
                      sort_order=2, type="bullet", bullet_color="primary")
    await harness.make.faq_content("renting.start.1", "renting.start",
                      {"en": "Open {app-label}.", "fr": "Ouvrez {app-label}."}, sort_order=1, bold=True,
                      margin="0 0 8 0", text_color="secondary", replacements=["app-label"])
    await harness.make.faq_content("renting.end.1", "renting.end", {"en": "Dock it."}, sort_order=1)
    await harness.make.faq_sub_category("knot-only.perks", "knot-only", {"en": "Perks", "de": "Vorteile"})
    await harness.make.faq_content("knot-only.perks.1", "knot-only.perks", {"en": "Free unlocks."})
    return {"knot": knot, "citybike": city}


async def test_structure_is_exact_and_sorted(harness: Harness, faq: dict[str, int]) -> None:
    data = await get_faq(harness, lang="fr")
    assert data == [
        {
            "key": "renting", "name": "Location", "translated": True, "sort_order": 1,
            "sub_categories": [
                {
                    "key": "renting.start", "name": "Starting with {app-label}", "translated": False,
                    "sort_order": 1, "is_spacer": False, "replacements": ["app-label"],
                    "contents": [
                        {"key": "renting.start.1", "content": "Ouvrez {app-label}.", "translated": True,
                         "sort_order": 1, "type": "text", "bold": True, "margin": "0 0 8 0",
                         "text_color": "secondary", "bullet_color": None, "replacements": ["app-label"]},
                        {"key": "renting.start.2", "content": "Déverrouillez-la.", "translated": True,
                         "sort_order": 2, "type": "bullet", "bold": False, "margin": None,
                         "text_color": None, "bullet_color": "primary", "replacements": []},
                    ],
                },
                {
                    "key": "renting.end", "name": "Finir une location", "translated": True, "sort_order": 2,
                    "is_spacer": False, "replacements": [],
                    "contents": [
                        {"key": "renting.end.1", "content": "Dock it.", "translated": False, "sort_order": 1,
                         "type": "text", "bold": False, "margin": None, "text_color": None,
                         "bullet_color": None, "replacements": []},
                    ],
                },
                {
                    "key": "renting.spacer", "name": "", "translated": False, "sort_order": 3,
                    "is_spacer": True, "replacements": [], "contents": [],
                },
            ],
        },
        {"key": "payment", "name": "Paiement", "translated": True, "sort_order": 2, "sub_categories": []},
    ]


async def test_english_is_translated_and_other_languages_fall_back(harness: Harness, faq: dict[str, int]) -> None:
    english = await get_faq(harness, lang="en")
    assert [(c["name"], c["translated"]) for c in english] == [("Renting", True), ("Payment", True)]
    assert english[0]["sub_categories"][0]["contents"][0]["content"] == "Open {app-label}."

    german = await get_faq(harness, lang="DE")
    assert [(c["name"], c["translated"]) for c in german] == [("Mieten", True), ("Payment", False)]
    contents = german[0]["sub_categories"][0]["contents"]
    assert [(c["content"], c["translated"]) for c in contents] == [("Open {app-label}.", False),
                                                                   ("Unlock it.", False)]


async def test_app_label_adds_its_own_entries_only(harness: Harness, faq: dict[str, int]) -> None:
    knot = await get_faq(harness, lang="de", app_label="knot")
    assert [c["key"] for c in knot] == ["renting", "payment", "knot-only"]
    assert knot[2]["sub_categories"][0]["name"] == "Vorteile"
    assert knot[2]["sub_categories"][0]["contents"][0]["key"] == "knot-only.perks.1"

    city = await get_faq(harness, lang="en", app_label="citybike")
    assert [c["key"] for c in city] == ["city-only", "renting", "payment"]
    assert city[0]["sub_categories"] == []


async def test_without_app_label_only_shared_entries(harness: Harness, faq: dict[str, int]) -> None:
    assert [c["key"] for c in await get_faq(harness, lang="en")] == ["renting", "payment"]


async def test_empty_faq(harness: Harness) -> None:
    assert await get_faq(harness, lang="en") == []


async def test_unknown_app_label(harness: Harness, faq: dict[str, int]) -> None:
    response = await harness.client.get(FAQ, params={"lang": "en", "app_label": "nope"})
    assert response.status_code == 404
    assert response.json()["code"] == 12


@pytest.mark.parametrize("params", [{}, {"app_label": "knot"}, {"lang": "eng"}, {"lang": "e"}])
async def test_lang_is_required_and_two_characters(harness: Harness, faq: dict[str, int],
                                                   params: dict[str, str]) -> None:
    response = await harness.client.get(FAQ, params=params)
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 2
    assert "lang" in body["message"]


def all_translated(categories: list[dict[str, Any]]) -> bool:
    return all(
        category["translated"]
        and all((sub["translated"] or sub["is_spacer"]) and all(c["translated"] for c in sub["contents"])
                for sub in category["sub_categories"])
        for category in categories
    )


async def test_demo_faq_is_translated(harness: Harness) -> None:
    await load_demo(harness.db)
    for lang in ("en", "fr", "de"):
        categories = await get_faq(harness, lang=lang, app_label="knot")
        assert len(categories) >= 3
        assert all_translated(categories), lang
    shared = await get_faq(harness, lang="fr")
    assert len(shared) == len(categories) - 1
    replaced = [sub for category in shared for sub in category["sub_categories"] if sub["replacements"]]
    assert replaced and all("{app-label}" in sub["name"] for sub in replaced)
