"""Discounts (ROUTES rows 25-27): the user's list, the shop, using a code."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import trio

from tests.support import Harness, bearer, open_test_session

DISCOUNTS = "/api/application/discounts"
SHOP = "/api/application/discounts/shop"
CODE = "/api/application/discounts/code"

STRASBOURG = (48.5734, 7.7521)
MULHOUSE = (47.7508, 7.3359)
KEHL = (48.5724, 7.8150)  # nearer Strasbourg's centre than Mulhouse's

TODAY = datetime.now(UTC).date()
NEXT_MONTH = TODAY + timedelta(days=30)
YESTERDAY = TODAY - timedelta(days=1)


@dataclass
class World:
    rider: int
    headers: dict[str, str]
    other: int
    other_headers: dict[str, str]
    strasbourg: int
    mulhouse: int


async def add_network(harness: Harness, name: str, center: tuple[float, float]) -> int:
    return await harness.make.network(name, center=center)


async def add_discount(
    harness: Harness, name: str, *, discount_type: str = "add-credit", code: str | None = None,
    network: int | None = None, stop_date: date | None = NEXT_MONTH, data: str = "5",
    currency: str = "EUR", shop: bool = False, kind: int = 1,
) -> int:
    return await harness.make.discount(name, discount_type, code=code, network=network, stop_date=stop_date, data=data,
                                       currency=currency, shop=shop, kind=kind)


async def wallet(harness: Harness, user_id: int) -> list[dict[str, Any]]:
    rows = await harness.db.fetch(
        "SELECT amount, currency, discount_id FROM wallet_entries WHERE user_id = $1 ORDER BY id", user_id
    )
    return [dict(row) for row in rows]


async def granted(harness: Harness, user_id: int) -> set[int]:
    rows = await harness.db.fetch("SELECT discount_id FROM user_discounts WHERE user_id = $1", user_id)
    return {row["discount_id"] for row in rows}


@pytest.fixture
async def world(harness: Harness) -> World:
    rider = await harness.create_user("rider@example.com")
    other = await harness.create_user("other@example.com")
    return World(
        rider=rider, headers=bearer(await open_test_session(harness, rider)),
        other=other, other_headers=bearer(await open_test_session(harness, other)),
        strasbourg=await add_network(harness, "Strasbourg", STRASBOURG),
        mulhouse=await add_network(harness, "Mulhouse", MULHOUSE),
    )


def expected(discount_id: int, name: str, *, discount_type: str = "add-credit", code: str | None = None,
             stop_date: date | None = NEXT_MONTH, data: float = 5, currency: str = "EUR",
             kind: int = 1) -> dict[str, Any]:
    return {
        "discount_id": discount_id, "name": name, "discount_type": discount_type, "type": kind,
        "stop_date": None if stop_date is None else stop_date.isoformat(), "code": code, "data": data,
        "currency": currency,
    }


async def use(harness: Harness, headers: dict[str, str], code: Any, at: tuple[float, float] = STRASBOURG
              ) -> httpx.Response:
    return await harness.client.post(CODE, json={"lat": at[0], "lng": at[1], "code": code}, headers=headers)


# --- the user's discounts -------------------------------------------------------------------------


async def test_list_shows_only_the_callers_discounts(harness: Harness, world: World) -> None:
    welcome = await add_discount(harness, "Welcome", code="WELCOME", data="5.5")
    percent = await add_discount(harness, "Ten percent", discount_type="percent", data="10", stop_date=None,
                                 network=world.strasbourg, kind=2)
    others = await add_discount(harness, "Not yours", code="OTHER")
    await harness.make.grant(world.rider, welcome)
    await harness.make.grant(world.rider, percent, active=False)
    await harness.make.grant(world.other, others)

    response = await harness.client.get(DISCOUNTS, headers=world.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 0, "data": [
        {**expected(welcome, "Welcome", code="WELCOME", data=5.5), "active": True},
        {**expected(percent, "Ten percent", discount_type="percent", data=10, stop_date=None, kind=2),
         "active": False},
    ]}

    response = await harness.client.get(DISCOUNTS, headers=world.other_headers)
    assert response.json() == {"code": 0, "data": [{**expected(others, "Not yours", code="OTHER"), "active": True}]}


async def test_list_is_empty_for_a_new_user(harness: Harness, world: World) -> None:
    response = await harness.client.get(DISCOUNTS, headers=world.headers)
    assert response.status_code == 200
    assert response.json() == {"code": 0, "data": []}


# --- the shop -------------------------------------------------------------------------------------


async def test_shop_keeps_what_is_valid_on_the_nearest_network(harness: Harness, world: World) -> None:
    here = await add_discount(harness, "Strasbourg shop", network=world.strasbourg, shop=True)
    there = await add_discount(harness, "Mulhouse shop", network=world.mulhouse, shop=True)
    anywhere = await add_discount(harness, "Anywhere shop", shop=True, stop_date=None)
    expired = await add_discount(harness, "Expired shop", network=world.strasbourg, shop=True, stop_date=YESTERDAY)
    not_shop = await add_discount(harness, "Not for the shop", network=world.strasbourg)
    inactive = await add_discount(harness, "Inactive shop", network=world.strasbourg, shop=True)
    others = await add_discount(harness, "Other user's shop", network=world.strasbourg, shop=True)
    for discount_id in (here, there, anywhere, expired, not_shop):
        await harness.make.grant(world.rider, discount_id)
    await harness.make.grant(world.rider, inactive, active=False)
    await harness.make.grant(world.other, others)

    async def shop_at(at: tuple[float, float]) -> list[int]:
        response = await harness.client.get(SHOP, params={"lat": at[0], "lng": at[1]}, headers=world.headers)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 0
        assert all("active" not in item for item in body["data"])
        return [item["discount_id"] for item in body["data"]]

    assert await shop_at(STRASBOURG) == [here, anywhere]
    assert await shop_at(KEHL) == [here, anywhere]  # nearest centre, whatever the country
    assert await shop_at(MULHOUSE) == [there, anywhere]
    assert await shop_at((47.9, 7.4)) == [there, anywhere]  # nearer Mulhouse than Strasbourg

    response = await harness.client.get(SHOP, params={"lat": STRASBOURG[0], "lng": STRASBOURG[1]},
                                        headers=world.headers)
    assert response.json()["data"] == [
        expected(here, "Strasbourg shop"), expected(anywhere, "Anywhere shop", stop_date=None),
    ]


async def test_shop_without_any_network_keeps_discounts_valid_everywhere(harness: Harness) -> None:
    rider = await harness.create_user("lonely@example.com")
    headers = bearer(await open_test_session(harness, rider))
    anywhere = await add_discount(harness, "Anywhere", shop=True)
    await harness.make.grant(rider, anywhere)
    response = await harness.client.get(SHOP, params={"lat": 0, "lng": 0}, headers=headers)
    assert response.json() == {"code": 0, "data": [expected(anywhere, "Anywhere")]}


# --- using a code ---------------------------------------------------------------------------------


async def test_code_grants_and_credits_the_wallet_once(harness: Harness, world: World) -> None:
    discount_id = await add_discount(harness, "Welcome", code="WELCOME", data="5.5", currency="EUR",
                                     network=world.strasbourg)
    response = await use(harness, world.headers, "WELCOME")
    assert response.status_code == 200, response.text
    assert response.json() == {"code": 0, "data": expected(discount_id, "Welcome", code="WELCOME", data=5.5)}
    assert await granted(harness, world.rider) == {discount_id}
    assert await wallet(harness, world.rider) == [
        {"amount": Decimal("5.500"), "currency": "EUR", "discount_id": discount_id},
    ]

    listed = (await harness.client.get(DISCOUNTS, headers=world.headers)).json()["data"]
    assert [(item["discount_id"], item["active"]) for item in listed] == [(discount_id, True)]

    again = await use(harness, world.headers, "WELCOME")
    assert again.status_code == 409
    assert again.json()["code"] == 27
    assert len(await wallet(harness, world.rider)) == 1

    # Another user may use the same code: their own credit.
    response = await use(harness, world.other_headers, " WELCOME ")
    assert response.status_code == 200, response.text
    assert len(await wallet(harness, world.other)) == 1
    assert len(await wallet(harness, world.rider)) == 1


async def test_two_concurrent_uses_credit_once(harness: Harness, world: World) -> None:
    discount_id = await add_discount(harness, "Race", code="RACE", data="7")
    results: list[httpx.Response] = []

    async def one() -> None:
        results.append(await use(harness, world.headers, "RACE"))

    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(one)

    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 409, 409, 409], [r.text for r in results]
    assert sorted(r.json()["code"] for r in results) == [0, 27, 27, 27]
    assert await wallet(harness, world.rider) == [
        {"amount": Decimal("7.000"), "currency": "EUR", "discount_id": discount_id},
    ]
    assert await granted(harness, world.rider) == {discount_id}


async def test_code_of_another_kind_grants_without_credit(harness: Harness, world: World) -> None:
    discount_id = await add_discount(harness, "Free minutes", discount_type="free-minutes", code="MINUTES",
                                     data="15")
    response = await use(harness, world.headers, "MINUTES", at=MULHOUSE)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == expected(discount_id, "Free minutes", discount_type="free-minutes",
                                               code="MINUTES", data=15)
    assert await granted(harness, world.rider) == {discount_id}
    assert await wallet(harness, world.rider) == []
    assert (await use(harness, world.headers, "MINUTES")).json()["code"] == 27


async def test_code_already_granted_otherwise_is_used(harness: Harness, world: World) -> None:
    discount_id = await add_discount(harness, "Gift", code="GIFT")
    await harness.make.grant(world.rider, discount_id)
    response = await use(harness, world.headers, "GIFT")
    assert response.status_code == 409
    assert response.json()["code"] == 27
    assert await wallet(harness, world.rider) == []


async def test_code_credited_before_is_used(harness: Harness, world: World) -> None:
    """A wallet entry left from an earlier use (the grant since removed) still counts as used."""
    discount_id = await add_discount(harness, "Once", code="ONCE")
    await harness.db.execute(  # forged on purpose: a past use whose grant is gone (no operator writes one)
        "INSERT INTO wallet_entries (user_id, amount, currency, discount_id) VALUES ($1, 5, 'EUR', $2)",
        world.rider, discount_id,
    )
    response = await use(harness, world.headers, "ONCE")
    assert response.status_code == 409
    assert response.json()["code"] == 27
    assert await granted(harness, world.rider) == set()
    assert len(await wallet(harness, world.rider)) == 1


@pytest.mark.parametrize(("code", "status", "error"), [
    ("NOPE", 404, 26),
    ("welcome", 404, 26),  # codes are matched exactly
    ("OLD", 410, 28),
    ("MULHOUSE", 403, 29),
])
async def test_code_refused(harness: Harness, world: World, code: str, status: int, error: int) -> None:
    await add_discount(harness, "Welcome", code="WELCOME")
    await add_discount(harness, "Old", code="OLD", stop_date=YESTERDAY)
    await add_discount(harness, "Mulhouse only", code="MULHOUSE", network=world.mulhouse)
    response = await use(harness, world.headers, code, at=STRASBOURG)
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == error
    assert body["message"]
    assert await granted(harness, world.rider) == set()
    assert await wallet(harness, world.rider) == []


async def test_code_checks_expiry_before_the_network(harness: Harness, world: World) -> None:
    await add_discount(harness, "Old elsewhere", code="OLDMUL", stop_date=YESTERDAY, network=world.mulhouse)
    response = await use(harness, world.headers, "OLDMUL", at=STRASBOURG)
    assert response.json()["code"] == 28


async def test_code_valid_today_and_on_its_network(harness: Harness, world: World) -> None:
    discount_id = await add_discount(harness, "Mulhouse", code="MUL", network=world.mulhouse, stop_date=NEXT_MONTH)
    response = await use(harness, world.headers, "MUL", at=(47.9, 7.4))
    assert response.status_code == 200, response.text
    assert response.json()["data"]["discount_id"] == discount_id


async def test_nearest_network_tie_goes_to_the_lower_id(harness: Harness, world: World) -> None:
    """Two networks centred on the same point (a private one too: every network counts): the lower id is the
    nearest there, for the shop and for a code."""
    first = await add_network(harness, "Colmar", (48.0794, 7.3585))
    second = await add_network(harness, "Colmar bis", (48.0794, 7.3585))
    await harness.db.execute("UPDATE networks SET is_public = false WHERE id = $1", first)
    await harness.svc.catalog.reload()
    assert first < second
    colmar = (48.0794, 7.3585)
    on_first = await add_discount(harness, "Colmar", code="COLMAR", network=first, shop=True)
    on_second = await add_discount(harness, "Colmar bis", code="COLMARBIS", network=second, shop=True)
    for discount_id in (on_first, on_second):
        await harness.make.grant(world.other, discount_id)

    shop = await harness.client.get(SHOP, params={"lat": colmar[0], "lng": colmar[1]}, headers=world.other_headers)
    assert [item["discount_id"] for item in shop.json()["data"]] == [on_first]

    refused = await use(harness, world.headers, "COLMARBIS", at=colmar)
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == 29
    used = await use(harness, world.headers, "COLMAR", at=colmar)
    assert used.status_code == 200, used.text
    assert used.json()["data"]["discount_id"] == on_first


# --- authentication and input ---------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), [("GET", DISCOUNTS), ("GET", SHOP), ("POST", CODE)])
async def test_routes_need_a_token(harness: Harness, world: World, method: str, path: str) -> None:
    await add_discount(harness, "Welcome", code="WELCOME")
    for headers in ({}, bearer("not-a-jwt")):
        response = await harness.client.request(
            method, path, params={"lat": 48.5, "lng": 7.7}, json={"lat": 48.5, "lng": 7.7, "code": "WELCOME"},
            headers=headers,
        )
        assert response.status_code == 401, response.text
        assert response.json()["code"] == 3
    assert await wallet(harness, world.rider) == []


@pytest.mark.parametrize(("body", "field"), [
    ({"lat": 48.5, "lng": 7.7}, "code"),
    ({"lat": 48.5, "lng": 7.7, "code": ""}, "code"),
    ({"lat": 48.5, "lng": 7.7, "code": "   "}, "code"),
    ({"lat": 48.5, "lng": 7.7, "code": 42}, "code"),
    ({"lat": 48.5, "lng": 7.7, "code": None}, "code"),
    ({"lng": 7.7, "code": "WELCOME"}, "lat"),
    ({"lat": 48.5, "code": "WELCOME"}, "lng"),
    ({"lat": 90.5, "lng": 7.7, "code": "WELCOME"}, "lat"),
    ({"lat": 48.5, "lng": -180.5, "code": "WELCOME"}, "lng"),
    ({"lat": "48.5", "lng": 7.7, "code": "WELCOME"}, "lat"),
    ({"lat": True, "lng": 7.7, "code": "WELCOME"}, "lat"),
    ({"lat": 48.5, "lng": None, "code": "WELCOME"}, "lng"),
    (["WELCOME"], "body"),
])
async def test_code_bad_input(harness: Harness, world: World, body: Any, field: str) -> None:
    await add_discount(harness, "Welcome", code="WELCOME")
    response = await harness.client.post(CODE, json=body, headers=world.headers)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["code"] == 2
    if field != "body":
        assert field in answer["message"]
    assert await granted(harness, world.rider) == set()


async def test_code_malformed_json(harness: Harness, world: World) -> None:
    response = await harness.client.post(
        CODE, content=b'{"lat": 48.5,', headers={**world.headers, "Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["code"] == 2


@pytest.mark.parametrize(("params", "field"), [
    ({}, "lat"),
    ({"lat": "48.5"}, "lng"),
    ({"lat": "100", "lng": "7.7"}, "lat"),
    ({"lat": "48.5", "lng": "east"}, "lng"),
])
async def test_shop_bad_input(harness: Harness, world: World, params: dict[str, str], field: str) -> None:
    response = await harness.client.get(SHOP, params=params, headers=world.headers)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2
    assert field in response.json()["message"]


async def test_code_attempts_are_limited_per_user(harness: Harness, world: World) -> None:
    """Guessing codes: 20 attempts an hour per user by default, then 429 code 9, even for a valid code."""
    discount_id = await add_discount(harness, "Welcome", code="WELCOME", network=world.strasbourg)
    guesses = [(await use(harness, world.headers, f"GUESS{n:03d}")).json()["code"] for n in range(20)]
    assert guesses == [26] * 20

    refused = await use(harness, world.headers, "WELCOME")
    assert (refused.status_code, refused.json()["code"]) == (429, 9)
    assert await granted(harness, world.rider) == set()
    # Another user is not slowed down by the first one's guesses.
    response = await use(harness, world.other_headers, "WELCOME")
    assert response.status_code == 200, response.text
    assert await granted(harness, world.other) == {discount_id}
