"""``make run``'s launcher as a subprocess: the demo city comes alive, the demo rider rents, everything stops."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import httpx
import pytest

from knot_rt.demo import DEMO_ACCOUNTS
from knot_rt.launcher import STATIONS_FILE, VEHICLES_FILE
from tests.test_cli import STOP_TIMEOUT, Served, cli_env, processes_mentioning

KLEBER = {"lat": 48.58336, "lng": 7.74583}


class Launched(Served):
    """``python -m knot_rt.launcher``: its stdout read on a thread, its stderr (the children's logs) in a file."""

    def __init__(self, env: dict[str, str], data_dir: Path) -> None:
        super().__init__(env, data_dir / "launcher.log", [sys.executable, "-m", "knot_rt.launcher"])


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])


def children_of(pid: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with suppress(OSError, IndexError):
                if parent_of(int(entry.name)) == pid:
                    found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def login_rider(api: str) -> dict[str, str]:
    email, password, _ = next(account for account in DEMO_ACCOUNTS if account[2] == "rider")
    response = httpx.post(f"{api}/api/application/login", timeout=30, json={
        "email": email, "password": password, "scope": "app", "app_label": "knot"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['token']}"}


def docked_at_kleber(api: str, auth: dict[str, str]) -> dict[str, Any]:
    """A vehicle docked at Place Kléber, as the rider's app finds it: the map, then the cluster's vehicles."""
    window = {"lat": KLEBER["lat"], "lng": KLEBER["lng"], "latdeg": 0.004, "lngdeg": 0.004}
    clusters = httpx.get(f"{api}/api/application/map", params=window, headers=auth, timeout=30).json()["clusters"]
    kleber = next(c for c in clusters if c["name"] == "Place Kléber")
    assert kleber["available_vehicles"] > 0  # the simulated stations reported their vehicles
    vehicles = httpx.get(f"{api}/api/application/clusters/{kleber['cluster_id']}/vehicles", headers=auth,
                         timeout=30).json()["data"]
    found: dict[str, Any] = vehicles[0]
    return found


def rents_of(api: str, auth: dict[str, str]) -> list[dict[str, Any]]:
    response = httpx.get(f"{api}/api/application/users/rents", headers=auth, timeout=30)
    assert response.status_code == 200, response.text
    found: list[dict[str, Any]] = response.json()["data"]
    return found


def test_make_run_brings_the_demo_city_to_life_and_the_demo_rider_rents(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url, PORT="0", KNOT_STATION_PORT="0", KNOT_DEMO_RIDE_SECONDS="1")
    with Launched(env, data_dir) as launched:
        api = launched.api_base()
        live = launched.line_starting("demo city live:").split()
        online, _, total = live[3].partition("/")
        assert int(online) == int(total) > 60
        assert "; 6 free-floating vehicles with a module simulated too" in " ".join(live)
        assert len(json.loads((data_dir / VEHICLES_FILE).read_text())) == 6  # handed to the simulator
        simulator = int(live[live.index("(pid") + 1].rstrip(");"))
        children = children_of(launched.process.pid)
        assert simulator in children and len(children) == 2  # the server and the simulator, side by side

        auth = login_rider(api)
        vehicle = docked_at_kleber(api, auth)
        response = httpx.post(f"{api}/api/application/vehicles/unlock", headers=auth, timeout=30,
                              json={"serial_number": vehicle["serial_number"], **KLEBER})
        assert response.status_code == 200, response.text
        trip = response.json()["data"]["trip_id"]
        rents = rents_of(api, auth)
        assert [(r["trip_id"], r["serial_number"]) for r in rents] == [(trip, vehicle["serial_number"])]
        # The simulated rider docks the vehicle back a second later: the rent ends, priced by the demo tariff.
        deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
        while rents[0]["state"] != "ended" and time.monotonic() < deadline:
            time.sleep(0.2)
            rents = rents_of(api, auth)
        assert (rents[0]["state"], rents[0]["price"], rents[0]["currency"]) == ("ended", 1.25, "EUR")

        launched.process.send_signal(signal.SIGTERM)
        assert launched.process.wait(timeout=STOP_TIMEOUT * 2) == 0, launched.stderr_tail()
        assert " stopped " in launched.stderr_tail()  # the simulator's closing summary: its stations stopped cleanly
    assert not any(alive(pid) for pid in children)
    assert processes_mentioning(str(data_dir / STATIONS_FILE)) == []


def test_a_child_that_dies_stops_the_other_and_the_launcher(database_url: str, data_dir: Path) -> None:
    env = cli_env(data_dir, database_url, PORT="0", KNOT_STATION_PORT="0")
    with Launched(env, data_dir) as launched:
        api = launched.api_base()
        live = launched.line_starting("demo city live:").split()
        simulator = int(live[live.index("(pid") + 1].rstrip(");"))
        children = children_of(launched.process.pid)
        os.kill(simulator, signal.SIGKILL)
        assert "knot-rt simulate exited" in launched.line_starting("knot_rt launcher:")
        assert launched.process.wait(timeout=STOP_TIMEOUT * 2) == 1
        assert not any(alive(pid) for pid in children)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{api}/health", timeout=5)  # the server was stopped too
