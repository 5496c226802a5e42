"""The session check and the users' access answered from memory, and kept exact by every change.

A request's session is read once, then known from memory (``accounts/sessions.py``);
every revocation drops it from there once it committed, so the next request with
its token is refused at once. A user's permissions, organisation and app label are
read once (``services/access.AccessCache``) and read again after every change of
them. ``sessions_revoked`` and ``forget_sessions`` / ``forget`` / ``forget_all`` are
what the cross-process link calls for changes made by other processes.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
import pytest
from trio_websocket import ConnectionClosed

from knot_rt.accounts.sessions import SessionCache
from knot_rt.errors import ApiError
from knot_rt.services.permissions import grant
from knot_rt.services.tokens import AccessClaims, TokenSigner
from protocols.errors import ErrorCode
from tests.feed_client import open_feed
from tests.support import Harness, SmtpSink, bearer, open_test_session, token_in

API = "/api/application"
EMAIL = "ada@example.com"
PASSWORD = "correct horse battery"


async def profile(harness: Harness, token: str) -> tuple[int, int]:
    response = await harness.client.get(f"{API}/users", headers=bearer(token))
    return response.status_code, response.json()["code"]


def session_of(harness: Harness, token: str) -> Any:
    return harness.svc.signer.read_access(token).session_id


async def rider(harness: Harness, *devices: str) -> list[dict[str, Any]]:
    await harness.create_app_label()
    await harness.create_user(EMAIL)
    return [await harness.login(EMAIL, device_id=device) for device in devices]


# sessions ------------------------------------------------------------------------------------------------


async def test_the_session_check_is_kept_in_memory_after_the_first_request(harness: Harness) -> None:
    [phone] = await rider(harness, "phone")
    sessions = harness.svc.accounts.sessions
    assert sessions.get(session_of(harness, phone["token"])) is None
    assert await profile(harness, phone["token"]) == (200, 0)
    user_id = harness.svc.signer.read_access(phone["token"]).user_id
    assert sessions.get(session_of(harness, phone["token"])) == user_id
    assert await profile(harness, phone["token"]) == (200, 0)


async def test_logout_refuses_the_old_token_at_once_though_memory_held_it(harness: Harness) -> None:
    [phone, laptop] = await rider(harness, "phone", "laptop")
    for session in (phone, laptop):
        assert await profile(harness, session["token"]) == (200, 0)
    assert harness.svc.accounts.sessions.get(session_of(harness, phone["token"])) is not None

    response = await harness.client.post(f"{API}/logout", headers=bearer(phone["token"]), json={"device_id": "phone"})
    assert response.status_code == 200, response.text

    assert await profile(harness, phone["token"]) == (401, 3)
    assert await profile(harness, laptop["token"]) == (200, 0)
    response = await harness.client.post(f"{API}/logout", headers=bearer(laptop["token"]), json={})
    assert response.status_code == 200, response.text
    assert await profile(harness, laptop["token"]) == (401, 3)


async def test_a_password_reset_refuses_the_sessions_memory_held_at_once(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    await harness.create_app_label()
    ada = await harness.create_user(EMAIL, PASSWORD)
    phone = await open_test_session(harness, ada, "phone")
    assert await profile(harness, phone) == (200, 0)
    assert harness.svc.accounts.sessions.get(session_of(harness, phone)) == ada

    response = await harness.client.post(f"{API}/login/password-reset", json={"email": EMAIL, "app_label": "knot"})
    assert response.status_code == 200, response.text
    token = token_in((await smtp_sink.wait_for(EMAIL))[0])
    response = await harness.client.put(f"{API}/users/password", json={"token": token, "password": "a new secret!"})
    assert response.status_code == 200, response.text

    assert await profile(harness, phone) == (401, 3)


async def test_a_reused_refresh_token_refuses_the_session_memory_held_at_once(harness: Harness) -> None:
    [phone] = await rider(harness, "phone")
    response = await harness.client.post(f"{API}/login/refresh", headers=bearer(phone["refresh_token"]))
    rotated = response.json()
    assert await profile(harness, rotated["access_token"]) == (200, 0)

    response = await harness.client.post(f"{API}/login/refresh", headers=bearer(phone["refresh_token"]))
    assert response.json()["code"] == 14

    assert await profile(harness, rotated["access_token"]) == (401, 3)


async def test_sessions_revoked_elsewhere_are_refused_and_their_feed_closes(harness: Harness) -> None:
    """What the cross-process link does for a revocation another process committed."""
    [phone, laptop] = await rider(harness, "phone", "laptop")
    assert await profile(harness, phone["token"]) == (200, 0)
    async with open_feed(harness.base_url, phone["token"]) as feed:
        assert (await feed.request({"type": "ping"}))["type"] == "pong"
        # Another process revoked the session: the row says so, this process's memory does not yet.
        phone_session = session_of(harness, phone["token"])
        await harness.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", phone_session)
        assert await profile(harness, phone["token"]) == (200, 0)

        harness.svc.accounts.sessions_revoked([phone_session])

        assert await profile(harness, phone["token"]) == (401, 3)
        with pytest.raises(ConnectionClosed) as closed:
            await feed.receive()
        assert closed.value.reason.code == 4401
    assert await profile(harness, laptop["token"]) == (200, 0)


async def test_forgetting_the_sessions_reads_each_again(harness: Harness) -> None:
    """What the cross-process link does when it reconnected and may have missed revocations."""
    [phone, laptop] = await rider(harness, "phone", "laptop")
    for session in (phone, laptop):
        assert await profile(harness, session["token"]) == (200, 0)
    await harness.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", session_of(harness, phone["token"]))

    harness.svc.accounts.forget_sessions()

    assert len(harness.svc.accounts.sessions) == 0
    assert await profile(harness, phone["token"]) == (401, 3)
    assert await profile(harness, laptop["token"]) == (200, 0)


async def test_a_session_is_read_again_after_its_max_age(harness: Harness) -> None:
    [phone] = await rider(harness, "phone")
    assert await profile(harness, phone["token"]) == (200, 0)
    await harness.db.execute("UPDATE sessions SET revoked_at = now() WHERE id = $1", session_of(harness, phone["token"]))
    harness.svc.accounts.sessions.max_age = 0.0  # every entry is already too old

    assert await profile(harness, phone["token"]) == (401, 3)


def test_the_session_memory_is_bounded_and_a_read_racing_a_drop_is_not_kept() -> None:
    cache = SessionCache(size=3)
    ids = [uuid.uuid4() for _ in range(5)]
    for n, session_id in enumerate(ids):
        cache.put(session_id, n, cache.generation)
    assert len(cache) == 3
    assert [cache.get(i) for i in ids] == [None, None, 2, 3, 4]  # the oldest went first

    before = cache.generation  # a read starts ...
    cache.drop([ids[4]])  # ... a revocation commits meanwhile ...
    cache.put(ids[4], 4, before)  # ... and the read, which saw the session open, comes back
    assert cache.get(ids[4]) is None


# permissions and access ----------------------------------------------------------------------------------


async def get(harness: Harness, path: str, token: str) -> httpx.Response:
    return await harness.client.get(API + path, headers=bearer(token))


async def test_a_permission_granted_or_taken_counts_from_the_next_request(harness: Harness) -> None:
    knot = await harness.create_app_label()
    network = await harness.make.network("Corp private", public=False, labels=(knot,))
    cluster = await harness.make.cluster(network, "Private", 48.586, 7.75)
    station, _ = (await harness.make.stations(cluster, 1))[0]
    user = await harness.create_user("op@example.com", app_label=knot)
    token = await open_test_session(harness, user)
    accounts = harness.svc.accounts

    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404
    assert (await get(harness, f"/stations/{station}", token)).status_code == 403
    loads = harness.svc.access.loads
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404
    assert harness.svc.access.loads == loads  # from memory

    await accounts.grant_permission(user, "stations", write=False, networks=[network])

    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 200
    assert (await get(harness, f"/stations/{station}", token)).status_code == 200

    assert await accounts.revoke_permission(user, "stations") == 1

    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404
    assert (await get(harness, f"/stations/{station}", token)).status_code == 403


async def test_an_email_change_out_of_the_organisation_ends_its_access_at_once(
    harness: Harness, smtp_sink: SmtpSink
) -> None:
    corp = await harness.make.organization("Corp", "corp.example")
    knot = await harness.create_app_label()
    network = await harness.make.network("Corp private", organization=corp, public=False, labels=(knot,))
    cluster = await harness.make.cluster(network, "Private", 48.586, 7.75)
    alice = await harness.create_user("alice@corp.example", app_label=knot)
    token = await open_test_session(harness, alice)
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 200

    await harness.svc.accounts.ask_email_change(alice, "alice@elsewhere.example")
    link = token_in((await smtp_sink.wait_for("alice@elsewhere.example"))[0])
    await harness.svc.accounts.change_email(link, "alice@elsewhere.example")

    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404


async def test_forgetting_a_users_access_reads_it_again(harness: Harness) -> None:
    """What the cross-process link does for a permission another process changed."""
    knot = await harness.create_app_label()
    network = await harness.make.network("Corp private", public=False, labels=(knot,))
    cluster = await harness.make.cluster(network, "Private", 48.586, 7.75)
    user = await harness.create_user("op@example.com", app_label=knot)
    token = await open_test_session(harness, user)
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404
    # Another process granted it: the rows say so, this process's memory does not yet.
    await harness.db.transaction(lambda conn: grant(conn, user, "clusters", write=False, networks=[network]))
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404

    harness.svc.access.forget(user)
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 200

    await harness.db.execute("DELETE FROM user_permissions WHERE user_id = $1", user)
    harness.svc.access.forget_all()
    assert (await get(harness, f"/clusters/{cluster}", token)).status_code == 404


# access tokens -------------------------------------------------------------------------------------------


def test_an_access_token_read_before_is_still_refused_once_expired() -> None:
    signer = TokenSigner("test-secret-" + "x" * 32, access_seconds=1)
    session_id = uuid.uuid4()
    token = signer.access_token(7, session_id)
    assert signer.read_access(token) == signer.read_access(token) == AccessClaims(7, session_id)
    time.sleep(2.1)  # past the token's one-second lifetime, whatever the second it was made in
    with pytest.raises(ApiError) as refused:
        signer.read_access(token)
    assert refused.value.code == ErrorCode.INVALID_TOKEN
    with pytest.raises(ApiError):
        signer.read_access(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))  # a forged signature
