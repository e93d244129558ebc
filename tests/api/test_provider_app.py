"""The "Image caption" example app end to end: a real server, a fake OpenAI, a secret.

Without the OPENAI_API_KEY secret a run fails saying how to configure it; with the
secret set over the API and the app pointed at a local OpenAI-compatible server, the
run completes with the caption.  The key is listed by name only and never reaches the
server's log.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from PIL import Image

from tests.flowy_process import FlowyProcess

SECRET = "sk-flowy-test-0123456789abcdefghijklmnop"
CAPTION = "A red square on a plain background."


class _OpenAI(BaseHTTPRequestHandler):
    server: FakeOpenAI

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.requests.append(
            {"path": self.path, "auth": self.headers.get("Authorization"), "body": body}
        )
        if self.headers.get("Authorization") != f"Bearer {SECRET}":
            status, doc = 401, {"error": {"message": "Incorrect API key provided"}}
        elif self.path != "/v1/chat/completions":
            status, doc = 404, {"error": {"message": f"unknown path {self.path}"}}
        else:
            status = 200
            doc = {
                "choices": [{"index": 0, "message": {"role": "assistant", "content": CAPTION}}],
                "usage": {"prompt_tokens": 90, "completion_tokens": 9, "total_tokens": 99},
            }
        out = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class FakeOpenAI(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _OpenAI)
        self.requests: list[dict[str, Any]] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"


@pytest.fixture(scope="module")
def fake_openai() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI()
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    proc = FlowyProcess(
        tmp_path_factory.mktemp("provider-app"),
        env={"FLOWY_ALLOW_PRIVATE_URLS": "1", "FLOWY_LOG_LEVEL": "DEBUG"},
    ).start()
    yield proc
    proc.stop()


def _photo() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (220, 20, 20)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _run(flowy: FlowyProcess, app_id: str) -> dict[str, Any]:
    res = flowy.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": _photo()}})
    assert res.status_code == 201, res.text
    return flowy.wait_run(res.json()["data"]["runId"])


def test_caption_app_needs_the_key_then_captions(
    server: FlowyProcess, fake_openai: FakeOpenAI
) -> None:
    apps = server.get("/apps").json()["data"]
    app_id = next(a["id"] for a in apps if a["title"] == "Image caption")
    app = server.get(f"/apps/{app_id}").json()["data"]
    assert [(i["nodeId"], i["kind"]) for i in app["inputs"]] == [("node_1", "image_url")]
    assert app["outputs"] == [{"nodeId": "node_3", "label": "Caption", "outputType": "text"}]

    # No key: the run fails before any request, saying how to configure it.
    failed = _run(server, app_id)
    assert failed["status"] == "failed"
    assert failed["error"] == (
        "node_2 (Caption model): OpenAI: configure the API key first: the secret "
        "'OPENAI_API_KEY' is not set in this workspace; add it with "
        "PUT /v1/secrets/OPENAI_API_KEY"
    )
    assert fake_openai.requests == []

    put = requests.put(
        f"{server.api}/secrets/OPENAI_API_KEY",
        headers=server.headers(),
        json={"value": SECRET},
        timeout=30,
    )
    assert put.status_code == 200, put.text
    assert SECRET not in put.text
    listed = server.get("/secrets")
    assert [s["name"] for s in listed.json()["data"]] == ["OPENAI_API_KEY"]
    assert SECRET not in listed.text

    # Point the app at the local fake (loopback: allowed by FLOWY_ALLOW_PRIVATE_URLS=1).
    workflow = copy.deepcopy(app["workflow"])
    chat = next(n for n in workflow["nodes"] if n["type"] == "openai.chat")
    chat["params"]["base_url"] = fake_openai.base
    patched = server.patch(f"/apps/{app_id}", json={"workflow": workflow})
    assert patched.status_code == 200, patched.text
    assert patched.json()["data"]["version"] == app["version"] + 1

    done = _run(server, app_id)
    assert done["status"] == "completed", done
    assert [(o["nodeId"], o["kind"], o["value"]) for o in done["outputs"]] == [
        ("node_3", "text", CAPTION)
    ]
    (call,) = fake_openai.requests
    assert call["path"] == "/v1/chat/completions"
    assert call["auth"] == f"Bearer {SECRET}"
    sent = json.loads(call["body"])
    assert sent["model"] == "gpt-4o-mini"
    parts = sent["messages"][-1]["content"]
    assert parts[0]["type"] == "text" and "caption" in parts[0]["text"].lower()
    assert parts[1]["image_url"]["url"].startswith("data:image/jpeg;base64,")

    # A wrong key: the provider's message is quoted, the key is not.
    requests.put(
        f"{server.api}/secrets/OPENAI_API_KEY",
        headers=server.headers(),
        json={"value": SECRET + "-wrong"},
        timeout=30,
    ).raise_for_status()
    wrong = _run(server, app_id)
    assert wrong["status"] == "failed"
    assert wrong["error"] == "node_2 (Caption model): OpenAI: HTTP 401: Incorrect API key provided"

    server.stop()
    log = "".join(server.output)
    assert "Uvicorn running" in log or "flowy" in log  # the log was captured
    assert SECRET not in log
