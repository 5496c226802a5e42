"""Pure geometry of the catalog's shapes (no database, no memory of their own).

Shapes are lists of ``[longitude, latitude]`` points (GeoJSON order). Tests of a
point against them (may a free-floating trip end here, which speed zone is this)
use ``shapely`` on planar degrees: the shapes are a city wide at most, where the
difference with a geodesic test is far below a GPS fix's error.

Choices:

- A point on an edge or a corner is inside (``covers``): a vehicle parked on a
  parking's painted line is in the parking.
- A shape that is not a simple polygon (it crosses itself) is repaired with
  ``make_valid`` (a bow tie becomes its two triangles) rather than refused: the
  operator drew an area, the backend keeps what it encloses. A shape of fewer
  than three distinct points, or one that encloses nothing, is no area
  (``polygon_of`` answers None); what that means is the caller's rule.
- ``ShapeIndex`` keeps the shapes of one kind of a network in an R-tree
  (``shapely.STRtree``): a lookup tests only the shapes whose box holds the
  point, so a status report of a rented vehicle costs a few microseconds
  however many zones the network has. It is built once per catalog read
  (a few milliseconds for thousands of shapes) and never changed in place.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import shapely
from shapely.geometry.base import BaseGeometry

V = TypeVar("V")


def _wrap_longitude(lng: float) -> float:
    return lng if -180.0 <= lng <= 180.0 else (lng + 180.0) % 360.0 - 180.0


def translate_shape(shape: list[list[float]], d_lat: float, d_lng: float) -> list[list[float]]:
    """A ``[[lng, lat], ...]`` shape moved by a delta (latitudes clamped to ±90, longitudes wrapped)."""
    return [
        [_wrap_longitude(point[0] + d_lng), max(-90.0, min(90.0, point[1] + d_lat)), *point[2:]]
        for point in shape
    ]


def polygon_of(shape: Sequence[Sequence[float]]) -> BaseGeometry | None:
    """The area a ``[[lng, lat], ...]`` shape encloses, prepared for point tests; None when it encloses
    nothing (fewer than three distinct points, all on one line, points that are not numbers)."""
    points: list[tuple[float, float]] = []
    for point in shape:
        if len(point) < 2:
            return None
        lng, lat = float(point[0]), float(point[1])
        if not (math.isfinite(lng) and math.isfinite(lat)):
            return None
        if not points or points[-1] != (lng, lat):
            points.append((lng, lat))
    if len(set(points)) < 3:
        return None
    polygon: BaseGeometry = shapely.Polygon(points)
    if not polygon.is_valid:
        polygon = shapely.make_valid(polygon)
    if polygon.is_empty or polygon.area == 0:
        return None
    shapely.prepare(polygon)
    return polygon


def covers(area: BaseGeometry, lat: float, lng: float) -> bool:
    """Whether (lat, lng) is inside ``area`` or on its edge."""
    return bool(area.covers(shapely.Point(lng, lat)))


class ShapeIndex(Generic[V]):
    """Shapes with a value each (a zone's speed, a parking's id), found by a point that they cover."""

    __slots__ = ("_tree", "_values")

    def __init__(self, shaped: Iterable[tuple[Sequence[Sequence[float]], V]]) -> None:
        polygons: list[BaseGeometry] = []
        values: list[V] = []
        for shape, value in shaped:
            polygon = polygon_of(shape)
            if polygon is not None:
                polygons.append(polygon)
                values.append(value)
        self._values = values
        self._tree = shapely.STRtree(polygons) if polygons else None

    def __len__(self) -> int:
        return len(self._values)

    def at(self, lat: float, lng: float) -> list[V]:
        """The values of the shapes that cover (lat, lng), in the order they were given."""
        if self._tree is None:
            return []
        found = self._tree.query(shapely.Point(lng, lat), predicate="covered_by")
        return [self._values[i] for i in sorted(int(i) for i in found)]
