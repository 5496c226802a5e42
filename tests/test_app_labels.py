"""Store URLs of an app label (ROUTES row 1)."""

from __future__ import annotations

from tests.support import Harness


async def test_store_url_of_a_known_label(harness: Harness) -> None:
    await harness.create_app_label("citybike", "City Bike", android="https://play.example/cb", ios=None)
    response = await harness.client.get("/api/application/app-labels/store-url", params={"app_label": "citybike"})
    assert response.status_code == 200
    assert response.json() == {
        "code": 0,
        "data": [{"android_store_url": "https://play.example/cb", "ios_store_url": None}],
    }


async def test_unknown_label_is_a_json_404(harness: Harness) -> None:
    response = await harness.client.get("/api/application/app-labels/store-url", params={"app_label": "nope"})
    assert response.status_code == 404
    assert response.json()["code"] == 12
    assert response.json()["message"]


async def test_missing_label_names_the_field(harness: Harness) -> None:
    response = await harness.client.get("/api/application/app-labels/store-url")
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == 2
    assert "app_label" in body["message"]
