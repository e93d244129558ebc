"""fetch.request: any method, headers and a body, under the outbound guard.

Real HTTP servers on 127.0.0.1; loopback is refused by default, so requests that should
go through set ``allow_private=True``.  Two servers on two ports are two origins.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from flowy.errors import MediaError
from flowy.media.fetch import FetchPolicy, Response, TransientFetchError, fetch_url, request

LOCAL = FetchPolicy(allow_private=True, max_bytes=10_000, timeout=5.0)
SECRET = "sk-test-very-secret-value-123"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path, _, query = self.path.partition("?")
        record = {
            "method": self.command,
            "path": path,
            "query": query,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        self.server.seen.append(record)
        try:
            if path == "/echo":
                self._send(
                    200,
                    json.dumps(record).encode(),
                    {"Content-Type": "application/json", "X-Multi": "a"},
                )
            elif path.startswith("/status/"):
                self._send(int(path.rsplit("/", 1)[1]), b'{"error": "nope"}')
            elif path.startswith("/redirect/"):
                # /redirect/<code>?<location>
                self._send(int(path.rsplit("/", 1)[1]), b"", {"Location": query})
            elif path == "/big":
                self._send(200, b"x" * 20_000)
            elif path == "/slow":
                self.server.stop.wait(10)
                self._send(200, b"late")
            elif path == "/latin1":
                self._send(
                    200, "café".encode("latin-1"), {"Content-Type": "text/plain; charset=latin-1"}
                )
            else:
                self._send(404, b"not here")
        except (BrokenPipeError, ConnectionResetError):
            pass

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle  # noqa: N815


class _Server(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: list[dict[str, Any]] = []
        self.stop = threading.Event()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


def _serve() -> Iterator[_Server]:
    server = _Server()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.stop.set()
    server.shutdown()
    server.server_close()


@pytest.fixture
def server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture
def other() -> Iterator[_Server]:
    yield from _serve()


def test_post_json_with_headers(server: _Server) -> None:
    res = request(
        "post",
        f"{server.base}/echo?a=1",
        LOCAL,
        headers={"X-Api-Key": SECRET, "Content-Type": "application/json"},
        body=b'{"hello": "world"}',
    )
    assert isinstance(res, Response)
    assert res.status == 200 and res.ok
    echoed = res.json()
    assert echoed["method"] == "POST"
    assert echoed["query"] == "a=1"
    assert echoed["body"] == '{"hello": "world"}'
    assert echoed["headers"]["x-api-key"] == SECRET
    assert echoed["headers"]["content-length"] == "18"
    assert echoed["headers"]["content-type"] == "application/json"
    assert res.header("x-multi") == "a"
    assert res.content_type == "application/json"
    assert res.url == f"{server.base}/echo?a=1"


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE"])
def test_every_method(server: _Server, method: str) -> None:
    res = request(method, f"{server.base}/echo", LOCAL, body=b"x" if method != "GET" else None)
    assert res.json()["method"] == method


def test_user_agent_and_accept_can_be_replaced(server: _Server) -> None:
    res = request(
        "GET", f"{server.base}/echo", LOCAL, headers={"User-Agent": "me", "Accept": "a/b"}
    )
    headers = res.json()["headers"]
    assert headers["user-agent"] == "me" and headers["accept"] == "a/b"


def test_error_statuses_are_answers_not_exceptions(server: _Server) -> None:
    res = request("GET", f"{server.base}/status/503", LOCAL)
    assert res.status == 503 and not res.ok
    assert res.json() == {"error": "nope"}
    # fetch_url still refuses them.
    with pytest.raises(MediaError, match="HTTP 503"):
        fetch_url(f"{server.base}/status/503", LOCAL)


def test_text_uses_the_charset(server: _Server) -> None:
    assert request("GET", f"{server.base}/latin1", LOCAL).text == "café"


def test_307_repeats_method_and_body(server: _Server) -> None:
    res = request("POST", f"{server.base}/redirect/307?/echo", LOCAL, body=b"payload")
    assert res.json()["method"] == "POST" and res.json()["body"] == "payload"
    assert res.url == f"{server.base}/echo"


@pytest.mark.parametrize("code", [302, 303])
def test_303_and_302_after_post_become_get(server: _Server, code: int) -> None:
    res = request(
        "POST",
        f"{server.base}/redirect/{code}?/echo",
        LOCAL,
        headers={"Content-Type": "text/plain"},
        body=b"payload",
    )
    echoed = res.json()
    assert echoed["method"] == "GET" and echoed["body"] == ""
    assert "content-type" not in echoed["headers"]


def test_same_origin_redirect_keeps_headers(server: _Server) -> None:
    res = request("GET", f"{server.base}/redirect/302?/echo", LOCAL, headers={"X-Api-Key": SECRET})
    assert res.json()["headers"]["x-api-key"] == SECRET


def test_cross_origin_redirect_drops_credentials(server: _Server, other: _Server) -> None:
    res = request(
        "GET",
        f"{server.base}/redirect/302?{other.base}/echo",
        LOCAL,
        headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET, "Accept": "x/y"},
    )
    headers = res.json()["headers"]
    assert "authorization" not in headers and "x-api-key" not in headers
    assert headers["accept"] == "x/y"
    assert SECRET not in json.dumps(other.seen)


def test_loopback_refused_by_default(server: _Server) -> None:
    with pytest.raises(MediaError, match=r"127\.0\.0\.1 is loopback.*FLOWY_ALLOW_PRIVATE_URLS"):
        request("POST", f"{server.base}/echo", FetchPolicy(), body=b"x")
    assert server.seen == []


def test_redirect_to_metadata_refused(server: _Server) -> None:
    with pytest.raises(MediaError, match="cloud metadata"):
        request("GET", f"{server.base}/redirect/307?http://169.254.169.254/latest/", LOCAL)


def test_too_many_redirects(server: _Server) -> None:
    policy = FetchPolicy(allow_private=True, max_redirects=0)
    with pytest.raises(MediaError, match=r"too many redirects \(more than 0\)"):
        request("GET", f"{server.base}/redirect/302?/echo", policy)


def test_size_limit(server: _Server) -> None:
    with pytest.raises(MediaError, match="larger than the 10000-byte limit"):
        request("GET", f"{server.base}/big", LOCAL)


def test_timeout_is_transient(server: _Server) -> None:
    policy = FetchPolicy(allow_private=True, timeout=0.3)
    with pytest.raises(TransientFetchError, match=r"timed out after 0\.3 s"):
        request("GET", f"{server.base}/slow", policy)


def test_connection_refused_is_transient() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        with pytest.raises(TransientFetchError, match="connection refused"):
            request("GET", f"http://127.0.0.1:{port}/", LOCAL)


@pytest.mark.parametrize(
    ("headers", "match"),
    [
        ({"X-Bad": f"{SECRET}\r\nInjected: 1"}, "line break"),
        ({"Bad Name": "x"}, "invalid request header name"),
        ({"Host": "evil.test"}, "set by Flowy"),
        ({"Content-Length": "5"}, "set by Flowy"),
        ({"X-Key": f"{SECRET}\u2603"}, "outside Latin-1"),
    ],
)
def test_bad_headers_refused_without_their_values(
    server: _Server, headers: dict[str, str], match: str
) -> None:
    with pytest.raises(MediaError, match=match) as info:
        request("GET", f"{server.base}/echo", LOCAL, headers=headers)
    assert SECRET not in str(info.value)
    assert server.seen == []


def test_unsupported_method(server: _Server) -> None:
    with pytest.raises(MediaError, match="unsupported HTTP method"):
        request("TRACE", f"{server.base}/echo", LOCAL)


def test_header_values_never_logged(server: _Server, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flowy")
    request("POST", f"{server.base}/echo?token={SECRET}", LOCAL, headers={"X-Key": SECRET})
    assert caplog.records
    assert SECRET not in caplog.text
