"""HTTP routes, one blueprint per section of the spec."""

from __future__ import annotations

from quart import Blueprint

from . import announcements, app_labels, consents, countries, discounts, faq, login, stations, users

BLUEPRINTS: list[Blueprint] = [
    app_labels.bp,
    announcements.bp,
    consents.bp,
    countries.bp,
    discounts.bp,
    faq.bp,
    login.bp,
    stations.bp,
    users.bp,
]
