"""The ``flowy`` commands that talk to the API, run as a real subprocess against a real
server: run with an uploaded file, failures, timeouts, lists, cancel, watch, exit codes."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from tests.flowy_process import FlowyProcess, free_port

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def echo_workflow(seconds: float) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
            {
                "id": "node_2",
                "type": "util.delay",
                "label": "Wait",
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
        tmp_path_factory.mktemp("cli"),
        env={"FLOWY_ALLOW_PRIVATE_URLS": "1", "FLOWY_WORKER__CONCURRENCY": "4"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def headshot(server: FlowyProcess) -> str:
    apps = server.get("/apps").json()["data"]
    return str(next(a["id"] for a in apps if a["title"] == "Headshot generator"))


def make_app(server: FlowyProcess, seconds: float, title: str) -> str:
    res = server.post(
        "/apps", json={"title": title, "workflow": echo_workflow(seconds), "published": True}
    )
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


@pytest.fixture(scope="module")
def slow(server: FlowyProcess) -> str:
    return make_app(server, 30, "Slow")


def test_run_uploads_a_file_and_saves_the_png(
    server: FlowyProcess, headshot: str, portrait_png: bytes, tmp_path: Path
) -> None:
    photo = tmp_path / "photo.png"
    photo.write_bytes(portrait_png)
    out = tmp_path / "out"
    res = server.cli(
        "run", headshot, "-i", f"node_1=@{photo}", "-i", "node_2=studio lighting", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    png = out / "headshot.png"
    assert f"saved {png}" in res.stdout
    assert Image.open(io.BytesIO(png.read_bytes())).size == (768, 960)
    # Progress, readable without a terminal: one plain line per change, no escapes.
    assert not ANSI.search(res.stderr)
    lines = res.stderr.splitlines()
    assert any(re.search(r"node_3\s+Crop to face\s+completed", line) for line in lines)
    assert "completed" in lines[-1] and not any("node.progress" in line for line in lines)

    # By title, with --json: the run as the API shows it, and where its files went.
    res = server.cli(
        "run", "headshot generator", "-i", f"node_1=@{photo}", "--out", str(out), "--json"
    )
    assert res.returncode == 0, res.stderr
    run = json.loads(res.stdout)
    assert run["status"] == "completed" and run["outputs"][0]["nodeId"] == "node_9"
    assert run["savedFiles"] == {"node_9": str(png)}


def test_text_inputs_and_outputs(server: FlowyProcess) -> None:
    app = make_app(server, 0, "Echo")
    res = server.cli("run", app, "-i", "node_1=hello from the CLI")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split(None, 2) == ["node_3", "text", "hello from the CLI\n"]
    res = server.cli("run", app, "-i", 'node_1:="json text"', "--json")
    assert json.loads(res.stdout)["outputs"] == [
        {"nodeId": "node_3", "kind": "text", "value": "json text"}
    ]
    queued = server.cli("run", app, "-i", "node_1=later", "--no-wait")
    assert queued.returncode == 0 and re.fullmatch(r"[0-9a-f]{24}\n", queued.stdout)


def test_a_failed_run_exits_1_with_the_error_on_stderr(
    server: FlowyProcess, headshot: str, media_dir: Path
) -> None:
    res = server.cli("run", headshot, "-i", f"node_1=@{media_dir / 'landscape.png'}")
    assert res.returncode == 1, res.stdout + res.stderr
    assert re.search(r"run [0-9a-f]{24} failed: node_3 \(Crop to face\): .*no face", res.stderr)
    assert res.stdout == ""


def test_timeout_exits_4_and_the_run_can_be_canceled(server: FlowyProcess, slow: str) -> None:
    res = server.cli("run", slow, "-i", "node_1=zzz", "--timeout", "1")
    assert res.returncode == 4, res.stderr
    m = re.search(r"gave up waiting for run ([0-9a-f]{24}) after 1 s", res.stderr)
    assert m, res.stderr
    run_id = m.group(1)
    assert f"flowy runs cancel {run_id}" in res.stderr

    canceled = server.cli("runs", "cancel", run_id)
    assert canceled.returncode == 0, canceled.stderr
    assert run_id in canceled.stdout
    assert "canceled" in canceled.stdout or "cancel requested" in canceled.stdout
    watched = server.cli("runs", "watch", run_id)  # follows it to its end
    assert watched.returncode == 3, watched.stderr
    assert "run.canceled" in watched.stdout.splitlines()[-1]
    shown = server.cli("runs", "show", run_id, "--json")
    assert json.loads(shown.stdout)["status"] == "canceled"
    again = server.cli("runs", "cancel", run_id)
    assert again.returncode == 0 and f"run {run_id} canceled" in again.stdout


def test_runs_list_and_show(server: FlowyProcess) -> None:
    app = make_app(server, 0, "Listed")
    ids = []
    for i in range(3):
        res = server.cli("run", app, "-i", f"node_1=n{i}", "--json")
        ids.append(json.loads(res.stdout)["runId"])
    listed = server.cli("runs", "list", "--app", app, "--json")
    assert listed.returncode == 0, listed.stderr
    runs = json.loads(listed.stdout)
    assert [r["runId"] for r in runs] == ids[::-1]
    assert {r["status"] for r in runs} == {"completed"}
    two = json.loads(server.cli("runs", "list", "--limit", "2", "--json").stdout)
    assert len(two) == 2
    failed = json.loads(server.cli("runs", "list", "--status", "failed", "--json").stdout)
    assert all(r["status"] == "failed" for r in failed)
    human = server.cli("runs", "list", "--app", app)
    assert [line.split()[0] for line in human.stdout.splitlines()] == ids[::-1]

    shown = server.cli("runs", "show", ids[0])
    assert shown.returncode == 0
    assert f"run {ids[0]}  completed" in shown.stdout
    assert re.search(r"node\s+node_2\s+Wait\s+completed", shown.stdout)
    assert '"n0"' in shown.stdout
    assert json.loads(server.cli("runs", "show", ids[0], "--json").stdout)["runId"] == ids[0]
    missing = server.cli("runs", "show", "ffffffffffffffffffffffff")
    assert missing.returncode == 5 and "404 not_found" in missing.stderr


def test_runs_watch_prints_events_as_they_come(server: FlowyProcess) -> None:
    app = make_app(server, 1.0, "Watched")
    run_id = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "w"}}).json()["data"][
        "runId"
    ]
    res = server.cli("runs", "watch", run_id)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    types = [line.split()[2] for line in lines]
    assert types[0] == "run.queued" and types[-1] == "run.completed"
    assert "node.progress" in types and "run.outputs" in types
    assert [int(line.split()[0]) for line in lines] == list(range(1, len(lines) + 1))
    assert any(re.search(r"node\.started\s+node_2\s+Wait", line) for line in lines)
    as_json = server.cli("runs", "watch", run_id, "--json", "--after", "2")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["seq"] for e in events] == list(range(3, len(lines) + 1))
    assert events[-1]["type"] == "run.completed" and events[0]["runId"] == run_id


def test_apps_commands(server: FlowyProcess, headshot: str, tmp_path: Path) -> None:
    listed = server.cli("apps", "list", "--json")
    assert listed.returncode == 0
    assert headshot in {a["id"] for a in json.loads(listed.stdout)}
    shown = server.cli("apps", "show", headshot)
    assert shown.returncode == 0
    assert re.search(r"input\s+node_1\s+image_url\s+Your photo \(required\)", shown.stdout)
    assert re.search(r"output\s+node_9\s+image\s+Headshot", shown.stdout)
    assert json.loads(server.cli("apps", "show", headshot, "--json").stdout)["version"] == 1

    path = tmp_path / "app.json"
    path.write_text(json.dumps({"title": "From file", "workflow": echo_workflow(0)}))
    made = server.cli("apps", "create", str(path), "--no-publish")
    assert made.returncode == 0, made.stderr
    assert re.match(r'created app [0-9a-f]{24} "From file" \(version 1, draft\)', made.stdout)
    app_id = made.stdout.split()[2]
    refused = server.cli("run", app_id, "-i", "node_1=x")  # not published: 409
    assert refused.returncode == 5 and "409 conflict" in refused.stderr


def test_exit_codes_for_usage_and_api_errors(
    server: FlowyProcess, headshot: str, tmp_path: Path
) -> None:
    bad_input = server.cli("run", headshot, "-i", "no-equals-sign")
    assert bad_input.returncode == 2 and "NODE=VALUE" in bad_input.stderr
    no_file = server.cli("run", headshot, "-i", f"node_1=@{tmp_path / 'missing.png'}")
    assert no_file.returncode == 2 and "no file" in no_file.stderr
    invalid = server.cli("run", headshot, "-i", "node_2=x")  # node_1 is required: 422
    assert invalid.returncode == 5 and "422 validation_error" in invalid.stderr
    assert "node_1" in invalid.stderr
    wrong_key = server.cli("runs", "list", FLOWY_KEY="flowy_sk_wrong")
    assert wrong_key.returncode == 5 and "401 unauthorized" in wrong_key.stderr
    down = server.cli("apps", "list", FLOWY_API=f"http://127.0.0.1:{free_port()}/v1")
    assert down.returncode == 5 and "cannot reach" in down.stderr
    no_key = server.cli("apps", "list", FLOWY_KEY="")
    assert no_key.returncode == 5 and "FLOWY_KEY" in no_key.stderr

    helped = server.cli("--help")
    assert helped.returncode == 0
    text = " ".join(helped.stdout.split())
    assert "Exit codes: 0 completed" in text and "4 timed out" in text and "5 API" in text
