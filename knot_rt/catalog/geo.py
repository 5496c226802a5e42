"""Pure geometry of the catalog's shapes (no database, no memory).

Shapes are lists of ``[longitude, latitude]`` points (GeoJSON order).
"""

from __future__ import annotations


def _wrap_longitude(lng: float) -> float:
    return lng if -180.0 <= lng <= 180.0 else (lng + 180.0) % 360.0 - 180.0


def translate_shape(shape: list[list[float]], d_lat: float, d_lng: float) -> list[list[float]]:
    """A ``[[lng, lat], ...]`` shape moved by a delta (latitudes clamped to ±90, longitudes wrapped)."""
    return [
        [_wrap_longitude(point[0] + d_lng), max(-90.0, min(90.0, point[1] + d_lat)), *point[2:]]
        for point in shape
    ]
