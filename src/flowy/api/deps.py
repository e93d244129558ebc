"""Request dependencies: the platform and the caller's workspace."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import Depends, Request, Response

from flowy.errors import BadRequest, Issue, ValidationFailed
from flowy.services.keys import KeyCache, touch_key
from flowy.services.platform import Platform


async def platform(request: Request) -> Platform:  # async: no thread hop for a lookup
    p: Platform = request.app.state.platform
    return p


PlatformDep = Annotated[Platform, Depends(platform)]


def authorize(request: Request) -> tuple[str, dict[str, str]]:
    """The workspace of the request's Bearer key and the rate-limit headers of its answer.

    Raises AuthError (401) for a missing, malformed, unknown or revoked key and
    RateLimited (429) when the key is over its request rate.
    """
    state = request.app.state
    keys: KeyCache = state.keys
    p: Platform = state.platform
    # Read here, not declared as a Header parameter: the bearer security scheme of the
    # OpenAPI document describes it, and a parameter costs a validation per request.
    # On the event loop, not a thread: a dict lookup, or one indexed read every few
    # seconds per key (WAL reads never wait).
    who = keys.authenticate(request.headers.get("authorization"))
    if who.stale:  # the rare write goes to a thread, unawaited
        asyncio.get_running_loop().run_in_executor(None, touch_key, p.db, who.key_id)
    return who.workspace_id, p.limiter.hit(who.key_id)


async def workspace(request: Request, response: Response) -> str:
    """The workspace of the Bearer key; AuthError (401) otherwise, RateLimited (429) when
    the key is over its request rate."""
    ws, headers = authorize(request)
    response.headers.update(headers)
    return ws


WorkspaceDep = Annotated[str, Depends(workspace)]


async def json_body(request: Request) -> Any:
    """The request body as JSON, with errors that say what is wrong with it."""
    ctype = request.headers.get("content-type", "")
    raw = await request.body()
    if not raw.strip():
        raise ValidationFailed([Issue("required", "a JSON body is required", field="body")])
    if ctype and "json" not in ctype:
        raise BadRequest(f"expected Content-Type: application/json, got {ctype!r}")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(
            f"malformed JSON body: {exc}",
            details=[{"field": "body", "code": "malformed_json", "message": str(exc)}],
        ) from None


BodyDep = Annotated[Any, Depends(json_body)]
