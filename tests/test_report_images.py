"""Chat images (issue 12, ROUTES row 10) over the real server with real multipart uploads (httpx).

Accepted: a JPEG carrying EXIF with a GPS position and an orientation comes back upright and without any EXIF;
PNG and WebP too; the image is a message of the conversation and reaches the report's feed topic; the support
agent of the network reads and uploads on the support side. Refused: a text file named ``.jpg`` (415 code 23,
the project's unsupported-media code), a file over 10 MiB and a body over the route's limit (413 code 6), while
other routes keep the app's 1 MiB; a corrupt image (400 code 2); decompression bombs (413 code 6); another rider
and another network's agent (404 code 4 on upload and fetch), a read-only agent (fetches, 403 code 13 on
upload); no ``chat_image`` part (400 code 2).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any

import httpx
import pytest
from PIL import Image

from knot_rt.support import images
from knot_rt.support.store import ReportContext, history
from tests.feed_client import open_feed, rider_seeing
from tests.support import Harness, bearer, open_test_session

# The server ignores Pillow's warning (its own pixel limit is lower); pytest shows warnings again.
pytestmark = pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")

REPORTS = "/api/application/reports"
GPS_IFD = 0x8825
ORIENTATION = 0x0112


@dataclass
class Site:
    network: int
    report: int
    rider: dict[str, str]
    rider_token: str
    agent: dict[str, str]
    stranger: dict[str, str]
    other_agent: dict[str, str]


async def make_site(harness: Harness) -> Site:
    network = await harness.make.network("Strasbourg")
    other_network = await harness.make.network("Colmar")
    cluster = await harness.make.cluster(network)
    rider = await rider_seeing(harness, network)
    stranger = await rider_seeing(harness, network, "stranger@example.com")
    agent = await harness.create_user("agent@example.com", perms=[("support", True)], networks=[network])
    other_agent = await harness.create_user("colmar@example.com", perms=[("support", True)],
                                            networks=[other_network])
    report = await harness.svc.support.open_report(rider, "The brake is broken", ReportContext(cluster_id=cluster))
    rider_token = await open_test_session(harness, rider)
    return Site(
        network, report.id, bearer(rider_token), rider_token, bearer(await open_test_session(harness, agent)),
        bearer(await open_test_session(harness, stranger)), bearer(await open_test_session(harness, other_agent)),
    )


def picture(fmt: str, size: tuple[int, int] = (40, 20), mode: str = "RGB", **save: Any) -> bytes:
    out = BytesIO()
    Image.new(mode, size, (200, 30, 30) if mode == "RGB" else None).save(out, fmt, **save)
    return out.getvalue()


def gps_exif() -> Image.Exif:
    """EXIF of a phone photo: a camera, a GPS position, and an orientation (rotate 90° to show it upright)."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"
    exif[ORIENTATION] = 6
    gps = exif.get_ifd(GPS_IFD)
    gps[1], gps[2], gps[3], gps[4] = "N", (48.0, 35.0, 24.0), "E", (7.0, 45.0, 0.0)
    return exif


async def upload(client: httpx.AsyncClient, report: int, headers: dict[str, str], content: bytes,
                 filename: str = "photo.jpg", content_type: str = "image/jpeg") -> httpx.Response:
    return await client.post(f"{REPORTS}/{report}/images", headers=headers,
                             files={"chat_image": (filename, content, content_type)})


def refused(response: httpx.Response, status: int, code: int) -> None:
    assert (response.status_code, response.json()["code"]) == (status, code), response.text


async def test_jpeg_with_gps_comes_back_upright_without_metadata(harness: Harness) -> None:
    site = await make_site(harness)
    original = picture("JPEG", exif=gps_exif(), comment=b"taken at home")
    assert Image.open(BytesIO(original)).getexif().get_ifd(GPS_IFD)  # the upload does carry a position

    async with open_feed(harness.base_url, site.rider_token) as feed:
        assert (await feed.subscribe(f"report:{site.report}"))["type"] != "error"
        # Declared as a PNG named .bin: neither is read, the content decides.
        response = await upload(harness.client, site.report, site.rider, original, "x.bin", "image/png")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["code"] == 0 and set(body["data"]) == {"id", "date", "url"}
        image_id = body["data"]["id"]
        assert body["data"]["url"] == f"{REPORTS}/{site.report}/images/{image_id}"
        [event] = [e for e in await feed.events(1) if e["event"] == "message.created"]
        assert event["data"]["image"]["id"] == image_id

    fetched = await harness.client.get(body["data"]["url"], headers=site.rider)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"
    assert "private" in fetched.headers["cache-control"] and "immutable" in fetched.headers["cache-control"]
    assert fetched.headers["x-content-type-options"] == "nosniff"
    cleaned = Image.open(BytesIO(fetched.content))
    assert cleaned.format == "JPEG"
    assert cleaned.size == (20, 40)  # the orientation was applied, then dropped with the rest
    assert dict(cleaned.getexif()) == {} and not cleaned.getexif().get_ifd(GPS_IFD)
    assert not {"exif", "xmp", "comment", "icc_profile"} & set(cleaned.info)
    assert b"PhoneMaker" not in fetched.content and b"taken at home" not in fetched.content

    # A message of the conversation, on the rider's side, for both sides' history.
    [last, *_] = await harness.db.run(lambda conn: history(conn, site.report, before=None, limit=1))
    assert (last["side"], last["author_id"] is not None, last["image"]["id"]) == ("user", True, image_id)

    # The network's support agent reads it too.
    assert (await harness.client.get(body["data"]["url"], headers=site.agent)).content == fetched.content


async def test_png_and_webp_accepted_and_support_uploads(harness: Harness) -> None:
    site = await make_site(harness)
    for fmt, content_type in (("PNG", "image/png"), ("WEBP", "image/webp")):
        original = picture(fmt, mode="RGBA", exif=gps_exif())
        response = await upload(harness.client, site.report, site.agent, original, "p.jpg", "image/jpeg")
        assert response.status_code == 200, response.text
        fetched = await harness.client.get(response.json()["data"]["url"], headers=site.rider)
        assert fetched.headers["content-type"] == content_type
        cleaned = Image.open(BytesIO(fetched.content))
        assert (cleaned.format, cleaned.mode, dict(cleaned.getexif())) == (fmt, "RGBA", {})
        assert "exif" not in cleaned.info
    sides = [m["side"] for m in await harness.db.run(lambda conn: history(conn, site.report, before=None, limit=2))]
    assert sides == ["support", "support"]


async def test_not_an_image_corrupt_and_bombs_refused(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    refused(await upload(client, site.report, site.rider, b"just some text, honestly\n", "cat.jpg"), 415, 23)
    refused(await upload(client, site.report, site.rider, picture("GIF"), "cat.jpg"), 415, 23)
    jpeg = picture("JPEG", (64, 64))
    refused(await upload(client, site.report, site.rider, jpeg[: len(jpeg) // 2]), 400, 2)  # truncated
    refused(await upload(client, site.report, site.rider, b"\x89PNG\r\n\x1a\n" + bytes(64), "x.png"), 400, 2)
    # Decompression bombs: a few KB of PNG claiming 100 MP (over Pillow's own limit) and 56 MP (over ours).
    for size in ((10_000, 10_000), (8_000, 7_000)):
        bomb = picture("PNG", size, mode="1")
        assert len(bomb) < 100_000
        refused(await upload(client, site.report, site.rider, bomb, "bomb.png", "image/png"), 413, 6)
    # Nothing of these was stored or posted.
    count = await harness.db.fetchval("SELECT count(*) FROM report_images WHERE report_id = $1", site.report)
    assert count == 0


async def test_size_limits(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    # A JPEG signature and 10 MiB + 1 byte: within the route's body limit, over the image's.
    too_big = b"\xff\xd8\xff\xe0" + bytes(images.MAX_IMAGE_BYTES - 3)
    refused(await upload(client, site.report, site.rider, too_big), 413, 6)
    # Beyond the route's body limit, sent chunked (no Content-Length): the server stops reading at its limit.
    # (Only a little beyond it: the server does not read the rest, which must fit in the socket's buffers for the
    # client to finish sending and read the answer.)
    boundary = "knot-test-boundary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"chat_image\"; filename=\"a.jpg\"\r\n"
            "Content-Type: image/jpeg\r\n\r\n").encode()
    body = head + b"\xff\xd8\xff\xe0" + bytes(images.MAX_UPLOAD_BODY) + f"\r\n--{boundary}--\r\n".encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 64 * 1024):
            yield body[start:start + 64 * 1024]

    response = await client.post(f"{REPORTS}/{site.report}/images", content=chunks(), headers={
        **site.rider, "Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert "content-length" not in response.request.headers
    refused(response, 413, 6)
    # A 2 MiB upload (over the app's 1 MiB) is fine on this route...
    noisy = Image.frombytes("L", (1500, 1500), bytes(range(256)) * (1500 * 1500 // 256) + bytes(1500 * 1500 % 256))
    out = BytesIO()
    noisy.save(out, "PNG", compress_level=0)
    assert out.getbuffer().nbytes > 2 * 1024 * 1024
    response = await upload(client, site.report, site.rider, out.getvalue(), "big.png", "image/png")
    assert response.status_code == 200, response.text
    # ...and every other route keeps the app's limit.
    refused(await client.post("/api/application/login", content=b"{" + bytes(2 * 1024 * 1024),
                              headers={"Content-Type": "application/json"}), 413, 6)


async def test_only_readers_of_the_report(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    jpeg = picture("JPEG")
    for outsider in (site.stranger, site.other_agent):
        refused(await upload(client, site.report, outsider, jpeg), 404, 4)
    refused(await upload(client, 999_999, site.rider, jpeg), 404, 4)
    response = await upload(client, site.report, site.rider, jpeg)
    assert response.status_code == 200, response.text
    url = response.json()["data"]["url"]
    for outsider in (site.stranger, site.other_agent):
        refused(await client.get(url, headers=outsider), 404, 4)
    refused(await client.get(url), 401, 3)
    # An agent whose support permission is read-only sees the image, and may not upload one.
    reader = await harness.create_user("reader@example.com", perms=[("support", False)], networks=[site.network])
    reader_headers = bearer(await open_test_session(harness, reader))
    assert (await client.get(url, headers=reader_headers)).status_code == 200
    refused(await upload(client, site.report, reader_headers, jpeg), 403, 13)
    refused(await client.get(f"{REPORTS}/{site.report}/images/nope", headers=site.rider), 404, 4)
    # The right id under another report is unknown there.
    other = await harness.svc.support.open_report(
        await harness.db.fetchval("SELECT user_id FROM reports WHERE id = $1", site.report), "again", ReportContext())
    refused(await client.get(f"{REPORTS}/{other.id}/images/{response.json()['data']['id']}", headers=site.rider),
            404, 4)


async def test_missing_or_wrong_part(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    path = f"{REPORTS}/{site.report}/images"
    refused(await client.post(path, headers=site.rider, files={"picture": ("a.jpg", picture("JPEG"))}), 400, 2)
    refused(await client.post(path, headers=site.rider, data={"chat_image": "not a file"}), 400, 2)
    refused(await client.post(path, headers=site.rider, json={"chat_image": "x"}), 400, 2)
    refused(await client.post(path, headers=site.rider), 400, 2)


async def test_resolved_past_its_window_refused(harness: Harness) -> None:
    site = await make_site(harness)
    await harness.db.execute("UPDATE reports SET status = 'resolved', resolved_at = now() - interval '8 days' "
                             "WHERE id = $1", site.report)
    refused(await upload(harness.client, site.report, site.rider, picture("JPEG")), 409, 46)
    assert await harness.db.fetchval("SELECT count(*) FROM report_images") == 0
