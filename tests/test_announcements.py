"""Global announcement (ROUTES row 34)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.support import Harness

GLOBAL = "/api/application/announcements/global"
HOUR = timedelta(hours=1)


async def add_announcement(harness: Harness, texts: dict[str, str], *, app_label: int | None = None,
                           starts_in: timedelta = -HOUR, ends_in: timedelta | None = None) -> None:
    now = datetime.now(UTC)
    await harness.make.announcement(texts, app_label=app_label, starts_at=now + starts_in,
                                    ends_at=None if ends_in is None else now + ends_in)


async def announcement(harness: Harness, lang: str = "en", app_label: str = "knot") -> str | None:
    response = await harness.client.get(GLOBAL, params={"lang": lang, "app_label": app_label})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0
    assert list(body["data"]) == ["announcement"]
    text: str | None = body["data"]["announcement"]
    return text


@pytest.fixture
async def labels(harness: Harness) -> dict[str, int]:
    return {"knot": await harness.create_app_label("knot"),
            "citybike": await harness.create_app_label("citybike", "City Bike")}


async def test_none_ongoing_is_null(harness: Harness, labels: dict[str, int]) -> None:
    assert await announcement(harness) is None


async def test_global_one_for_every_label(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "Maintenance tonight", "fr": "Maintenance ce soir"})
    assert await announcement(harness, "fr", "knot") == "Maintenance ce soir"
    assert await announcement(harness, "en", "citybike") == "Maintenance tonight"


async def test_label_specific_preferred_over_global(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "City Bike news"}, app_label=labels["citybike"], starts_in=-2 * HOUR)
    await add_announcement(harness, {"en": "Everyone"})
    assert await announcement(harness, app_label="citybike") == "City Bike news"
    assert await announcement(harness, app_label="knot") == "Everyone"


async def test_expired_and_future_ones_are_not_shown(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "Expired"}, app_label=labels["knot"], starts_in=-2 * HOUR, ends_in=-HOUR)
    await add_announcement(harness, {"en": "Future"}, app_label=labels["knot"], starts_in=HOUR)
    assert await announcement(harness) is None
    await add_announcement(harness, {"en": "Until tomorrow"}, ends_in=24 * HOUR)
    assert await announcement(harness) == "Until tomorrow"


async def test_latest_started_wins(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "Older"}, starts_in=-2 * HOUR)
    await add_announcement(harness, {"en": "Newer"}, starts_in=-HOUR)
    assert await announcement(harness) == "Newer"


async def test_english_fallback(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "Hello", "fr": "Bonjour"})
    assert await announcement(harness, "de") == "Hello"
    assert await announcement(harness, "FR") == "Bonjour"


async def test_unknown_label(harness: Harness, labels: dict[str, int]) -> None:
    await add_announcement(harness, {"en": "Hello"})
    response = await harness.client.get(GLOBAL, params={"lang": "en", "app_label": "nope"})
    assert response.status_code == 404
    assert response.json()["code"] == 12


@pytest.mark.parametrize(("params", "field"), [
    ({"app_label": "knot"}, "lang"),
    ({"lang": "en"}, "app_label"),
    ({"lang": "english", "app_label": "knot"}, "lang"),
])
async def test_inputs_are_required(harness: Harness, labels: dict[str, int], params: dict[str, str],
                                   field: str) -> None:
    response = await harness.client.get(GLOBAL, params=params)
    assert response.status_code == 400
    assert response.json()["code"] == 2
    assert field in response.json()["message"]
