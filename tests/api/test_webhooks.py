"""Webhooks end to end: a real ``flowy serve`` posting to real loopback receivers.

Signatures are checked with the reference ``standardwebhooks`` verifier.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image
from standardwebhooks import Webhook, WebhookVerificationError

from tests.api.test_errors import assert_error
from tests.flowy_process import FlowyProcess

# Retries in 1.1 s, 1.5 s and 2 s (the scale shrinks the schedule a hundredfold): far
# enough apart that each attempt has its own webhook-timestamp second.
FAST_RETRIES = {
    "FLOWY_WEBHOOKS__RETRY_SCALE": "0.01",
    "FLOWY_WEBHOOKS__RETRY_SCHEDULE": "[110, 150, 200]",
    "FLOWY_WEBHOOKS__POLL_SECONDS": "0.1",
}

TEXT_APP = {
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
IMAGE_APP = {
    "nodes": [
        {"id": "node_1", "type": "input.image_url", "label": "Photo"},
        {
            "id": "node_2",
            "type": "image.resize",
            "params": {"width": 8, "height": 8},
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


# --------------------------------------------------------------------------- receiver


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def json(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def verify(self, secret: str) -> dict[str, Any]:
        data: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return data


class Receiver:
    """A loopback HTTP server that records every POST and answers from a script
    (``script[path]``: statuses to answer in turn, then 200)."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[int]] = {}
        self.cond = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with outer.cond:
                    outer.received.append(
                        Received(
                            self.path,
                            {k.lower(): v for k, v in self.headers.items()},
                            body,
                            time.time(),
                        )
                    )
                    todo = outer.script.get(self.path) or []
                    status = todo.pop(0) if todo else 200
                    outer.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def do_GET(self) -> None:  # media a failing run asks for
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def at(self, path: str) -> list[Received]:
        with self.cond:
            return [r for r in self.received if r.path == path]

    def wait(self, path: str, n: int = 1, timeout: float = 20) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(got := [r for r in self.received if r.path == path]) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{path}: got {len(got)} of {n} webhook(s)")
                self.cond.wait(left)
            return got

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    srv = FlowyProcess(
        tmp_path_factory.mktemp("webhooks"),
        env={"FLOWY_ALLOW_PRIVATE_URLS": "1", **FAST_RETRIES},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(autouse=True)
def _no_endpoints_left(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "server" in request.fixturenames:
        srv: FlowyProcess = request.getfixturevalue("server")
        for ep in srv.get("/webhooks").json()["data"]:
            srv.delete(f"/webhooks/{ep['id']}")


@pytest.fixture(scope="module")
def other_key(server: FlowyProcess) -> str:
    res = server.cli("workspaces", "create", "Other team")
    assert res.returncode == 0, res.stderr
    m = re.search(r"export FLOWY_KEY=(\S+)", res.stdout)
    assert m
    return m.group(1)


def _app(server: FlowyProcess, workflow: dict[str, Any]) -> str:
    res = server.post("/apps", json={"title": "Hooked", "workflow": workflow, "published": True})
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["id"])


@pytest.fixture(scope="module")
def text_app(server: FlowyProcess) -> str:
    return _app(server, TEXT_APP)


@pytest.fixture(scope="module")
def image_app(server: FlowyProcess) -> str:
    return _app(server, IMAGE_APP)


def _png() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 40, 90)).save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _run(server: FlowyProcess, app_id: str, value: str = "hi", **extra: Any) -> dict[str, Any]:
    """Start a run and wait for its end."""
    res = server.post(
        f"/apps/{app_id}/runs",
        json={"inputs": {"node_1": value}, **extra},
        headers={**server.headers(), "Prefer": "wait=30"},
    )
    assert res.status_code == 201, res.text
    run: dict[str, Any] = res.json()["data"]
    assert run["status"] in ("completed", "failed", "canceled"), run
    return run


def _endpoint(server: FlowyProcess, url: str, **body: Any) -> dict[str, Any]:
    res = server.post("/webhooks", json={"url": url, **body})
    assert res.status_code == 201, res.text
    data: dict[str, Any] = res.json()["data"]
    return data


def _deliveries(server: FlowyProcess, path: str, until: str | None = None) -> list[dict]:
    """A delivery log; with ``until``, wait for its newest entry to reach that status."""
    deadline = time.monotonic() + 20
    while True:
        res = server.get(path)
        assert res.status_code == 200, res.text
        log: list[dict[str, Any]] = res.json()["data"]
        if until is None or (log and log[0]["status"] == until):
            return log
        if time.monotonic() > deadline:
            raise AssertionError(f"deliveries did not reach {until}: {log}")
        time.sleep(0.05)


def _strip(run: dict[str, Any]) -> dict[str, Any]:
    """A run view without what is signed afresh on every read."""
    out = dict(run)
    out["outputs"] = [
        {**o, "url": o["url"].split("?")[0], "expiresAt": None} if "url" in o else o
        for o in run["outputs"]
    ]
    return out


# --------------------------------------------------------------------------- endpoints


def test_endpoint_crud_shows_the_secret_once(server: FlowyProcess, other_key: str) -> None:
    made = _endpoint(server, "https://hooks.example/flowy", description="CI")
    assert made["secret"].startswith("whsec_")
    assert len(base64.b64decode(made["secret"].removeprefix("whsec_"))) == 24
    assert made["events"] == ["run.completed", "run.failed", "run.canceled"]
    assert made["enabled"] is True and made["description"] == "CI"
    ep_id = made["id"]

    got = server.get(f"/webhooks/{ep_id}").json()["data"]
    assert "secret" not in got and got["url"] == "https://hooks.example/flowy"
    listed = server.get("/webhooks").json()["data"]
    assert [e["id"] for e in listed] == [ep_id] and "secret" not in listed[0]
    assert made["secret"] not in server.get(f"/webhooks/{ep_id}").text

    res = server.patch(
        f"/webhooks/{ep_id}",
        json={"events": ["run.started"], "enabled": False, "url": "http://x.io/h"},
    )
    assert res.status_code == 200, res.text
    assert {k: res.json()["data"][k] for k in ("events", "enabled", "url")} == {
        "events": ["run.started"],
        "enabled": False,
        "url": "http://x.io/h",
    }
    rotated = server.post(f"/webhooks/{ep_id}/rotate-secret").json()["data"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["secret"]

    assert_error(
        server.post("/webhooks", json={"url": "ftp://x.io/h"}), 422, "validation_error", "url"
    )
    assert_error(server.post("/webhooks", json={}), 422, "validation_error", "url")
    bad = server.post("/webhooks", json={"url": "https://x.io", "events": ["run.done"]})
    err = assert_error(bad, 422, "validation_error", "events", "run.done")
    assert err["details"][0]["field"] == "events"
    assert_error(
        server.patch(f"/webhooks/{ep_id}", json={"enabled": "yes"}), 422, "validation_error"
    )
    assert_error(server.patch(f"/webhooks/{ep_id}", json={"secret": "x"}), 422, "validation_error")

    # Another workspace sees none of it.
    assert server.get("/webhooks", other_key).json()["data"] == []
    for method, path in [
        ("GET", f"/webhooks/{ep_id}"),
        ("PATCH", f"/webhooks/{ep_id}"),
        ("DELETE", f"/webhooks/{ep_id}"),
        ("POST", f"/webhooks/{ep_id}/rotate-secret"),
        ("GET", f"/webhooks/{ep_id}/deliveries"),
    ]:
        kw: dict[str, Any] = {"json": {"enabled": True}} if method == "PATCH" else {}
        assert_error(server.request(method, path, other_key, **kw), 404, "not_found")

    assert server.delete(f"/webhooks/{ep_id}").status_code == 204
    assert_error(server.get(f"/webhooks/{ep_id}"), 404, "not_found")
    assert_error(server.get("/webhooks/not-an-id"), 404, "not_found")


def test_run_request_webhook_fields_are_checked(server: FlowyProcess, text_app: str) -> None:
    def post(**extra: Any) -> requests.Response:
        return server.post(f"/apps/{text_app}/runs", json={"inputs": {"node_1": "x"}, **extra})

    err = assert_error(post(webhook="ftp://x.io/h"), 422, "validation_error", "webhook")
    assert err["details"][0]["field"] == "webhook"
    err = assert_error(
        post(webhook="https://x.io/h", webhookEventsFilter=["run.completed", "run.exploded"]),
        422,
        "validation_error",
        "run.exploded",
    )
    assert err["details"][0]["field"] == "webhookEventsFilter"
    assert_error(post(webhookEventsFilter=["run.failed"]), 422, "validation_error", "webhook")
    assert_error(post(webhook="https://x.io/h", webhookEventsFilter=[]), 422, "validation_error")
    ok = post(webhook="https://hooks.example/run", webhookEventsFilter=["run.failed"])
    assert ok.status_code == 201, ok.text
    server.wait_run(ok.json()["data"]["runId"])


# --------------------------------------------------------------------------- deliveries


def test_run_webhook_gets_the_finished_run_with_output_urls(
    server: FlowyProcess, receiver: Receiver, image_app: str, other_key: str
) -> None:
    secret = server.get("/webhooks/run-secret").json()["data"]["secret"]
    assert secret.startswith("whsec_")
    assert server.get("/webhooks/run-secret").json()["data"]["secret"] == secret
    assert server.get("/webhooks/run-secret", other_key).json()["data"]["secret"] != secret

    run = _run(server, image_app, _png(), webhook=receiver.url("/run"))
    assert run["status"] == "completed", run
    [hook] = receiver.wait("/run")
    payload = hook.verify(secret)  # the reference verifier accepts it
    assert hook.headers["webhook-id"].startswith("msg_")
    assert hook.headers["content-type"] == "application/json"
    assert payload["type"] == "run.completed"
    assert payload["timestamp"].endswith("Z")
    assert _strip(payload["data"]) == _strip(server.get(f"/runs/{run['runId']}").json()["data"])
    [out] = payload["data"]["outputs"]
    assert out["kind"] == "image" and "signature=" in out["url"]
    img = requests.get(out["url"], timeout=10)  # the signed link works as sent
    assert img.status_code == 200 and img.content.startswith(b"\x89PNG")

    with pytest.raises(WebhookVerificationError):  # another secret
        hook.verify(server.get("/webhooks/run-secret", other_key).json()["data"]["secret"])
    with pytest.raises(WebhookVerificationError):  # a changed body
        Webhook(secret).verify(hook.body.replace(b"completed", b"failed"), hook.headers)

    time.sleep(0.5)
    assert len(receiver.at("/run")) == 1  # terminal events only by default
    log = _deliveries(server, f"/webhooks/deliveries?runId={run['runId']}", until="delivered")
    [d] = log
    assert d["eventType"] == "run.completed" and d["endpointId"] is None
    assert d["messageId"] == hook.headers["webhook-id"] and d["url"] == receiver.url("/run")
    assert [a["statusCode"] for a in d["attempts"]] == [200]
    assert server.get(f"/webhooks/deliveries/{d['id']}").json()["data"]["id"] == d["id"]
    assert_error(server.get(f"/webhooks/deliveries/{d['id']}", other_key), 404, "not_found")
    assert server.get(f"/webhooks/deliveries?runId={run['runId']}", other_key).json()["data"] == []

    # Redelivered on request: same message id, signed afresh.
    res = server.post(f"/webhooks/deliveries/{d['id']}/redeliver")
    assert res.status_code == 202, res.text
    again = receiver.wait("/run", 2)[1]
    assert again.headers["webhook-id"] == hook.headers["webhook-id"]
    assert again.verify(secret)["type"] == "run.completed"


def test_endpoints_get_the_events_they_asked_for(
    server: FlowyProcess, receiver: Receiver, text_app: str, image_app: str
) -> None:
    starts = _endpoint(server, receiver.url("/a"), events=["run.started", "run.completed"])
    fails = _endpoint(server, receiver.url("/b"), events=["run.failed"])
    ok = _run(server, text_app)
    bad = _run(server, image_app, receiver.url("/missing.png"))
    assert (ok["status"], bad["status"]) == ("completed", "failed")

    got_a = receiver.wait("/a", 3)  # both runs started; only one completed
    seen = sorted((r.json["data"]["runId"], r.verify(starts["secret"])["type"]) for r in got_a)
    assert seen == sorted(
        [
            (ok["runId"], "run.started"),
            (ok["runId"], "run.completed"),
            (bad["runId"], "run.started"),
        ]
    )
    [got_b] = receiver.wait("/b")
    assert got_b.verify(fails["secret"])["data"]["runId"] == bad["runId"]
    assert got_b.json["data"]["status"] == "failed" and got_b.json["data"]["error"]
    with pytest.raises(WebhookVerificationError):  # one endpoint's secret is not another's
        got_b.verify(starts["secret"])
    time.sleep(0.5)
    assert len(receiver.at("/a")) == 3 and len(receiver.at("/b")) == 1
    # The started event showed the run as it was then.
    started = next(r for r in got_a if r.json["type"] == "run.started")
    assert started.json["data"]["status"] == "running"


def test_failed_attempts_are_retried_with_the_same_id(
    server: FlowyProcess, receiver: Receiver, text_app: str
) -> None:
    receiver.script["/flaky"] = [500, 500]
    ep = _endpoint(server, receiver.url("/flaky"))
    _run(server, text_app)
    got = receiver.wait("/flaky", 3, timeout=30)
    assert len({r.headers["webhook-id"] for r in got}) == 1
    stamps = [int(r.headers["webhook-timestamp"]) for r in got]
    assert stamps == sorted(stamps) and len(set(stamps)) == 3, stamps
    for r in got:  # each attempt signed for its own timestamp
        assert r.verify(ep["secret"])["type"] == "run.completed"

    [d] = _deliveries(server, f"/webhooks/{ep['id']}/deliveries", until="delivered")
    assert d["attemptCount"] == 3 and d["messageId"] == got[0].headers["webhook-id"]
    assert [a["statusCode"] for a in d["attempts"]] == [500, 500, 200]
    assert [a["timestamp"] for a in d["attempts"]] == stamps
    assert "HTTP 500" in d["attempts"][0]["error"] and d["attempts"][2]["error"] is None
    assert all(isinstance(a["durationMs"], int) for a in d["attempts"])
    assert d["deliveredAt"] and d["nextAttemptAt"] is None


def test_gone_disables_the_endpoint(
    server: FlowyProcess, receiver: Receiver, text_app: str
) -> None:
    receiver.script["/gone"] = [410]
    ep = _endpoint(server, receiver.url("/gone"))
    _run(server, text_app)
    receiver.wait("/gone")
    [d] = _deliveries(server, f"/webhooks/{ep['id']}/deliveries", until="failed")
    assert d["attempts"][0]["statusCode"] == 410
    now = server.get(f"/webhooks/{ep['id']}").json()["data"]
    assert now["enabled"] is False and "410" in now["disabledReason"]

    _run(server, text_app)  # no more for a disabled endpoint
    time.sleep(0.5)
    assert len(receiver.at("/gone")) == 1
    assert len(server.get(f"/webhooks/{ep['id']}/deliveries").json()["data"]) == 1
    res = server.post(f"/webhooks/{ep['id']}/deliveries/{d['id']}/redeliver")
    assert_error(res, 409, "conflict", "disabled")

    back = server.patch(f"/webhooks/{ep['id']}", json={"enabled": True}).json()["data"]
    assert back["enabled"] is True and back["disabledReason"] is None


def test_redeliver_sends_the_same_message_again(
    server: FlowyProcess, receiver: Receiver, text_app: str, other_key: str
) -> None:
    ep = _endpoint(server, receiver.url("/redo"))
    other = _endpoint(server, "https://hooks.example/other")
    _run(server, text_app)
    [first] = receiver.wait("/redo")
    [d] = _deliveries(server, f"/webhooks/{ep['id']}/deliveries", until="delivered")

    base = f"/webhooks/{ep['id']}/deliveries/{d['id']}"
    assert_error(server.post(f"{base}/redeliver", other_key), 404, "not_found")
    wrong = f"/webhooks/{other['id']}/deliveries/{d['id']}/redeliver"
    assert_error(server.post(wrong), 404, "not_found")  # not that endpoint's delivery
    res = server.post(f"{base}/redeliver")
    assert res.status_code == 202, res.text
    second = receiver.wait("/redo", 2)[1]
    assert second.headers["webhook-id"] == first.headers["webhook-id"]
    assert second.verify(ep["secret"]) == first.verify(ep["secret"])  # same event
    deadline = time.monotonic() + 10
    while (log := server.get(base).json()["data"])["attemptCount"] < 2:
        assert time.monotonic() < deadline, log
        time.sleep(0.05)
    assert [a["statusCode"] for a in log["attempts"]] == [200, 200]
    assert log["status"] == "delivered"

    page = server.get(f"/webhooks/{ep['id']}/deliveries?limit=1").json()
    assert len(page["data"]) == 1 and page["nextCursor"] is None
    assert_error(server.get("/webhooks/deliveries?limit=0"), 422, "validation_error", "limit")
    assert_error(server.get("/webhooks/deliveries?status=lost"), 422, "validation_error")


def test_delivery_log_pages_newest_first(
    server: FlowyProcess, receiver: Receiver, text_app: str
) -> None:
    ep = _endpoint(server, receiver.url("/pages"))
    runs = [_run(server, text_app, str(i))["runId"] for i in range(3)]
    receiver.wait("/pages", 3)
    seen: list[str] = []
    cursor = None
    while True:
        q = f"/webhooks/{ep['id']}/deliveries?limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = server.get(q).json()
        seen += [d["runId"] for d in page["data"]]
        cursor = page["nextCursor"]
        if not cursor:
            break
    assert seen == runs[::-1]


# --------------------------------------------------------------------------- guard, crash


def test_private_webhook_url_is_refused_and_the_run_is_unaffected(
    tmp_path: Path, receiver: Receiver
) -> None:
    srv = FlowyProcess(tmp_path, env={**FAST_RETRIES, "FLOWY_WEBHOOKS__RETRY_SCHEDULE": "[20]"})
    srv.start()
    try:
        app = _app(srv, TEXT_APP)
        run = _run(srv, app, "still fine", webhook=receiver.url("/private"))
        assert run["status"] == "completed"
        assert run["outputs"] == [{"nodeId": "node_2", "kind": "text", "value": "still fine"}]
        [d] = _deliveries(srv, f"/webhooks/deliveries?runId={run['runId']}", until="failed")
        assert d["attemptCount"] == 2
        for a in d["attempts"]:
            assert a["statusCode"] is None
            assert "loopback" in a["error"] and "FLOWY_ALLOW_PRIVATE_URLS" in a["error"]
        assert d["lastError"] == d["attempts"][-1]["error"]
        assert receiver.at("/private") == []
    finally:
        srv.stop()


def test_the_delivery_outlives_a_kill_right_after_the_run(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = {"FLOWY_ALLOW_PRIVATE_URLS": "1", **FAST_RETRIES}
    # First life: no dispatcher, so only the outbox row can carry the event over.
    srv = FlowyProcess(tmp_path, env={**env, "FLOWY_WEBHOOKS__DISPATCH": "0"}).start()
    try:
        app = _app(srv, TEXT_APP)
        run = _run(srv, app, "survivor", webhook=receiver.url("/kill"))
        srv.kill()  # SIGKILL as soon as the run has completed
        assert run["status"] == "completed"
        assert receiver.at("/kill") == []
        srv.env["FLOWY_WEBHOOKS__DISPATCH"] = "1"
        srv.start()
        [hook] = receiver.wait("/kill")
        secret = srv.get("/webhooks/run-secret").json()["data"]["secret"]
        payload = hook.verify(secret)
        assert payload["type"] == "run.completed" and payload["data"]["runId"] == run["runId"]
        assert payload["data"]["outputs"][0]["value"] == "survivor"
        _deliveries(srv, f"/webhooks/deliveries?runId={run['runId']}", until="delivered")
    finally:
        srv.stop()
