"""Request dependencies: the platform and the caller's workspace."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from fastapi import Depends, Header, Request, Response

from flowy.errors import BadRequest, Issue, ValidationFailed
from flowy.services.keys import authenticate, touch_key
from flowy.services.platform import Platform


async def platform(request: Request) -> Platform:  # async: no thread hop for a lookup
    p: Platform = request.app.state.platform
    return p


PlatformDep = Annotated[Platform, Depends(platform)]


async def workspace(
    p: PlatformDep,
    response: Response,
    # Documented as the bearer security scheme of the OpenAPI document, not a parameter.
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> str:
    """The workspace of the Bearer key; AuthError (401) otherwise, RateLimited (429) when
    the key is over its request rate."""
    # On the event loop, not a thread: one indexed read, and WAL reads never wait.
    caller = authenticate(p.db, authorization)
    if caller.stale:  # the rare write goes to a thread, unawaited
        asyncio.get_running_loop().run_in_executor(None, touch_key, p.db, caller.key_id)
    response.headers.update(p.limiter.hit(caller.key_id))
    return caller.workspace_id


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
