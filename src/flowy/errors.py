"""The one exception tree of Flowy.

    FlowyError                      code            HTTP
    ├── AuthError                   unauthorized    401
    ├── NotFound                    not_found       404   (also another workspace's object)
    ├── ValidationFailed            validation_error 422  (issues: list[Issue])
    │   └── GraphInvalid            invalid_workflow 422
    ├── BadRequest                  bad_request     400   (malformed JSON, bad multipart)
    ├── PayloadTooLarge             payload_too_large 413
    ├── Conflict                    conflict        409
    ├── Gone                        gone            410   (a file removed by retention)
    ├── RateLimited                 rate_limited    429   (Retry-After)
    ├── Forbidden                   forbidden       403   (bad or expired signed URL)
    └── NodeError                   node_failed     --    (fails a run, never an HTTP answer)
        ├── MediaError              media_error           (fetch refused/failed, not an image)
        ├── NodeTimeout             node_timeout
        └── RunCanceled             canceled

Services and the engine raise these; ``flowy.api.errors`` maps them to the one JSON
error body ``{"error": {"code", "message", "details"}}``.  Nothing below the routers
raises ``HTTPException``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One problem found while validating a request or a workflow.

    ``field`` is a dotted path into the request (``inputs.node_1``) and ``node`` the
    workflow node the problem is about, when there is one.
    """

    code: str
    message: str
    field: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class FlowyError(Exception):
    """Base of every error Flowy raises on purpose."""

    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        #: Extra response headers (Retry-After, ...).
        self.headers: dict[str, str] = {}


class AuthError(FlowyError):
    code = "unauthorized"
    status = 401


class Forbidden(FlowyError):
    code = "forbidden"
    status = 403


class NotFound(FlowyError):
    code = "not_found"
    status = 404


class BadRequest(FlowyError):
    code = "bad_request"
    status = 400


class Conflict(FlowyError):
    code = "conflict"
    status = 409


class RateLimited(FlowyError):
    """Too many requests; ``retry_after`` seconds until one is allowed again."""

    code = "rate_limited"
    status = 429

    def __init__(self, message: str, retry_after: float, headers: dict[str, str]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.headers = {"Retry-After": str(max(1, math.ceil(retry_after))), **headers}


class Gone(FlowyError):
    code = "gone"
    status = 410


class PayloadTooLarge(FlowyError):
    code = "payload_too_large"
    status = 413


class ValidationFailed(FlowyError):
    """A request was refused because of one or more issues, all reported together."""

    code = "validation_error"
    status = 422

    def __init__(self, issues: list[Issue], message: str | None = None) -> None:
        self.issues = list(issues)
        if message is None:
            message = "; ".join(_describe(i) for i in self.issues) or "invalid request"
        super().__init__(message, details=[i.to_dict() for i in self.issues])


class GraphInvalid(ValidationFailed):
    """A workflow graph cannot be run as written."""

    code = "invalid_workflow"


def _describe(issue: Issue) -> str:
    where = issue.field or issue.node
    return f"{where}: {issue.message}" if where else issue.message


class NodeError(FlowyError):
    """A node failed; the run fails with the node id and this message in its error."""

    code = "node_failed"

    def __init__(self, message: str, node: str | None = None) -> None:
        super().__init__(message)
        self.node = node


class MediaError(NodeError):
    """A media input could not be fetched, was refused by the guard, or is not media."""

    code = "media_error"


class NodeTimeout(NodeError):
    code = "node_timeout"


class RunCanceled(NodeError):
    code = "canceled"
