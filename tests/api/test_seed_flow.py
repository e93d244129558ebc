"""Every example of the public run-flow documentation, verbatim, against a real server.

The snippets below are copied from the documentation as they stand.  Only the
placeholders a reader replaces are replaced: APP_ID, RUN_ID, and the photo URL (the
server must be able to reach it, so it is served from this machine).
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from flowy.nodes.vision import detect_faces
from tests.flowy_process import FlowyProcess, StaticServer

CURL_LIST = 'curl "$FLOWY_API/apps" -H "Authorization: Bearer $FLOWY_KEY"'
CURL_APP = 'curl "$FLOWY_API/apps/APP_ID" -H "Authorization: Bearer $FLOWY_KEY"'
CURL_RUN = """curl -X POST "$FLOWY_API/apps/APP_ID/runs" \\
-H "Authorization: Bearer $FLOWY_KEY" \\
-H "Content-Type: application/json" \\
-d '{
"inputs": {
"node_1": "https://example.com/me.jpg",
"node_2": "studio lighting, neutral background"
}
}'"""
CURL_POLL = 'curl "$FLOWY_API/runs/RUN_ID" -H "Authorization: Bearer $FLOWY_KEY"'

JS_EXAMPLES = """
{
const res = await fetch(`${BASE}/apps`, {
headers: { Authorization: `Bearer ${KEY}` },
});
const { data: apps } = await res.json();
out.apps = apps;
}
{
const res = await fetch(`${BASE}/apps/APP_ID`, {
headers: { Authorization: `Bearer ${KEY}` },
});
const { data: app } = await res.json();
out.app = app;
}
const res = await fetch(`${BASE}/apps/APP_ID/runs`, {
method: "POST",
headers: {
Authorization: `Bearer ${KEY}`,
"Content-Type": "application/json",
},
body: JSON.stringify({
inputs: {
node_1: "https://example.com/me.jpg",
node_2: "studio lighting, neutral background",
},
}),
});
const { data } = await res.json();
const runId = data.runId;
async function waitForRun(runId) {
while (true) {
const res = await fetch(`${BASE}/runs/${runId}`, {
headers: { Authorization: `Bearer ${KEY}` },
});
const { data } = await res.json();
if (data.status === "completed") return data.outputs;
if (data.status === "failed") throw new Error(data.error);
await new Promise((r) => setTimeout(r, 2500));
}
}
out.runId = runId;
out.outputs = await waitForRun(runId);
"""

PY_LIST = """apps = requests.get(f"{BASE}/apps",
headers={"Authorization": f"Bearer {KEY}"}).json()["data"]"""
PY_APP = """app = requests.get(f"{BASE}/apps/APP_ID",
headers={"Authorization": f"Bearer {KEY}"}).json()["data"]"""
PY_RUN = """res = requests.post(f"{BASE}/apps/APP_ID/runs",
headers={"Authorization": f"Bearer {KEY}"},
json={"inputs": {
"node_1": "https://example.com/me.jpg",
"node_2": "studio lighting, neutral background",
}})
run_id = res.json()["data"]["runId"]"""
PY_WAIT = """import time
def wait_for_run(run_id):
    while True:
        data = requests.get(f"{BASE}/runs/{run_id}",
            headers={"Authorization": f"Bearer {KEY}"}).json()["data"]
        if data["status"] == "completed":
            return data["outputs"]
        if data["status"] == "failed":
            raise RuntimeError(data["error"])
        time.sleep(2.5)"""


def _fill(snippet: str, app_id: str, photo_url: str, run_id: str = "RUN_ID") -> str:
    return (
        snippet.replace("APP_ID", app_id)
        .replace("RUN_ID", run_id)
        .replace("https://example.com/me.jpg", photo_url)
    )


def _sh(cmd: str, flowy: FlowyProcess) -> Any:
    res = subprocess.run(
        ["bash", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin:/usr/local/bin",
            "FLOWY_API": flowy.api,
            "FLOWY_KEY": flowy.key or "",
        },
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


def assert_headshot(png: bytes) -> None:
    """What a user checks: a PNG portrait, one face in it, neutral backdrop at the edges."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(png))
    img.load()
    assert img.format == "PNG"
    assert img.size == (768, 960)
    faces = detect_faces(img.convert("RGB"))
    assert len(faces) == 1
    face = faces[0]
    assert abs((face.x + face.width / 2) - 384) < 768 * 0.1  # centred
    assert face.y + face.height / 2 < 960 / 2  # head in the upper half
    corners = np.asarray(img.convert("RGB"))[:60, :60].reshape(-1, 3).astype(float)
    r, g, b = corners.mean(axis=0)
    assert max(r, g, b) - min(r, g, b) < 25, "backdrop corner is not a neutral grey"


def test_curl_examples(flowy: FlowyProcess, headshot_app: str, media_server: StaticServer) -> None:
    if shutil.which("curl") is None:
        pytest.fail("curl is needed to run the documentation's curl examples")
    photo = media_server.url("me.png")
    apps = _sh(CURL_LIST, flowy)["data"]
    listed = next(a for a in apps if a["id"] == headshot_app)
    assert set(listed) >= {"id", "title", "published", "runCount"}
    assert listed["title"] == "Headshot generator" and listed["published"] is True
    assert len(listed["id"]) == 24 and int(listed["id"], 16) >= 0

    app = _sh(_fill(CURL_APP, headshot_app, photo), flowy)["data"]
    assert app["id"] == headshot_app and app["title"] == "Headshot generator"
    assert [{k: i[k] for k in ("nodeId", "label", "kind", "required")} for i in app["inputs"]] == [
        {"nodeId": "node_1", "label": "Your photo", "kind": "image_url", "required": True},
        {"nodeId": "node_2", "label": "Style", "kind": "text", "required": False},
    ]
    assert app["outputs"] == [{"nodeId": "node_9", "label": "Headshot", "outputType": "image"}]

    started = _sh(_fill(CURL_RUN, headshot_app, photo), flowy)["data"]
    assert started["status"] == "queued" and len(started["runId"]) == 24

    seen = set()
    for _ in range(600):
        run = _sh(_fill(CURL_POLL, headshot_app, photo, started["runId"]), flowy)["data"]
        seen.add(run["status"])
        if run["status"] in ("completed", "failed"):
            break
        subprocess.run(["sleep", "0.1"])
    assert run["status"] == "completed", run.get("error")
    assert seen <= {"queued", "running", "completed"}
    assert run["runId"] == started["runId"] and run["appId"] == headshot_app
    [out] = run["outputs"]
    assert out["nodeId"] == "node_9" and out["kind"] == "image"
    assert_headshot(requests.get(out["url"], timeout=30).content)


def test_javascript_examples(
    flowy: FlowyProcess, headshot_app: str, media_server: StaticServer, tmp_path: Path
) -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("Node.js is needed to run the documentation's JavaScript examples")
    script = tmp_path / "seed.mjs"
    script.write_text(
        "const BASE = process.env.FLOWY_API;\nconst KEY = process.env.FLOWY_KEY;\n"
        "const out = {};\n"
        + _fill(JS_EXAMPLES, headshot_app, media_server.url("me.png"))
        + "\nconsole.log(JSON.stringify(out));\n"
    )
    res = subprocess.run(
        [node, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"FLOWY_API": flowy.api, "FLOWY_KEY": flowy.key or ""},
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert any(a["id"] == headshot_app for a in out["apps"])
    assert out["app"]["inputs"][0]["nodeId"] == "node_1"
    [output] = out["outputs"]
    assert output["nodeId"] == "node_9" and output["kind"] == "image"
    assert_headshot(requests.get(output["url"], timeout=30).content)


def test_python_examples(
    flowy: FlowyProcess, headshot_app: str, media_server: StaticServer
) -> None:
    photo = media_server.url("me.png")
    scope: dict[str, Any] = {"requests": requests, "BASE": flowy.api, "KEY": flowy.key}
    for snippet in (PY_LIST, PY_APP, PY_RUN, PY_WAIT):
        exec(textwrap.dedent(_fill(snippet, headshot_app, photo)), scope)
    assert any(a["title"] == "Headshot generator" for a in scope["apps"])
    assert scope["app"]["outputs"][0]["outputType"] == "image"
    outputs = scope["wait_for_run"](scope["run_id"])
    [out] = outputs
    assert out["nodeId"] == "node_9"
    assert_headshot(requests.get(out["url"], timeout=30).content)


def test_failed_run_raises_in_wait_for_run(
    flowy: FlowyProcess, headshot_app: str, media_server: StaticServer
) -> None:
    """The documented loop raises with the run's error: a photo without a face."""
    scope: dict[str, Any] = {"requests": requests, "BASE": flowy.api, "KEY": flowy.key}
    for snippet in (PY_RUN, PY_WAIT):
        exec(
            textwrap.dedent(_fill(snippet, headshot_app, media_server.url("landscape.png"))), scope
        )
    with pytest.raises(RuntimeError, match=r"node_3 \(Crop to face\): no face found"):
        scope["wait_for_run"](scope["run_id"])
