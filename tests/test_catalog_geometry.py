"""Where a free-floating trip may end and the speed limit at a point, from the catalog's shapes (real rows,
read through the catalog as the server reads them). Shapes are ``[[lng, lat], ...]``."""

from __future__ import annotations

from actors.vehicle import SpeedZones
from tests.support import Harness

# The network's area: a box around Strasbourg's centre.
AREA = [[7.70, 48.56], [7.76, 48.56], [7.76, 48.60], [7.70, 48.60]]
# A parking inside it, near the station (a small box).
PARKING = [[7.730, 48.580], [7.732, 48.580], [7.732, 48.582], [7.730, 48.582]]
# A parking that sticks out of the area to the east.
ACROSS_THE_EDGE = [[7.758, 48.590], [7.770, 48.590], [7.770, 48.592], [7.758, 48.592]]
# A bow tie: it crosses itself; its two triangles are kept.
BOW_TIE = [[7.740, 48.570], [7.744, 48.574], [7.744, 48.570], [7.740, 48.574]]

IN_PARKING = (48.581, 7.731)  # (lat, lng)
ON_PARKING_EDGE = (48.580, 7.731)
IN_AREA_ONLY = (48.59, 7.72)
OUTSIDE = (48.70, 7.90)
STICKING_OUT = (48.591, 7.765)  # in the parking across the edge, outside the area


async def test_a_network_with_an_area_and_no_parking_ends_trips_anywhere_inside_it(harness: Harness) -> None:
    network = await harness.make.network("Boxed", shape=AREA)
    catalog = harness.svc.catalog_service
    assert catalog.may_end_trip(network, *IN_AREA_ONLY)
    assert catalog.may_end_trip(network, 48.56, 7.73)  # on the area's edge
    assert not catalog.may_end_trip(network, *OUTSIDE)


async def test_a_network_with_parkings_ends_trips_only_in_them_and_inside_its_area(harness: Harness) -> None:
    network = await harness.make.network("Parked", shape=AREA)
    await harness.make.parking(network, None, PARKING)
    await harness.make.parking(network, None, ACROSS_THE_EDGE)
    other = await harness.make.network("Elsewhere", shape=AREA)
    await harness.make.parking(other, None, [[7.71, 48.57], [7.72, 48.57], [7.72, 48.58]])
    catalog = harness.svc.catalog_service
    assert catalog.may_end_trip(network, *IN_PARKING)
    assert catalog.may_end_trip(network, *ON_PARKING_EDGE)
    assert not catalog.may_end_trip(network, *IN_AREA_ONLY)
    assert not catalog.may_end_trip(network, *STICKING_OUT)  # a parking does not widen the area
    assert not catalog.may_end_trip(network, 48.572, 7.718)  # the other network's parking
    assert catalog.may_end_trip(other, 48.572, 7.718)


async def test_an_empty_shape_is_no_area_limit_and_its_parkings_are_the_limit(harness: Harness) -> None:
    open_network = await harness.make.network("Open")
    catalog = harness.svc.catalog_service
    assert catalog.may_end_trip(open_network, *OUTSIDE)
    parked = await harness.make.network("Open with parkings")
    await harness.make.parking(parked, None, PARKING)
    await harness.make.parking(parked, None, BOW_TIE)
    await harness.make.parking(parked, None, [[7.0, 48.0], [7.1, 48.1]])  # encloses nothing: no parking
    assert catalog.may_end_trip(parked, *IN_PARKING)
    assert not catalog.may_end_trip(parked, *OUTSIDE)
    assert catalog.may_end_trip(parked, 48.572, 7.7405)  # in the bow tie's left triangle
    assert catalog.may_end_trip(parked, 48.572, 7.7435)  # in its right one
    assert not catalog.may_end_trip(parked, 48.571, 7.742)  # below its waist, in neither
    assert not catalog.may_end_trip(999_999, *IN_PARKING)  # an unknown network allows nothing


async def test_a_parking_that_follows_its_cluster_moves_where_trips_may_end(harness: Harness) -> None:
    network = await harness.make.network("Moving", shape=AREA)
    cluster = await harness.make.cluster(network, lat=48.581, lng=7.731)
    await harness.make.parking(network, cluster, PARKING)
    await harness.svc.catalog.reload()
    catalog = harness.svc.catalog_service
    assert catalog.may_end_trip(network, *IN_PARKING)
    assert await catalog.move_cluster(cluster, 48.591, 7.741) is not None  # 0.01 degree north and east
    assert not catalog.may_end_trip(network, *IN_PARKING)
    assert catalog.may_end_trip(network, 48.591, 7.741)


async def test_the_speed_limit_is_the_lowest_of_the_zones_that_cover_the_point(harness: Harness) -> None:
    network = await harness.make.network("Zoned", shape=AREA)
    other = await harness.make.network("Other", shape=AREA)
    await harness.make.speed_zone(network, AREA, 25)
    await harness.make.speed_zone(network, PARKING, 10)  # a pedestrian area inside
    await harness.make.speed_zone(network, [[7.72, 48.58], [7.74, 48.58], [7.74, 48.59], [7.72, 48.59]], 15)
    await harness.make.speed_zone(network, [[7.75, 48.59], [7.76, 48.59], [7.76, 48.60]], 0)  # limits nothing
    await harness.make.speed_zone(other, AREA, 5)
    catalog = harness.svc.catalog_service
    assert catalog.speed_limit_at(network, 48.595, 7.71) == 25
    assert catalog.speed_limit_at(network, 48.59, 7.72) == 15  # on the corner of the 15 zone: covered
    assert catalog.speed_limit_at(network, 48.585, 7.725) == 15
    assert catalog.speed_limit_at(network, *IN_PARKING) == 10  # in the three: the lowest
    assert catalog.speed_limit_at(network, 48.599, 7.759) == 25
    assert catalog.speed_limit_at(network, *OUTSIDE) == 0
    assert catalog.speed_limit_at(other, *IN_PARKING) == 5
    assert catalog.speed_limit_at(999_999, *IN_PARKING) == 0
    # What the vehicle actors are handed: the catalog service answers their ``SpeedZones``.
    zones: SpeedZones = catalog
    assert zones.limit_at(network, *IN_PARKING) == 10


async def test_a_zone_faster_than_the_wire_carries_is_sent_as_its_highest(harness: Harness) -> None:
    network = await harness.make.network("Fast", shape=AREA)
    await harness.make.speed_zone(network, AREA, 400)
    assert harness.svc.catalog_service.speed_limit_at(network, *IN_AREA_ONLY) == 255
