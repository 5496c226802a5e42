"""Maintenance pictures (issue 13, ROUTES row 60 and the fetch route) over the real server, real multipart (httpx).

Accepted: a JPEG carrying EXIF with a GPS position comes back upright and clean, answered in the spec's shape
(`{"code":0,"data":{"url":...}}`), stored durably (a row of ``maintenance_pictures``), fetched by the network's
maintainers (a read-only one included). Refused: a text file named ``.jpg`` (415 code 23), over 10 MiB (413 code
6), another network's operator (403 code 13 on upload and fetch, after the maintenance is known), an unknown
maintenance (404 code 4), an unknown picture or the right one under another maintenance (404 code 4), a read-only
maintainer uploading (403 code 13), no token (401 code 3), no ``maintenance_picture`` part (400 code 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import httpx
from PIL import Image

from knot_rt import media
from tests.support import Harness, bearer, open_test_session
from tests.test_report_images import GPS_IFD, gps_exif, picture, refused

MAINTENANCES = "/api/application/maintenances"


@dataclass
class Site:
    network: int
    maintenance: int
    other_maintenance: int
    operator: dict[str, str]
    reader: dict[str, str]
    other_operator: dict[str, str]


async def make_site(harness: Harness) -> Site:
    network = await harness.make.network("Strasbourg")
    other_network = await harness.make.network("Colmar")
    cluster = await harness.make.cluster(network)
    [(station_id, _)] = await harness.make.stations(cluster, 1, 2)
    operator = await harness.create_user("operator@example.com", perms=[("maintenance", True)], networks=[network])
    reader = await harness.create_user("reader@example.com", perms=[("maintenance", False)], networks=[network])
    other = await harness.create_user("colmar@example.com", perms=[("maintenance", True)], networks=[other_network])
    svc = harness.svc.maintenance
    spot = await svc.spot_by_number(station_id, 1)
    station = await svc.station(station_id)
    assert spot is not None and station is not None
    opened = await svc.open(spot, "lock-stuck", severity="high", comment="the lock jams", by_user_id=operator)
    second = await svc.open(station, "station-cleaning", by_user_id=operator)
    assert opened is not None and second is not None
    return Site(network, opened.id, second.id, bearer(await open_test_session(harness, operator)),
                bearer(await open_test_session(harness, reader)), bearer(await open_test_session(harness, other)))


async def upload(client: httpx.AsyncClient, maintenance: int, headers: dict[str, str], content: bytes,
                 filename: str = "photo.jpg", content_type: str = "image/jpeg") -> httpx.Response:
    return await client.post(f"{MAINTENANCES}/{maintenance}/pictures", headers=headers,
                             files={"maintenance_picture": (filename, content, content_type)})


async def stored_count(harness: Harness) -> int:
    count: int = await harness.db.fetchval("SELECT count(*) FROM maintenance_pictures")
    return count


async def test_jpeg_with_gps_accepted_and_fetched_back_clean(harness: Harness) -> None:
    site = await make_site(harness)
    original = picture("JPEG", exif=gps_exif(), comment=b"taken at the depot")
    assert Image.open(BytesIO(original)).getexif().get_ifd(GPS_IFD)  # the upload does carry a position

    # Declared as a PNG named .bin: neither is read, the content decides.
    response = await upload(harness.client, site.maintenance, site.operator, original, "x.bin", "image/png")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["code"] == 0 and set(body["data"]) == {"url"}  # the spec's shape
    url = body["data"]["url"]
    assert url.startswith(f"{MAINTENANCES}/{site.maintenance}/pictures/")
    picture_id = url.rsplit("/", 1)[1]
    assert len(picture_id) >= 20  # random, not the row id

    # Durable: a row of the maintenance, holding the cleaned bytes.
    row = await harness.db.fetchrow("SELECT maintenance_id, content_type, width, height FROM maintenance_pictures "
                                    "WHERE public_id = $1", picture_id)
    assert tuple(row) == (site.maintenance, "image/jpeg", 20, 40)

    fetched = await harness.client.get(url, headers=site.operator)
    assert fetched.status_code == 200
    assert fetched.headers["content-type"] == "image/jpeg"
    assert "private" in fetched.headers["cache-control"] and "immutable" in fetched.headers["cache-control"]
    assert fetched.headers["x-content-type-options"] == "nosniff"
    cleaned = Image.open(BytesIO(fetched.content))
    assert cleaned.format == "JPEG"
    assert cleaned.size == (20, 40)  # the orientation was applied, then dropped with the rest
    assert dict(cleaned.getexif()) == {} and not cleaned.getexif().get_ifd(GPS_IFD)
    assert not {"exif", "xmp", "comment", "icc_profile"} & set(cleaned.info)
    assert b"PhoneMaker" not in fetched.content and b"taken at the depot" not in fetched.content

    # A read-only maintainer of the network fetches it too, and may not attach one.
    assert (await harness.client.get(url, headers=site.reader)).content == fetched.content
    refused(await upload(harness.client, site.maintenance, site.reader, original), 403, 13)

    # A resolved maintenance still takes pictures (the repair's photo) and serves its own.
    await harness.svc.maintenance.resolve(site.maintenance, by_user_id=None)
    png = await upload(harness.client, site.maintenance, site.operator, picture("PNG"), "after.png", "image/png")
    assert png.status_code == 200, png.text
    assert (await harness.client.get(png.json()["data"]["url"], headers=site.operator)).headers[
        "content-type"] == "image/png"
    assert (await harness.client.get(url, headers=site.operator)).status_code == 200


async def test_not_an_image_and_too_large_refused(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    refused(await upload(client, site.maintenance, site.operator, b"just some text, honestly\n", "cat.jpg"), 415, 23)
    # A JPEG signature and 10 MiB + 1 byte: within the route's body limit, over the picture's.
    too_big = b"\xff\xd8\xff\xe0" + bytes(media.MAX_IMAGE_BYTES - 3)
    refused(await upload(client, site.maintenance, site.operator, too_big), 413, 6)
    # No file part, or a field that is not a file.
    path = f"{MAINTENANCES}/{site.maintenance}/pictures"
    refused(await client.post(path, headers=site.operator, files={"picture": ("a.jpg", picture("JPEG"))}), 400, 2)
    refused(await client.post(path, headers=site.operator, data={"maintenance_picture": "not a file"}), 400, 2)
    assert await stored_count(harness) == 0


async def test_only_maintainers_of_the_network_and_unknown_ones(harness: Harness) -> None:
    site = await make_site(harness)
    client = harness.client
    jpeg = picture("JPEG")
    # Unknown maintenance first (404/4), for everyone; then the rights (403/13) of another network's operator.
    refused(await upload(client, 999_999, site.operator, jpeg), 404, 4)
    refused(await upload(client, 999_999, site.other_operator, jpeg), 404, 4)
    refused(await upload(client, site.maintenance, site.other_operator, jpeg), 403, 13)
    assert await stored_count(harness) == 0

    response = await upload(client, site.maintenance, site.operator, jpeg)
    assert response.status_code == 200, response.text
    url = response.json()["data"]["url"]
    picture_id = url.rsplit("/", 1)[1]
    refused(await client.get(url, headers=site.other_operator), 403, 13)
    refused(await client.get(url), 401, 3)
    refused(await client.get(f"{MAINTENANCES}/999999/pictures/{picture_id}", headers=site.operator), 404, 4)
    refused(await client.get(f"{MAINTENANCES}/{site.maintenance}/pictures/nope", headers=site.operator), 404, 4)
    refused(await client.get(f"{MAINTENANCES}/{site.maintenance}/pictures/a%00b", headers=site.operator), 404, 4)
    # The right id under another maintenance of the same network names nothing there.
    refused(await client.get(f"{MAINTENANCES}/{site.other_maintenance}/pictures/{picture_id}",
                             headers=site.operator), 404, 4)
    # Deleted from history: unknown, its pictures with it.
    await harness.svc.maintenance.resolve(site.maintenance, by_user_id=None, delete_from_history=True)
    refused(await client.get(url, headers=site.operator), 404, 4)
    refused(await upload(client, site.maintenance, site.operator, jpeg), 404, 4)
