"""The two hottest routes, answered before the framework's routing.

``GET /v1/runs/{id}`` (the poll) and ``POST /v1/apps/{id}/runs`` are most of an API
process's requests.  Their endpoints already read headers and body themselves and
answer pre-rendered JSON; what FastAPI and Starlette still did per request (matching
the path against every route in turn, the request/response wrapper and its exception
handling) was most of the poll's time.  :class:`FastRoutes` sits inside the body limit
and hands those two paths straight to the same endpoint functions; every other request,
and every path these patterns do not match exactly, goes through the application as
before.  The routes stay registered, so the OpenAPI document does not change.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from flowy.api.errors import flowy_error_response
from flowy.api.routes import create_run, get_run
from flowy.errors import FlowyError

_RUNS = "/v1/runs/"
_APPS = "/v1/apps/"


class FastRoutes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            method = scope["method"]
            if method == "GET" and path.startswith(_RUNS):
                run_id = path[len(_RUNS) :]
                if run_id and "/" not in run_id:
                    await self._answer(scope, receive, send, get_run, run_id)
                    return
            elif method == "POST" and path.startswith(_APPS) and path.endswith("/runs"):
                app_id = path[len(_APPS) : -len("/runs")]
                if app_id and "/" not in app_id:
                    await self._answer(scope, receive, send, create_run, app_id)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    async def _answer(
        scope: Scope, receive: Receive, send: Send, endpoint: object, arg: str
    ) -> None:
        request = Request(scope, receive)
        try:
            response = await endpoint(request, arg)  # type: ignore[operator]
        except FlowyError as exc:
            response = flowy_error_response(exc)
        await response(scope, receive, send)
