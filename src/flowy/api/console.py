"""The web console: one static page and its script and style, served by the API.

It holds no state and no secrets of its own: the browser calls the public API with the
key its user pastes.  A strict Content-Security-Policy lets the page load only its own
files and talk only to this origin (images may come from wherever the file links point,
as ``FLOWY_SERVER__PUBLIC_URL`` may name another host).
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from flowy.errors import NotFound

router = APIRouter(include_in_schema=False)

_FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "console.js": ("console.js", "text/javascript; charset=utf-8"),
    "console.css": ("console.css", "text/css; charset=utf-8"),
}
_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; "
    "connect-src 'self'; img-src 'self' http: https: data: blob:; form-action 'none'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def _read(name: str) -> bytes:
    return resources.files("flowy.console").joinpath(name).read_bytes()


@router.get("/")
def home() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console")
def console_root() -> RedirectResponse:
    return RedirectResponse("/console/", status_code=307)


@router.get("/console/{name}")
@router.get("/console/", name="console_index")
def console(name: str = "") -> Response:
    """The console's page, script or style."""
    known = _FILES.get(name)
    if known is None:
        raise NotFound("no such console file")
    filename, media_type = known
    return Response(_read(filename), media_type=media_type, headers=_HEADERS)
