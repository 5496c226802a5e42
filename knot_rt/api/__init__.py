"""HTTP routes, one blueprint per section of the spec."""

from __future__ import annotations

from quart import Blueprint

from . import (
    announcements,
    app_labels,
    badges,
    clusters,
    consents,
    countries,
    discounts,
    faq,
    gbfs,
    guarantees,
    login,
    maintenance_overview,
    maintenance_pictures,
    maintenances,
    maps,
    networks,
    rents,
    report_images,
    reports,
    stations,
    support,
    users,
)

BLUEPRINTS: list[Blueprint] = [
    app_labels.bp,
    announcements.bp,
    badges.bp,
    clusters.bp,
    consents.bp,
    countries.bp,
    discounts.bp,
    faq.bp,
    gbfs.bp,
    guarantees.bp,
    guarantees.webhook_bp,
    login.bp,
    maintenance_overview.bp,
    maintenance_pictures.bp,
    maintenances.bp,
    maps.bp,
    networks.bp,
    rents.bp,
    report_images.bp,
    reports.bp,
    stations.bp,
    support.bp,
    users.bp,
]
