"""The Python SDK against a real Flowy: apps, runs with uploads, outputs, failures,
timeouts, cancel, paging, the live event stream cut and resumed, retries after 429."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import io
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

import flowy.client
from flowy.client import (
    APIConnectionError,
    AsyncFlowy,
    AuthenticationError,
    ConflictError,
    Flowy,
    NotFoundError,
    RateLimitError,
    RunCanceled,
    RunEvent,
    RunFailed,
    RunTimeout,
    ServerError,
    ValidationError,
)
from tests.flowy_process import FlowyProcess, StaticServer

# -- apps used here -------------------------------------------------------------------


def echo_workflow(seconds: float = 0) -> dict[str, Any]:
    """input.text -> util.delay(seconds) -> output.text."""
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
        tmp_path_factory.mktemp("sdk"),
        env={"FLOWY_ALLOW_PRIVATE_URLS": "1", "FLOWY_WORKER__CONCURRENCY": "4"},
    ).start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server: FlowyProcess) -> Iterator[Flowy]:
    with Flowy(server.api, server.key) as c:
        yield c


@pytest.fixture(scope="module")
def headshot(server: FlowyProcess) -> str:
    with Flowy(server.api, server.key) as c:
        return next(a.id for a in c.apps.list() if a.title == "Headshot generator")


def make_app(server: FlowyProcess, seconds: float = 0, title: str = "Echo") -> str:
    with Flowy(server.api, server.key) as c:
        return c.apps.create(echo_workflow(seconds), title=title, published=True).id


@pytest.fixture(scope="module")
def echo(server: FlowyProcess) -> str:
    return make_app(server, 0, "Echo")


@pytest.fixture(scope="module")
def slow(server: FlowyProcess) -> str:
    return make_app(server, 30, "Slow echo")


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory, portrait_png: bytes) -> Path:
    path = tmp_path_factory.mktemp("photos") / "astronaut.png"
    path.write_bytes(portrait_png)
    return path


# -- apps -----------------------------------------------------------------------------


def test_list_and_get_apps(client: Flowy, headshot: str, server: FlowyProcess) -> None:
    apps = client.apps.list()
    summary = next(a for a in apps if a.id == headshot)
    assert summary.title == "Headshot generator" and summary.published
    assert summary.inputs == () and summary.created_at is not None

    app = client.apps.get(headshot)
    assert app.version == 1 and app.version_id and app.workflow is not None
    photo_in = app.input("node_1")
    assert photo_in is not None
    assert (photo_in.kind, photo_in.required, photo_in.label) == ("image_url", True, "Your photo")
    assert photo_in.is_media
    style = app.input("node_2")
    assert style is not None and style.kind == "text" and style.max_length == 500
    assert [(o.node_id, o.output_type) for o in app.outputs] == [("node_9", "image")]
    assert app.raw["id"] == headshot  # the JSON it came from is kept

    with pytest.raises(NotFoundError) as nf:
        client.apps.get("ffffffffffffffffffffffff")
    assert nf.value.status == 404 and nf.value.code == "not_found"
    with Flowy(server.api, "flowy_sk_wrong") as bad, pytest.raises(AuthenticationError) as au:
        bad.apps.list()
    assert au.value.status == 401 and au.value.code == "unauthorized"


def test_config_from_environment(monkeypatch: pytest.MonkeyPatch, server: FlowyProcess) -> None:
    monkeypatch.setenv("FLOWY_API", server.base)  # without /v1: it is added
    monkeypatch.setenv("FLOWY_KEY", server.key or "")
    with Flowy() as c:
        assert c.api == server.api
        assert c.apps.list()
    monkeypatch.delenv("FLOWY_KEY")
    with pytest.raises(flowy.client.FlowyError, match="FLOWY_KEY"):
        Flowy()


# -- runs and outputs ----------------------------------------------------------------


def test_run_uploads_a_local_file_and_outputs_read_and_save(
    client: Flowy, headshot: str, photo: Path, tmp_path: Path
) -> None:
    outputs = client.run(headshot, {"node_1": photo, "node_2": "studio lighting"}, timeout=120)
    assert len(outputs) == 1
    out = outputs["node_9"]
    assert out is outputs[0] and outputs.run.status == "completed"
    assert out.kind == "image" and out.url and out.content_type == "image/png"
    assert isinstance(out.expires_at, datetime) and out.expires_at > datetime.now(UTC)
    data = out.read()
    assert data.startswith(b"\x89PNG") and len(data) == out.size
    assert Image.open(io.BytesIO(data)).size == (768, 960)

    saved = out.save(tmp_path)  # a directory: the output's own file name
    assert saved == tmp_path / "headshot.png" and saved.read_bytes() == data
    named = out.save(tmp_path / "sub" / "me.png")  # a file path (parents made)
    assert named.read_bytes() == data
    assert outputs.save(tmp_path / "all") == [tmp_path / "all" / "headshot.png"]

    # The run used an upload of the file: a link to this server's files.
    run = client.runs.get(outputs.run_id)
    assert run.nodes is not None and {n.status for n in run.nodes} == {"completed"}
    assert {n.node_id: n.label for n in run.nodes}["node_3"] == "Crop to face"

    # A link that no longer verifies (tampered here, expired in life) is signed afresh.
    assert out.url is not None
    broken = dataclasses.replace(out, url=out.url.replace("signature=", "signature=x"))
    assert broken.read() == data


def test_string_paths_and_open_files_are_uploaded(
    client: Flowy, headshot: str, photo: Path, echo: str
) -> None:
    with open(photo, "rb") as f:
        by_file = client.run(headshot, {"node_1": f}, timeout=120)
    by_str = client.run(headshot, {"node_1": str(photo)}, timeout=120)
    assert by_file[0].read() == by_str[0].read()
    # A string naming a file, given to a text input, stays text.
    text = client.run(echo, {"node_1": str(photo)}, timeout=60)
    assert text[0].value == str(photo)

    upload = client.uploads.create(photo)
    assert upload.filename == "astronaut.png" and upload.size == photo.stat().st_size
    assert upload.content_type == "image/png" and upload.expires_at is not None
    assert client.uploads.get(upload.id).id == upload.id


def test_module_level_run_with_a_url(
    server: FlowyProcess, headshot: str, media_server: StaticServer, tmp_path: Path
) -> None:
    outputs = flowy.client.run(
        headshot, {"node_1": media_server.url("me.png")}, api=server.api, key=server.key
    )
    path = outputs[0].save(tmp_path)  # the client is closed; the signed link still works
    assert path.read_bytes().startswith(b"\x89PNG")
    queued = flowy.client.run(
        headshot, {"node_1": media_server.url("me.png")}, wait=False, api=server.api, key=server.key
    )
    assert queued.status in ("queued", "running", "completed") and queued.id

    with Flowy(server.api, server.key) as client:
        kept = client.run(headshot, {"node_1": media_server.url("me.png")})
    assert kept[0].read().startswith(b"\x89PNG")  # outputs outlive the client they came from


def test_text_outputs_have_values(client: Flowy, echo: str, tmp_path: Path) -> None:
    outputs = client.run(echo, {"node_1": "hello there"})
    out = outputs[0]
    assert (out.node_id, out.kind, out.value, out.url) == ("node_3", "text", "hello there", None)
    assert out.read() == b"hello there"
    assert out.save(tmp_path).read_text() == "hello there"
    assert out.save(tmp_path).name == "node_3.txt"


def test_prefer_wait_and_validation_errors(client: Flowy, echo: str, server: FlowyProcess) -> None:
    run = client.runs.create(echo, {"node_1": "waited"}, wait=10)
    assert run.status == "completed" and run.outputs[0].value == "waited"
    assert run.nodes is not None and run.completed_at is not None

    with pytest.raises(ValidationError) as err:
        client.runs.create(echo, {"nope": 1})
    assert err.value.status == 422
    assert set(err.value.field_errors) == {"inputs.nope", "inputs.node_1"}
    assert "required" in err.value.field_errors["inputs.node_1"][0]

    draft = client.apps.create(echo_workflow(), title="Draft")
    assert not draft.published
    with pytest.raises(ConflictError) as conflict:
        client.runs.create(draft.id, {"node_1": "x"})
    assert conflict.value.status == 409


def test_failed_run_raises_run_failed(client: Flowy, headshot: str, media_dir: Path) -> None:
    with pytest.raises(RunFailed) as failed:
        client.run(headshot, {"node_1": media_dir / "landscape.png"}, timeout=120)
    exc = failed.value
    assert exc.node == "node_3" and "no face" in exc.message
    assert exc.run_id and exc.run is not None and exc.run.status == "failed"
    assert client.runs.get(exc.run_id).error_node == "node_3"
    assert not isinstance(exc, RunCanceled)
    # runs.wait answers a failed run; only run() raises.
    assert client.runs.wait(exc.run_id).status == "failed"


def test_timeout_raises_run_timeout_with_the_run_id(client: Flowy, slow: str) -> None:
    t0 = time.monotonic()
    with pytest.raises(RunTimeout) as timed_out:
        client.run(slow, {"node_1": "zzz"}, timeout=1.0)
    took = time.monotonic() - t0
    assert 0.9 < took < 6, took
    run_id = timed_out.value.run_id
    assert timed_out.value.timeout == 1.0 and timed_out.value.status in ("queued", "running")
    assert client.runs.get(run_id).status in ("queued", "running")  # it goes on
    with pytest.raises(RunTimeout) as polled:  # polling waits the same way
        client.runs.wait(run_id, timeout=0.5, poll_interval=0.1)
    assert polled.value.run_id == run_id
    client.runs.cancel(run_id)
    assert client.runs.wait(run_id, timeout=10).status == "canceled"


def test_cancel(client: Flowy, slow: str) -> None:
    run = client.runs.create(slow, {"node_1": "to cancel"})
    assert run.status == "queued" and run.app_id == slow
    canceled = client.runs.cancel(run.id)
    assert canceled.status in ("canceled", "running")
    final = client.runs.wait(run.id, timeout=10)
    assert final.status == "canceled" and "canceled by request" in (final.error or "")
    assert client.runs.cancel(run.id).status == "canceled"  # idempotent
    with pytest.raises(NotFoundError):
        client.runs.cancel("ffffffffffffffffffffffff")

    # run() raises RunCanceled when someone cancels the run it waits for.
    def cancel_soon() -> None:
        with Flowy(client.api, client._key) as other:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for r in other.runs.list(app_id=slow, status="running", limit=5):
                    other.runs.cancel(r.id)
                    return
                time.sleep(0.05)

    thread = threading.Thread(target=cancel_soon)
    thread.start()
    with pytest.raises(RunCanceled) as exc:
        client.run(slow, {"node_1": "canceled while waited for"}, timeout=20)
    thread.join()
    assert exc.value.status == "canceled" and exc.value.run_id


def test_runs_list_pages(server: FlowyProcess) -> None:
    app = make_app(server, 0, "Paged")
    requests: list[httpx.Request] = []
    http = httpx.Client(event_hooks={"request": [requests.append]})
    with Flowy(server.api, server.key, http_client=http) as client:
        ids = [client.runs.create(app, {"node_1": f"r{i}"}).id for i in range(7)]
        for run_id in ids:
            client.runs.wait(run_id, timeout=30)
        requests.clear()
        listed = list(client.runs.list(app_id=app, page_size=3))
        assert [r.id for r in listed] == ids[::-1]  # newest first, each once
        pages = [r for r in requests if r.url.path == "/v1/runs"]
        assert len(pages) == 3 and "cursor" in pages[1].url.params
        assert listed[0].nodes is None and listed[0].outputs[0].value == "r6"

        assert [r.id for r in client.runs.list(app_id=app, limit=5, page_size=2)] == ids[:1:-1]
        assert all(r.status == "completed" for r in client.runs.list(app, "completed"))
        future = list(client.runs.list(app_id=app, created_after=datetime(2999, 1, 1, tzinfo=UTC)))
        assert future == []
        with pytest.raises(ValidationError):
            list(client.runs.list(status="done"))
    assert not http.is_closed  # a client you pass in stays yours
    http.close()


# -- the event stream, cut and resumed ------------------------------------------------


class CuttingProxy:
    """A TCP proxy on loopback in front of Flowy.  The first ``cuts`` event-stream
    requests get their connection closed after ``cut_after`` bytes of the answer; every
    request head that passes is kept in ``heads``."""

    def __init__(self, upstream_port: int, cut_after: int, cuts: int = 1) -> None:
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.cuts_left = cuts
        self.cut_count = 0
        self.heads: list[str] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> CuttingProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.listener.close()
        with self.lock:
            for s in self.sockets:
                s.close()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self.lock:
                self.sockets += [conn, upstream]
            state = {"armed": False, "sent": 0}
            threading.Thread(target=self._up, args=(conn, upstream, state), daemon=True).start()
            threading.Thread(target=self._down, args=(conn, upstream, state), daemon=True).start()

    def _up(self, conn: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := conn.recv(65536):
                if re.match(rb"[A-Z]+ /", data):
                    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
                    with self.lock:
                        self.heads.append(head)
                        if "/events" in head.split("\r\n")[0] and self.cuts_left > 0:
                            self.cuts_left -= 1
                            state["armed"], state["sent"] = True, 0
                upstream.sendall(data)
        except OSError:
            pass

    def _down(self, conn: socket.socket, upstream: socket.socket, state: dict[str, Any]) -> None:
        try:
            while data := upstream.recv(65536):
                if state["armed"]:
                    allowed = self.cut_after - state["sent"]
                    if len(data) >= allowed:
                        conn.sendall(data[:allowed])
                        with self.lock:
                            self.cut_count += 1
                        conn.shutdown(socket.SHUT_RDWR)
                        break
                    state["sent"] += len(data)
                conn.sendall(data)
        except OSError:
            pass
        conn.close()
        upstream.close()


def _last_event_ids(heads: list[str]) -> list[str | None]:
    out: list[str | None] = []
    for head in heads:
        if "/events" not in head.split("\r\n")[0]:
            continue
        m = re.search(r"(?im)^last-event-id:\s*(\S+)", head)
        out.append(m.group(1) if m else None)
    return out


def test_events_stream_live_and_resume_after_a_cut(server: FlowyProcess) -> None:
    app = make_app(server, 1.5, "Streamed")
    with (
        CuttingProxy(server.port, cut_after=700) as proxy,
        Flowy(proxy.api, server.key) as client,
    ):
        run = client.runs.create(app, {"node_1": "live"})
        events = list(client.runs.events(run.id))
    assert proxy.cut_count == 1
    seqs = [e.seq for e in events]
    assert seqs == list(range(1, len(events) + 1))  # nothing lost, nothing repeated
    assert events[0].type == "run.queued" and events[-1].type == "run.completed"
    assert events[-1].terminal and all(isinstance(e, RunEvent) for e in events)
    assert any(e.type == "node.progress" for e in events)
    outputs = next(e for e in events if e.type == "run.outputs").data["outputs"]
    assert outputs == [{"nodeId": "node_3", "kind": "text", "value": "live"}]
    # The second request resumed where the first was cut.
    ids = _last_event_ids(proxy.heads)
    assert len(ids) == 2 and ids[0] is None
    assert ids[1] is not None and 1 <= int(ids[1]) < len(events)

    # after=N starts after event N; the ended run's stream replays and ends.
    with Flowy(server.api, server.key) as client:
        rest = list(client.runs.events(run.id, after=3))
    assert [e.seq for e in rest] == seqs[3:]
    assert [e.raw for e in rest] == [e.raw for e in events[3:]]


def test_wait_follows_the_stream_through_cuts(server: FlowyProcess) -> None:
    app = make_app(server, 1.0, "Waited")
    seen: list[RunEvent] = []
    with (
        CuttingProxy(server.port, cut_after=500, cuts=2) as proxy,
        Flowy(proxy.api, server.key) as client,
    ):
        run = client.runs.create(app, {"node_1": "through"})
        final = client.runs.wait(run.id, timeout=30, on_event=seen.append)
    assert final.status == "completed" and final.outputs[0].value == "through"
    assert proxy.cut_count == 2
    assert [e.seq for e in seen] == list(range(1, len(seen) + 1))


def test_a_stream_that_cannot_resume_raises(server: FlowyProcess, echo: str) -> None:
    with (
        CuttingProxy(server.port, cut_after=100, cuts=100) as proxy,
        Flowy(proxy.api, server.key, max_retries=1) as client,
    ):
        run = client.runs.create(echo, {"node_1": "x"}, wait=10)
        with pytest.raises(APIConnectionError, match="event stream"):
            list(client.runs.events(run.id))


# -- retries --------------------------------------------------------------------------


@dataclasses.dataclass
class Rule:
    method: str
    path: str  # a regex on the path
    status: int
    times: int = 1
    retry_after: str | None = None
    forward_first: bool = False  # pass the request on, then answer the error anyway


class FrontProxy:
    """An HTTP proxy on loopback in front of Flowy that answers some requests with an
    error (429 with Retry-After, 503...) before passing the rest on."""

    def __init__(self, upstream_port: int) -> None:
        self.rules: list[Rule] = []
        self.seen: list[tuple[str, str, dict[str, str], bytes]] = []
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_a: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                proxy.seen.append((self.command, self.path, headers, body))
                rule = next(
                    (
                        r
                        for r in proxy.rules
                        if r.times > 0
                        and r.method == self.command
                        and re.fullmatch(r.path, self.path.split("?")[0])
                    ),
                    None,
                )
                if rule is not None:
                    rule.times -= 1
                    if rule.forward_first:
                        self._forward(body, relay=False)
                    payload = json.dumps(
                        {"error": {"code": "injected", "message": "injected", "details": []}}
                    ).encode()
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if rule.retry_after is not None:
                        self.send_header("Retry-After", rule.retry_after)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self._forward(body, relay=True)

            def _forward(self, body: bytes, relay: bool) -> None:
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                skip = {"host", "connection", "content-length"}
                conn.request(
                    self.command,
                    self.path,
                    body=body or None,
                    headers={k: v for k, v in self.headers.items() if k.lower() not in skip},
                )
                res = conn.getresponse()
                data = res.read()
                conn.close()
                if not relay:
                    return
                self.send_response(res.status)
                for k, v in res.getheaders():
                    if k.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_DELETE = do_PATCH = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def calls(self, method: str, pattern: str) -> list[dict[str, str]]:
        return [h for m, p, h, _ in self.seen if m == method and re.fullmatch(pattern, p)]

    def __enter__(self) -> FrontProxy:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _run_count(server: FlowyProcess, app_id: str) -> int:
    return int(server.get(f"/apps/{app_id}").json()["data"]["runCount"])


def test_run_creation_is_retried_after_429_with_its_idempotency_key(server: FlowyProcess) -> None:
    app = make_app(server, 0, "Rate limited")
    runs_path = rf"/v1/apps/{app}/runs"
    with FrontProxy(server.port) as proxy, Flowy(proxy.api, server.key) as client:
        proxy.rules.append(Rule("POST", runs_path, 429, retry_after="1"))
        t0 = time.monotonic()
        run = client.runs.create(app, {"node_1": "after 429"})
        took = time.monotonic() - t0
        assert run.id and 1.0 <= took < 5, took  # waited the Retry-After, then succeeded
        posts = proxy.calls("POST", runs_path)
        assert len(posts) == 2
        keys = {p["idempotency-key"] for p in posts}
        assert len(keys) == 1 and uuid.UUID(keys.pop()).version == 4  # one key, both tries
        assert client.runs.wait(run.id, timeout=10).outputs[0].value == "after 429"
        assert _run_count(server, app) == 1

        # The answer is lost after the run was made (503): the retry with the same key
        # gets the first answer back instead of starting a second run.
        proxy.rules.append(Rule("POST", runs_path, 503, forward_first=True))
        again = client.runs.create(app, {"node_1": "once"})
        assert len(proxy.calls("POST", runs_path)) == 4
        assert _run_count(server, app) == 2
        assert client.runs.wait(again.id, timeout=10).outputs[0].value == "once"

        # Every call gets a fresh key; a given key is sent as it is.
        client.runs.create(app, {"node_1": "mine"}, idempotency_key="my-key-1")
        sent = [p.get("idempotency-key") for p in proxy.calls("POST", runs_path)]
        assert sent[-1] == "my-key-1" and sent[-1] != sent[-2] != sent[0]

        # Without a key a 503 is not retried: the run might have been made.
        proxy.rules.append(Rule("POST", runs_path, 503))
        before = len(proxy.calls("POST", runs_path))
        with pytest.raises(ServerError) as err:
            client.runs.create(app, {"node_1": "no key"}, idempotency_key=False)
        assert err.value.status == 503
        after = proxy.calls("POST", runs_path)[before:]
        assert len(after) == 1 and "idempotency-key" not in after[0]


def test_gets_are_retried_and_429_surfaces_when_retries_run_out(server: FlowyProcess) -> None:
    with FrontProxy(server.port) as proxy:
        with Flowy(proxy.api, server.key) as client:
            proxy.rules += [Rule("GET", "/v1/apps", 502), Rule("GET", "/v1/apps", 429, 1, "0")]
            assert client.apps.list()
            assert len(proxy.calls("GET", "/v1/apps")) == 3
        with Flowy(proxy.api, server.key, max_retries=0) as client:
            proxy.rules.append(Rule("GET", "/v1/apps", 429, retry_after="1"))
            with pytest.raises(RateLimitError) as limited:
                client.apps.list()
            assert limited.value.status == 429 and limited.value.retry_after == 1.0


def test_webhook_fields_are_sent_only_when_given(server: FlowyProcess, echo: str) -> None:
    runs_path = rf"/v1/apps/{echo}/runs"
    with FrontProxy(server.port) as proxy, Flowy(proxy.api, server.key) as client:
        proxy.rules.append(Rule("POST", runs_path, 503, times=2))  # answered by the proxy
        with pytest.raises(ServerError):
            client.runs.create(echo, {"node_1": "x"}, idempotency_key=False)
        with pytest.raises(ServerError):
            client.runs.create(
                echo,
                {"node_1": "x"},
                webhook="https://example.com/hook",
                webhook_events=["run.completed"],
                timeout_seconds=30,
                idempotency_key=False,
            )
        plain, hooked = (json.loads(body) for m, _p, _h, body in proxy.seen if m == "POST")
    assert plain == {"inputs": {"node_1": "x"}}
    assert hooked == {
        "inputs": {"node_1": "x"},
        "timeoutSeconds": 30,
        "webhook": "https://example.com/hook",
        "webhookEventsFilter": ["run.completed"],
    }


def test_connection_refused_is_an_api_connection_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        Flowy(f"http://127.0.0.1:{port}/v1", "flowy_sk_x", max_retries=1) as client,
        pytest.raises(APIConnectionError),
    ):
        client.apps.list()


# -- asyncio --------------------------------------------------------------------------


def test_async_client(server: FlowyProcess, headshot: str, photo: Path, tmp_path: Path) -> None:
    async def main() -> None:
        async with AsyncFlowy(server.api, server.key) as client:
            apps = await client.apps.list()
            assert headshot in {a.id for a in apps}
            app = await client.apps.get(headshot)
            assert app.input("node_1") is not None

            outputs = await client.run(headshot, {"node_1": photo}, timeout=120)
            data = await outputs[0].aread()
            assert data.startswith(b"\x89PNG")
            saved = await outputs[0].asave(tmp_path)
            assert saved.read_bytes() == data

            echo_app = (
                await client.apps.create(echo_workflow(0.5), title="Async", published=True)
            ).id
            with pytest.raises(RunFailed):
                await client.run(headshot, {"node_1": b"not an image at all"}, timeout=60)
            ids = [(await client.runs.create(echo_app, {"node_1": f"a{i}"})).id for i in range(3)]
            for run_id in ids:
                await client.runs.wait(run_id, timeout=30)
            listed = [r.id async for r in client.runs.list(app_id=echo_app, page_size=2)]
            assert listed == ids[::-1]

            slow = (
                await client.apps.create(echo_workflow(30), title="Async slow", published=True)
            ).id
            with pytest.raises(RunTimeout) as timed_out:
                await client.run(slow, {"node_1": "z"}, timeout=0.5)
            assert (await client.runs.cancel(timed_out.value.run_id)).status in (
                "canceled",
                "running",
            )

            streamed = (
                await client.apps.create(echo_workflow(1.5), title="Async streamed", published=True)
            ).id

        with CuttingProxy(server.port, cut_after=700) as proxy:
            async with AsyncFlowy(proxy.api, server.key) as client:
                run = await client.runs.create(streamed, {"node_1": "async live"})
                events = [e async for e in client.runs.events(run.id)]
            assert proxy.cut_count == 1
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert events[-1].type == "run.completed"

    asyncio.run(main())


# -- the SDK needs nothing but httpx --------------------------------------------------

BLOCKED = [
    "fastapi",
    "starlette",
    "sqlalchemy",
    "alembic",
    "PIL",
    "pydantic",
    "pydantic_settings",
    "numpy",
    "typer",
    "click",
    "rich",
    "uvicorn",
    "mediapipe",
    "jinja2",
    "cryptography",
]


def test_sdk_imports_with_only_httpx_and_the_stdlib(server: FlowyProcess) -> None:
    code = textwrap.dedent(
        f"""
        import importlib.abc, sys

        BLOCKED = {BLOCKED!r}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                top = name.split(".")[0]
                if top in BLOCKED or (
                    name.startswith("flowy.") and not name.startswith("flowy.client")
                ):
                    raise ImportError(f"blocked: {{name}}")
                return None

        sys.meta_path.insert(0, Block())
        import flowy.client
        from flowy.client import AsyncFlowy, Flowy, errors, models, run, webhooks

        with Flowy() as client:
            apps = client.apps.list()
        assert any(a.title == "Headshot generator" for a in apps)
        loaded = sorted(m for m in sys.modules if m == "flowy" or m.startswith("flowy."))
        assert all(m == "flowy" or m.startswith("flowy.client") for m in loaded), loaded
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print("ok", len(apps))
        """
    )
    env = {**os.environ, "FLOWY_API": server.api, "FLOWY_KEY": server.key or ""}
    res = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("ok")
