"""Who may read or write what: the one place that decides.

A permission is a key (``stations``, ``clusters``, ``maintenance``, ``support``…),
a write flag and an organisational unit (OU). An OU covers an object when the
object's network, cluster, organisation or app label is listed in it. Reading
needs any permission of the key on a covering OU; writing needs one with
``write``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class Scope:
    """Where an object sits, as far as permissions care."""

    network_id: int | None = None
    cluster_id: int | None = None
    organization_id: int | None = None
    app_label_id: int | None = None


@dataclass(frozen=True, slots=True)
class OrgUnit:
    id: int
    networks: tuple[int, ...] = ()
    clusters: tuple[tuple[int, int], ...] = ()  # (cluster id, its network id)
    app_labels: tuple[int, ...] = ()
    organizations: tuple[int, ...] = ()

    def covers(self, scope: Scope) -> bool:
        return (
            (scope.network_id is not None and scope.network_id in self.networks)
            or (scope.cluster_id is not None and any(c == scope.cluster_id for c, _ in self.clusters))
            or (scope.organization_id is not None and scope.organization_id in self.organizations)
            or (scope.app_label_id is not None and scope.app_label_id in self.app_labels)
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "networks": list(self.networks),
            "clusters": [{"id": c, "network": n} for c, n in self.clusters],
            "app_labels": list(self.app_labels),
            "organizations": list(self.organizations),
        }


@dataclass(frozen=True, slots=True)
class Permission:
    perm_key: str
    write: bool
    ou: OrgUnit

    def as_json(self) -> dict[str, Any]:
        return {"perm_key": self.perm_key, "write": self.write, "ou": self.ou.as_json()}


@dataclass(frozen=True, slots=True)
class Permissions:
    items: tuple[Permission, ...] = field(default=())

    def __bool__(self) -> bool:
        return bool(self.items)

    def as_json(self) -> list[dict[str, Any]]:
        return [p.as_json() for p in self.items]

    def allows(self, perm_key: str, scope: Scope, *, write: bool) -> bool:
        return any(
            p.perm_key == perm_key and (p.write or not write) and p.ou.covers(scope) for p in self.items
        )

    def allows_any(self, keys: tuple[str, ...], scope: Scope, *, write: bool) -> bool:
        return any(self.allows(key, scope, write=write) for key in keys)


# Who may see a station's live state (its details route and its feed topic).
STATION_READERS = ("stations", "maintenance")


async def station_scope(conn: asyncpg.Connection, station_id: int) -> Scope | None:
    """Where a station sits (its cluster, network and organisation); None for an unknown station."""
    row = await conn.fetchrow(
        """SELECT s.cluster_id, c.network_id, n.organization_id FROM stations s
           JOIN clusters c ON c.id = s.cluster_id JOIN networks n ON n.id = c.network_id WHERE s.id = $1""",
        station_id,
    )
    if row is None:
        return None
    return Scope(network_id=row["network_id"], cluster_id=row["cluster_id"], organization_id=row["organization_id"])


async def load_permissions(conn: asyncpg.Connection, user_id: int) -> Permissions:
    rows = await conn.fetch(
        """
        SELECT p.perm_key, p.write, p.ou_id,
               ARRAY(SELECT network_id FROM ou_networks WHERE ou_id = p.ou_id ORDER BY 1) AS networks,
               ARRAY(SELECT ARRAY[c.id, c.network_id] FROM ou_clusters oc JOIN clusters c ON c.id = oc.cluster_id
                     WHERE oc.ou_id = p.ou_id ORDER BY c.id) AS clusters,
               ARRAY(SELECT app_label_id FROM ou_app_labels WHERE ou_id = p.ou_id ORDER BY 1) AS app_labels,
               ARRAY(SELECT organization_id FROM ou_organizations WHERE ou_id = p.ou_id ORDER BY 1)
                   AS organizations
        FROM user_permissions p
        WHERE p.user_id = $1
        ORDER BY p.id
        """,
        user_id,
    )
    return Permissions(
        tuple(
            Permission(
                perm_key=r["perm_key"],
                write=r["write"],
                ou=OrgUnit(
                    id=r["ou_id"],
                    networks=tuple(r["networks"]),
                    clusters=tuple((int(c[0]), int(c[1])) for c in r["clusters"]),
                    app_labels=tuple(r["app_labels"]),
                    organizations=tuple(r["organizations"]),
                ),
            )
            for r in rows
        )
    )


async def grant(
    conn: asyncpg.Connection,
    user_id: int,
    perm_key: str,
    *,
    write: bool,
    networks: list[int] = [],  # noqa: B006 - read only
    clusters: list[int] = [],  # noqa: B006
    app_labels: list[int] = [],  # noqa: B006
    organizations: list[int] = [],  # noqa: B006
) -> int:
    """Give a user a permission on a new OU; returns the OU id."""
    ou_id: int = await conn.fetchval("INSERT INTO ous DEFAULT VALUES RETURNING id")
    await conn.executemany("INSERT INTO ou_networks VALUES ($1, $2)", [(ou_id, n) for n in networks])
    await conn.executemany("INSERT INTO ou_clusters VALUES ($1, $2)", [(ou_id, c) for c in clusters])
    await conn.executemany("INSERT INTO ou_app_labels VALUES ($1, $2)", [(ou_id, a) for a in app_labels])
    await conn.executemany(
        "INSERT INTO ou_organizations VALUES ($1, $2)", [(ou_id, o) for o in organizations]
    )
    await conn.execute(
        "INSERT INTO user_permissions (user_id, perm_key, write, ou_id) VALUES ($1, $2, $3, $4)",
        user_id, perm_key, write, ou_id,
    )
    return ou_id


async def revoke(conn: asyncpg.Connection, user_id: int, perm_key: str) -> int:
    """Take every ``perm_key`` permission from a user; answers how many there were."""
    removed: int = await conn.fetchval(
        "WITH gone AS (DELETE FROM user_permissions WHERE user_id = $1 AND perm_key = $2 RETURNING 1)"
        " SELECT count(*) FROM gone",
        user_id, perm_key,
    )
    return removed
