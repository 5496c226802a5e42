"""``knot-rt vehicle create``, run as a subprocess against the test database; the vehicle it adds is seen
by the running service (the same database) as one of the network's."""

from __future__ import annotations

from pathlib import Path

from knot_rt.vehicles.store import network_vehicles
from tests.support import Harness
from tests.test_station_cli import error_line, knot_rt, printed


async def test_vehicle_create_prints_the_vehicle_and_the_network_owns_it(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    network = await harness.make.network("Lyon")
    model = await harness.make.vehicle_model("Max G30", "Segway-Ninebot", "kick-scooter")
    [first] = printed(await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                                    "--serial", "SN-0001", "--model", str(model)))
    [second] = printed(await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                                     "--serial", "SN-0002", "--id", "4711"))

    assert first == {"vehicle_id": first["vehicle_id"], "serial_number": "SN-0001", "network_id": network,
                     "model_id": model, "vehicle_type": "kick-scooter"}
    assert second == {"vehicle_id": 4711, "serial_number": "SN-0002", "network_id": network, "model_id": None,
                      "vehicle_type": None}
    rows = await harness.db.fetch("SELECT id, serial_number, network_id FROM vehicles ORDER BY serial_number")
    assert [tuple(r) for r in rows] == [(first["vehicle_id"], "SN-0001", network), (4711, "SN-0002", network)]
    # A station of the network reporting it docked reports one of its own vehicles, not an unknown one.
    cluster = await harness.make.cluster(network)
    station = await harness.make.station(cluster, 2)
    members = await harness.db.run(
        lambda conn: network_vehicles(conn, station.station_id, [first["vehicle_id"], 4711, 99])
    )
    assert members == {first["vehicle_id"], 4711}


async def test_an_unknown_network_fails_with_one_line_exit_2_and_creates_nothing(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    result = await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", "999999", "--serial", "SN-1")
    assert "network 999999" in error_line(result)
    assert result.returncode == 2
    assert await harness.db.fetchval("SELECT count(*) FROM vehicles") == 0


async def test_a_serial_number_already_used_fails_with_one_line_exit_2(
    harness: Harness, database_url: str, tmp_path: Path
) -> None:
    network = await harness.make.network("Lyon")
    await harness.make.vehicle(network, 12, "SN-12")
    result = await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                           "--serial", "SN-12")
    assert "'SN-12' is already used" in error_line(result)
    assert result.returncode == 2
    taken = await knot_rt(database_url, tmp_path, "vehicle", "create", "--network", str(network),
                          "--serial", "SN-13", "--id", "12")
    assert "vehicle id 12 is already used" in error_line(taken)
    assert taken.returncode == 2
    assert [tuple(r) for r in await harness.db.fetch("SELECT id, serial_number FROM vehicles")] == [(12, "SN-12")]
