"""A grid index of 0.01-degree cells, for the in-memory area queries of the map.

Shared by the catalog (clusters: placed once per load) and the vehicles' live
state (free-floating vehicles: they move, each is in at most one cell). A query
box is answered cell by cell when it touches fewer cells than are occupied,
else by scanning the occupied cells: a street-level view touches a few cells,
a whole-city view scans them all, neither walks every item.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field

CELL = 0.01  # degrees (about 1.1 km north-south): a street-level view touches a few cells

Cell = tuple[int, int]


def cell(lat: float, lng: float) -> Cell:
    return (math.floor(lat / CELL), math.floor(lng / CELL))


def cells_within(
    cells: Mapping[Cell, Collection[int]], south: float, north: float, west: float, east: float
) -> Iterator[int]:
    """Items of the cells a box touches: cell by cell for a small box, else by scanning the occupied cells."""
    low, high = cell(south, west), cell(north, east)
    if (high[0] - low[0] + 1) * (high[1] - low[1] + 1) <= len(cells):
        for i in range(low[0], high[0] + 1):
            for j in range(low[1], high[1] + 1):
                yield from cells.get((i, j), ())
    else:
        for (i, j), items in cells.items():
            if low[0] <= i <= high[0] and low[1] <= j <= high[1]:
                yield from items


@dataclass
class Grid:
    """Items placed once (rebuilt on reload; ``remove`` for a targeted update)."""

    cells: defaultdict[Cell, list[int]] = field(default_factory=lambda: defaultdict(list))

    def add(self, item_id: int, lat: float, lng: float) -> None:
        self.cells[cell(lat, lng)].append(item_id)

    def remove(self, item_id: int, lat: float, lng: float) -> None:
        """Take an item off the cell of (lat, lng), where it was added (a targeted update)."""
        items = self.cells.get(cell(lat, lng))
        if items is not None and item_id in items:
            items.remove(item_id)
            if not items:
                del self.cells[cell(lat, lng)]

    def within(self, south: float, north: float, west: float, east: float) -> Iterator[int]:
        return cells_within(self.cells, south, north, west, east)


class MovingGrid:
    """A grid whose items move: each item is in at most one cell."""

    def __init__(self) -> None:
        self.cells: defaultdict[Cell, set[int]] = defaultdict(set)
        self._where: dict[int, Cell] = {}

    def place(self, item_id: int, position: tuple[float, float] | None) -> None:
        """Put the item at ``position``, or take it off the grid (``None``)."""
        old = self._where.pop(item_id, None)
        if old is not None:
            self.cells[old].discard(item_id)
        if position is not None:
            found = cell(*position)
            self.cells[found].add(item_id)
            self._where[item_id] = found

    def within(self, south: float, north: float, west: float, east: float) -> Iterator[int]:
        return cells_within(self.cells, south, north, west, east)
