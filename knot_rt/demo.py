"""Demo data: idempotent, loaded by ``knot-rt demo`` and ``make run``.

Accounts, the Knot organisation and its app labels, the FAQ and consents, and
the city of Strasbourg (``demo_city``: clusters, stations, vehicles, parkings,
speed zones), at a scale for benchmarks if asked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg

from .accounts.store import find_user_by_email, insert_user
from .db import Database
from .demo_city import (
    IssuedVehicle,
    ensure_app_labels,
    ensure_city,
    ensure_maintenances,
    issue_station_secrets,
    issue_vehicle_secrets,
)
from .services.passwords import Passwords
from .services.permissions import grant

DEMO_ACCOUNTS: list[tuple[str, str, str]] = [
    ("rider@knot.demo", "knot-demo-rider", "rider"),
    ("operator@knot.demo", "knot-demo-operator", "operator: stations, clusters, maintenance, support"),
    ("support@knot.demo", "knot-demo-support", "support agent: the demo network's reports"),
]
OPERATOR_PERMS = ["stations", "clusters", "maintenance", "support"]
SUPPORT_PERMS = ["support"]

#: The demo rider's reports: (status, messages as (side, text)), oldest first. Written once, when the rider
#: has none, so a restart neither repeats nor resets a chat the visitor went on with.
DEMO_REPORTS: list[tuple[str, list[tuple[str, str]]]] = [
    ("resolved", [("user", "My rent did not end when I docked the scooter at Gare Centrale."),
                  ("support", "Sorry about that! The station lost its connection; we ended the rent at the time "
                              "you docked it."),
                  ("user", "Thanks, that was quick.")]),
    ("open", [("user", "The scooter I took at Place Kléber brakes badly."),
              ("support", "Thanks for telling us. Which scooter was it (the number under the handlebar)?")]),
    ("open", [("user", "I was charged twice for yesterday's trip.")]),
]

CONSENT_TYPES = [
    ("emails.networkstatus", {"en": "Network status emails", "fr": "E-mails sur l'état du réseau",
                              "de": "E-Mails zum Netzstatus"}, True, 1),
    ("emails.promotional", {"en": "Promotional emails", "fr": "E-mails promotionnels",
                            "de": "Werbe-E-Mails"}, False, 2),
]

ANNOUNCEMENT = {"en": "Welcome to Knot in Strasbourg!", "fr": "Bienvenue sur Knot à Strasbourg !",
                "de": "Willkommen bei Knot in Straßburg!"}


@dataclass(frozen=True)
class FaqText:
    key: str
    texts: dict[str, str]
    type: str = "text"
    bold: bool = False
    margin: str | None = None
    text_color: str | None = None
    bullet_color: str | None = None
    replacements: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaqSection:
    key: str
    names: dict[str, str]
    contents: tuple[FaqText, ...] = ()
    is_spacer: bool = False
    replacements: tuple[str, ...] = ()


@dataclass(frozen=True)
class FaqTopic:
    key: str
    names: dict[str, str]
    sections: tuple[FaqSection, ...]
    demo_label_only: bool = False


APP = ("app-label",)

FAQ: tuple[FaqTopic, ...] = (
    FaqTopic("start", {"en": "Getting started", "fr": "Premiers pas", "de": "Erste Schritte"}, (
        FaqSection("start.account", {"en": "Creating your {app-label} account", "fr": "Créer votre compte {app-label}",
                                     "de": "Ihr {app-label}-Konto anlegen"}, (
            FaqText("start.account.1", {
                "en": "Download {app-label}, then sign up with your email address.",
                "fr": "Téléchargez {app-label}, puis inscrivez-vous avec votre adresse e-mail.",
                "de": "Laden Sie {app-label} herunter und registrieren Sie sich mit Ihrer E-Mail-Adresse.",
            }, replacements=APP),
            FaqText("start.account.2", {
                "en": "Confirm your address with the link we send you.",
                "fr": "Confirmez votre adresse avec le lien que nous vous envoyons.",
                "de": "Bestätigen Sie Ihre Adresse über den Link, den wir Ihnen senden.",
            }, type="bullet", bullet_color="primary"),
        ), replacements=APP),
        FaqSection("start.spacer", {"en": ""}, is_spacer=True),
        FaqSection("start.stations", {"en": "Where are the stations?", "fr": "Où sont les stations ?",
                                      "de": "Wo sind die Stationen?"}, (
            FaqText("start.stations.1", {
                "en": "The map shows every station and how many scooters are docked there.",
                "fr": "La carte montre chaque station et le nombre de trottinettes qui y sont garées.",
                "de": "Die Karte zeigt jede Station und wie viele Roller dort angedockt sind.",
            }),
        )),
    )),
    FaqTopic("renting", {"en": "Renting a scooter", "fr": "Louer une trottinette", "de": "Einen Roller mieten"}, (
        FaqSection("renting.unlock", {"en": "Unlocking", "fr": "Déverrouiller", "de": "Entsperren"}, (
            FaqText("renting.unlock.1", {
                "en": "Scan the code on the scooter, or choose its spot in {app-label}.",
                "fr": "Scannez le code sur la trottinette, ou choisissez sa place dans {app-label}.",
                "de": "Scannen Sie den Code am Roller oder wählen Sie seinen Platz in {app-label}.",
            }, replacements=APP),
            FaqText("renting.unlock.2", {
                "en": "The spot releases the scooter within a few seconds.",
                "fr": "La place libère la trottinette en quelques secondes.",
                "de": "Der Platz gibt den Roller in wenigen Sekunden frei.",
            }, bold=True, margin="8 0 0 0", text_color="secondary"),
        )),
        FaqSection("renting.return", {"en": "Returning", "fr": "Restituer", "de": "Zurückgeben"}, (
            FaqText("renting.return.1", {
                "en": "Push the scooter into any free spot of a station: the rent ends when it locks.",
                "fr": "Poussez la trottinette dans une place libre : la location se termine au verrouillage.",
                "de": "Schieben Sie den Roller in einen freien Platz: die Miete endet, sobald er verriegelt.",
            }),
        )),
    )),
    FaqTopic("payment", {"en": "Payment", "fr": "Paiement", "de": "Bezahlung"}, (
        FaqSection("payment.guarantee", {"en": "Bank guarantee", "fr": "Garantie bancaire",
                                         "de": "Bankgarantie"}, (
            FaqText("payment.guarantee.1", {
                "en": "A guarantee is held on your card during a rent and released afterwards.",
                "fr": "Une garantie est bloquée sur votre carte pendant la location, puis libérée.",
                "de": "Während der Miete wird eine Garantie auf Ihrer Karte reserviert und danach freigegeben.",
            }),
        )),
    )),
    FaqTopic("knot-club", {"en": "Knot club", "fr": "Le club Knot", "de": "Der Knot-Club"}, (
        FaqSection("knot-club.perks", {"en": "Perks", "fr": "Avantages", "de": "Vorteile"}, (
            FaqText("knot-club.perks.1", {
                "en": "Members of {app-label} get their first unlock of the month free.",
                "fr": "Les membres de {app-label} ont leur premier déverrouillage du mois offert.",
                "de": "Mitglieder von {app-label} entsperren das erste Mal im Monat kostenlos.",
            }, type="bullet", bullet_color="secondary", replacements=APP),
        ), replacements=APP),
    ), demo_label_only=True),
)


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
        if email not in hashes or await find_user_by_email(conn, email) is not None:
            continue
        user_id = await insert_user(conn, email, hashes[email], confirmed=True, app_label=label)
        if role.startswith("operator"):
            for key in OPERATOR_PERMS:
                await grant(conn, user_id, key, write=True, networks=[network])
        elif role.startswith("support"):
            for key in SUPPORT_PERMS:
                await grant(conn, user_id, key, write=True, networks=[network])


async def _ensure_reports(conn: asyncpg.Connection, network: int) -> None:
    """The demo rider's reports (``DEMO_REPORTS``) on the demo network, answered by the support agent."""
    rider = await find_user_by_email(conn, DEMO_ACCOUNTS[0][0])
    agent = await find_user_by_email(conn, "support@knot.demo")
    if rider is None or agent is None or await conn.fetchval("SELECT 1 FROM reports WHERE user_id = $1", rider["id"]):
        return
    for status, messages in DEMO_REPORTS:
        report = await conn.fetchval(
            """INSERT INTO reports (user_id, network_id, status, resolved_at, assigned_to)
               VALUES ($1, $2, $3, CASE WHEN $3 = 'resolved' THEN now() END, $4) RETURNING id""",
            rider["id"], network, status, agent["id"] if status == "resolved" else None,
        )
        last = 0
        for side, text in messages:
            last = await conn.fetchval(
                """INSERT INTO report_messages (report_id, side, author_id, body) VALUES ($1, $2, $3, $4)
                   RETURNING id""",
                report, side, rider["id"] if side == "user" else agent["id"], text,
            )
        read_by_support = last if status == "resolved" else 0
        await conn.execute(
            "UPDATE reports SET last_message_id = $2, support_read_up_to = $3, user_read_up_to = $3 WHERE id = $1",
            report, last, read_by_support,
        )


async def _ensure_content(conn: asyncpg.Connection, label: int) -> None:
    await conn.executemany(
        """INSERT INTO consent_types (key, names, default_value, sort_order) VALUES ($1, $2, $3, $4)
           ON CONFLICT (key) DO UPDATE SET names = EXCLUDED.names""",
        CONSENT_TYPES,
    )
    if not await conn.fetchval("SELECT count(*) FROM announcements"):
        await conn.execute("INSERT INTO announcements (app_label_id, texts) VALUES ($1, $2)", label, ANNOUNCEMENT)
    await _ensure_faq(conn, label)


FaqRows = tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[tuple[Any, ...]]]


def _faq_rows(label: int) -> FaqRows:
    """Rows of the three FAQ tables; the order of the tuples gives ``sort_order``."""
    topics: list[tuple[Any, ...]] = []
    sections: list[tuple[Any, ...]] = []
    texts: list[tuple[Any, ...]] = []
    for topic_order, topic in enumerate(FAQ, start=1):
        topics.append((topic.key, label if topic.demo_label_only else None, topic_order, topic.names))
        for section_order, section in enumerate(topic.sections, start=1):
            sections.append((section.key, topic.key, section_order, section.is_spacer, list(section.replacements),
                             section.names))
            texts += [
                (text.key, section.key, text_order, text.type, text.bold, text.margin, text.text_color,
                 text.bullet_color, list(text.replacements), text.texts)
                for text_order, text in enumerate(section.contents, start=1)
            ]
    return topics, sections, texts


async def _ensure_faq(conn: asyncpg.Connection, label: int) -> None:
    """Upsert the FAQ by key."""
    topics, sections, texts = _faq_rows(label)
    await conn.executemany(
        """INSERT INTO faq_categories (key, app_label_id, sort_order, names) VALUES ($1, $2, $3, $4)
           ON CONFLICT (key) DO UPDATE SET app_label_id = EXCLUDED.app_label_id,
               sort_order = EXCLUDED.sort_order, names = EXCLUDED.names""",
        topics,
    )
    await conn.executemany(
        """INSERT INTO faq_sub_categories (key, category_key, sort_order, is_spacer, replacements, names)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (key) DO UPDATE SET category_key = EXCLUDED.category_key, sort_order = EXCLUDED.sort_order,
               is_spacer = EXCLUDED.is_spacer, replacements = EXCLUDED.replacements, names = EXCLUDED.names""",
        sections,
    )
    await conn.executemany(
        """INSERT INTO faq_contents (key, sub_category_key, sort_order, type, bold, margin, text_color,
                                     bullet_color, replacements, contents)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (key) DO UPDATE SET sub_category_key = EXCLUDED.sub_category_key,
               sort_order = EXCLUDED.sort_order, type = EXCLUDED.type, bold = EXCLUDED.bold,
               margin = EXCLUDED.margin, text_color = EXCLUDED.text_color, bullet_color = EXCLUDED.bullet_color,
               replacements = EXCLUDED.replacements, contents = EXCLUDED.contents""",
        texts,
    )


async def _user_id(conn: asyncpg.Connection, email: str) -> int | None:
    user = await find_user_by_email(conn, email)
    return None if user is None else int(user["id"])


async def _brake_report(conn: asyncpg.Connection) -> int | None:
    """The demo rider's open report about a scooter's brakes (``DEMO_REPORTS``), for its maintenance."""
    found: int | None = await conn.fetchval(
        """SELECT r.id FROM reports r JOIN users u ON u.id = r.user_id JOIN report_messages m ON m.report_id = r.id
           WHERE u.email = $1 AND m.body LIKE '%brakes badly%' ORDER BY r.id LIMIT 1""",
        DEMO_ACCOUNTS[0][0],
    )
    return found


async def _missing_accounts(conn: asyncpg.Connection) -> list[str]:
    return [email for email, _, _ in DEMO_ACCOUNTS if await find_user_by_email(conn, email) is None]


async def load_demo(db: Database, *, scale: int = 1) -> dict[str, Any]:
    """Load the demo (idempotent); ``scale`` > 1 makes the city larger. A summary, with nothing secret."""
    missing = await db.run(_missing_accounts)
    passwords = Passwords()
    hashes = {email: await passwords.hash(password) for email, password, _ in DEMO_ACCOUNTS if email in missing}

    async def work(conn: asyncpg.Connection) -> dict[str, Any]:
        org = await _ensure_organization(conn)
        label = await _ensure_app_label(conn, org)
        network = await _ensure_network(conn, org, label)
        await ensure_app_labels(conn, org, network)
        await _ensure_accounts(conn, hashes, network, label)
        await _ensure_content(conn, label)
        await _ensure_reports(conn, network)
        city = await ensure_city(conn, network, scale)
        city["open_maintenances"] = await ensure_maintenances(
            conn, network, operator=await _user_id(conn, DEMO_ACCOUNTS[1][0]), report=await _brake_report(conn))
        return {"organization": org, "app_label": label, "network": network,
                "accounts": [email for email, _, _ in DEMO_ACCOUNTS], "city": city}

    return await db.transaction(work)


async def demo_station_secrets(db: Database) -> list[tuple[int, str]]:
    """New secrets for every station of the demo city (the old ones stop working): (station id, secret)."""

    async def work(conn: asyncpg.Connection) -> list[tuple[int, str]]:
        network = await conn.fetchval("SELECT id FROM networks WHERE name = 'Strasbourg'")
        return [] if network is None else await issue_station_secrets(conn, network)

    return await db.transaction(work)


async def demo_vehicle_secrets(db: Database) -> list[IssuedVehicle]:
    """New secrets for every free-floating vehicle with a module of the demo city (the old ones stop working),
    with where each stands and the path it rides."""

    async def work(conn: asyncpg.Connection) -> list[IssuedVehicle]:
        network = await conn.fetchval("SELECT id FROM networks WHERE name = 'Strasbourg'")
        return [] if network is None else await issue_vehicle_secrets(conn, network)

    return await db.transaction(work)
