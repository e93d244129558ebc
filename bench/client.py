"""A small HTTP/1.1 client on asyncio streams: keep-alive, Content-Length and chunked
bodies.  Cheaper per request than httpx, so the client steals less CPU from the server
it measures.  Only for 127.0.0.1 benchmark traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class HttpError(RuntimeError):
    pass


def build_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> Response:
    status_line = await reader.readline()
    if not status_line:
        raise HttpError("connection closed by the server")
    status = int(status_line.split(b" ", 2)[1])
    headers: dict[str, str] = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        parts = []
        while True:
            size = int((await reader.readline()).split(b";")[0], 16)
            if size == 0:
                await reader.readline()
                break
            parts.append(await reader.readexactly(size))
            await reader.readline()
        body = b"".join(parts)
    else:
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return Response(status, headers, body)


class Connection:
    """One keep-alive connection; requests on it are sequential."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.headers = headers or {}
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(
        self,
        method: str,
        path: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        timeout: float = 120.0,
    ) -> Response:
        if self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection(HOST, self.port)
        assert self._reader is not None
        self._writer.write(build_request(method, path, {**self.headers, **(headers or {})}, body))
        return await asyncio.wait_for(read_response(self._reader), timeout)

    async def json(
        self, method: str, path: str, payload: object = None, headers: dict[str, str] | None = None
    ) -> Any:
        body = json.dumps(payload).encode() if payload is not None else b""
        extra = {"Content-Type": "application/json", **(headers or {})}
        res = await self.request(method, path, body, extra)
        if res.status >= 300:
            raise HttpError(f"{method} {path}: {res.status} {res.body[:300]!r}")
        return res.json() if res.body else None

    async def upload(self, path: str, data: bytes, filename: str) -> Any:
        """POST ``data`` as multipart/form-data field ``file``."""
        boundary = secrets.token_hex(12)
        body = (
            (
                f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
                f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
            ).encode()
            + data
            + f"\r\n--{boundary}--\r\n".encode()
        )
        ctype = {"Content-Type": f"multipart/form-data; boundary={boundary}"}
        res = await self.request("POST", path, body, ctype)
        if res.status >= 300:
            raise HttpError(f"upload: {res.status} {res.body[:300]!r}")
        return res.json()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await self._writer.wait_closed()
            self._writer = None


def call(port: int, method: str, path: str, payload: object = None, key: str | None = None) -> Any:
    """One JSON request from synchronous code (setup steps)."""

    async def go() -> Any:
        conn = Connection(port, {"Authorization": f"Bearer {key}"} if key else {})
        try:
            return await conn.json(method, path, payload)
        finally:
            await conn.close()

    return asyncio.run(go())
