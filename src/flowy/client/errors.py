"""Every error the Flowy SDK raises, in one tree.

    FlowyError                       base: catch this to catch everything below
    ├── APIError                     the API answered with an error
    │   │                            .status .code .message .details .headers
    │   ├── ValidationError          400 bad_request, 422 validation_error / invalid_workflow
    │   │                            .field_errors {"inputs.node_1": ["... is required"]}
    │   ├── AuthenticationError      401 missing, wrong or revoked key
    │   ├── PermissionDeniedError    403 tampered or expired file link
    │   ├── NotFoundError            404 unknown id, or an object of another workspace
    │   ├── ConflictError            409 e.g. running an app that is not published
    │   ├── RateLimitError           429 .retry_after (seconds, or None)
    │   └── ServerError              5xx
    ├── APIConnectionError           no answer: refused, reset, cut mid-stream, timed out
    ├── RunFailed                    a run ended ``failed``: .run_id .node .message .run
    │   └── RunCanceled              a run ended ``canceled``
    ├── RunTimeout                   gave up waiting for a run: .run_id .timeout
    └── WebhookVerificationError     a webhook's signature, timestamp or headers are wrong

Retries (connection errors, 429, 5xx) happen before any of these is raised; what you
catch is what was left after them.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flowy.client.models import Run

__all__ = [
    "APIConnectionError",
    "APIError",
    "AuthenticationError",
    "ConflictError",
    "FlowyError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "RunCanceled",
    "RunFailed",
    "RunTimeout",
    "ServerError",
    "ValidationError",
    "WebhookVerificationError",
]


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds: a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class FlowyError(Exception):
    """Base of every error the SDK raises."""


class APIError(FlowyError):
    """The API answered with an error status and its ``{"error": {...}}`` body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Sequence[Mapping[str, Any]] | None = None,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.details: list[dict[str, Any]] = [dict(d) for d in details or ()]
        self.headers: dict[str, str] = dict(headers or {})
        super().__init__(f"{status} {code}: {message}")


class ValidationError(APIError):
    """400 or 422: the request was refused; ``field_errors`` names every problem."""

    @property
    def field_errors(self) -> dict[str, list[str]]:
        """Messages by field (``inputs.node_1``, ``timeoutSeconds``, ...)."""
        out: dict[str, list[str]] = {}
        for d in self.details:
            field = str(d.get("field") or d.get("node") or "")
            out.setdefault(field, []).append(str(d.get("message", "")))
        return out


class AuthenticationError(APIError):
    """401: the key is missing, wrong or revoked."""


class PermissionDeniedError(APIError):
    """403: e.g. a tampered or expired file link."""


class NotFoundError(APIError):
    """404: unknown id, or an object of another workspace."""


class ConflictError(APIError):
    """409: e.g. running an app that is not published."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is the server's hint, in seconds."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServerError(APIError):
    """5xx: the server failed."""


class APIConnectionError(FlowyError):
    """No usable answer: connection refused or reset, a stream cut, a timeout."""


class RunFailed(FlowyError):
    """A run ended ``failed``: ``node`` is the node that failed (if one did)."""

    def __init__(
        self,
        run_id: str,
        message: str | None,
        node: str | None = None,
        *,
        run: Run | None = None,
        status: str = "failed",
    ) -> None:
        self.run_id = run_id
        self.node = node
        self.message = message or status
        self.status = status
        self.run = run
        where = f" at {node}" if node else ""
        super().__init__(f"run {run_id} {status}{where}: {self.message}")


class RunCanceled(RunFailed):
    """A run ended ``canceled``."""

    def __init__(self, run_id: str, message: str | None, *, run: Run | None = None) -> None:
        super().__init__(run_id, message, None, run=run, status="canceled")


class RunTimeout(FlowyError):
    """Waiting for a run took longer than ``timeout`` seconds; the run goes on."""

    def __init__(self, run_id: str, timeout: float | None, *, status: str | None = None) -> None:
        self.run_id = run_id
        self.timeout = timeout
        self.status = status
        after = f" after {timeout:g} s" if timeout is not None else ""
        state = f" (still {status})" if status else ""
        super().__init__(f"gave up waiting for run {run_id}{after}{state}")


class WebhookVerificationError(FlowyError):
    """A webhook did not verify: missing headers, stale timestamp or no matching signature."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: ValidationError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitError,
}


def error_for_status(
    status: int,
    body: object,
    headers: Mapping[str, str] | None = None,
    text: str = "",
) -> APIError:
    """The APIError for an error answer (its JSON body, or the raw text if not JSON)."""
    err = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(err, Mapping):
        code = str(err.get("code") or "error")
        message = str(err.get("message") or "")
        raw_details = err.get("details")
        details = [d for d in raw_details if isinstance(d, Mapping)] if raw_details else []
    else:
        code, message, details = "http_error", (text.strip()[:500] or f"HTTP {status}"), []
    cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else APIError)
    lower = {k.lower(): v for k, v in (headers or {}).items()}
    return cls(status, code, message, details, headers=lower)
