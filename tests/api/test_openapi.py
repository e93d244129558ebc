"""``/v1/openapi.json`` tells the truth about a real ``flowy serve``.

Schemathesis fuzzes every operation of the document (valid and invalid requests, with and
without the API key, and stateful sequences along the links it infers) with all of its
checks: every answer must have a documented status, content type, body and headers,
valid requests must be accepted and invalid ones refused, and an authenticated operation
must refuse a missing or wrong key (``ignored_auth``).  The targeted tests below cover
what fuzzing cannot reach (a file behind a genuine signed link, a finished event
stream) and the document's own promises (every route, 401/429 on every authenticated
operation, examples that match their schemas).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import fastapi.routing
import jsonschema
import pytest
import requests
import schemathesis

import flowy
from flowy.api.app import create_app
from flowy.settings import Settings
from tests.flowy_process import FlowyProcess

#: Generated cases per operation and phase; about 1,500 requests in all (see the test).
EXAMPLES_PER_OPERATION = 50
#: Operations whose schema-valid requests may still be refused with 422, because what
#: makes them valid is not expressible in a schema: a workflow must be a graph the
#: catalog can run (node types, params, wires, cycles), and a run's inputs are those of
#: the app it names (which inputs exist, which are required, what each takes) and an
#: Idempotency-Key must not have been used with another body.  Everything else about
#: these operations is checked as for any other.
STATE_DEPENDENT_422 = ["POST /v1/apps", "PATCH /v1/apps/{app_id}", "POST /v1/apps/{app_id}/runs"]

ECHO = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "output.text",
            "label": "Echo",
            "inputs": {"text": {"node": "node_1", "port": "text"}},
        },
    ]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    srv = FlowyProcess(
        tmp_path_factory.mktemp("openapi"),
        env={
            # Thousands of requests: the rate limit must not be what answers them.
            "FLOWY_LIMITS__REQUESTS_PER_MINUTE": "1000000",
            "FLOWY_LIMITS__BURST": "1000000",
            # Generated run requests may name any webhook URL: send nothing anywhere.
            # (Media URLs the fuzzer can get a run started with are the documented
            # examples', on loopback, which the address guard refuses without a lookup.)
            "FLOWY_WEBHOOKS__DISPATCH": "false",
        },
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def document(server: FlowyProcess) -> dict[str, Any]:
    res = requests.get(f"{server.api}/openapi.json", timeout=10)
    assert res.status_code == 200
    doc: dict[str, Any] = res.json()
    return doc


@pytest.fixture(scope="module")
def finished_runs(server: FlowyProcess) -> list[str]:
    res = server.post("/apps", json={"title": "Echo", "workflow": ECHO, "published": True})
    assert res.status_code == 201, res.text
    app_id = res.json()["data"]["id"]
    runs = []
    for text in ("one", "two", "three"):
        made = server.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": text}})
        assert made.status_code == 201, made.text
        runs.append(server.wait_run(made.json()["data"]["runId"])["runId"])
    return runs


def _cursors(server: FlowyProcess) -> list[str]:
    """Cursors the server gave out: a cursor is opaque, valid only as it was given."""
    cursors, cursor = [""], None
    for _ in range(2):
        page = server.get("/runs", params={"limit": 1, **({"cursor": cursor} if cursor else {})})
        cursor = page.json()["nextCursor"]
        assert cursor
        cursors.append(cursor)
    return cursors


def _config(cursors: list[str]) -> str:
    statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]
    return f"""
request-timeout = 30
# One worker: hypothesis's lambda descriptions are not thread-safe on Python 3.11 ("AST
# constructor recursion depth mismatch" from parallel workers).
workers = 1

[generation]
max-examples = {EXAMPLES_PER_OPERATION}
deterministic = true

[checks]
ignored_auth.enabled = true

[parameters]
"query.cursor" = {{ dictionary = "cursors" }}

[dictionaries]
cursors = {{ values = {json.dumps(cursors)} }}

[[operations]]
include-name = {json.dumps(STATE_DEPENDENT_422)}
checks.positive_data_acceptance.expected-statuses = {json.dumps(statuses)}
"""


# --------------------------------------------------------------------------- coverage


def test_every_route_is_in_the_document(document: dict[str, Any], tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path))  # built, never started
    own = {app.openapi_url, app.docs_url, app.swagger_ui_oauth2_redirect_url}
    own |= {"/", "/console", "/console/", "/console/{name}"}  # the web console's pages
    # FastAPI >= 0.16x nests included routers in app.routes; this flattens them.
    flatten = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(flatten(app.routes) if flatten else app.routes)
    served, undocumented = set(), []
    for route in routes:
        path = route.path_format  # "{endpoint_id}" for "{endpoint_id:id}"
        if path in own:
            continue  # the document itself, its viewer, and the console
        for method in route.methods or ():
            served.add(f"{method} {path}")
            if method.lower() not in document["paths"].get(path, {}):
                undocumented.append(f"{method} {path}")
    assert undocumented == []
    documented = {f"{m.upper()} {p}" for p, item in document["paths"].items() for m in item}
    assert documented == served
    assert len(served) >= 35


def test_authenticated_operations_document_401_and_429(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": document["components"]["securitySchemes"]["bearerAuth"]["description"],
    }
    assert document["security"] == [{"bearerAuth": []}]
    public = []
    for path, item in document["paths"].items():
        for method, op in item.items():
            name = f"{method.upper()} {path}"
            responses = op["responses"]
            assert not any(c.startswith("5") for c in responses), name
            if op.get("security") == []:
                public.append(name)
                assert "401" not in responses, name
                continue
            assert "security" not in op, name  # the global bearer requirement applies
            assert responses["401"]["headers"]["WWW-Authenticate"]["required"], name
            assert responses["429"]["headers"]["Retry-After"]["required"], name
            for code, answer in responses.items():
                if code.startswith("2") and "application/json" in answer.get("content", {}):
                    assert "RateLimit-Remaining" in answer["headers"], name
    assert sorted(public) == ["GET /v1/files/{asset_id}/{filename}", "GET /v1/health"]


# --------------------------------------------------------------------------- shapes


def _validator(document: dict[str, Any], name: str) -> jsonschema.Draft202012Validator:
    """Validates against a component of the document (OpenAPI 3.1: JSON Schema 2020-12)."""
    schema = {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
    return jsonschema.Draft202012Validator(schema)


def _answer_schema(document: dict[str, Any], method: str, path: str, status: str) -> str:
    ref: str = document["paths"][path][method]["responses"][status]["content"]["application/json"][
        "schema"
    ]["$ref"]
    return ref.rsplit("/", 1)[-1]


def test_example_apps_match_the_documented_shape(
    server: FlowyProcess, document: dict[str, Any]
) -> None:
    name = _answer_schema(document, "get", "/v1/apps/{app_id}", "200")
    assert name == "AppEnvelope"
    validator = _validator(document, name)
    apps = server.get("/apps").json()["data"]
    examples = list((Path(flowy.__file__).parent / "examples").glob("*.json"))
    shipped = [a for a in apps if a["title"] != "Echo"]
    assert len(shipped) >= len(examples)
    for app in shipped:
        answer = server.get(f"/apps/{app['id']}").json()
        errors = [e.message for e in validator.iter_errors(answer)]
        assert errors == [], (app["title"], errors)
    listed = _validator(document, _answer_schema(document, "get", "/v1/apps", "200"))
    assert list(listed.iter_errors(server.get("/apps").json())) == []


def test_documented_examples_match_their_schemas(document: dict[str, Any]) -> None:
    checked = 0
    for name, schema in document["components"]["schemas"].items():
        for example in schema.get("examples", []):
            errors = [e.message for e in _validator(document, name).iter_errors(example)]
            assert errors == [], (name, errors)
            checked += 1
    assert checked >= 4  # AppEnvelope, ErrorBody, AppCreate, AppUpdate, RunCreate


# --------------------------------------------------------------------------- beyond fuzzing


@pytest.fixture(scope="module")
def api_schema(server: FlowyProcess) -> Any:
    return schemathesis.openapi.from_url(f"{server.api}/openapi.json")


def test_a_genuine_file_link_answers_as_documented(
    server: FlowyProcess, api_schema: Any, portrait_png: bytes
) -> None:
    """The download route's 200, 206 and 416, which only a real signed link reaches."""
    up = server.post("/uploads", files={"file": ("me.png", portrait_png, "image/png")})
    assert up.status_code == 201, up.text
    api_schema["/v1/uploads"]["POST"].validate_response(up)
    link = urlsplit(up.json()["data"]["url"])
    asset_id, filename = link.path.rsplit("/", 2)[-2:]
    query = dict(parse_qsl(link.query))
    download = api_schema["/v1/files/{asset_id}/{filename}"]["GET"]
    for headers, status in (
        ({}, 200),
        ({"Range": "bytes=0-9"}, 206),
        ({"Range": "bytes=99999999-"}, 416),
    ):
        case = download.Case(
            path_parameters={"asset_id": asset_id, "filename": filename},
            query=query,
            headers=headers,
        )
        res = case.call(base_url=server.base)
        assert res.status_code == status, res.text
        case.validate_response(res)
    assert res.headers["content-range"] == [f"bytes */{len(portrait_png)}"]


def test_an_event_stream_answers_as_documented(
    server: FlowyProcess, api_schema: Any, finished_runs: list[str]
) -> None:
    events = api_schema["/v1/runs/{run_id}/events"]["GET"]
    case = events.Case(path_parameters={"run_id": finished_runs[0]}, headers=server.headers())
    res = case.call(base_url=server.base)
    assert res.status_code == 200
    case.validate_response(res)
    lines = [line for line in res.text.splitlines() if line.startswith("data: ")]
    validator = _validator(api_schema.raw_schema, "RunEvent")
    for line in lines:
        assert list(validator.iter_errors(json.loads(line[6:]))) == []
    assert len(lines) >= 5


# --------------------------------------------------------------------------- found by fuzzing


def test_out_of_range_times_are_422_not_500(server: FlowyProcess) -> None:
    for value in ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"):
        res = server.get("/runs", params={"createdAfter": value})
        assert res.status_code == 422, res.text
        assert res.json()["error"]["details"][0]["field"] == "createdAfter"


def test_resuming_an_ended_stream_ends_at_once(
    server: FlowyProcess, finished_runs: list[str]
) -> None:
    url = f"{server.api}/runs/{finished_runs[0]}/events"
    last = requests.get(url, headers=server.headers(), timeout=10).text.count("\nid: ")
    assert last >= 5
    for params, headers in (
        ({}, {"Last-Event-ID": str(last)}),  # reconnecting after the terminal event
        ({"after": str(2**63)}, {}),  # past what SQLite can compare
        ({"after": "-1"}, {}),
    ):
        res = requests.get(url, params=params, headers={**server.headers(), **headers}, timeout=10)
        assert res.status_code == 200, res.text
        ids = [line for line in res.text.splitlines() if line.startswith("id: ")]
        assert len(ids) == (last if params.get("after") == "-1" else 0)
    bad = requests.get(
        url, params={"after": "1"}, headers={**server.headers(), "Last-Event-ID": "x"}, timeout=10
    )
    assert bad.status_code == 422  # a malformed header is refused even when `after` wins


def test_405_names_every_method_of_the_path(server: FlowyProcess) -> None:
    for method, path, allow in (
        ("OPTIONS", "/apps", "GET, POST"),
        ("PUT", "/apps/ffffffffffffffffffffffff", "DELETE, GET, PATCH"),
        ("PATCH", "/webhooks/deliveries", "GET"),  # not read as an endpoint id
        ("DELETE", "/webhooks/run-secret", "GET"),
    ):
        res = server.request(method, path)
        assert res.status_code == 405, (method, path, res.text)
        assert res.headers["allow"] == allow
        assert res.json()["error"]["code"] == "method_not_allowed"


# --------------------------------------------------------------------------- fuzzing
# Last in the module: the fuzzer deletes and changes what it finds (apps included).


def test_schemathesis_finds_nothing(
    server: FlowyProcess, document: dict[str, Any], finished_runs: list[str], tmp_path: Path
) -> None:
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(_cursors(server)))
    started = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            f"{server.api}/openapi.json",
            "--header",
            f"Authorization: Bearer {server.key}",
            "--no-color",
        ],
        cwd=tmp_path,  # reports and caches stay out of the tree
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - started
    output = res.stdout + res.stderr
    assert res.returncode == 0, f"schemathesis failed after {took:.0f} s:\n{output}"
    operations = sum(len(item) for item in document["paths"].values())
    assert f"Tested: {operations}" in output, output  # every operation, none skipped
