"""A server killed mid-run and started again finishes or fails every run it had."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from tests.flowy_process import FlowyProcess

SLOW = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "util.delay",
            "params": {"seconds": 2.0},
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


def _wait_status(server: FlowyProcess, run_id: str, status: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.get(f"/runs/{run_id}").json()["data"]["status"] == status:
            return
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {status}")


def test_killed_server_finishes_every_run_after_restart(tmp_path: Path) -> None:
    env = {"FLOWY_WORKER__CONCURRENCY": "1"}
    server = FlowyProcess(tmp_path, env=env).start()
    key = server.key
    try:
        app = server.post(
            "/apps", json={"title": "Slow echo", "workflow": SLOW, "published": True}
        ).json()["data"]["id"]
        runs = [
            server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": f"hello {i}"}}).json()[
                "data"
            ]["runId"]
            for i in range(3)
        ]
        _wait_status(server, runs[0], "running")
        # One run is mid-flight, two are queued behind it (one worker).
        assert [server.get(f"/runs/{r}").json()["data"]["status"] for r in runs[1:]] == [
            "queued",
            "queued",
        ]
    finally:
        server.kill()

    again = FlowyProcess(tmp_path, env=env, port=server.port)
    again.start()
    again.key = key  # the key lives on; the banner is printed only on first start
    try:
        assert "make a key with: flowy keys create" in "".join(again.output)
        for i, run_id in enumerate(runs):
            run = again.wait_run(run_id, timeout=30)
            assert run["status"] == "completed", run["error"]
            assert run["outputs"] == [{"nodeId": "node_3", "kind": "text", "value": f"hello {i}"}]
        first = again.get(f"/runs/{runs[0]}").json()["data"]
        assert first["attempt"] == 2  # interrupted once, finished on the second attempt
    finally:
        again.stop()


def test_graceful_stop_hands_runs_back(tmp_path: Path) -> None:
    server = FlowyProcess(
        tmp_path,
        env={"FLOWY_WORKER__CONCURRENCY": "1", "FLOWY_WORKER__SHUTDOWN_GRACE_SECONDS": "0.2"},
    ).start()
    key = server.key
    try:
        app = server.post(
            "/apps", json={"title": "Slow echo", "workflow": SLOW, "published": True}
        ).json()["data"]["id"]
        run_id = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "x"}}).json()["data"][
            "runId"
        ]
        _wait_status(server, run_id, "running")
    finally:
        server.stop()  # SIGTERM while the run is in flight
    with sqlite3.connect(tmp_path / "flowy.db") as db:
        status, owner = db.execute(
            "SELECT status, lease_owner FROM runs WHERE id = ?", (run_id,)
        ).fetchone()
    assert (status, owner) == ("queued", None)  # handed back, not left "running"
    again = FlowyProcess(tmp_path, port=server.port).start()
    again.key = key
    try:
        run = again.wait_run(run_id, timeout=30)
        assert run["status"] == "completed"
        assert run["attempt"] == 1  # a hand-back on shutdown is not a failed attempt
    finally:
        again.stop()


def test_second_server_on_same_data_dir_is_refused(tmp_path: Path) -> None:
    server = FlowyProcess(tmp_path).start()
    try:
        second = FlowyProcess(tmp_path)
        try:
            second.start(timeout=30)
        except RuntimeError as exc:
            assert "another Flowy process is using" in str(exc)
        else:
            second.stop()
            raise AssertionError("a second server started on the same data directory")
    finally:
        server.stop()
