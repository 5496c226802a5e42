"""The ``countries`` table, filled from maintained packages.

Rows come from ``pycountry`` (ISO 3166-1: the short common name when it has one,
e.g. "Bolivia" rather than "Bolivia, Plurinational State of"; alpha-2; alpha-3)
and ``phonenumbers`` (the international calling code: "+33"). A territory without
a calling code in ``phonenumbers`` (Antarctica, Bouvet Island, ...) gets an empty
``phone_prefix``. ISO codes are kept upper case, as ISO writes them ("FR", "FRA").

``ensure_countries`` runs at every start, after the migrations: it adds the
countries that are missing and never changes nor renumbers a row, so a
country's id is stable for the life of the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import asyncpg
import phonenumbers
import pycountry
import pycountry.db


@dataclass(frozen=True, slots=True)
class CountryInfo:
    iso_2: str
    iso_3: str
    name: str
    phone_prefix: str


def _info(country: pycountry.db.Data) -> CountryInfo:
    calling_code = phonenumbers.country_code_for_region(country.alpha_2)
    return CountryInfo(
        iso_2=country.alpha_2,
        iso_3=country.alpha_3,
        name=getattr(country, "common_name", None) or country.name,
        phone_prefix=f"+{calling_code}" if calling_code else "",
    )


@cache
def all_countries() -> tuple[CountryInfo, ...]:
    """Every ISO 3166-1 country, by alpha-2 code."""
    return tuple(sorted((_info(country) for country in pycountry.countries), key=lambda c: c.iso_2))


def country_info(iso_2: str) -> CountryInfo | None:
    found = pycountry.countries.get(alpha_2=iso_2.upper())
    return None if found is None else _info(found)


_INSERT = """
    INSERT INTO countries (iso_2, iso_3, name, phone_prefix)
    SELECT n.iso_2, n.iso_3, n.name, n.phone_prefix
    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
         AS n(iso_2, iso_3, name, phone_prefix, position)
    WHERE NOT EXISTS (SELECT 1 FROM countries c WHERE c.iso_2 = n.iso_2)
    ORDER BY n.position
    ON CONFLICT (iso_2) DO NOTHING
"""


async def _insert(conn: asyncpg.Connection, countries: tuple[CountryInfo, ...]) -> int:
    status: str = await conn.execute(
        _INSERT,
        [c.iso_2 for c in countries], [c.iso_3 for c in countries],
        [c.name for c in countries], [c.phone_prefix for c in countries],
    )
    return int(status.rsplit(" ", 1)[-1])


async def ensure_countries(conn: asyncpg.Connection) -> int:
    """Add the missing countries; existing rows are left as they are. Returns how many were added (asyncio side)."""
    return await _insert(conn, all_countries())


COUNTRY_COLUMNS = "id, name, iso_2, iso_3, phone_prefix"


async def country_by_iso_2(conn: asyncpg.Connection, iso_2: str) -> asyncpg.Record | None:
    """The row of a country, added first if the table lacks it (a database seeded by an older release)."""
    sql = f"SELECT {COUNTRY_COLUMNS} FROM countries WHERE iso_2 = $1"
    row: asyncpg.Record | None = await conn.fetchrow(sql, iso_2)
    if row is None:
        info = country_info(iso_2)
        if info is None:
            return None
        await _insert(conn, (info,))
        row = await conn.fetchrow(sql, iso_2)
    return row
