"""What the sync and async clients share: configuration, the retry policy, error
answers, the Server-Sent Events decoder, request bodies and input classification."""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx

from flowy import __version__
from flowy.client.errors import (
    APIConnectionError,
    APIError,
    FlowyError,
    error_for_status,
    parse_retry_after,
)

DEFAULT_API = "http://127.0.0.1:8000/v1"
DEFAULT_TIMEOUT = 60.0
DEFAULT_MAX_RETRIES = 2
#: Read timeout of an event stream: the server sends a keep-alive every 15 s by default.
STREAM_READ_TIMEOUT = 60.0
#: Longest ``Prefer: wait=N`` the server honours.
MAX_PREFER_WAIT = 60
USER_AGENT = f"flowy-python/{__version__} httpx/{httpx.__version__}"

#: ``idempotency_key=False``: send none (and never retry the request).
IdempotencyKey = str | Literal[False] | None


def normalize_api(api: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1/`` both mean ``http://host:8000/v1``."""
    api = api.strip().rstrip("/")
    parts = urlsplit(api)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise FlowyError(f"FLOWY_API must be an http(s) URL like {DEFAULT_API}, not {api!r}")
    if parts.path in ("", "/"):
        api += "/v1"
    return api


def resolve_config(api: str | None, key: str | None) -> tuple[str, str]:
    api = api or os.environ.get("FLOWY_API") or DEFAULT_API
    key = key or os.environ.get("FLOWY_KEY")
    if not key:
        raise FlowyError(
            "no API key: pass key=... or set FLOWY_KEY (flowy serve prints it on first start; "
            "flowy keys create makes another)"
        )
    return normalize_api(api), key


def make_timeout(timeout: float | httpx.Timeout | None) -> httpx.Timeout:
    if isinstance(timeout, httpx.Timeout):
        return timeout
    if timeout is None:
        return httpx.Timeout(None)
    return httpx.Timeout(timeout, connect=min(timeout, 10.0))


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter; a server's ``Retry-After`` is honoured.

    Retried: connection errors, 429 and 5xx of idempotent requests (GET, DELETE, cancel,
    and run creation that carries an ``Idempotency-Key``).  Any request is retried when
    the connection could not be made or the answer is 429, since the server did nothing
    with it then.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    base: float = 0.5
    cap: float = 8.0
    #: A ``Retry-After`` longer than this is not waited for: the error is raised.
    max_retry_after: float = 60.0

    def backoff(self, attempt: int) -> float:
        """Delay before retry number ``attempt + 1``: full-ish jitter in [d/2, d]."""
        delay: float = min(self.cap, self.base * (2**attempt))
        return delay * (0.5 + random.random() / 2)

    def exception_retryable(self, exc: Exception, idempotent: bool) -> bool:
        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
            return True  # nothing reached the server
        return idempotent and isinstance(exc, httpx.TransportError)

    def status_retryable(self, status: int, idempotent: bool) -> bool:
        if status == 429:
            return True
        return idempotent and status in (500, 502, 503, 504)

    def delay_for(self, res: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying ``res``, or None when it must not be retried."""
        hint = parse_retry_after(res.headers.get("retry-after"))
        if hint is None:
            return self.backoff(attempt)
        return hint if hint <= self.max_retry_after else None


def api_error(res: httpx.Response) -> APIError:
    """The APIError for an error answer whose body has been read."""
    try:
        body: Any = res.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    return error_for_status(res.status_code, body, dict(res.headers), res.text)


def connection_message(exc: Exception, url: str) -> str:
    kind = "timed out" if isinstance(exc, httpx.TimeoutException) else "failed"
    return f"request to {url} {kind}: {exc or type(exc).__name__}"


@dataclass
class ServerSentEvent:
    event: str = "message"
    data: str = ""
    id: str | None = None


@dataclass
class SSEDecoder:
    """Decodes a ``text/event-stream`` line by line (the WHATWG rules that matter here)."""

    retry_ms: int | None = None
    last_id: str | None = None
    _event: str = ""
    _data: list[str] = field(default_factory=list)
    _has_data: bool = False

    def feed(self, line: str) -> ServerSentEvent | None:
        """Take one line (without its end); answer an event when a blank line ends one."""
        if line == "":
            if not self._has_data:
                self._event = ""
                return None
            ev = ServerSentEvent(self._event or "message", "\n".join(self._data), self.last_id)
            self._event, self._data, self._has_data = "", [], False
            return ev
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id" and "\0" not in value:
            self.last_id = value
        elif name == "retry" and value.isdigit():
            self.retry_ms = int(value)
        return None


def auth_headers(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def idempotency_header(key: IdempotencyKey) -> dict[str, str]:
    """The ``Idempotency-Key`` header: made up (uuid4) for None, none for False."""
    if key is False:
        return {}
    return {"Idempotency-Key": key or str(uuid.uuid4())}


def prefer_wait(wait: float | None) -> dict[str, str]:
    if wait is None:
        return {}
    return {"Prefer": f"wait={max(0, min(int(wait), MAX_PREFER_WAIT))}"}


def run_body(
    inputs: Mapping[str, Any] | None,
    *,
    timeout_seconds: float | None = None,
    webhook: str | None = None,
    webhook_events: list[str] | tuple[str, ...] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"inputs": dict(inputs or {})}
    if timeout_seconds is not None:
        body["timeoutSeconds"] = timeout_seconds
    if webhook is not None:
        body["webhook"] = webhook
    if webhook_events is not None:
        body["webhookEventsFilter"] = list(webhook_events)
    return body


def _time_param(value: datetime | str | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return value.isoformat()


def list_params(
    *,
    app_id: str | None,
    status: str | None,
    version_id: str | None,
    created_after: datetime | str | None,
    created_before: datetime | str | None,
    page_size: int,
) -> dict[str, Any]:
    if not 1 <= page_size <= 100:
        raise ValueError("page_size must be between 1 and 100")
    params: dict[str, Any] = {
        "appId": app_id,
        "status": status,
        "versionId": version_id,
        "createdAfter": _time_param(created_after),
        "createdBefore": _time_param(created_before),
        "limit": page_size,
    }
    return {k: v for k, v in params.items() if v is not None}


InputClass = Literal["upload", "maybe_path", "value"]


def classify_input(value: object) -> InputClass:
    """``upload``: a pathlib path, an open binary file or bytes; ``maybe_path``: a string
    naming a local file (uploaded when the app's input takes a file URL); else ``value``."""
    if isinstance(value, PurePath | bytes | bytearray | memoryview) or (
        hasattr(value, "read") and not isinstance(value, str)
    ):
        return "upload"
    if (
        isinstance(value, str)
        and value
        and "://" not in value
        and not value.startswith("data:")
        and len(value) < 4096
        and "\n" not in value
        and os.path.isfile(value)
    ):
        return "maybe_path"
    return "value"


def upload_parts(
    source: Any, filename: str | None, content_type: str | None
) -> tuple[str, bytes, str]:
    """Read what ``uploads.create`` was given: (filename, bytes, content type)."""
    import mimetypes

    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        with open(path, "rb") as f:
            data = f.read()
        name = filename or os.path.basename(path)
    elif isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        name = filename or "upload"
    elif hasattr(source, "read"):
        data = source.read()
        if isinstance(data, str):
            raise TypeError("open the file in binary mode ('rb') to upload it")
        raw_name = getattr(source, "name", None)
        name = filename or (os.path.basename(raw_name) if isinstance(raw_name, str) else "upload")
    else:
        raise TypeError(f"cannot upload a {type(source).__name__}: give a path, bytes or a file")
    ctype = content_type or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return name or "upload", bytes(data), ctype


def json_body(res: httpx.Response) -> Any:
    if res.status_code == 204 or not res.content:
        return None
    try:
        return res.json()
    except ValueError as exc:
        raise FlowyError(
            f"{res.request.method} {res.request.url} answered {res.status_code} "
            f"with a body that is not JSON: {res.text[:200]!r}"
        ) from exc


def decode_event(ev: ServerSentEvent) -> dict[str, Any] | None:
    try:
        payload = json.loads(ev.data)
    except ValueError:
        return None
    return payload if isinstance(payload, dict) and "seq" in payload else None


def download(url: str, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> bytes:
    """GET a signed link with a connection of its own (no key is sent)."""
    with httpx.Client(timeout=timeout, follow_redirects=True) as http:
        try:
            res = http.get(url)
        except httpx.TransportError as exc:
            raise APIConnectionError(connection_message(exc, url)) from exc
    if res.status_code >= 400:
        raise api_error(res)
    return res.content


async def adownload(url: str, timeout: httpx.Timeout | float = DEFAULT_TIMEOUT) -> bytes:
    async with httpx.AsyncClient(timeout=timeout, follow_redirects=True) as http:
        try:
            res = await http.get(url)
        except httpx.TransportError as exc:
            raise APIConnectionError(connection_message(exc, url)) from exc
    if res.status_code >= 400:
        raise api_error(res)
    return res.content
