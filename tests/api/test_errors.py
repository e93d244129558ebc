"""Bad input gets one JSON error shape naming the field or node, and loses nothing."""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from flowy.services.keys import KEY_CACHE_SECONDS
from tests.flowy_process import FlowyProcess, StaticServer, free_port


def assert_error(res: requests.Response, status: int, code: str, *needles: str) -> dict[str, Any]:
    assert res.status_code == status, res.text
    assert res.headers["content-type"].startswith("application/json")
    body = res.json()
    assert set(body) == {"error"}
    err: dict[str, Any] = body["error"]
    assert set(err) == {"code", "message", "details"}
    assert err["code"] == code
    for needle in needles:
        assert needle in err["message"], err["message"]
    return err


def run_count(flowy: FlowyProcess, app_id: str) -> int:
    return int(flowy.get(f"/apps/{app_id}").json()["data"]["runCount"])


@pytest.fixture(scope="module")
def other_key(flowy: FlowyProcess) -> str:
    res = flowy.cli("workspaces", "create", "Other team")
    assert res.returncode == 0, res.stderr
    m = re.search(r"export FLOWY_KEY=(\S+)", res.stdout)
    assert m
    return m.group(1)


# --- authentication -------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer flowy_sk_nope"},
        {"Authorization": "Basic abc"},
        {"Authorization": "Bearer"},
    ],
)
def test_missing_or_wrong_key_is_401(flowy: FlowyProcess, headers: dict[str, str]) -> None:
    res = requests.get(f"{flowy.api}/apps", headers=headers, timeout=10)
    assert_error(res, 401, "unauthorized")
    assert res.headers["www-authenticate"] == "Bearer"


def test_revoked_key_is_refused_within_the_key_cache_ttl(flowy: FlowyProcess) -> None:
    made = flowy.cli("keys", "create", "--name", "short-lived")
    assert made.returncode == 0, made.stderr
    key = re.search(r"export FLOWY_KEY=(\S+)", made.stdout).group(1)  # type: ignore[union-attr]
    key_id = made.stdout.split()[2]
    assert flowy.get("/apps", key).status_code == 200
    listed = flowy.cli("keys", "list")
    assert key_id in listed.stdout and key not in listed.stdout  # prefixes only
    # The CLI is another process: the server learns of the revocation when the key's
    # cache entry expires, at most KEY_CACHE_SECONDS after it committed.
    assert flowy.cli("keys", "revoke", key_id).returncode == 0
    revoked = time.monotonic()
    while (res := flowy.get("/apps", key)).status_code == 200:
        assert time.monotonic() - revoked < KEY_CACHE_SECONDS + 1, "still accepted"
        time.sleep(0.1)
    assert_error(res, 401, "unauthorized", "revoked")
    assert_error(flowy.get("/runs/" + "0" * 24, key), 401, "unauthorized", "revoked")
    bad = flowy.cli("keys", "revoke", "0" * 24)
    assert bad.returncode != 0 and "not found" in bad.stderr


# --- isolation ---------------------------------------------------------------------------


def test_another_workspaces_objects_are_404(
    flowy: FlowyProcess, other_key: str, headshot_app: str, portrait_png: bytes
) -> None:
    assert flowy.get("/apps", other_key).json()["data"] == []
    assert_error(flowy.get(f"/apps/{headshot_app}", other_key), 404, "not_found")
    res = flowy.post(f"/apps/{headshot_app}/runs", other_key, json={"inputs": {}})
    assert_error(res, 404, "not_found")
    # A run of the first workspace is invisible to the second.
    uri = "data:image/png;base64," + base64.b64encode(portrait_png).decode()
    run_id = flowy.post(f"/apps/{headshot_app}/runs", json={"inputs": {"node_1": uri}}).json()[
        "data"
    ]["runId"]
    assert_error(flowy.get(f"/runs/{run_id}", other_key), 404, "not_found")
    # So is an uploaded file: its link is no input for the other workspace's runs.
    up = flowy.post("/uploads", files={"file": ("me.png", portrait_png, "image/png")})
    link = up.json()["data"]["url"]
    assert_error(flowy.get(f"/uploads/{up.json()['data']['id']}", other_key), 404, "not_found")
    assert flowy.get(f"/uploads/{up.json()['data']['id']}").json()["data"]["size"] == len(
        portrait_png
    )
    other_app = _make_app(flowy, other_key)
    res = flowy.post(f"/apps/{other_app}/runs", other_key, json={"inputs": {"node_1": link}})
    assert_error(res, 422, "validation_error", "inputs.node_1", "does not exist")
    assert run_count(flowy, headshot_app) >= 1
    flowy.wait_run(run_id)


def _make_app(flowy: FlowyProcess, key: str) -> str:
    wf = {
        "nodes": [
            {"id": "node_1", "type": "input.image_url", "label": "Photo"},
            {
                "id": "node_2",
                "type": "image.resize",
                "params": {"width": 32, "height": 32},
                "inputs": {"image": {"node": "node_1", "port": "image"}},
            },
            {
                "id": "node_3",
                "type": "output.image",
                "label": "Small",
                "inputs": {"image": {"node": "node_2", "port": "image"}},
            },
        ]
    }
    res = flowy.post("/apps", key, json={"title": "Thumb", "workflow": wf, "published": True})
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


@pytest.mark.parametrize(
    "path",
    [
        "/apps/ffffffffffffffffffffffff",
        "/apps/nope",
        "/runs/ffffffffffffffffffffffff",
        "/runs/not-an-id",
    ],
)
def test_unknown_ids_are_404(flowy: FlowyProcess, path: str) -> None:
    assert_error(flowy.get(path), 404, "not_found")


# --- run requests that create nothing -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fields", "text"),
    [
        ({"inputs": {"node_2": "warm"}}, ["inputs.node_1"], "is required"),
        (
            {"inputs": {"node_1": "http://x.test/a.png", "node_7": "x"}},
            ["inputs.node_7"],
            "no input with nodeId 'node_7'",
        ),
        ({"inputs": {"node_1": 42}}, ["inputs.node_1"], "must be a URL"),
        ({"inputs": {"node_1": "file:///etc/passwd"}}, ["inputs.node_1"], "http(s) URL"),
        (
            {"inputs": {"node_1": "http://x.test/a.png", "node_2": ["warm"]}},
            ["inputs.node_2"],
            "must be a string",
        ),
        ({"inputs": "node_1"}, ["inputs"], "must be an object"),
        ({}, ["inputs"], "'inputs' is required"),
        ({"inputs": {}, "extra": 1}, ["extra", "inputs.node_1"], "unknown field 'extra'"),
        ([1, 2], ["body"], "JSON object"),
    ],
)
def test_bad_run_request_is_422_and_creates_no_run(
    flowy: FlowyProcess, headshot_app: str, body: Any, fields: list[str], text: str
) -> None:
    before = run_count(flowy, headshot_app)
    err = assert_error(
        flowy.post(f"/apps/{headshot_app}/runs", json=body), 422, "validation_error", text
    )
    assert sorted(d["field"] for d in err["details"]) == sorted(fields)
    assert run_count(flowy, headshot_app) == before


def test_malformed_json_is_400(flowy: FlowyProcess, headshot_app: str) -> None:
    before = run_count(flowy, headshot_app)
    res = requests.post(
        f"{flowy.api}/apps/{headshot_app}/runs",
        data=b'{"inputs": {',
        headers={**flowy.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    err = assert_error(res, 400, "bad_request", "malformed JSON")
    assert err["details"][0]["field"] == "body"
    res = requests.post(
        f"{flowy.api}/apps/{headshot_app}/runs",
        data=b"",
        headers={**flowy.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert_error(res, 422, "validation_error", "body")
    assert run_count(flowy, headshot_app) == before


def test_oversized_body_is_413(flowy: FlowyProcess, headshot_app: str) -> None:
    before = run_count(flowy, headshot_app)
    big = {"inputs": {"node_1": "http://x.test/a.png", "node_2": "x" * (2 << 20)}}
    assert_error(flowy.post(f"/apps/{headshot_app}/runs", json=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while streaming
        yield b'{"inputs": {"node_2": "'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"}}'

    res = requests.post(
        f"{flowy.api}/apps/{headshot_app}/runs",
        data=chunks(),
        headers={**flowy.headers(), "Content-Type": "application/json"},
        timeout=10,
    )
    assert_error(res, 413, "payload_too_large")
    assert run_count(flowy, headshot_app) == before


def test_unpublished_app_cannot_run(flowy: FlowyProcess) -> None:
    app_id = _make_app(flowy, flowy.key or "")
    assert flowy.post(f"/apps/{app_id}/unpublish").json()["data"]["published"] is False
    assert_error(
        flowy.post(f"/apps/{app_id}/runs", json={"inputs": {}}), 409, "conflict", "not published"
    )


def test_unknown_route_and_method(flowy: FlowyProcess) -> None:
    assert_error(flowy.get("/nope"), 404, "not_found")
    res = requests.put(f"{flowy.api}/apps", headers=flowy.headers(), timeout=10)
    assert_error(res, 405, "method_not_allowed")


# --- media that fails the run, naming the node -------------------------------------------


def _failed(flowy: FlowyProcess, app_id: str, url: str) -> str:
    res = flowy.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": url}})
    assert res.status_code == 201, res.text
    run = flowy.wait_run(res.json()["data"]["runId"])
    assert run["status"] == "failed"
    assert run["outputs"] == []
    assert run["errorNode"] == "node_1"
    nodes = {n["nodeId"]: n for n in run["nodes"]}
    assert nodes["node_1"]["status"] == "failed"
    assert nodes["node_9"]["status"] == "canceled"
    return str(run["error"])


def test_unreachable_media_url_fails_the_run(flowy: FlowyProcess, headshot_app: str) -> None:
    error = _failed(flowy, headshot_app, f"http://127.0.0.1:{free_port()}/me.png")
    assert error.startswith("node_1 (Your photo): ")
    assert "connection refused" in error.lower()


def test_non_image_media_fails_the_run(
    flowy: FlowyProcess, headshot_app: str, media_server: StaticServer
) -> None:
    error = _failed(flowy, headshot_app, media_server.url("notes.txt"))
    assert error.startswith("node_1 (Your photo): ") and "not a decodable image" in error
    assert "not in a supported image format" in error and "BytesIO" not in error


def test_missing_media_fails_the_run(
    flowy: FlowyProcess, headshot_app: str, media_server: StaticServer
) -> None:
    error = _failed(flowy, headshot_app, media_server.url("gone.png"))
    assert "node_1 (Your photo)" in error and "404" in error
