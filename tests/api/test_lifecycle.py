"""Run lifecycle beyond the documented poll: lists, waiting, cancel, deadlines, events."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
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


FAST_AND_SLOW = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "output.text",
            "label": "Fast",
            "inputs": {"text": {"node": "node_1", "port": "text"}},
        },
        {
            "id": "node_3",
            "type": "util.delay",
            "params": {"seconds": 30},
            "inputs": {"value": {"node": "node_1", "port": "text"}},
        },
        {
            "id": "node_4",
            "type": "output.text",
            "label": "Slow",
            "inputs": {"text": {"node": "node_3", "port": "value"}},
        },
    ]
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    srv = FlowyProcess(
        tmp_path_factory.mktemp("lifecycle"),
        env={"FLOWY_WORKER__CONCURRENCY": "1", "FLOWY_SERVER__SSE_KEEPALIVE_SECONDS": "0.3"},
    ).start()
    yield srv
    srv.stop()


def _app(server: FlowyProcess, workflow: dict[str, Any], title: str = "App") -> str:
    res = server.post("/apps", json={"title": title, "workflow": workflow, "published": True})
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


def _start(server: FlowyProcess, app_id: str, text: str = "x", **extra: Any) -> str:
    res = server.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": text}, **extra})
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["runId"])


def _status(server: FlowyProcess, run_id: str) -> str:
    return str(server.get(f"/runs/{run_id}").json()["data"]["status"])


def _until(server: FlowyProcess, run_id: str, statuses: set[str], timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run: dict[str, Any] = server.get(f"/runs/{run_id}").json()["data"]
        if run["status"] in statuses:
            return run
        time.sleep(0.02)
    raise AssertionError(f"run {run_id} is {run['status']}, not {statuses}")


def _events(server: FlowyProcess, run_id: str, **headers: str) -> list[dict[str, Any]]:
    """Read the SSE stream to its end; return the events (and check ids and framing)."""
    res = requests.get(
        f"{server.api}/runs/{run_id}/events",
        headers={**server.headers(), **headers},
        stream=True,
        timeout=30,
    )
    assert res.status_code == 200, res.text
    assert res.headers["content-type"].startswith("text/event-stream")
    events, current = [], {}
    for line in res.iter_lines(decode_unicode=True):
        if line == "":
            if "data" in current:
                ev = json.loads(current["data"])
                assert ev["seq"] == int(current["id"]) and ev["type"] == current["event"]
                events.append(ev)
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value
    res.close()
    return events


def test_prefer_wait_answers_with_the_finished_run(server: FlowyProcess) -> None:
    app = _app(server, _echo(0))
    res = server.post(
        f"/apps/{app}/runs",
        json={"inputs": {"node_1": "hi"}},
        headers={**server.headers(), "Prefer": "wait=10"},
    )
    assert res.status_code == 201
    assert res.headers["preference-applied"] == "wait=10"
    data = res.json()["data"]
    assert data["status"] == "completed"
    assert data["outputs"] == [{"nodeId": "node_3", "kind": "text", "value": "hi"}]
    assert data == server.get(f"/runs/{data['runId']}").json()["data"]

    slow = _app(server, _echo(3))
    res = server.post(
        f"/apps/{slow}/runs",
        json={"inputs": {"node_1": "hi"}},
        headers={**server.headers(), "Prefer": "wait=1"},
    )
    assert res.json()["data"]["status"] in ("queued", "running")
    server.wait_run(res.json()["data"]["runId"])
    bad = server.post(
        f"/apps/{app}/runs",
        json={"inputs": {"node_1": "hi"}},
        headers={**server.headers(), "Prefer": "wait=soon"},
    )
    assert_error(bad, 422, "validation_error", "Prefer")


def test_cancel_queued_and_running_runs(server: FlowyProcess) -> None:
    app = _app(server, _echo(30))
    running = _start(server, app, "a")
    _until(server, running, {"running"})
    queued = _start(server, app, "b")  # one worker: this one waits
    assert _status(server, queued) == "queued"

    res = server.post(f"/runs/{queued}/cancel")
    assert res.status_code == 200 and res.json()["data"]["status"] == "canceled"
    assert res.json()["data"]["error"] == "canceled by request"

    t0 = time.monotonic()
    server.post(f"/runs/{running}/cancel")
    run = _until(server, running, {"canceled"}, timeout=5)
    took = time.monotonic() - t0
    assert took < 5, f"a running run took {took:.1f} s to cancel"
    nodes = {n["nodeId"]: n["status"] for n in run["nodes"]}
    assert nodes == {"node_1": "completed", "node_2": "failed", "node_3": "canceled"}
    again = server.post(f"/runs/{running}/cancel")  # idempotent
    assert again.status_code == 200 and again.json()["data"]["status"] == "canceled"
    assert_error(server.post("/runs/ffffffffffffffffffffffff/cancel"), 404, "not_found")


def test_canceled_run_keeps_outputs_already_made(server: FlowyProcess) -> None:
    app = _app(server, FAST_AND_SLOW)
    run_id = _start(server, app, "early")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait until the fast output node has finished
        nodes = {
            n["nodeId"]: n["status"] for n in server.get(f"/runs/{run_id}").json()["data"]["nodes"]
        }
        if nodes["node_2"] == "completed":
            break
        time.sleep(0.02)
    server.post(f"/runs/{run_id}/cancel")
    run = _until(server, run_id, {"canceled"})
    assert run["outputs"] == [{"nodeId": "node_2", "kind": "text", "value": "early"}]


def test_cancel_racing_completion_ends_once(server: FlowyProcess) -> None:
    app = _app(server, _echo(0))
    for i in range(5):
        run_id = _start(server, app, f"race {i}")
        server.post(f"/runs/{run_id}/cancel")
        run = server.wait_run(run_id)
        events = _events(server, run_id)
        terminal = [
            e for e in events if e["type"] in ("run.completed", "run.canceled", "run.failed")
        ]
        assert len(terminal) == 1
        assert terminal[0]["data"]["status"] == run["status"]
        if run["status"] == "completed":
            assert run["outputs"][0]["value"] == f"race {i}"


def test_run_deadline(server: FlowyProcess) -> None:
    app = _app(server, _echo(30))
    run = server.wait_run(_start(server, app, timeoutSeconds=0.5), timeout=10)
    assert run["status"] == "failed" and "time limit" in run["error"]
    assert run["deadlineAt"] is not None
    err = assert_error(
        server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "x"}, "timeoutSeconds": -1}),
        422,
        "validation_error",
    )
    assert err["details"][0]["field"] == "timeoutSeconds"


def test_event_stream_is_complete_ordered_and_resumable(server: FlowyProcess) -> None:
    app = _app(server, _echo(0.6))
    run_id = _start(server, app, "streamed")
    events = _events(server, run_id)
    types = [e["type"] for e in events]
    assert types[0] == "run.queued" and types[-1] == "run.completed"
    assert "run.started" in types and "run.outputs" in types
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    started = [e["data"]["nodeId"] for e in events if e["type"] == "node.started"]
    finished = [e["data"]["nodeId"] for e in events if e["type"] == "node.finished"]
    assert started == finished == ["node_1", "node_2", "node_3"] or sorted(started) == sorted(
        finished
    ) == ["node_1", "node_2", "node_3"]
    assert any(e["type"] == "node.progress" for e in events)  # the delay reports progress
    logs = [e["data"] for e in events if e["type"] == "node.log"]
    assert logs == [{"nodeId": "node_2", "message": "waiting 0.6 s"}]
    outputs = next(e for e in events if e["type"] == "run.outputs")["data"]["outputs"]
    assert outputs == [{"nodeId": "node_3", "kind": "text", "value": "streamed"}]
    # Resume after event 3: exactly the rest, nothing lost, nothing repeated.
    rest = _events(server, run_id, **{"Last-Event-ID": "3"})
    assert rest == events[3:]


def test_live_stream_with_keepalives(server: FlowyProcess) -> None:
    app = _app(server, _echo(1.2))
    run_id = _start(server, app, "live")
    res = requests.get(
        f"{server.api}/runs/{run_id}/events", headers=server.headers(), stream=True, timeout=30
    )
    lines = list(res.iter_lines(decode_unicode=True))
    res.close()
    assert ": keep-alive" in lines  # quiet stretches are kept alive (0.3 s here)
    assert lines[-2].startswith("data: ") and '"run.completed"' in lines[-2]
    assert_error(
        requests.get(f"{server.api}/runs/{run_id}/events", timeout=10), 401, "unauthorized"
    )


def test_many_concurrent_streams_all_get_every_event(server: FlowyProcess) -> None:
    """Streams opened before, during and after a run's events: each gets all of them,
    once, in order, and ends after the terminal one."""
    app = _app(server, _echo(0.8))
    run_id = _start(server, app, "crowd")

    async def read(client: httpx.AsyncClient, delay: float) -> list[tuple[int, str]]:
        await asyncio.sleep(delay)
        async with client.stream("GET", f"/runs/{run_id}/events") as res:
            assert res.status_code == 200
            text = "".join([chunk async for chunk in res.aiter_text()])
        return [
            (int(m[1]), json.loads(m[3])["type"])
            for m in re.finditer(r"id: (\d+)\nevent: (\S+)\ndata: (.*)\n\n", text)
        ]

    async def crowd() -> list[list[tuple[int, str]]]:
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=server.api, headers=server.headers(), limits=limits, timeout=30
        ) as client:
            return await asyncio.gather(*(read(client, i * 0.01) for i in range(150)))

    streams = asyncio.run(crowd())
    first = streams[0]
    assert [seq for seq, _ in first] == list(range(1, len(first) + 1))
    assert first[-1][1] == "run.completed" and len(first) >= 8
    assert all(s == first for s in streams)


def test_run_lists_filter_and_page(server: FlowyProcess) -> None:
    a = _app(server, _echo(0), "List A")
    b = _app(server, _echo(0), "List B")
    ids_a = [_start(server, a, f"a{i}") for i in range(5)]
    ids_b = [_start(server, b, f"b{i}") for i in range(2)]
    for r in ids_a + ids_b:
        server.wait_run(r)
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 2, "appId": a}
        if cursor:
            params["cursor"] = cursor
        page = server.get("/runs", params=params).json()
        assert len(page["data"]) <= 2
        seen += [r["runId"] for r in page["data"]]
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert seen == list(reversed(ids_a))  # newest first, each once
    by_app = server.get(f"/apps/{b}/runs").json()
    assert [r["runId"] for r in by_app["data"]] == list(reversed(ids_b))
    assert by_app["nextCursor"] is None
    assert "nodes" not in by_app["data"][0] and by_app["data"][0]["outputs"][0]["value"]
    completed = server.get("/runs", params={"status": "completed", "limit": 100}).json()
    assert {r["status"] for r in completed["data"]} == {"completed"}
    future = server.get("/runs", params={"createdAfter": "2999-01-01T00:00:00Z"}).json()
    assert future["data"] == []
    assert_error(server.get("/runs", params={"limit": 1000}), 422, "validation_error", "limit")
    assert_error(
        server.get("/runs", params={"cursor": "nonsense"}), 422, "validation_error", "cursor"
    )
    assert_error(server.get("/runs", params={"status": "done"}), 422, "validation_error")
    for forged in ('["2026-01-01T00:00:00", "x"]', '["0001-01-01T00:00:00+01:00", "x"]', "[1]"):
        token = base64.urlsafe_b64encode(forged.encode()).decode().rstrip("=")
        assert_error(
            server.get("/runs", params={"cursor": token}), 422, "validation_error", "cursor"
        )
    assert_error(server.get("/apps/ffffffffffffffffffffffff/runs"), 404, "not_found")
