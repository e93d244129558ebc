"""Idempotency keys, request rate limits, the concurrent-run limit and request caps."""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.api.test_errors import assert_error
from tests.flowy_process import FlowyProcess


def _echo(seconds: float) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
            {
                "id": "node_2",
                "type": "util.delay",
                "params": {"seconds": seconds},
                "inputs": {"value": {"node": "node_1", "port": "text"}},
            },
            {
                "id": "node_3",
                "type": "output.text",
                "label": "Echo",
                "inputs": {"text": {"node": "node_2", "port": "value"}},
            },
        ]
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    srv = FlowyProcess(
        tmp_path_factory.mktemp("limits"),
        env={
            "FLOWY_WORKER__CONCURRENCY": "2",
            "FLOWY_LIMITS__CONCURRENT_RUNS": "1",
            "FLOWY_LIMITS__MAX_INPUTS": "3",
            "FLOWY_LIMITS__REQUESTS_PER_MINUTE": "600",
            "FLOWY_LIMITS__BURST": "400",
        },
    ).start()
    yield srv
    srv.stop()


def _app(server: FlowyProcess, seconds: float, key: str | None = None) -> str:
    res = server.post(
        "/apps", key, json={"title": "Echo", "workflow": _echo(seconds), "published": True}
    )
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


def _runs(server: FlowyProcess, app_id: str) -> list[str]:
    return [
        r["runId"] for r in server.get(f"/apps/{app_id}/runs", params={"limit": 100}).json()["data"]
    ]


def test_idempotency_key_replays_and_refuses_another_body(server: FlowyProcess) -> None:
    app = _app(server, 0)
    key = str(uuid.uuid4())
    body = {"inputs": {"node_1": "once"}}
    first = server.post(f"/apps/{app}/runs", json=body, headers={"Idempotency-Key": key})
    second = server.post(f"/apps/{app}/runs", json=body, headers={"Idempotency-Key": key})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert "idempotent-replayed" not in first.headers
    assert second.headers["idempotent-replayed"] == "true"
    assert _runs(server, app) == [first.json()["data"]["runId"]]
    other = server.post(
        f"/apps/{app}/runs", json={"inputs": {"node_1": "twice"}}, headers={"Idempotency-Key": key}
    )
    assert_error(other, 422, "validation_error", "different request")
    # A request that fails releases its key: nothing was made.
    bad_key = str(uuid.uuid4())
    bad = server.post(
        f"/apps/{app}/runs", json={"inputs": {}}, headers={"Idempotency-Key": bad_key}
    )
    assert_error(bad, 422, "validation_error", "inputs.node_1")
    ok = server.post(
        f"/apps/{app}/runs", json={"inputs": {"node_1": "x"}}, headers={"Idempotency-Key": bad_key}
    )
    assert ok.status_code == 201
    assert_error(
        server.post(f"/apps/{app}/runs", json=body, headers={"Idempotency-Key": "x" * 300}),
        422,
        "validation_error",
    )


def test_twenty_parallel_requests_with_one_key_make_one_run(server: FlowyProcess) -> None:
    app = _app(server, 0)
    key = str(uuid.uuid4())
    answers: list[requests.Response] = []
    gate = threading.Barrier(20)

    def send() -> None:
        gate.wait()
        answers.append(
            server.post(
                f"/apps/{app}/runs",
                json={"inputs": {"node_1": "p"}},
                headers={"Idempotency-Key": key},
            )
        )

    threads = [threading.Thread(target=send) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {201, 409} and 201 in codes
    made = {a.json()["data"]["runId"] for a in answers if a.status_code == 201}
    assert len(made) == 1
    for a in answers:
        if a.status_code == 409:
            assert a.json()["error"]["code"] == "conflict"
    assert _runs(server, app) == list(made)


def test_concurrent_run_limit_queues_rather_than_refuses(server: FlowyProcess) -> None:
    app = _app(server, 1.5)
    first = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "a"}}).json()["data"]
    second = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "b"}}).json()["data"]
    overlap = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        # One request reads both runs in one transaction: a consistent snapshot.
        page = server.get(f"/apps/{app}/runs").json()["data"]
        by_id = {r["runId"]: r for r in page}
        states = [by_id[first["runId"]], by_id[second["runId"]]]
        statuses = [s["status"] for s in states]
        overlap |= statuses == ["running", "running"]
        if all(s in ("completed", "failed") for s in statuses):
            break
        time.sleep(0.05)
    assert statuses == ["completed", "completed"]
    assert not overlap  # one workspace, limit 1: never both at once
    a, b = states
    assert b["startedAt"] >= a["completedAt"]


def test_rate_limit_answers_429_with_retry_after(tmp_path_factory: pytest.TempPathFactory) -> None:
    srv = FlowyProcess(
        tmp_path_factory.mktemp("rate"),
        env={"FLOWY_LIMITS__REQUESTS_PER_MINUTE": "6", "FLOWY_LIMITS__BURST": "3"},
    ).start()
    try:
        oks = [srv.get("/apps") for _ in range(3)]
        assert [r.status_code for r in oks] == [200, 200, 200]
        assert [r.headers["ratelimit-remaining"] for r in oks] == ["2", "1", "0"]
        assert oks[0].headers["ratelimit-limit"] == "3"
        limited = srv.get("/apps")
        err = assert_error(limited, 429, "rate_limited", "retry in")
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-remaining"] == "0"
        assert err["message"].startswith("rate limit of 6 requests a minute")
        made = srv.cli("keys", "create", "--name", "second")
        other = re.search(r"export FLOWY_KEY=(\S+)", made.stdout).group(1)  # type: ignore[union-attr]
        assert srv.get("/apps", other).status_code == 200  # per key, not global
        time.sleep(int(limited.headers["retry-after"]))
        assert srv.get("/apps").status_code == 200
    finally:
        srv.stop()


def test_input_count_and_page_size_caps(server: FlowyProcess) -> None:
    app = _app(server, 0)
    many = {f"node_{i}": "x" for i in range(1, 6)}
    assert_error(
        server.post(f"/apps/{app}/runs", json={"inputs": many}),
        422,
        "validation_error",
        "at most 3 inputs",
    )
    assert_error(server.get("/runs", params={"limit": 101}), 422, "validation_error", "limit")


def test_a_polled_run_answers_the_rate_limit_headers(server: FlowyProcess) -> None:
    app = _app(server, 0)
    run = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "hi"}}).json()["data"]
    polled = server.get(f"/runs/{run['runId']}")
    assert polled.status_code == 200, polled.text
    assert polled.json()["data"]["runId"] == run["runId"]
    listed = server.get("/apps")
    names = {h for h in listed.headers if h.lower().startswith("ratelimit-")}
    assert names == {
        "ratelimit-limit",
        "ratelimit-remaining",
        "ratelimit-reset",
        "ratelimit-policy",
    }
    for name in names:
        assert polled.headers[name], name
    assert polled.headers["ratelimit-limit"] == "400"
    assert polled.headers["ratelimit-policy"] == listed.headers["ratelimit-policy"]
    assert int(polled.headers["ratelimit-remaining"]) < 400


def test_a_new_run_answers_as_documented_and_its_replay_says_so(server: FlowyProcess) -> None:
    app = _app(server, 0)
    key = str(uuid.uuid4())
    body = {"inputs": {"node_1": "héllo"}}
    # Header names are case-insensitive: the SDK sends them in lower case.
    first = server.post(f"/apps/{app}/runs", json=body, headers={"idempotency-key": key})
    assert first.status_code == 201, first.text
    assert first.headers["content-type"] == "application/json"
    data = first.json()["data"]
    assert set(first.json()) == {"data"}
    assert set(data) == {"runId", "status", "appId", "createdAt"}
    assert data["status"] == "queued" and data["appId"] == app
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", data["createdAt"])
    assert first.headers["ratelimit-limit"] == "400"
    assert "preference-applied" not in first.headers
    replay = server.post(
        f"/apps/{app}/runs", json=body, headers={"IDEMPOTENCY-KEY": key, "Prefer": "wait=5"}
    )
    assert replay.status_code == 201, replay.text
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.headers["preference-applied"] == "wait=5"
    assert int(replay.headers["ratelimit-remaining"]) < int(first.headers["ratelimit-remaining"])
    run = replay.json()["data"]
    assert run["runId"] == data["runId"] and run["status"] == "completed"
    assert run == server.get(f"/runs/{data['runId']}").json()["data"]
    assert _runs(server, app) == [data["runId"]]


def test_a_run_request_is_checked_key_then_body_then_headers(server: FlowyProcess) -> None:
    app = _app(server, 0)
    path = f"/apps/{app}/runs"
    malformed = b'{"inputs": {'
    json_type = {"Content-Type": "application/json"}
    res = requests.post(
        server.api + path,
        data=malformed,
        headers={**json_type, "Prefer": "wait=soon", "Authorization": "Bearer flowy_sk_nope"},
        timeout=30,
    )
    assert_error(res, 401, "unauthorized")
    res = server.post(path, data=malformed, headers={**json_type, "Prefer": "wait=soon"})
    assert_error(res, 400, "bad_request", "malformed JSON")
    both = {"Prefer": "wait=soon", "Idempotency-Key": "x" * 300}
    err = assert_error(
        server.post(path, json={"inputs": {}}, headers=both), 422, "validation_error"
    )
    assert [d["field"] for d in err["details"]] == ["header.prefer"]
    err = assert_error(
        server.post(path, json={"inputs": {}}, headers={"Idempotency-Key": "x" * 300}),
        422,
        "validation_error",
    )
    assert [d["field"] for d in err["details"]] == ["header.idempotency-key"]
    assert _runs(server, app) == []
