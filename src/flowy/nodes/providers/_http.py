"""What the provider nodes share: guarded calls with retries, errors, images, multipart.

Every call goes through :func:`flowy.media.fetch.request` under the run's fetch policy,
so a provider's base URL on a loopback or private address (a local Ollama or ComfyUI)
works only when the operator set ``FLOWY_ALLOW_PRIVATE_URLS=1``.

A call is retried on 429 and 5xx answers and on connection failures and timeouts, up to
``max_attempts`` times, waiting as the provider's ``Retry-After`` (or ``retry-after-ms``)
asks - capped at :data:`MAX_RETRY_WAIT` - or else with exponential backoff and jitter.
Waits end early when the run is canceled.  The API key is sent only to the provider's
own origin and is scrubbed from every message this module builds.
"""

from __future__ import annotations

import base64
import dataclasses
import email.utils
import json
import logging
import random
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowy.engine.spec import NodeContext
from flowy.errors import NodeError
from flowy.media.decode import decode_image, encode_image
from flowy.media.fetch import Response, TransientFetchError, read_data_uri, request
from flowy.nodes.http import redact

logger = logging.getLogger(__name__)

#: Longest wait between two attempts, whatever Retry-After asks (seconds).
MAX_RETRY_WAIT = 60.0
#: First backoff delay (seconds); doubles with every attempt.
BACKOFF_BASE = 1.0
#: Longest backoff delay (seconds).
BACKOFF_MAX = 20.0

_SECRET_NAME = re.compile(r"^([A-Za-z_][A-Za-z0-9_]{0,99})?$")


class ProviderOptions(BaseModel):
    """Params every provider node has."""

    model_config = ConfigDict(extra="forbid")
    timeout_seconds: float = Field(120.0, gt=0, le=600, description="Time limit of each request.")
    max_attempts: int = Field(3, ge=1, le=10, description="Tries on 429/5xx/connection errors.")

    @field_validator("base_url", check_fields=False)
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http(s) URL")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query string or fragment")
        return v.strip().rstrip("/")

    @field_validator("api_key_secret", "api_token_secret", check_fields=False)
    @classmethod
    def _secret_name(cls, v: str) -> str:
        if not _SECRET_NAME.match(v):
            raise ValueError("a secret name is letters, digits and _, not starting with a digit")
        return v


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        port = None
    return (scheme, (parts.hostname or "").lower(), port)


def retry_after(response: Response, now: float | None = None) -> float | None:
    """The wait a 429/503 answer asks for, in seconds: ``retry-after-ms``, or
    ``Retry-After`` as seconds or an HTTP date; None when absent or unreadable."""
    ms = response.header("retry-after-ms")
    if ms:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = (response.header("retry-after") or "").strip()
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = datetime.now(UTC).timestamp() if now is None else now
    return max(when.timestamp() - current, 0.0)


def backoff(attempt: int) -> float:
    """Exponential backoff with jitter before attempt ``attempt + 1`` (seconds)."""
    delay = min(BACKOFF_MAX, BACKOFF_BASE * 2 ** (attempt - 1))
    return float(delay * random.uniform(0.5, 1.0))


def provider_message(response: Response) -> str:
    """The provider's own error message from an error answer: OpenAI's
    ``{"error": {"message"}}``, ``{"error": "..."}``, Replicate's ``{"detail"}``,
    ComfyUI's ``{"error": {"message", "details"}}``, else the start of the body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    msg: object = None
    if isinstance(data, dict):
        err = data.get("error")
        if isinstance(err, dict):
            msg = err.get("message")
            details = err.get("details")
            if msg and isinstance(details, str) and details.strip():
                msg = f"{msg}: {details.strip()}"
        elif isinstance(err, str) and err:
            msg = err
        if not msg:
            msg = data.get("detail") or data.get("message") or data.get("title")
        if msg is not None and not isinstance(msg, str):
            msg = json.dumps(msg)
    text = str(msg) if msg else " ".join(response.text.split())
    text = text or "no error message"
    return text if len(text) <= 500 else text[:500] + "..."


@dataclass
class Provider:
    """Calls one provider for one node: base URL, auth headers and retry settings."""

    name: str
    ctx: NodeContext
    base_url: str
    timeout: float = 120.0
    max_attempts: int = 3
    auth: dict[str, str] = field(default_factory=dict)
    _secrets: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, name: str, ctx: NodeContext, base_url: str, opts: ProviderOptions) -> Provider:
        return cls(name, ctx, base_url, opts.timeout_seconds, opts.max_attempts)

    def use_key(
        self, secret_name: str, header: str = "Authorization", scheme: str = "Bearer"
    ) -> None:
        """Authenticate with the workspace secret ``secret_name`` (none when empty)."""
        if not secret_name:
            return
        try:
            value = self.ctx.secret(secret_name)
        except NodeError as exc:
            raise NodeError(f"{self.name}: configure the API key first: {exc.message}") from None
        self._secrets.append(value)
        self.auth[header] = f"{scheme} {value}" if scheme else value

    def error(self, message: str) -> NodeError:
        """A NodeError naming the provider, with every secret scrubbed from it."""
        return NodeError(redact(f"{self.name}: {message}", self._secrets))

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def call(
        self,
        method: str,
        url: str,
        *,
        json_body: object = None,
        body: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
        ok_statuses: Iterable[int] = (),
        cancelable: bool = True,
    ) -> Response:
        """Send a request with retries; return a 2xx answer (or one of ``ok_statuses``).

        ``cancelable=False`` sends even though the run was canceled, once (for the
        request that cancels the provider's job).

        Raises:
            NodeError: the guard refused the URL, every attempt failed, or the provider
                answered an error, quoting its message and status.
        """
        sent = dict(headers or {})
        if _origin(url) == _origin(self.base_url):
            sent.update(self.auth)  # the key goes to the provider's origin only
        if json_body is not None:
            body = json.dumps(json_body).encode("utf-8")
            content_type = "application/json"
        if content_type:
            sent["Content-Type"] = content_type
        sent.setdefault("Accept", "application/json")
        policy = dataclasses.replace(self.ctx.fetch_policy, timeout=self.timeout)
        allowed = set(ok_statuses)
        attempts = self.max_attempts if cancelable else 1
        for attempt in range(1, attempts + 1):
            if cancelable:
                self.ctx.check_canceled()
            try:
                response = request(method, url, policy, headers=sent, body=body)
            except TransientFetchError as exc:
                if attempt == attempts:
                    after = f" (after {attempt} attempts)" if attempt > 1 else ""
                    raise self.error(exc.message + after) from None
                wait = backoff(attempt)
                logger.info(
                    "%s: %s; retrying in %.1f s (attempt %d of %d)",
                    self.name,
                    redact(exc.message, self._secrets),
                    wait,
                    attempt + 1,
                    self.max_attempts,
                )
                self.sleep(wait)
                continue
            except NodeError as exc:
                raise self.error(exc.message) from None
            if response.ok or response.status in allowed:
                return response
            if (response.status == 429 or response.status >= 500) and attempt < attempts:
                asked = retry_after(response)
                wait = min(MAX_RETRY_WAIT, asked if asked is not None else backoff(attempt))
                logger.info(
                    "%s: HTTP %d; retrying in %.1f s (attempt %d of %d)",
                    self.name,
                    response.status,
                    wait,
                    attempt + 1,
                    self.max_attempts,
                )
                self.ctx.log(
                    f"{self.name} answered HTTP {response.status}; retrying in {wait:.1f} s "
                    f"(attempt {attempt + 1} of {self.max_attempts})"
                )
                self.sleep(wait)
                continue
            raise self.error(
                f"HTTP {response.status}: {provider_message(response)}"
                + (f" (after {attempt} attempts)" if attempt > 1 else "")
            )
        raise AssertionError("unreachable")  # pragma: no cover

    def json(self, response: Response) -> Any:
        """The answer's JSON body; NodeError when it is not JSON."""
        try:
            return response.json()
        except ValueError:
            raise self.error(
                f"answered HTTP {response.status} with a body that is not JSON"
            ) from None

    def sleep(self, seconds: float) -> None:
        """Wait, looking at the cancel token every 50 ms."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.ctx.check_canceled()
            time.sleep(min(left, 0.05))
        self.ctx.check_canceled()

    def image(self, ref: str) -> Image.Image:
        """Decode the image at ``ref``: a data: URI or a URL fetched behind the guard."""
        if ref.startswith("data:"):
            data = read_data_uri(ref, max_bytes=self.ctx.fetch_policy.max_bytes).data
        else:
            data = self.call("GET", ref, headers={"Accept": "image/*"}).body
        return self.decode(data)

    def decode(self, data: bytes) -> Image.Image:
        """Decode image bytes the provider returned."""
        try:
            return decode_image(data, max_pixels=self.ctx.max_pixels)
        except NodeError as exc:
            raise self.error(f"the image it returned cannot be read: {exc.message}") from None


def image_bytes(image: Image.Image, fmt: str | None = None) -> tuple[bytes, str]:
    """Encode an image for upload: PNG when it has transparency (or asked), else JPEG."""
    if fmt is None:
        fmt = "png" if image.mode in ("RGBA", "LA", "P") else "jpeg"
    return encode_image(image, fmt, quality=90)


def data_url(image: Image.Image) -> str:
    data, content_type = image_bytes(image)
    return f"data:{content_type};base64,{base64.b64encode(data).decode('ascii')}"


def multipart(
    fields: Mapping[str, str], files: Iterable[tuple[str, str, bytes, str]]
) -> tuple[bytes, str]:
    """A ``multipart/form-data`` body from text fields and ``(name, filename, data,
    content_type)`` files; returns the body and its Content-Type."""
    boundary = "flowy-" + secrets.token_hex(16)
    parts: list[bytes] = []
    for name, value in fields.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        parts.append(head.encode("utf-8") + value.encode("utf-8") + b"\r\n")
    for name, filename, data, content_type in files:
        head = (
            f"--{boundary}\r\nContent-Disposition: form-data; "
            f'name="{name}"; filename="{filename}"\r\nContent-Type: {content_type}\r\n\r\n'
        )
        parts.append(head.encode("utf-8") + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"
