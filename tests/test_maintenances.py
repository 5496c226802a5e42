"""Maintenances (issue 13): types, open/update/resolve/history of stations, spots and vehicles, over the real
server (hypercorn on port 0, real PostgreSQL) and the real feed socket."""

from __future__ import annotations

import pytest

from knot_rt.maintenance.service import UnknownMaintenance, WrongType
from tests.support import Harness


async def test_service_opens_resolves_and_refuses_a_second_automatic_one(harness: Harness) -> None:
    network = await harness.make.network()
    cluster = await harness.make.cluster(network)
    [(station_id, _)] = await harness.make.stations(cluster, 1, 2)
    svc = harness.svc.maintenance
    spot = await svc.spot_by_number(station_id, 1)
    assert spot is not None and spot.network_id == network and spot.station_id == station_id
    seen: list[tuple[int, bool]] = []
    svc.hooks.append(lambda m, high: seen.append((m.id, high)))
    first = await svc.open_automatic(spot, "charge-fault", "charge-fault")
    assert first is not None and first.started_by == "automatic" and first.opened_by == "station"
    assert await svc.open_automatic(spot, "charge-fault", "charge-fault") is None
    with pytest.raises(WrongType):
        await svc.open(spot, "flat-tyre", by_user_id=None, automatic_code="x")
    assert [m.id for m in await svc.ongoing_of(spot)] == [first.id]
    resolved = await svc.resolve_automatic(spot, "charge-fault")
    assert resolved is not None and resolved.stopped_by == "automatic" and not resolved.is_open
    assert await svc.ongoing_of(spot) == []
    assert [m.id for m in await svc.history(spot)] == [first.id]
    assert seen == [(first.id, False), (first.id, False)]
    with pytest.raises(UnknownMaintenance):
        await svc.resolve(10**9, by_user_id=None)
