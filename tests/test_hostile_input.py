"""Hostile input on every route of /openapi.json: 400 + code 2 naming the field, or 404; never 500 (issue 7).

Invalid UTF-8, NUL and lone surrogates in bodies and query strings, integers
beyond 64 bits, NaN and Infinity, JSON nested too deep, oversized path ids and
odd headers, each sent to every operation the OpenAPI document lists, logged in
as the demo operator (every permission on the demo network). One server serves
the whole module (``tests.live_server``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from knot_rt.services.tokens import PURPOSE_MFA
from protocols.errors import ErrorCode
from tests.live_server import OPERATOR, OTHER_BEARER, LiveServer, live_server, module_database, openapi_document
from tests.support import bearer

BIG = 2**64
DEEP = 40
DOCUMENT = openapi_document()
SECOND_FACTOR = ("POST", "/api/application/login/2fa")  # its bearer is a second-factor token


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    spec: dict[str, Any]

    def __str__(self) -> str:
        return f"{self.method} {self.path}"

    def params(self, where: str) -> list[dict[str, Any]]:
        return [p for p in self.spec.get("parameters", []) if p["in"] == where]

    def url(self, **path_values: str) -> str:
        url = self.path
        for parameter in self.params("path"):
            url = url.replace("{" + parameter["name"] + "}", path_values.get(parameter["name"], "1"))
        return url

    def body_fields(self) -> list[str] | None:
        content = self.spec.get("requestBody", {}).get("content", {}).get("application/json")
        if content is None:
            return None
        schema = resolve(content["schema"])
        return list(schema.get("properties", {})) or ["field"]


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rpartition("/")[2]
        schema = DOCUMENT["components"]["schemas"][name]
    return schema


def schema_types(schema: dict[str, Any]) -> set[str]:
    schema = resolve(schema)
    found = {schema["type"]} if isinstance(schema.get("type"), str) else set()
    for option in schema.get("anyOf", []) + schema.get("oneOf", []):
        found |= schema_types(option)
    return found


OPERATIONS = [
    Operation(method.upper(), path, spec)
    for path, item in DOCUMENT["paths"].items()
    for method, spec in item.items()
    if method in {"get", "post", "put", "delete", "patch"}
]


@pytest.fixture(scope="module")
def live(pg_server_url: str, template_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir: Path = tmp_path_factory.mktemp("live")
    with module_database(pg_server_url, template_url) as url, live_server(url, data_dir) as server:
        yield server


@pytest.fixture(scope="module")
def http(live: LiveServer) -> Iterator[httpx.Client]:
    token = live.login(*OPERATOR)["token"]
    with httpx.Client(base_url=live.base_url, headers=bearer(token), timeout=30) as client:
        yield client


Check = Callable[[httpx.Response], str | None]


def envelope_fault(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return f"not JSON: {response.status_code} {response.text[:120]!r}"
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("code"), int) or isinstance(body.get("code"), bool):
        return f"no integer code: {response.text[:120]!r}"
    return None


def refused(field: str, operation: Operation) -> Check:
    """400 + code 2 naming ``field`` (or 401 + code 3 on a route with its own kind of bearer)."""

    def check(response: httpx.Response) -> str | None:
        fault = envelope_fault(response)
        if fault:
            return fault
        body = response.json()
        if ((operation.method, operation.path) in OTHER_BEARER - {SECOND_FACTOR}
                and (response.status_code, body["code"]) == (401, 3)):  # no body to read: the token comes first
            return None
        if (response.status_code, body["code"]) != (400, 2):
            return f"expected 400 + code 2, got {response.status_code} {body}"
        if field not in body.get("message", ""):
            return f"message does not name {field!r}: {body.get('message')!r}"
        return None

    return check


def unknown(response: httpx.Response) -> str | None:
    fault = envelope_fault(response)
    if fault:
        return fault
    if (response.status_code, response.json()["code"]) != (404, 4):
        return f"expected 404 + code 4, got {response.status_code} {response.text[:160]}"
    return None


GBFS_ENVELOPE = {"last_updated", "ttl", "version", "data"}


def no_server_error(response: httpx.Response) -> str | None:
    """No 5xx, but the answer of a public payment route when payments are not configured (501 code 45)."""
    if response.status_code == 501 and response.json().get("code") == ErrorCode.PAYMENTS_UNAVAILABLE:
        return envelope_fault(response)
    if response.status_code >= 500:
        return f"server error {response.status_code} {response.text[:160]}"
    if response.status_code == 200 and response.request.url.path.startswith("/gbfs/") \
            and set(response.json()) == GBFS_ENVELOPE:
        return None  # a public GBFS file (its Authorization ignored) has the GBFS envelope, not the code one
    return envelope_fault(response)


@dataclass
class Probe:
    what: str
    request: dict[str, Any]
    check: Check


def json_request(body: bytes, **headers: str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": "application/json", **headers}}


def body_probes(operation: Operation) -> Iterator[Probe]:
    fields = operation.body_fields()
    if fields is None:
        return
    url = operation.url()
    for field in fields:
        key = json.dumps(field)
        raw: dict[str, bytes] = {
            "NUL": json.dumps({field: "a\u0000b"}).encode(),
            "a lone surrogate": json.dumps({field: "a\ud800b"}).encode(),
            "an integer beyond 64 bits": json.dumps({field: BIG}).encode(),
            "a negative integer beyond 64 bits": json.dumps({field: -BIG}).encode(),
            "NaN": b"{" + key.encode() + b": NaN}",
            "-Infinity": b"{" + key.encode() + b": -Infinity}",
            "1e400": b"{" + key.encode() + b": 1e400}",
            "5,000 digits": b"{" + key.encode() + b": " + b"7" * 5000 + b"}",
            "NUL in a key": json.dumps({field: {"k\u0000": 1}}).encode(),
            "NUL in a list": json.dumps({field: ["ok", "a\u0000"]}).encode(),
            "nesting": json.dumps({field: json.loads("[" * DEEP + "]" * DEEP)}).encode(),
        }
        for what, body in raw.items():
            yield Probe(f"body {field}: {what}", {"url": url, **json_request(body)}, refused(field, operation))
    whole = {
        "invalid UTF-8": b'{"' + fields[0].encode() + b'": "\xff\xfe"}',
        "an overlong UTF-8 NUL": b'{"' + fields[0].encode() + b'": "\xc0\x80"}',
        "a UTF-8 encoded surrogate": b'{"' + fields[0].encode() + b'": "\xed\xa0\x80"}',
        "100,000 nested arrays": b"[" * 100_000 + b"]" * 100_000,
    }
    for what, body in whole.items():
        yield Probe(f"body: {what}", {"url": url, **json_request(body)}, refused("body", operation))
    yield Probe("body with an unknown charset", {"url": url, **json_request(
        json.dumps({fields[0]: "a\u0000"}).encode(), **{"content-type": "application/json; charset=x-unknown"})},
        refused(fields[0], operation))


def query_probes(operation: Operation) -> Iterator[Probe]:
    url = operation.url()
    parameters = operation.params("query") or [{"name": "extra", "schema": {"type": "string"}}]
    for parameter in parameters:
        name = parameter["name"]
        values = {"NUL": "%00", "invalid UTF-8": "%FF", "a UTF-8 encoded surrogate": "%ED%A0%80",
                  "NUL in the name": None}
        types = schema_types(parameter.get("schema", {}))
        if "integer" in types:
            values["an integer beyond 64 bits"] = str(BIG)
        if "number" in types or "integer" in types:
            values.update({"nan": "nan", "inf": "inf", "1e400": "1e400"})
        for what, value in values.items():
            if value is None:
                query, field = f"{name}%00=1", "query parameter name"
            else:
                query, field = f"{name}={value}", name
            yield Probe(f"query {name}: {what}", {"url": f"{url}?{query}"}, refused(field, operation))


def path_probes(operation: Operation) -> Iterator[Probe]:
    for parameter in operation.params("path"):
        name = parameter["name"]
        for what, value in {"beyond 64 bits": str(BIG), "2^63": str(2**63), "an Arabic-Indic digit": "%D9%A3",
                            "a superscript two": "%C2%B2", "negative": "-1", "NUL": "1%00",
                            "invalid UTF-8": "%FF"}.items():
            yield Probe(f"path {name}: {what}", {"url": operation.url(**{name: value})}, unknown)


def header_probes(operation: Operation) -> Iterator[Probe]:
    url = operation.url()
    for what, value in {"Latin-1 bytes": b"Bearer \xff\xfe", "a 5,000-character token": b"Bearer " + b"a" * 5000,
                        "a JWT of garbage": b"Bearer e30.e30.e30"}.items():
        yield Probe(f"Authorization: {what}", {"url": url, "headers": {"Authorization": value}}, no_server_error)


def probes(operation: Operation) -> Iterator[Probe]:
    yield from body_probes(operation)
    yield from query_probes(operation)
    yield from path_probes(operation)
    yield from header_probes(operation)


def test_every_operation_is_covered() -> None:
    assert len(OPERATIONS) >= 50
    assert any(operation.params("path") for operation in OPERATIONS)
    assert any(operation.body_fields() for operation in OPERATIONS)


@pytest.mark.parametrize("operation", OPERATIONS, ids=str)
def test_hostile_input_is_refused(live: LiveServer, http: httpx.Client, operation: Operation) -> None:
    # The second factor's bearer is a second-factor token: with one, its body is really read.
    own_token = live.svc.signer.purpose_token(PURPOSE_MFA, 1, 300, scope="app", app_label_id=None, totp_step=0)
    faults = []
    count = 0
    for probe in probes(operation):
        request = probe.request
        headers = request.get("headers", {})
        if (operation.method, operation.path) == SECOND_FACTOR and "Authorization" not in headers:
            request = {**request, "headers": {**headers, **bearer(own_token)}}
        response = http.request(operation.method, **request)
        count += 1
        fault = probe.check(response)
        if fault is not None:
            faults.append(f"{probe.what}: {fault}")
    assert count > 0
    assert not faults, f"{operation}:\n" + "\n".join(faults)


@pytest.mark.parametrize("path", ["/api/application/login", "/api/application/users", "/api/application/clusters",
                                  "/api/application/consents", "/api/application/discounts/code",
                                  "/api/application/login/check"])
def test_invalid_utf8_body_is_400(http: httpx.Client, path: str) -> None:
    """The finding of issue 7, as filed: these answered 500 (UnicodeDecodeError)."""
    response = http.post(path, content=b'{"email": "caf\xe9@example.com", "name": "\xff"}',
                         headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == 2
    assert "UTF-8" in response.json()["message"]


def test_the_server_still_answers(http: httpx.Client) -> None:
    """After every hostile request above, the same server serves a plain request."""
    response = http.get("/api/application/networks")
    assert response.status_code == 200
    assert response.json()["data"]
