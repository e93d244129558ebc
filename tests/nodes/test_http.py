"""http.request against a real server on 127.0.0.1: methods, bodies, secrets, the guard."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest

from flowy.engine.executor import CancelToken, NullSink
from flowy.engine.executor import _Context as Context
from flowy.errors import MediaError, NodeError
from flowy.media.fetch import FetchPolicy
from flowy.nodes.http import HttpParams, http_request

TOKEN = "ghp_supersecretvalue123"
LOCAL = FetchPolicy(allow_private=True, timeout=5.0)


class Secrets:
    def __init__(self, values: dict[str, str]) -> None:
        self.values = values

    def get(self, name: str) -> str | None:
        return self.values.get(name)


class NoMedia:
    def read(self, value: str) -> bytes:
        raise MediaError("no media here")


def ctx(policy: FetchPolicy = LOCAL, secrets: dict[str, str] | None = None) -> Context:
    return Context(
        "run_1",
        "node_4",
        None,
        NoMedia(),
        1_000_000,
        policy,
        Secrets(secrets or {"GH_TOKEN": TOKEN}),
        CancelToken(),
        NullSink(),
    )


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        path, _, query = self.path.partition("?")
        record = {
            "method": self.command,
            "path": path,
            "query": parse_qs(query),
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body,
        }
        self.server.seen.append(record)
        status = 200
        if path.startswith("/status/"):
            status = int(path.rsplit("/", 1)[1])
        out = b"plain words" if path == "/text" else json.dumps(record).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if path == "/text" else "application/json")
        self.send_header("Set-Cookie", "a=1")
        self.send_header("Set-Cookie", "b=2")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    threading.Thread(target=s.serve_forever, args=(0.05,), daemon=True).start()
    yield s
    s.shutdown()
    s.server_close()


def call(c: Context, params: dict[str, Any], **inputs: object) -> dict[str, Any]:
    return dict(http_request.run(c, HttpParams.model_validate(params), **inputs))


def test_get_outputs_status_body_json_and_headers(server: _Server) -> None:
    out = call(ctx(), {"url": server.url("/echo"), "query": {"q": "a b"}})
    assert out["status"] == 200
    assert out["json"]["method"] == "GET" and out["json"]["query"] == {"q": ["a b"]}
    assert json.loads(out["body"]) == out["json"]
    assert out["headers"]["content-type"] == "application/json"
    assert out["headers"]["set-cookie"] == "a=1, b=2"
    assert server.seen[0]["body"] == ""


def test_text_answer_has_null_json(server: _Server) -> None:
    out = call(ctx(), {"url": server.url("/text")})
    assert out["body"] == "plain words" and out["json"] is None


def test_url_input_wins_over_param(server: _Server) -> None:
    out = call(ctx(), {"url": "http://example.invalid/"}, url=server.url("/from-input"))
    assert out["json"]["path"] == "/from-input"


def test_post_json_body_from_input(server: _Server) -> None:
    out = call(ctx(), {"method": "POST", "url": server.url("/x"), "body": {"p": 1}}, body={"i": 2})
    seen = server.seen[0]
    assert seen["method"] == "POST" and json.loads(seen["body"]) == {"i": 2}
    assert seen["headers"]["content-type"] == "application/json"
    assert out["status"] == 200


def test_form_and_text_bodies(server: _Server) -> None:
    call(
        ctx(),
        {"method": "PUT", "url": server.url("/f"), "body_type": "form", "body": {"a": "1", "b": 2}},
    )
    call(ctx(), {"method": "PATCH", "url": server.url("/t"), "body_type": "text", "body": "hé"})
    call(ctx(), {"method": "DELETE", "url": server.url("/d")})
    form, plain, delete = server.seen
    assert form["method"] == "PUT" and parse_qs(form["body"]) == {"a": ["1"], "b": ["2"]}
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert plain["method"] == "PATCH" and plain["body"] == "hé"
    assert plain["headers"]["content-type"].startswith("text/plain")
    assert delete["method"] == "DELETE" and delete["body"] == ""
    with pytest.raises(NodeError, match="form body must be a JSON object"):
        call(ctx(), {"method": "POST", "url": server.url("/f"), "body_type": "form", "body": [1]})


def test_header_secrets_are_resolved(server: _Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    params = {
        "url": server.url("/echo"),
        "headers": {"Authorization": "Bearer {{secret:GH_TOKEN}}", "X-Plain": "v"},
    }
    call(ctx(), params)
    headers = server.seen[0]["headers"]
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["x-plain"] == "v"
    assert TOKEN not in caplog.text


def test_missing_secret_says_how_to_set_it(server: _Server) -> None:
    params = {"url": server.url("/echo"), "headers": {"X-Key": "{{ secret:NOPE }}"}}
    with pytest.raises(NodeError, match=r"'NOPE' is not set.*PUT /v1/secrets/NOPE"):
        call(ctx(), params)
    assert server.seen == []


def test_error_status_is_an_answer_or_a_failure_without_secrets(server: _Server) -> None:
    params: dict[str, Any] = {
        "url": server.url("/status/401"),
        "headers": {"Authorization": "token {{secret:GH_TOKEN}}"},
    }
    assert call(ctx(), params)["status"] == 401
    with pytest.raises(NodeError, match="GET answered HTTP 401") as info:
        call(ctx(), {**params, "fail_on_error": True})
    # The server echoed the header back in its body: the message must not carry it.
    assert TOKEN not in info.value.message
    assert "[redacted]" in info.value.message


def test_guard_refuses_loopback_unless_allowed(server: _Server) -> None:
    with pytest.raises(NodeError, match=r"127\.0\.0\.1 is loopback.*FLOWY_ALLOW_PRIVATE_URLS=1"):
        call(
            ctx(FetchPolicy()),
            {"url": server.url("/echo"), "headers": {"X-Key": "{{secret:GH_TOKEN}}"}},
        )
    assert server.seen == []
    with pytest.raises(NodeError, match="cloud metadata"):
        call(ctx(), {"url": "http://169.254.169.254/latest/meta-data/"})


def test_params_and_inputs_are_checked() -> None:
    with pytest.raises(NodeError, match="no URL"):
        call(ctx(), {})
    with pytest.raises(ValueError, match="invalid header name"):
        HttpParams.model_validate({"headers": {"Bad Header": "x"}})
    with pytest.raises(NodeError, match="unsupported URL scheme 'file'"):
        call(ctx(), {"url": "file:///etc/passwd"})


def test_not_deterministic() -> None:
    assert http_request.deterministic is False
