"""What a user may see and use on the map: decided here, and only here.

- A network is SEEN by a user when it is public and shown by the user's app
  label, when it belongs to the user's organisation (matched by the domain of
  the user's email address), or when one of the user's permissions covers it.
- A seen network is USABLE (``cluster_is_accessible``, ``is_accessible``) unless
  it is reserved to its organisation's members (``organization_only``) and the
  user is neither a member nor holds a permission on it.
- Anonymous callers (public routes) see the public networks of the app label
  they name, and use none.
- A cluster is seen when its network is seen. HTTP (``GET /clusters/{id}``) and
  the feed (``cluster:<id>``) both ask ``seen_cluster``, and both answer an unseen
  cluster exactly like an unknown one, so neither tells that it exists.

The policy reads the catalog's networks and clusters through the small
protocols below (what it needs of them), so this shared helper does not import
the catalog package, which asks it (``catalog/service.py``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, TypeVar

import asyncpg

from ..db import Database
from .permissions import Permissions, Scope, load_permissions

#: The permission key of the support agents (``support:<network_id>``, the support routes).
SUPPORT = "support"
MAINTENANCE = "maintenance"


class Network(Protocol):
    """What the policy reads of a network (``catalog.memory.Network``)."""

    @property
    def id(self) -> int: ...
    @property
    def organization_id(self) -> int | None: ...
    @property
    def is_public(self) -> bool: ...
    @property
    def organization_only(self) -> bool: ...
    @property
    def app_label_ids(self) -> frozenset[int]: ...


class Cluster(Protocol):
    """What the policy reads of a cluster (``catalog.memory.Cluster``)."""

    @property
    def network_id(self) -> int: ...


ClusterT = TypeVar("ClusterT", bound=Cluster)
ClusterT_co = TypeVar("ClusterT_co", bound=Cluster, covariant=True)


class Catalog(Protocol[ClusterT_co]):
    """What the policy reads of the in-memory catalog (``catalog.memory.Catalog``)."""

    @property
    def networks(self) -> Mapping[int, Network]: ...
    @property
    def clusters(self) -> Mapping[int, ClusterT_co]: ...


@dataclass(frozen=True, slots=True)
class UserAccess:
    user_id: int | None
    app_label_id: int | None
    organization_ids: frozenset[int]
    permitted_networks: frozenset[int]  # networks some permission of the user covers

    def sees(self, network: Network) -> bool:
        return (
            (network.is_public and self.app_label_id is not None and self.app_label_id in network.app_label_ids)
            or (network.organization_id is not None and network.organization_id in self.organization_ids)
            or network.id in self.permitted_networks
        )

    def may_use(self, network: Network) -> bool:
        if self.user_id is None or not self.sees(network):
            return False
        if not network.organization_only:
            return True
        return network.organization_id in self.organization_ids or network.id in self.permitted_networks

    def seen_networks(self, catalog: Catalog[Cluster]) -> set[int]:
        return {n.id for n in catalog.networks.values() if self.sees(n)}


def seen_cluster(access: UserAccess, catalog: Catalog[ClusterT], cluster_id: int) -> ClusterT | None:
    """The cluster if ``access`` sees it; None for an unknown and an unseen one alike."""
    cluster = catalog.clusters.get(cluster_id)
    network = catalog.networks.get(cluster.network_id) if cluster is not None else None
    if cluster is None or network is None or not access.sees(network):
        return None
    return cluster


def support_networks(permissions: Permissions, catalog: Catalog[Cluster], *, write: bool = False) -> frozenset[int]:
    """The networks whose support agent a user is: a ``support`` permission on an OU covering the network
    (listed in it, or its organisation). Reading a network's reports (the list, ``support:<network_id>``)
    takes any such permission; acting on them (assign, resolve, reopen) one with ``write``.

    A cluster listed in an OU gives no support on its network: reports belong to networks.
    """
    return frozenset(
        network.id for network in catalog.networks.values()
        if permissions.allows(SUPPORT, Scope(network_id=network.id, organization_id=network.organization_id),
                              write=write)
    )


def maintenance_networks(permissions: Permissions, catalog: Catalog[Cluster], *,
                         write: bool = False) -> frozenset[int]:
    """The networks a user maintains: a ``maintenance`` permission on an OU covering the network (listed in
    it, or its organisation). Subscribing to ``maintenance:<network_id>`` takes any such permission.

    A cluster listed in an OU gives the maintenance of that cluster's objects (the HTTP routes check each
    object's scope), not of the whole network's topic.
    """
    return frozenset(
        network.id for network in catalog.networks.values()
        if permissions.allows(MAINTENANCE, Scope(network_id=network.id, organization_id=network.organization_id),
                              write=write)
    )


def unknown_cluster(cluster_id: int) -> str:
    """The one message for an unknown or unseen cluster (HTTP 404 + code 4, feed reply code 4)."""
    return f"no cluster {cluster_id}"


def anonymous(app_label_id: int | None) -> UserAccess:
    return UserAccess(None, app_label_id, frozenset(), frozenset())


@dataclass(frozen=True, slots=True)
class UserFacts:
    """What the access of a user is made of, as the database holds it: the user's app label, the
    organisations the user belongs to (by the domain of the email address) and the permissions."""

    app_label_id: int | None
    organization_ids: frozenset[int]
    permissions: Permissions


async def load_facts(conn: asyncpg.Connection, user_id: int) -> UserFacts:
    row = await conn.fetchrow(
        """SELECT u.app_label_id,
                  ARRAY(SELECT o.id FROM organizations o
                        WHERE o.email_domain = split_part(lower(u.email), '@', 2)) AS organizations
           FROM users u WHERE u.id = $1""",
        user_id,
    )
    return UserFacts(
        app_label_id=row["app_label_id"] if row else None,
        organization_ids=frozenset(row["organizations"] if row else ()),
        permissions=await load_permissions(conn, user_id),
    )


def access_from(user_id: int, facts: UserFacts, catalog: Catalog[Cluster]) -> UserAccess:
    """The access ``facts`` give over the networks of ``catalog`` (no database)."""
    items = facts.permissions.items
    permitted = {
        network.id for network in catalog.networks.values()
        for p in items
        if p.ou.covers(Scope(network_id=network.id, organization_id=network.organization_id))
    }
    permitted |= {n for p in items for _, n in p.ou.clusters}
    return UserAccess(
        user_id=user_id,
        app_label_id=facts.app_label_id,
        organization_ids=facts.organization_ids,
        permitted_networks=frozenset(permitted),
    )


async def load_access(conn: asyncpg.Connection, user_id: int, catalog: Catalog[Cluster]) -> UserAccess:
    return access_from(user_id, await load_facts(conn, user_id), catalog)


class _Entry:
    __slots__ = ("access", "at", "facts", "networks")

    def __init__(self, at: float, facts: UserFacts) -> None:
        self.at = at
        self.facts = facts
        self.networks: object = None  # the catalog's networks ``access`` was computed over
        self.access: UserAccess | None = None


class AccessCache:
    """Users' permissions and access, from memory: maps and routes read them far more often than they change.

    An entry is read from the database on a miss and kept until ``max_age`` (a safety net for writes made
    behind this process's back: a script, another process whose notice was lost) or until it is
    forgotten: every write of this process that changes a user's permissions, organisation (email
    address, a new organisation), or app label calls ``forget(user_id)`` (or ``forget_all()``) once it
    committed, and so does the cross-process link on a notice from another process.

    A read that raced with a forget (it started before, answered after) is not kept, so a forget is never
    undone by an older read. The access over the networks is computed again from the facts (no database)
    when the catalog was reloaded since (``catalog.networks`` is replaced on every reload).
    """

    def __init__(self, max_age: float = 60.0, size: int = 100_000) -> None:
        self.max_age = max_age
        self.size = size
        self._entries: dict[int, _Entry] = {}
        self._generation = 0  # bumped by every forget
        self.loads = 0  # database reads so far (a bench or a test looks)

    def _fresh(self, user_id: int) -> _Entry | None:
        entry = self._entries.get(user_id)
        if entry is None:
            return None
        if time.monotonic() - entry.at > self.max_age:
            del self._entries[user_id]
            return None
        return entry

    async def _entry(self, db: Database, user_id: int) -> _Entry:
        entry = self._fresh(user_id)
        if entry is not None:
            return entry
        generation = self._generation
        facts = await db.run(lambda conn: load_facts(conn, user_id))
        self.loads += 1
        entry = _Entry(time.monotonic(), facts)
        if generation == self._generation:
            if len(self._entries) >= self.size and user_id not in self._entries:
                del self._entries[next(iter(self._entries))]  # the oldest read
            self._entries[user_id] = entry
        return entry

    async def facts(self, db: Database, user_id: int) -> UserFacts:
        return (await self._entry(db, user_id)).facts

    async def permissions(self, db: Database, user_id: int) -> Permissions:
        """The permissions of ``user_id`` (HTTP routes, the feed, support alike)."""
        return (await self._entry(db, user_id)).facts.permissions

    async def of(self, db: Database, catalog: Catalog[Cluster], user_id: int) -> UserAccess:
        """What ``user_id`` sees and may use (HTTP, the feed, badges alike)."""
        entry = await self._entry(db, user_id)
        access = entry.access
        if access is None or entry.networks is not catalog.networks:
            access = access_from(user_id, entry.facts, catalog)
            entry.access, entry.networks = access, catalog.networks
        return access

    def forget(self, user_id: int) -> None:
        """``user_id``'s permissions, organisation or app label changed: read them again on next use."""
        self._generation += 1
        self._entries.pop(user_id, None)

    def forget_all(self) -> None:
        """Anyone's may have changed (a new organisation, a lost notice): read every user's again."""
        self._generation += 1
        self._entries.clear()
