"""``knot-rt maintenance-type list|create|delete``, run as a subprocess against the test database; the types
it makes are the ones the running service lists and opens maintenances of."""

from __future__ import annotations

from pathlib import Path

from tests.support import Harness, bearer, open_test_session
from tests.test_station_cli import error_line, knot_rt, printed


async def test_create_list_delete_a_type(harness: Harness, database_url: str, tmp_path: Path) -> None:
    listed = printed(await knot_rt(database_url, tmp_path, "maintenance-type", "list", "--lang", "fr"))
    assert {"type_key": "flat-tyre", "target_type": "vehicle", "type_name": "Pneu crevé"}.items() <= next(
        t for t in listed if t["type_key"] == "flat-tyre").items()
    [made] = printed(await knot_rt(database_url, tmp_path, "maintenance-type", "create", "mirror", "--target",
                                   "vehicle", "--severity", "info", "--name", "en=Broken mirror",
                                   "--name", "fr=Rétroviseur cassé"))
    assert made == {**made, "type_key": "mirror", "target_type": "vehicle", "severity": "info",
                    "type_name": "Broken mirror", "deletion_date": None,
                    "names": {"en": "Broken mirror", "fr": "Rétroviseur cassé"}}
    again = await knot_rt(database_url, tmp_path, "maintenance-type", "create", "mirror", "--target", "spot",
                          "--name", "en=Mirror")
    assert "already exists" in error_line(again) and again.returncode == 2
    bad = await knot_rt(database_url, tmp_path, "maintenance-type", "create", "x", "--target", "spot",
                        "--name", "english")
    assert "LANG=TEXT" in error_line(bad) and bad.returncode == 2

    # The service opens maintenances of it.
    network = await harness.make.network()
    await harness.make.vehicle(network, 7, "SCOOT007")
    operator = await harness.create_user("op@example.com", perms=[("maintenance", True)], networks=[network])
    token = await open_test_session(harness, operator)
    answer = await harness.client.post("/api/application/maintenances/vehicles", headers=bearer(token),
                                       json={"maintenance_type": "mirror", "vehicle_id": 7})
    assert answer.json()["data"]["severity"] == "info"

    assert printed(await knot_rt(database_url, tmp_path, "maintenance-type", "delete", "mirror")) == [
        {"type_key": "mirror", "deleted": True}]
    gone = await knot_rt(database_url, tmp_path, "maintenance-type", "delete", "mirror")
    assert "no maintenance type 'mirror'" in error_line(gone) and gone.returncode == 2
    keys = [t["type_key"] for t in printed(await knot_rt(database_url, tmp_path, "maintenance-type", "list"))]
    assert "mirror" not in keys
    deleted = printed(await knot_rt(database_url, tmp_path, "maintenance-type", "list", "--all"))
    assert next(t for t in deleted if t["type_key"] == "mirror")["deletion_date"] is not None
    answer = await harness.client.post("/api/application/maintenances/vehicles", headers=bearer(token),
                                       json={"maintenance_type": "mirror", "vehicle_id": 7})
    assert (answer.status_code, answer.json()["code"]) == (400, 47)
