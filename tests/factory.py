"""The one way tests build their worlds: through the domain services, as an operator would.

Every function here calls a service's write (``AccountService``, ``CatalogService``, ``ContentService``,
``StationService``, ``VehicleService``), each in one unit of work, so a test's data is made by the code
that makes it in production: the same checks, the same after-commit updates (a network or a parking
reloads the catalog; a cluster is put in it). Raw SQL in a test is left for what no operator can do
(a row written behind the service's back, a state forged in the past): such places say so.

Choices and costs: the helpers are thin and keyword-heavy rather than a builder DSL, so a reader sees
each row's facts at the call; vehicles made in bulk take one unit of work each (a few hundred at most in
these tests: well under a second).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from knot_rt.content.store import FaqStyle
from knot_rt.context import Services
from knot_rt.errors import ApiError
from knot_rt.stations.admin import NewStation

STORE_URLS = {"android": "https://play.example/knot", "ios": "https://apps.example/knot"}
PASSWORD = "correct horse battery"


@dataclass(frozen=True)
class Factory:
    """Builds rows through ``svc``'s services; each method returns the new row's id (or what its service returns)."""

    svc: Services

    # accounts ----------------------------------------------------------------------------------------------

    async def organization(self, name: str, email_domain: str | None = None) -> int:
        return await self.svc.accounts.create_organization(name, email_domain)

    async def consent_type(self, key: str, names: dict[str, str], *, default_value: bool = False,
                           sort_order: int = 0) -> None:
        await self.svc.accounts.create_consent_type(key, names, default_value=default_value, sort_order=sort_order)

    async def user(
        self, email: str, password: str = PASSWORD, *, confirmed: bool = True,
        perms: list[tuple[str, bool]] | None = None, networks: list[int] | None = None,
        clusters: list[int] | None = None, organizations: list[int] | None = None, app_label: int | None = None,
    ) -> int:
        """An account with permissions ``perms`` (key, write) on the given networks, clusters, organizations."""
        return await self.svc.accounts.create_user(
            email, password, confirmed=confirmed, perms=perms or [], networks=networks or [],
            clusters=clusters or [], organizations=organizations or [], app_label=app_label,
        )

    # content -----------------------------------------------------------------------------------------------

    async def app_label(
        self, name: str = "knot", label_name: str = "Knot", *, organization: int | None = None,
        android: str | None = STORE_URLS["android"], ios: str | None = STORE_URLS["ios"],
    ) -> int:
        return await self.svc.content.create_app_label(
            name, label_name, organization_id=organization, android_store_url=android, ios_store_url=ios,
        )

    async def app_label_once(self, name: str = "knot") -> int:
        """The app label ``name``, made the first time it is asked for (several helpers of one test share it)."""
        try:
            return await self.svc.content.app_label_id(name)
        except ApiError:
            return await self.app_label(name)

    async def announcement(
        self, texts: dict[str, str], *, app_label: int | None = None, starts_at: datetime,
        ends_at: datetime | None = None,
    ) -> int:
        return await self.svc.content.create_announcement(
            texts, app_label_id=app_label, starts_at=starts_at, ends_at=ends_at
        )

    async def faq_category(self, key: str, names: dict[str, str], *, sort_order: int = 0,
                           app_label: int | None = None) -> None:
        await self.svc.content.create_faq_category(key, names, app_label_id=app_label, sort_order=sort_order)

    async def faq_sub_category(self, key: str, category: str, names: dict[str, str], *, sort_order: int = 0,
                               is_spacer: bool = False, replacements: list[str] | None = None) -> None:
        await self.svc.content.create_faq_sub_category(
            key, category, names, sort_order=sort_order, is_spacer=is_spacer, replacements=replacements,
        )

    async def faq_content(self, key: str, sub_category: str, contents: dict[str, str], *, sort_order: int = 0,
                          replacements: Sequence[str] = (), **style: Any) -> None:
        """An FAQ entry; ``style`` is ``FaqStyle``'s fields (type, bold, margin, text_color, bullet_color)."""
        await self.svc.content.create_faq_content(
            key, sub_category, contents, sort_order=sort_order,
            style=FaqStyle(replacements=tuple(replacements), **style),
        )

    # catalog -----------------------------------------------------------------------------------------------

    async def network(
        self, name: str = "Strasbourg", *, organization: int | None = None, public: bool = True,
        organization_only: bool = False, labels: Sequence[int] = (), shape: list[list[float]] | None = None,
        center: tuple[float, float] = (0.0, 0.0), rules: Mapping[str, object] | None = None,
    ) -> int:
        """A network shown in the apps of ``labels``; the catalog knows it once this returns."""
        return await self.svc.catalog_service.create_network(
            name, organization_id=organization, public=public, organization_only=organization_only,
            shape=shape, center=center, app_labels=labels, rules=rules,
        )

    async def show_in(self, network: int, label: int) -> None:
        """Show an existing network in one more app."""
        await self.svc.catalog_service.link_app_label(network, label)

    async def cluster(self, network: int, name: str = "Gare", lat: float = 48.58, lng: float = 7.73,
                      **details: object) -> int:
        """A cluster; ``details`` are its other columns (description, has_badge_reader, balancing_type, ...)."""
        return await self.svc.catalog_service.create_cluster(network, name, lat, lng, details=details)

    async def out_of_order(self, kind: str, reason: str, custom_reason: str | None = None) -> int:
        return await self.svc.catalog_service.create_out_of_order(kind, reason, custom_reason)

    async def parking(self, network: int, cluster: int | None, shape: list[list[float]]) -> int:
        return await self.svc.catalog_service.create_parking(network, cluster, shape)

    async def speed_zone(self, network: int, shape: list[list[float]], max_speed: int) -> int:
        return await self.svc.catalog_service.create_speed_zone(network, shape, max_speed)

    async def discount(
        self, name: str, discount_type: str, *, code: str | None = None, data: str = "0",
        stop_date: date | None = None, network: int | None = None, currency: str = "EUR", shop: bool = False,
        kind: int = 1,
    ) -> int:
        return await self.svc.catalog_service.create_discount(
            name, discount_type, kind=kind, stop_date=stop_date, code=code, data=Decimal(data), currency=currency,
            network_id=network, usable_in_shop=shop,
        )

    async def grant(self, user: int, discount: int, *, active: bool = True) -> None:
        await self.svc.catalog_service.grant_discount(user, discount, active=active)

    # stations and vehicles -------------------------------------------------------------------------------

    async def station(self, cluster: int, spots: int = 4, *, first_displayed_number: int = 1,
                      version: str = "v6") -> NewStation:
        """A station with its spots and its secret (``NewStation.secret``, shown once, as the CLI prints it)."""
        return await self.svc.stations.create_station(
            cluster, spots, first_displayed_number=first_displayed_number, version=version,
        )

    async def stations(self, cluster: int, count: int, spots: int = 4) -> list[tuple[int, str]]:
        """``count`` stations of the cluster: (station id, secret) each."""
        made = [await self.station(cluster, spots) for _ in range(count)]
        return [(station.station_id, station.secret) for station in made]

    async def vehicle_model(self, name: str, manufacturer: str, vehicle_type: str = "kick-scooter") -> int:
        return await self.svc.vehicles.create_model(name, manufacturer, vehicle_type)

    async def vehicle(self, network: int, vehicle_id: int, serial: str | None = None, *, model: int | None = None,
                      avg_max_range: int = 0) -> int:
        """A vehicle with the id its station reports (serial ``SN<id>`` unless given)."""
        row = await self.svc.vehicles.create(
            network, serial or f"SN{vehicle_id}", vehicle_id=vehicle_id, model_id=model, avg_max_range=avg_max_range,
        )
        return int(row["vehicle_id"])

    async def free_floating_vehicle(self, network: int, serial: str, *, vehicle_id: int | None = None,
                                    model: int | None = None, avg_max_range: int = 0) -> tuple[int, str]:
        """A vehicle with its own IoT module: (vehicle id, secret), the secret shown once as the CLI prints it."""
        row = await self.svc.vehicles.create(
            network, serial, vehicle_id=vehicle_id, model_id=model, avg_max_range=avg_max_range, free_floating=True,
        )
        return int(row["vehicle_id"]), str(row["secret"])

    async def vehicles(self, network: int, ids: Iterable[int], *, prefix: str = "SN", model: int | None = None,
                       avg_max_range: int = 0) -> list[int]:
        """Vehicles of ``ids`` (serials ``<prefix><id>``); the map shows them after ``svc.catalog.reload()``."""
        return [await self.vehicle(network, vehicle_id, f"{prefix}{vehicle_id}", model=model,
                                   avg_max_range=avg_max_range) for vehicle_id in ids]
