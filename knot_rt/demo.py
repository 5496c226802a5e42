"""Demo data: idempotent, loaded by ``knot-rt demo`` and ``make run``."""

from __future__ import annotations

from typing import Any

import asyncpg

from .db import Database
from .services.accounts import find_user_by_email, insert_user
from .services.passwords import Passwords
from .services.permissions import grant

DEMO_ACCOUNTS: list[tuple[str, str, str]] = [
    ("rider@knot.demo", "knot-demo-rider", "rider"),
    ("operator@knot.demo", "knot-demo-operator", "operator: stations, clusters, maintenance, support"),
]
OPERATOR_PERMS = ["stations", "clusters", "maintenance", "support"]

CONSENT_TYPES = [
    ("emails.networkstatus", {"en": "Network status emails", "fr": "E-mails sur l'état du réseau",
                              "de": "E-Mails zum Netzstatus"}, True, 1),
    ("emails.promotional", {"en": "Promotional emails", "fr": "E-mails promotionnels",
                            "de": "Werbe-E-Mails"}, False, 2),
]


async def _ensure_organization(conn: asyncpg.Connection) -> int:
    org: int | None = await conn.fetchval("SELECT id FROM organizations WHERE name = 'Knot'")
    if org is None:
        org = await conn.fetchval(
            "INSERT INTO organizations (name, email_domain) VALUES ('Knot', 'knot.demo') RETURNING id"
        )
    assert org is not None
    return org


async def _ensure_app_label(conn: asyncpg.Connection, org: int) -> int:
    label: int = await conn.fetchval(
        """INSERT INTO app_labels (name, label_name, organization_id, android_store_url, ios_store_url)
           VALUES ('knot', 'Knot', $1, 'https://play.google.com/store/apps/details?id=eu.knot.app',
                   'https://apps.apple.com/app/knot/id1453214133')
           ON CONFLICT (name) DO UPDATE SET label_name = EXCLUDED.label_name RETURNING id""",
        org,
    )
    return label


async def _ensure_network(conn: asyncpg.Connection, org: int, label: int) -> int:
    network: int | None = await conn.fetchval("SELECT id FROM networks WHERE name = 'Strasbourg'")
    if network is None:
        network = await conn.fetchval(
            "INSERT INTO networks (name, organization_id, is_public) VALUES ('Strasbourg', $1, true) RETURNING id",
            org,
        )
    await conn.execute("INSERT INTO network_app_labels VALUES ($1, $2) ON CONFLICT DO NOTHING", network, label)
    assert network is not None
    return network


async def _ensure_accounts(conn: asyncpg.Connection, hashes: dict[str, str], network: int, label: int) -> None:
    for email, _password, role in DEMO_ACCOUNTS:
        if await find_user_by_email(conn, email) is not None:
            continue
        user_id = await insert_user(conn, email, hashes[email], confirmed=True, app_label=label)
        if role.startswith("operator"):
            for key in OPERATOR_PERMS:
                await grant(conn, user_id, key, write=True, networks=[network])


async def _ensure_content(conn: asyncpg.Connection, label: int) -> None:
    await conn.executemany(
        """INSERT INTO consent_types (key, names, default_value, sort_order) VALUES ($1, $2, $3, $4)
           ON CONFLICT (key) DO UPDATE SET names = EXCLUDED.names""",
        CONSENT_TYPES,
    )
    if not await conn.fetchval("SELECT count(*) FROM announcements"):
        await conn.execute(
            "INSERT INTO announcements (app_label_id, texts) VALUES ($1, $2)",
            label,
            {"en": "Welcome to Knot in Strasbourg!", "fr": "Bienvenue sur Knot à Strasbourg !"},
        )


async def load_demo(db: Database) -> dict[str, Any]:
    passwords = Passwords()
    hashes = {email: await passwords.hash(password) for email, password, _ in DEMO_ACCOUNTS}

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        org = await _ensure_organization(conn)
        label = await _ensure_app_label(conn, org)
        network = await _ensure_network(conn, org, label)
        await _ensure_accounts(conn, hashes, network, label)
        await _ensure_content(conn, label)
        return {"organization": org, "app_label": label, "network": network,
                "accounts": [email for email, _, _ in DEMO_ACCOUNTS]}

    return await db.transaction(work)
