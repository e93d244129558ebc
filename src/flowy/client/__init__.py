"""The Flowy Python SDK: run apps, follow runs, download outputs.

Needs only httpx and the standard library (it imports nothing else of Flowy), so it can
be used from any program that talks to a Flowy server::

    from pathlib import Path
    from flowy.client import Flowy

    with Flowy() as flowy:  # FLOWY_API, FLOWY_KEY
        outputs = flowy.run(app_id, {"node_1": Path("me.jpg"), "node_2": "studio lighting"})
        outputs[0].save("out/")

Or in one call: ``flowy.client.run(app_id, inputs)``.  :class:`AsyncFlowy` is the same
for asyncio.  Errors are in :mod:`flowy.client.errors`; webhook signatures are checked
with :func:`flowy.client.webhooks.verify`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, overload

from flowy.client import webhooks
from flowy.client._async import AsyncFlowy
from flowy.client._http import IdempotencyKey, RetryPolicy
from flowy.client._sync import Flowy
from flowy.client.errors import (
    APIConnectionError,
    APIError,
    AuthenticationError,
    ConflictError,
    FlowyError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    RunCanceled,
    RunFailed,
    RunTimeout,
    ServerError,
    ValidationError,
    WebhookVerificationError,
)
from flowy.client.models import (
    App,
    AppInput,
    AppOutput,
    NodeState,
    Outputs,
    Run,
    RunEvent,
    RunOutput,
    Upload,
)

__all__ = [
    "APIConnectionError",
    "APIError",
    "App",
    "AppInput",
    "AppOutput",
    "AsyncFlowy",
    "AuthenticationError",
    "ConflictError",
    "Flowy",
    "FlowyError",
    "NodeState",
    "NotFoundError",
    "Outputs",
    "PermissionDeniedError",
    "RateLimitError",
    "RetryPolicy",
    "Run",
    "RunCanceled",
    "RunEvent",
    "RunFailed",
    "RunOutput",
    "RunTimeout",
    "ServerError",
    "Upload",
    "ValidationError",
    "WebhookVerificationError",
    "run",
    "webhooks",
]


@overload
def run(
    app_id: str,
    inputs: Mapping[str, Any] | None = ...,
    *,
    wait: Literal[True] = ...,
    api: str | None = ...,
    key: str | None = ...,
    timeout: float | None = ...,
    timeout_seconds: float | None = ...,
    webhook: str | None = ...,
    webhook_events: list[str] | tuple[str, ...] | None = ...,
    idempotency_key: IdempotencyKey = ...,
) -> Outputs: ...
@overload
def run(
    app_id: str,
    inputs: Mapping[str, Any] | None = ...,
    *,
    wait: Literal[False],
    api: str | None = ...,
    key: str | None = ...,
    timeout: float | None = ...,
    timeout_seconds: float | None = ...,
    webhook: str | None = ...,
    webhook_events: list[str] | tuple[str, ...] | None = ...,
    idempotency_key: IdempotencyKey = ...,
) -> Run: ...
@overload
def run(
    app_id: str,
    inputs: Mapping[str, Any] | None = ...,
    *,
    wait: bool = ...,
    api: str | None = ...,
    key: str | None = ...,
    timeout: float | None = ...,
    timeout_seconds: float | None = ...,
    webhook: str | None = ...,
    webhook_events: list[str] | tuple[str, ...] | None = ...,
    idempotency_key: IdempotencyKey = ...,
) -> Outputs | Run: ...
def run(
    app_id: str,
    inputs: Mapping[str, Any] | None = None,
    *,
    wait: bool = True,
    api: str | None = None,
    key: str | None = None,
    timeout: float | None = None,
    timeout_seconds: float | None = None,
    webhook: str | None = None,
    webhook_events: list[str] | tuple[str, ...] | None = None,
    idempotency_key: IdempotencyKey = None,
) -> Outputs | Run:
    """Run an app with a client made for this one call (``FLOWY_API``/``FLOWY_KEY`` unless
    ``api``/``key`` are given).  See :meth:`Flowy.run`; the outputs stay readable after
    the call (their links are signed, so no key is needed to download them)."""
    with Flowy(api, key) as client:
        result = client.run(
            app_id,
            inputs,
            wait=wait,
            timeout=timeout,
            timeout_seconds=timeout_seconds,
            webhook=webhook,
            webhook_events=webhook_events,
            idempotency_key=idempotency_key,
        )
    # Unbind from the closed client: downloads then use a connection of their own.
    if isinstance(result, Outputs):
        return Outputs(Run.from_json(result.run.raw))
    return Run.from_json(result.raw)
