"""The outbound-fetch guard, against real HTTP(S) servers on 127.0.0.1.

Loopback is itself refused by default, so tests that fetch set ``allow_private=True``;
the refusal of every later hop is shown with the metadata addresses, which stay refused
even then, and with a fake resolver (``resolve_host``) for host names.
"""

from __future__ import annotations

import base64
import ipaddress
import logging
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpcore
import pytest

from flowy.errors import MediaError, NodeError
from flowy.media import fetch
from flowy.media.fetch import Fetched, FetchPolicy, fetch_url, is_public_address, read_data_uri

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)
LIMIT = 1000
LOCAL = FetchPolicy(allow_private=True, max_bytes=LIMIT, timeout=5.0)


class _Handler(BaseHTTPRequestHandler):
    """Routes for every case; HTTP/1.0, so each response ends its connection."""

    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass  # keep test output quiet

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self._send(302, b"", {"Location": location})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path, _, _query = self.path.partition("?")
        stop = self.server.stop
        try:
            if path == "/image.png":
                self._send(200, PNG, {"Content-Type": "image/png"})
            elif path.startswith("/chain/"):
                left = int(path.rsplit("/", 1)[1])
                self._redirect(f"/chain/{left - 1}" if left > 1 else "/image.png")
            elif path == "/loop":
                self._redirect("/loop")
            elif path == "/to-metadata":
                self._redirect("http://169.254.169.254/latest/meta-data/")
            elif path == "/to-metadata-name":
                self._redirect("http://metadata.test/computeMetadata/v1/")
            elif path == "/to-file":
                self._redirect("file:///etc/passwd")
            elif path.startswith("/sized/"):
                self._send(200, b"x" * int(path.rsplit("/", 1)[1]))
            elif path == "/huge":
                # Content-Length says it all: the client should not read the body.
                self._send(200, b"", {"Content-Length": str(LIMIT * 50)})
                self.wfile.write(b"x" * LIMIT * 50)
            elif path == "/huge-no-length":
                self.send_response(200)
                self.end_headers()  # no Content-Length: the body ends with the connection
                for _ in range(50):
                    self.wfile.write(b"x" * LIMIT)
            elif path == "/slow":
                stop.wait(10)  # answers only after the client gave up
                self._send(200, b"late")
            elif path == "/trickle":
                # Each byte arrives well within any per-read timeout; only an overall
                # deadline ends this.
                self.send_response(200)
                self.send_header("Content-Length", str(LIMIT))
                self.end_headers()
                for _ in range(LIMIT):
                    if stop.wait(0.05):
                        break
                    self.wfile.write(b"x")
                    self.wfile.flush()
            elif path == "/missing":
                self._send(404, b"not here")
            elif path == "/echo-host":
                self._send(200, (self.headers["Host"] or "").encode())
            elif path == "/echo-auth":
                self._send(200, (self.headers["Authorization"] or "").encode())
            else:
                self._send(500, b"unknown test route")
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            pass  # the client hung up on purpose (size limit, timeout)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # handlers are joined at close: nothing outlives a test

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stop = threading.Event()
        if ssl_context is not None:
            self.socket = ssl_context.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # failed handshakes in the TLS tests are expected

    @property
    def origin(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _serve(ssl_context: ssl.SSLContext | None = None) -> Iterator[_Server]:
    server = _Server(ssl_context)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.stop.set()  # release /slow and /trickle handlers
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def server() -> Iterator[_Server]:
    yield from _serve()


@pytest.fixture
def base(server: _Server) -> str:
    return f"http://{server.origin}"


def _fake_resolver(monkeypatch: pytest.MonkeyPatch, table: dict[str, list[str]]) -> list[str]:
    """Make ``resolve_host`` answer from ``table``; returns the names it was asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[fetch.IPAddress]:
        asked.append(host)
        if host not in table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [ipaddress.ip_address(a) for a in table[host]]

    monkeypatch.setattr(fetch, "resolve_host", resolve)
    return asked


@pytest.fixture
def no_connections(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if the guard opens any connection at all."""

    def refuse(*args: object, **kwargs: object) -> httpcore.NetworkStream:
        raise AssertionError("a connection was attempted")

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", refuse)


# --------------------------------------------------------------------- address checks


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "169.254.169.254",
        "169.254.1.1",
        "0.0.0.0",
        "100.64.0.1",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "ff02::1",
        "::ffff:127.0.0.1",
        "::ffff:10.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",  # NAT64 form of 169.254.169.254
        "2002:7f00:1::1",  # 6to4 form of 127.0.0.1
    ],
)
def test_non_public_addresses(address: str) -> None:
    assert not is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("url", "shown", "reason"),
    [
        ("http://10.0.0.1/x.png", "10.0.0.1", "private"),
        ("http://169.254.169.254/latest/", "169.254.169.254", "cloud metadata"),
        ("http://[::1]/x.png", "::1", "loopback"),
        ("http://0.0.0.0:8000/", "0.0.0.0", "unspecified"),
        ("http://100.64.0.1/", "100.64.0.1", "CGNAT"),
        ("http://[::ffff:127.0.0.1]/", "::ffff:127.0.0.1", "loopback"),
        ("https://192.168.0.10/a.jpg", "192.168.0.10", "private"),
    ],
)
def test_ip_literals_refused_before_connecting(
    no_connections: None, url: str, shown: str, reason: str
) -> None:
    with pytest.raises(MediaError) as info:
        fetch_url(url, FetchPolicy())
    message = str(info.value)
    assert message.startswith("refused to fetch ")
    assert f"address {shown} is" in message
    assert reason in message


def test_refusal_names_the_address_and_the_setting(no_connections: None) -> None:
    with pytest.raises(MediaError) as info:
        fetch_url("http://10.0.0.1/x.png", FetchPolicy())
    assert str(info.value) == (
        "refused to fetch http://10.0.0.1/x.png: address 10.0.0.1 is private "
        "(set FLOWY_ALLOW_PRIVATE_URLS=1 to allow)"
    )
    assert isinstance(info.value, NodeError) and info.value.node is None


def test_loopback_refused_by_default(server: _Server, base: str) -> None:
    with pytest.raises(MediaError, match=r"address 127\.0\.0\.1 is loopback.*FLOWY_ALLOW_PRIVATE"):
        fetch_url(f"{base}/image.png", FetchPolicy())


@pytest.mark.parametrize("host", ["2130706433", "0x7f.1", "127.1", "017700000001"])
def test_obfuscated_loopback_forms_refused(no_connections: None, host: str) -> None:
    # Not IP literals to ipaddress, but the C resolver reads them as 127.0.0.1: the
    # guard checks what the resolver answers, so they are refused all the same.
    with pytest.raises(MediaError, match=r"address 127\.0\.0\.1 is loopback"):
        fetch_url(f"http://{host}/", FetchPolicy())


def test_metadata_refused_even_when_private_allowed(no_connections: None) -> None:
    for url in ("http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/"):
        with pytest.raises(MediaError, match="cloud metadata address"):
            fetch_url(url, FetchPolicy(allow_private=True))


def test_any_bad_address_of_a_name_refuses_it(
    monkeypatch: pytest.MonkeyPatch, no_connections: None
) -> None:
    _fake_resolver(monkeypatch, {"mixed.test": ["93.184.216.34", "10.1.2.3"]})
    with pytest.raises(MediaError, match=r"address 10\.1\.2\.3 is private"):
        fetch_url("http://mixed.test/a.png", FetchPolicy())


def test_name_resolving_to_metadata_refused(
    monkeypatch: pytest.MonkeyPatch, no_connections: None
) -> None:
    _fake_resolver(monkeypatch, {"metadata.test": ["169.254.169.254"]})
    with pytest.raises(MediaError, match="cloud metadata"):
        fetch_url("http://metadata.test/", FetchPolicy(allow_private=True))


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("file:///etc/passwd", "'file'"),
        ("ftp://example.com/a.png", "'ftp'"),
        ("gopher://127.0.0.1:6379/_INFO", "'gopher'"),
        ("data:image/png;base64,AAAA", "'data'"),
    ],
)
def test_unsupported_schemes(no_connections: None, url: str, scheme: str) -> None:
    with pytest.raises(MediaError, match=f"unsupported URL scheme {scheme}"):
        fetch_url(url, FetchPolicy(allow_private=True))


@pytest.mark.parametrize("url", ["example.com/a.png", "http:///a.png", "http://a b/x"])
def test_malformed_urls(no_connections: None, url: str) -> None:
    with pytest.raises(MediaError, match="refused to fetch"):
        fetch_url(url, FetchPolicy(allow_private=True))


# --------------------------------------------------------------------- fetching


def test_fetch_image(base: str) -> None:
    got = fetch_url(f"{base}/image.png", LOCAL)
    assert got == Fetched(data=PNG, content_type="image/png", url=f"{base}/image.png")


def test_redirect_chain_reports_final_url(base: str) -> None:
    got = fetch_url(f"{base}/chain/3", LOCAL)
    assert got.data == PNG
    assert got.url == f"{base}/image.png"


def test_redirects_within_limit(base: str) -> None:
    policy = FetchPolicy(allow_private=True, max_redirects=3)
    assert fetch_url(f"{base}/chain/3", policy).data == PNG  # 3 redirects
    with pytest.raises(MediaError, match=r"too many redirects \(more than 3\)"):
        fetch_url(f"{base}/chain/4", policy)  # 4 redirects


def test_redirect_loop(base: str) -> None:
    with pytest.raises(MediaError, match="too many redirects"):
        fetch_url(f"{base}/loop", LOCAL)


def test_no_redirects_allowed(base: str) -> None:
    with pytest.raises(MediaError, match=r"too many redirects \(more than 0\)"):
        fetch_url(f"{base}/chain/1", FetchPolicy(allow_private=True, max_redirects=0))


def test_redirect_to_refused_address_is_refused(base: str) -> None:
    with pytest.raises(MediaError) as info:
        fetch_url(f"{base}/to-metadata", LOCAL)
    assert str(info.value).startswith("refused to fetch http://169.254.169.254/latest/meta-data/")
    assert "cloud metadata" in str(info.value)


def test_redirect_to_name_is_resolved_and_checked_again(
    monkeypatch: pytest.MonkeyPatch, server: _Server
) -> None:
    asked = _fake_resolver(
        monkeypatch, {"start.test": ["127.0.0.1"], "metadata.test": ["169.254.169.254"]}
    )
    port = server.server_address[1]
    with pytest.raises(MediaError, match="metadata.test.*cloud metadata"):
        fetch_url(f"http://start.test:{port}/to-metadata-name", LOCAL)
    assert asked == ["start.test", "metadata.test"]


def test_redirect_to_file_scheme_is_refused(base: str) -> None:
    with pytest.raises(MediaError, match="unsupported URL scheme 'file'"):
        fetch_url(f"{base}/to-file", LOCAL)


def test_connects_to_the_checked_address_with_the_real_host(
    monkeypatch: pytest.MonkeyPatch, server: _Server
) -> None:
    # "pinned.test" exists only in the fake resolver: the fetch can only succeed by
    # connecting to the address the guard resolved and checked, and the server still
    # sees the name in Host.
    asked = _fake_resolver(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    port = server.server_address[1]
    got = fetch_url(f"http://pinned.test:{port}/echo-host", LOCAL)
    assert got.data == f"pinned.test:{port}".encode()
    assert asked == ["pinned.test"]  # resolved once, never again by the connection


def test_size_limit_exact_body_allowed(base: str) -> None:
    assert len(fetch_url(f"{base}/sized/{LIMIT}", LOCAL).data) == LIMIT


def test_size_limit_from_content_length(base: str) -> None:
    with pytest.raises(MediaError, match=f"{LIMIT * 50} bytes is larger than the {LIMIT}-byte"):
        fetch_url(f"{base}/huge", LOCAL)


def test_size_limit_without_content_length(base: str) -> None:
    with pytest.raises(MediaError, match=f"body is larger than the {LIMIT}-byte limit"):
        fetch_url(f"{base}/huge-no-length", LOCAL)


def test_size_limit_counts_bytes_not_header(base: str) -> None:
    with pytest.raises(MediaError, match="larger than"):
        fetch_url(f"{base}/sized/{LIMIT + 1}", LOCAL)


def test_timeout_waiting_for_answer(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(MediaError) as info:
        fetch_url(f"{base}/slow", FetchPolicy(allow_private=True, timeout=0.3))
    assert time.monotonic() - started < 2
    assert str(info.value) == f"failed to fetch {base}/slow: timed out after 0.3 s"


def test_timeout_is_overall_not_per_read(base: str) -> None:
    started = time.monotonic()
    with pytest.raises(MediaError, match=r"timed out after 0\.5 s"):
        fetch_url(f"{base}/trickle", FetchPolicy(allow_private=True, timeout=0.5))
    assert time.monotonic() - started < 2


def test_timeout_covers_name_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()

    def hanging_resolver(host: str, port: int) -> list[fetch.IPAddress]:
        release.wait(10)
        return [ipaddress.ip_address("127.0.0.1")]

    monkeypatch.setattr(fetch, "resolve_host", hanging_resolver)
    started = time.monotonic()
    try:
        with pytest.raises(MediaError, match=r"slow\.test/x: timed out after 0\.2 s"):
            fetch_url("http://slow.test/x", FetchPolicy(allow_private=True, timeout=0.2))
        assert time.monotonic() - started < 2
    finally:
        release.set()


def test_http_error_status(base: str) -> None:
    with pytest.raises(MediaError) as info:
        fetch_url(f"{base}/missing", LOCAL)
    assert str(info.value) == f"failed to fetch {base}/missing: server answered HTTP 404"


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens there any more.
    with pytest.raises(MediaError) as info:
        fetch_url(f"http://127.0.0.1:{port}/a.png?token=secret", LOCAL)
    assert str(info.value) == f"failed to fetch http://127.0.0.1:{port}/a.png: connection refused"


def test_name_does_not_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_resolver(monkeypatch, {})
    with pytest.raises(MediaError) as info:
        fetch_url("https://nowhere.test/a.png", FetchPolicy())
    assert "failed to fetch https://nowhere.test/a.png: name does not resolve" in str(info.value)


def test_secrets_never_reach_messages_or_logs(base: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="flowy.media.fetch")
    got = fetch_url(base.replace("://", "://user:hunter2@") + "/echo-auth?token=s3cret", LOCAL)
    # Userinfo is used as basic auth on its own host...
    assert got.data == b"Basic " + base64.b64encode(b"user:hunter2")
    with pytest.raises(MediaError) as info:
        fetch_url(base.replace("://", "://user:hunter2@") + "/missing?token=s3cret#frag", LOCAL)
    with pytest.raises(MediaError) as refused:
        fetch_url("http://user:hunter2@10.0.0.1/x?token=s3cret", FetchPolicy())
    # ...but neither it nor the query string is ever shown.
    shown = caplog.text + str(info.value) + str(refused.value)
    assert "fetching" in caplog.text
    for secret in ("hunter2", "s3cret", "frag"):
        assert secret not in shown


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        FetchPolicy(timeout=0)
    with pytest.raises(ValueError):
        FetchPolicy(max_bytes=-1)
    with pytest.raises(ValueError):
        FetchPolicy(max_redirects=-1)


# --------------------------------------------------------------------- TLS


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[_Server, Path]]:
    """An HTTPS server with a self-signed certificate for "pinned.test"."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is needed to make a test certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=pinned.test", "-addext", "subjectAltName=DNS:pinned.test",
         "-addext", "basicConstraints=critical,CA:TRUE",
         "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    for server in _serve(context):
        yield server, cert


def _trusting(monkeypatch: pytest.MonkeyPatch, cert: Path) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)


def test_https_pins_address_and_verifies_real_host(
    monkeypatch: pytest.MonkeyPatch, tls_server: tuple[_Server, Path]
) -> None:
    server, cert = tls_server
    _trusting(monkeypatch, cert)
    _fake_resolver(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    port = server.server_address[1]
    got = fetch_url(f"https://pinned.test:{port}/image.png", LOCAL)
    assert got.data == PNG


def test_https_certificate_must_match_host(
    monkeypatch: pytest.MonkeyPatch, tls_server: tuple[_Server, Path]
) -> None:
    server, cert = tls_server
    _trusting(monkeypatch, cert)
    _fake_resolver(monkeypatch, {"other.test": ["127.0.0.1"]})
    port = server.server_address[1]
    with pytest.raises(MediaError, match="TLS certificate verification failed"):
        fetch_url(f"https://other.test:{port}/image.png", LOCAL)


def test_https_untrusted_certificate(
    monkeypatch: pytest.MonkeyPatch, tls_server: tuple[_Server, Path]
) -> None:
    server, _cert = tls_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    _fake_resolver(monkeypatch, {"pinned.test": ["127.0.0.1"]})
    port = server.server_address[1]
    with pytest.raises(MediaError, match="TLS certificate verification failed"):
        fetch_url(f"https://pinned.test:{port}/image.png", LOCAL)


# --------------------------------------------------------------------- data: URIs


def test_data_uri_base64() -> None:
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    got = read_data_uri(uri, max_bytes=LIMIT)
    assert got == Fetched(data=PNG, content_type="image/png", url=uri)


def test_data_uri_base64_unpadded_and_percent_encoded() -> None:
    encoded = base64.b64encode(b"\xfb\xff\xfe?").decode()  # has "+", "/" and "="
    assert (
        read_data_uri(
            "data:application/octet-stream;BASE64," + encoded.replace("+", "%2B").rstrip("="),
            max_bytes=LIMIT,
        ).data
        == b"\xfb\xff\xfe?"
    )


def test_data_uri_base64_with_line_breaks_and_spaces() -> None:
    encoded = base64.b64encode(PNG).decode()
    wrapped = "\r\n".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    for payload in (wrapped, " " + wrapped.replace("\r\n", "%0D%0A") + "\t"):
        got = read_data_uri("data:image/png;base64," + payload, max_bytes=LIMIT)
        assert got.data == PNG


def test_data_uri_percent_encoded() -> None:
    got = read_data_uri("data:text/plain;charset=utf-8,caf%C3%A9%2C%20ok", max_bytes=LIMIT)
    assert got.data == "café, ok".encode()
    assert got.content_type == "text/plain;charset=utf-8"


def test_data_uri_default_media_type() -> None:
    got = read_data_uri("data:,Hello%2C%20World!", max_bytes=LIMIT)
    assert got.data == b"Hello, World!"
    assert got.content_type == "text/plain;charset=US-ASCII"


@pytest.mark.parametrize(
    "uri",
    [
        "image/png;base64,AAAA",  # no scheme
        "http:image/png;base64,AAAA",
        "data:image/png;base64",  # no comma
        "data:image/png;base64,@@@@",  # not base64
        "data:image/png;base64,AAAAA",  # impossible length
        "data:not a type;base64,AAAA",
        "data:image/png;charset,AAAA",  # parameter without value
        "data:text/plain,50%",  # broken percent-escape
        "data:image/png;base64,AA%ZZAA",  # broken percent-escape in base64
    ],
)
def test_data_uri_malformed(uri: str) -> None:
    with pytest.raises(MediaError, match="data URI"):
        read_data_uri(uri, max_bytes=LIMIT)


@pytest.mark.parametrize(
    "make",
    [
        lambda n: "data:application/octet-stream;base64," + base64.b64encode(b"x" * n).decode(),
        lambda n: "data:text/plain," + "x" * n,
        lambda n: "data:text/plain," + "%41" * n,
    ],
)
def test_data_uri_size_limit(make: Callable[[int], str]) -> None:
    assert len(read_data_uri(make(LIMIT), max_bytes=LIMIT).data) == LIMIT
    with pytest.raises(MediaError, match=f"larger than the {LIMIT}-byte limit"):
        read_data_uri(make(LIMIT + 1), max_bytes=LIMIT)
