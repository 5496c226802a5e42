"""The countries of the ``countries`` table, from maintained packages (their SQL: ``store.py``).

Rows come from ``pycountry`` (ISO 3166-1: the short common name when it has one,
e.g. "Bolivia" rather than "Bolivia, Plurinational State of"; alpha-2; alpha-3)
and ``phonenumbers`` (the international calling code: "+33"). A territory without
a calling code in ``phonenumbers`` (Antarctica, Bouvet Island, ...) gets an empty
``phone_prefix``. ISO codes are kept upper case, as ISO writes them ("FR", "FRA").

``store.ensure_countries`` runs at every start, after the migrations: it adds the
countries that are missing and never changes nor renumbers a row, so a
country's id is stable for the life of the database.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

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
