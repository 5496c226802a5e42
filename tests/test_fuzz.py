"""The schemathesis stage: every operation of /openapi.json, fuzzed against the real server (issue 7).

Run alone with ``make fuzz`` (or ``pytest -m fuzz``); ``make test`` runs it too.

- The real server on a loopback port with a real database and the demo data
  (``tests.live_server``), logged in as the demo operator (every permission on
  the demo network); public operations and one secured call in five go out
  anonymous.
- Every answer must be a JSON envelope with an integer ``code``, and no 5xx
  but the documented ones: a 501/502/503/504 whose code the error table
  (``x-error-codes``) gives that status (payments or a login provider not
  configured, a station offline or slow, the database unavailable).
- Reproducible: Hypothesis runs derandomized (a fixed seed, no example
  database), so CI draws the same cases every run; the number of cases per
  operation is bounded (``FUZZ_EXAMPLES``, default below) to keep the stage
  near a minute on this machine.
- Calls that end the operator's session (``/logout``) are followed by a new login.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis

from knot_rt.config import RateLimits
from tests.live_server import OPERATOR, OTHER_BEARER, LiveServer, live_server, module_database, openapi_document
from tests.support import SmtpSink

pytestmark = pytest.mark.fuzz

DOCUMENT = openapi_document()

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
ANONYMOUS_EVERY = 5
DOCUMENTED_5XX = {
    (entry["status"], entry["code"]) for entry in DOCUMENT["x-error-codes"] if 501 <= entry["status"] <= 504
}

CONFIG = schemathesis.Config.from_dict({
    "seed": 7,
    "generation": {"max-examples": EXAMPLES, "deterministic": True, "mode": "all"},
    "phases": {"stateful": {"enabled": False}},
})
schema = schemathesis.openapi.from_dict(DOCUMENT, config=CONFIG)


class Operator:
    """The operator's session for the fuzzer, opened again when a fuzzed call ends it."""

    def __init__(self, live: LiveServer) -> None:
        self.live = live
        self.token = ""
        self.calls = 0
        self.renew()

    def renew(self) -> None:
        self.token = self.live.login(*OPERATOR)["token"]

    def still_valid(self) -> bool:
        response = httpx.get(f"{self.live.base_url}/api/application/users", timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})
        return response.status_code == 200


@pytest.fixture(scope="module")
def live(pg_server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    # Per-client limits would answer 429 to most of the stage; the limits have their own tests.
    limits = RateLimits(**{name: "1000000/minute" for name in RateLimits.__dataclass_fields__})
    sink = SmtpSink()
    sink.start()
    try:
        with module_database(pg_server_url, template_url) as url, live_server(
            url, data_dir, smtp_url=sink.url, rate_limits=limits
        ) as server:
            yield server
    finally:
        sink.stop()


@pytest.fixture(scope="module")
def operator(live: LiveServer) -> Operator:
    return Operator(live)


GBFS_ENVELOPE = {"last_updated", "ttl", "version", "data"}


def answer_fault(method: str, status: int, body: Any, path: str = "") -> str | None:
    if method in {"HEAD", "OPTIONS"} and status < 300 and body is None:
        return None  # no body by definition (HEAD), or the methods' list in ``Allow`` (OPTIONS)
    if path.startswith("/gbfs/") and status == 200 and isinstance(body, dict) and set(body) == GBFS_ENVELOPE:
        return None  # a GBFS file has the GBFS envelope, not the code one (ROUTES); its errors have the code
    if not isinstance(body, dict) or type(body.get("code")) is not int:
        return "the answer is not a JSON envelope with an integer code"
    if status >= 500 and (status, body["code"]) not in DOCUMENTED_5XX:
        return f"server error {status} with code {body['code']}"
    return None


@schema.parametrize()
def test_no_server_error(case: schemathesis.Case, live: LiveServer, operator: Operator) -> None:
    operator.calls += 1
    secured = bool(case.operation.definition.raw.get("security"))
    anonymous = not secured or operator.calls % ANONYMOUS_EVERY == 0
    headers = {} if anonymous else {"Authorization": f"Bearer {operator.token}"}
    if anonymous and case.headers:
        case.headers.pop("Authorization", None)
    response = case.call(base_url=live.base_url, headers=headers, timeout=30)
    try:
        body = response.json()
    except ValueError:
        body = None
    fault = answer_fault(case.method.upper(), response.status_code, body, case.operation.path)
    assert fault is None, f"{fault}: {response.status_code} {response.text[:300]}\n{case.as_curl_command()}"
    own_bearer = (case.operation.method.upper(), case.operation.path) in OTHER_BEARER
    if not anonymous and not own_bearer and response.status_code == 401 and not operator.still_valid():
        operator.renew()  # the call ended the session (logout): carry on with a new one
