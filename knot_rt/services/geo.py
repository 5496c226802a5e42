"""Geography: coordinates, distances on the Earth, and the country at a position.

Country at a position (offline)
-------------------------------
The boundaries are the time zone polygons that ``timezonefinder`` ships in the
``timezonefinder-data`` package: OpenStreetMap administrative boundaries, at full
resolution, assembled by the maintained timezone-boundary-builder project. Its
*full* dataset keeps a zone for every country (Europe/Monaco, Europe/Vatican,
Europe/Busingen, ...), and each land zone follows its country's border,
territorial waters included. The open sea is covered by the nautical zones
``Etc/GMT±N`` (and ``Etc/UTC``), which belong to no country.

A zone is turned into a country with the IANA tables of the ``tzdata`` package:

1. ``zone.tab``: one ISO 3166 alpha-2 code per zone (Europe/Paris -> FR,
   Europe/Berlin -> DE, Europe/Zurich -> CH, Europe/Busingen -> DE,
   Europe/Monaco -> MC);
2. where ``zone.tab`` has no line for a zone, ``zone1970.tab`` if it names exactly
   one country for it;
3. otherwise (``Etc/...`` nautical zones, or a zone that names several countries)
   there is no country: the API answers code 25 (NO_COUNTRY).

Every land zone of the data shipped today has a ``zone.tab`` line; a test checks
that this stays true when either package is upgraded. Checked places: Strasbourg
FR, Kehl (across the Rhine) DE, Basel CH, Geneva CH, Monaco MC, Büsingen DE, the
North Sea and the middle of the Atlantic: none. Kosovo has no code in ``zone.tab``
and is answered as Serbia (Europe/Belgrade), as IANA does.

Building the finder memory-maps ~60 MB and takes a few tenths of a second: it is
done once per process, lazily, in a worker thread. A lookup takes microseconds
and runs on the Trio thread; the finder is only ever used from that thread
(``timezonefinder`` instances are not thread-safe).
"""

from __future__ import annotations

import logging
import threading
from functools import cache
from importlib import resources
from typing import Annotated

import trio
from pydantic import Field
from timezonefinder import TimezoneFinder

# One haversine for the whole project: the actors' (a vehicle's movement) is the services' too.
from actors.geo import EARTH_RADIUS_M as EARTH_RADIUS_M
from actors.geo import distance_m as distance_m

log = logging.getLogger(__name__)

Latitude = Annotated[float, Field(ge=-90, le=90, allow_inf_nan=False, description="Latitude in degrees.")]
Longitude = Annotated[float, Field(ge=-180, le=180, allow_inf_nan=False, description="Longitude in degrees.")]

def _read_tab(name: str) -> dict[str, list[str]]:
    """Zone name -> ISO country codes, from one of tzdata's ``.tab`` files."""
    found: dict[str, list[str]] = {}
    text = resources.files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        fields = line.split("\t")
        found[fields[2]] = fields[0].split(",")
    return found


@cache
def zone_countries() -> dict[str, str]:
    """Time zone name -> ISO 3166 alpha-2 code, following the rules of the module docstring."""
    countries = {zone: codes[0] for zone, codes in _read_tab("zone1970.tab").items() if len(codes) == 1}
    countries.update({zone: codes[0] for zone, codes in _read_tab("zone.tab").items()})
    return countries


def country_of_zone(zone: str | None) -> str | None:
    """The country of a time zone; None for nautical zones and unknown ones."""
    if zone is None or zone.startswith("Etc/"):
        return None
    country = zone_countries().get(zone)
    if country is None:
        log.warning("time zone %s has no country in tzdata's zone.tab or zone1970.tab", zone)
    return country


class CountryFinder:
    """The country (ISO alpha-2) at a position, from the shipped boundary data."""

    def __init__(self) -> None:
        self._finder: TimezoneFinder | None = None
        self._building = threading.Lock()

    def _build(self) -> TimezoneFinder:
        with self._building:
            if self._finder is None:
                finder = TimezoneFinder()
                zone_countries()
                log.info("country boundaries loaded (timezonefinder data %s)", finder.data_version)
                self._finder = finder
            return self._finder

    async def finder(self) -> TimezoneFinder:
        """The finder, built on first use in a worker thread."""
        if self._finder is not None:
            return self._finder
        return await trio.to_thread.run_sync(self._build)

    async def zone_at(self, lat: float, lng: float) -> str | None:
        finder = await self.finder()
        zone: str | None = finder.timezone_at(lng=lng, lat=lat)
        return zone

    async def country_at(self, lat: float, lng: float) -> str | None:
        """ISO 3166 alpha-2 code of the country at (lat, lng); None at sea."""
        return country_of_zone(await self.zone_at(lat, lng))


COUNTRY_FINDER = CountryFinder()
"""The one finder of the process."""


async def country_code_at(lat: float, lng: float) -> str | None:
    """ISO 3166 alpha-2 code of the country at (lat, lng); None at sea."""
    return await COUNTRY_FINDER.country_at(lat, lng)
