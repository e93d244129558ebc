"""The HTTP routes.  Thin: parse, call a service, shape the answer."""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, Response
from starlette.datastructures import UploadFile

from flowy.api.deps import BodyDep, PlatformDep, WorkspaceDep
from flowy.api.views import app_detail, app_summary, iso
from flowy.db.models import Asset
from flowy.errors import BadRequest, Issue, PayloadTooLarge, ValidationFailed
from flowy.services.secrets import SecretInfo

router = APIRouter(prefix="/v1")
Data = dict[str, Any]

_APP_FIELDS = {"title", "description", "workflow", "published"}


def _fields(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationFailed(
            [Issue("invalid_type", "the body must be a JSON object", field="body")]
        )
    issues = [
        Issue("unknown_field", f"unknown field {k!r}", field=k) for k in body if k not in allowed
    ]
    for key in ("description",):
        if key in body and not isinstance(body[key], str):
            issues.append(Issue("invalid_type", "must be a string", field=key))
    if "published" in body and not isinstance(body["published"], bool):
        issues.append(Issue("invalid_type", "must be true or false", field="published"))
    if issues:
        raise ValidationFailed(issues)
    return body


@router.get("/health", include_in_schema=False)
def health() -> Data:
    return {"data": {"status": "ok"}}


@router.get("/apps")
def list_apps(p: PlatformDep, ws: WorkspaceDep) -> Data:
    return {"data": [app_summary(a) for a in p.apps.list(ws)]}


@router.post("/apps", status_code=201)
def create_app(p: PlatformDep, ws: WorkspaceDep, body: BodyDep) -> Data:
    b = _fields(body, _APP_FIELDS)
    if "workflow" not in b:
        raise ValidationFailed([Issue("required", "'workflow' is required", field="workflow")])
    d = p.apps.create(
        ws,
        title=b.get("title"),
        workflow=b["workflow"],
        description=b.get("description", ""),
        published=b.get("published", False),
    )
    return {"data": app_detail(d)}


@router.get("/apps/{app_id}")
def get_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.get(ws, app_id))}


@router.patch("/apps/{app_id}")
def update_app(p: PlatformDep, ws: WorkspaceDep, app_id: str, body: BodyDep) -> Data:
    b = _fields(body, _APP_FIELDS)
    d = p.apps.update(
        ws,
        app_id,
        title=b.get("title"),
        description=b.get("description"),
        workflow=b.get("workflow"),
        published=b.get("published"),
    )
    return {"data": app_detail(d)}


@router.post("/apps/{app_id}/publish")
def publish_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.update(ws, app_id, published=True))}


@router.post("/apps/{app_id}/unpublish")
def unpublish_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.update(ws, app_id, published=False))}


@router.delete("/apps/{app_id}", status_code=204)
def delete_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Response:
    p.apps.delete(ws, app_id)
    return Response(status_code=204)


@router.post("/apps/{app_id}/runs", status_code=201)
def create_run(p: PlatformDep, ws: WorkspaceDep, app_id: str, body: BodyDep) -> Data:
    run = p.runs.create(ws, app_id, body)
    return {
        "data": {
            "runId": run.id,
            "status": run.status,
            "appId": run.app_id,
            "createdAt": iso(run.created_at),
        }
    }


@router.get("/runs/{run_id}")
def get_run(p: PlatformDep, ws: WorkspaceDep, run_id: str) -> Data:
    return {"data": p.runs.public(p.runs.get(ws, run_id))}


@router.get("/nodes")
def list_nodes(p: PlatformDep, ws: WorkspaceDep) -> Data:
    return {"data": [t.describe() for t in p.registry]}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\-]+")


@router.post("/uploads", status_code=201)
async def upload(request: Request, p: PlatformDep, ws: WorkspaceDep) -> Data:
    """Store a file sent as multipart/form-data (field ``file``); answer with a link that
    any run input accepts."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise BadRequest("send the file as multipart/form-data in a field named 'file'")
    limit = p.settings.media.max_bytes
    async with request.form(max_files=1, max_fields=10, max_part_size=limit) as form:
        file = form.get("file")
        if not isinstance(file, UploadFile):
            raise ValidationFailed(
                [Issue("required", "a file field named 'file' is required", field="file")]
            )
        data = await file.read(limit + 1)
        name = _SAFE_NAME.sub("_", file.filename or "upload").strip("._")[:100] or "upload"
    if len(data) > limit:
        raise PayloadTooLarge(f"file is larger than {limit} bytes")
    if not data:
        raise ValidationFailed([Issue("empty", "the file is empty", field="file")])
    return {"data": _upload_view(p, p.files.store(ws, data, filename=name, kind="upload"))}


@router.get("/uploads/{upload_id}")
def get_upload(p: PlatformDep, ws: WorkspaceDep, upload_id: str) -> Data:
    """An upload of the workspace with a freshly signed link."""
    return {"data": _upload_view(p, p.files.get(ws, upload_id))}


def _upload_view(p: PlatformDep, asset: Asset) -> Data:
    link = p.files.link(asset.id, asset.filename)
    return {
        "id": asset.id,
        "url": link.url,
        "expiresAt": iso(link.expires_at),
        "contentType": asset.content_type,
        "size": asset.size,
        "filename": asset.filename,
        "createdAt": iso(asset.created_at),
    }


@router.get("/files/{asset_id}/{filename}", include_in_schema=True)
def download(
    p: PlatformDep,
    asset_id: str,
    filename: str,
    expires: Annotated[str | None, Query()] = None,
    signature: Annotated[str | None, Query()] = None,
) -> Response:
    """Serve a stored file to whoever holds a valid signed link (no API key needed)."""
    asset, data = p.files.open(asset_id, filename, expires, signature)
    inline = asset.content_type.startswith("image/")
    headers = {
        "Content-Disposition": f"{'inline' if inline else 'attachment'}; "
        f'filename="{asset.filename}"',
        "X-Content-Type-Options": "nosniff",
        "Cache-Control": "private, max-age=3600",
        "Content-Security-Policy": "default-src 'none'; sandbox",
    }
    path = p.files.blobs.local_path(asset.key)
    if path is not None:
        return FileResponse(path, media_type=asset.content_type, headers=headers)
    return Response(data, media_type=asset.content_type, headers=headers)


@router.get("/secrets")
def list_secrets(p: PlatformDep, ws: WorkspaceDep) -> Data:
    """Names of the workspace's secrets; values are never returned."""
    return {"data": [_secret_view(i) for i in p.secrets.list(ws)]}


@router.put("/secrets/{name}")
def put_secret(p: PlatformDep, ws: WorkspaceDep, name: str, body: BodyDep) -> Data:
    """Create or replace a secret from ``{"value": "..."}``; stored encrypted."""
    b = _fields(body, {"value"})
    return {"data": _secret_view(p.secrets.put(ws, name, b.get("value")))}


@router.delete("/secrets/{name}", status_code=204)
def delete_secret(p: PlatformDep, ws: WorkspaceDep, name: str) -> Response:
    p.secrets.delete(ws, name)
    return Response(status_code=204)


def _secret_view(info: SecretInfo) -> Data:
    return {"name": info.name, "createdAt": iso(info.created_at), "updatedAt": iso(info.updated_at)}
