"""The HTTP routes.  Thin: parse, call a service, shape the answer."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import FileResponse, Response, StreamingResponse
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from flowy.api import schemas as sc
from flowy.api.deps import BodyDep, PlatformDep, WorkspaceDep, authorize, json_body
from flowy.api.feeds import EventStream, FeedSource
from flowy.api.views import app_detail, app_summary, iso
from flowy.db.models import Asset, Run, RunEvent
from flowy.errors import BadRequest, Issue, PayloadTooLarge, ValidationFailed
from flowy.services.idempotency import Answer, request_hash
from flowy.services.platform import Platform
from flowy.services.runs import Accepted, RunFilter
from flowy.services.secrets import SecretInfo
from flowy.services.states import TERMINAL

router = APIRouter(prefix="/v1")
#: Longest ``Prefer: wait=N`` honoured, in seconds.
MAX_WAIT = 60
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


@router.get(
    "/health",
    tags=["health"],
    responses=sc.answers(200, sc.Health, public=True, ok_description="The server is up."),
    openapi_extra=sc.PUBLIC,
)
def health() -> Data:
    """Whether the server answers (no API key needed)."""
    return {"data": {"status": "ok"}}


@router.get("/apps", tags=["apps"], responses=sc.answers(200, sc.AppList))
def list_apps(p: PlatformDep, ws: WorkspaceDep) -> Data:
    return {"data": [app_summary(a) for a in p.apps.list(ws)]}


@router.post(
    "/apps",
    status_code=201,
    tags=["apps"],
    responses=sc.answers(
        201, sc.AppEnvelope, 400, 413, 422, ok_description="The new app.", e422=sc.WORKFLOW_422
    ),
    openapi_extra=sc.json_body(sc.AppCreate),
)
def create_app(p: PlatformDep, ws: WorkspaceDep, body: BodyDep) -> Data:
    """Make an app (version 1) from a workflow, validated against the node catalog."""
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


@router.get("/apps/{app_id}", tags=["apps"], responses=sc.answers(200, sc.AppEnvelope, 404))
def get_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.get(ws, app_id))}


@router.patch(
    "/apps/{app_id}",
    tags=["apps"],
    responses=sc.answers(200, sc.AppEnvelope, 400, 404, 413, 422, e422=sc.WORKFLOW_422),
    openapi_extra=sc.json_body(sc.AppUpdate),
)
def update_app(p: PlatformDep, ws: WorkspaceDep, app_id: str, body: BodyDep) -> Data:
    """Change title, description or published; a new ``workflow`` makes a new version
    (runs in flight keep theirs)."""
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


@router.post(
    "/apps/{app_id}/publish", tags=["apps"], responses=sc.answers(200, sc.AppEnvelope, 404, 413)
)
def publish_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.update(ws, app_id, published=True))}


@router.post(
    "/apps/{app_id}/unpublish",
    tags=["apps"],
    responses=sc.answers(200, sc.AppEnvelope, 404, 413),
)
def unpublish_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Data:
    return {"data": app_detail(p.apps.update(ws, app_id, published=False))}


@router.delete(
    "/apps/{app_id}",
    status_code=204,
    tags=["apps"],
    responses=sc.answers(
        204, None, 404, 413, ok_description="Deleted.", ok_rate_limit_headers=False
    ),
)
def delete_app(p: PlatformDep, ws: WorkspaceDep, app_id: str) -> Response:
    """Delete an app; its past runs stay readable, new runs are refused (404)."""
    p.apps.delete(ws, app_id)
    return Response(status_code=204)


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """An optional request header, documented as FastAPI documents a ``Header()``
    parameter (the route reads it itself: a declared parameter costs a validation)."""
    return {
        "name": name,
        "in": "header",
        "required": False,
        "schema": {"type": "string", "description": description, **schema, "title": name},
        "description": description,
    }


_PREFER = _header(
    "Prefer",
    "`wait=N`: answer when the run has ended or N seconds (at most 60) have passed, with "
    "the whole run.  Other preferences are ignored.",
    {"examples": ["wait=10"]},
)
_IDEMPOTENCY_KEY = _header(
    "Idempotency-Key",
    "The same key and body within 24 hours replay the first answer instead of starting "
    "another run.",
    sc.IDEMPOTENCY_KEY_HEADER,
)


@router.post(
    "/apps/{app_id}/runs",
    status_code=201,
    tags=["runs"],
    responses=sc.answers(
        201,
        sc.RunStarted,
        400,
        404,
        409,
        413,
        422,
        ok_description="The run was made (or, with an Idempotency-Key, replayed).",
        ok_headers=sc.RUN_STARTED_HEADERS,
        e409="`conflict`: the app is not published, or a request with the same "
        "Idempotency-Key is still in progress.",
        e422="`validation_error`: every problem with the inputs at once, each naming its "
        "field (`inputs.node_1`).  Which inputs there are, which are required and what "
        "each takes is the app's (GET /v1/apps/{app_id}), so a body this schema accepts can "
        "still be refused.  Also: an Idempotency-Key used with another request, or a bad "
        "`Prefer: wait`.",
    ),
    openapi_extra={**sc.json_body(sc.RunCreate), "parameters": [_PREFER, _IDEMPOTENCY_KEY]},
)
async def create_run(request: Request, app_id: str) -> Response:
    """Start a run.

    The same ``Idempotency-Key`` and body within 24 h replay the first answer instead of
    starting another run.  With ``Prefer: wait=N`` (N ≤ 60) answer when the run has ended
    or N seconds have passed, with the run as ``GET /runs/{id}`` shows it.
    """
    # Like get_run: no dependency to solve (the headers are read here and documented in
    # openapi_extra) and no answer to validate again.  The checks keep the order the
    # dependencies gave them: the key, then the body, then Prefer.
    ws, headers = authorize(request)
    body = await json_body(request)
    wait = _prefer_wait(request.headers.get("prefer"))
    idempotency_key = request.headers.get("idempotency-key")
    p: Platform = request.app.state.platform

    if idempotency_key is None:
        # Checked here; the write joins the next transaction of the run writer, with the
        # other runs that arrive meanwhile (group commit), and this request waits for it
        # without a thread of its own.
        run = await p.runs.start_async(ws, app_id, body)
        answer = Answer(201, {"data": _run_created(run)})
    else:

        def start() -> Answer:
            run = p.runs.create(ws, app_id, body)
            return Answer(201, {"data": _run_created(run)})

        fingerprint = request_hash(app_id, body)
        answer = await run_in_threadpool(
            p.idempotency.run_once, ws, idempotency_key, fingerprint, start
        )
        if answer.replayed:
            headers["Idempotent-Replayed"] = "true"
    if wait is None:
        return _json(answer.status, answer.body, headers)
    run_id = answer.body["data"]["runId"]
    with p.bus.subscribe(run_id) as sub:
        deadline = time.monotonic() + wait
        while True:
            view = p.runs.read_view(ws, run_id)  # as get_run: one read on the loop
            left = deadline - time.monotonic()
            if view["status"] in TERMINAL or left <= 0:
                break
            await sub.wait(left)
    headers["Preference-Applied"] = f"wait={wait}"
    return _json(answer.status, {"data": view}, headers)


def _run_created(run: Run | Accepted) -> Data:
    """A new run as ``RunCreated`` shows it."""
    return {
        "runId": run.id,
        "status": run.status,
        "appId": run.app_id,
        "createdAt": iso(run.created_at),
    }


def _json(status: int, body: Data, headers: dict[str, str]) -> Response:
    """``body`` as FastAPI would send a route's ``dict`` answer (the same bytes)."""
    return Response(
        _ENVELOPE.dump_json(body), status, headers=headers, media_type="application/json"
    )


def _prefer_wait(prefer: str | None) -> int | None:
    if not prefer:
        return None
    for part in prefer.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                seconds = int(value.strip())
            except ValueError:
                raise ValidationFailed(
                    [
                        Issue(
                            "invalid_value",
                            "Prefer: wait=N takes whole seconds",
                            field="header.prefer",
                        )
                    ]
                ) from None
            return max(0, min(seconds, MAX_WAIT))
    return None


#: What FastAPI serializes a route's ``dict[str, Any]`` answer with.
_ENVELOPE = TypeAdapter(dict[str, Any])


@router.get(
    "/runs/{run_id}",
    tags=["runs"],
    responses=sc.answers(200, sc.RunEnvelope, 404, ok_description="The run, links signed afresh."),
)
async def get_run(request: Request, run_id: str) -> Response:
    # The poll is the hottest route: answered on the loop (one read, no thread hop), with
    # no dependency to solve, and serialized as FastAPI would (pydantic, the same JSON)
    # but without validating the view again: RunService builds it, RunEnvelope only
    # documents it.
    ws, headers = authorize(request)
    p: Platform = request.app.state.platform
    body = _ENVELOPE.dump_json({"data": p.runs.read_view(ws, run_id)})
    return Response(body, media_type="application/json", headers=headers)


@router.post(
    "/runs/{run_id}/cancel", tags=["runs"], responses=sc.answers(200, sc.RunEnvelope, 404, 413)
)
def cancel_run(p: PlatformDep, ws: WorkspaceDep, run_id: str) -> Data:
    """Cancel a run; idempotent.  A queued run ends at once, a running one promptly."""
    return {"data": p.runs.public(p.runs.cancel(ws, run_id))}


def _list_runs(p: Platform, ws: str, f: RunFilter, limit: int, cursor: str | None) -> Data:
    runs, next_cursor = p.runs.list(ws, f, limit=limit, cursor=cursor)
    return {"data": [p.runs.public(r, nodes=False) for r in runs], "nextCursor": next_cursor}


def _utc(dt: datetime | None, field: str) -> datetime | None:
    """An aware UTC time (naive ones are UTC); 422 for one UTC cannot hold (year 1 with
    an offset east of UTC, year 9999 west of it), which would fail the query with 500."""
    if dt is None:
        return None
    try:
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    except OverflowError:
        raise ValidationFailed(
            [Issue("invalid_value", "out of the range of UTC times", field=field)]
        ) from None


_AFTER = "Only runs made after this time."
_BEFORE = "Only runs made before this time."
_CURSOR = "The `nextCursor` of the previous page."


@dataclass(frozen=True)
class RunListQuery:
    """The query of both run lists: filters (but the app) and the page."""

    status: str | None
    version_id: str | None
    created_after: datetime | None
    created_before: datetime | None
    limit: int
    cursor: str | None

    def filter(self, app_id: str | None) -> RunFilter:
        return RunFilter(
            app_id,
            self.status,
            self.version_id,
            _utc(self.created_after, "createdAfter"),
            _utc(self.created_before, "createdBefore"),
        )


def run_list_query(
    status: Annotated[str | None, Query(json_schema_extra=sc.RUN_STATUS_QUERY)] = None,
    version_id: Annotated[str | None, Query(alias="versionId")] = None,
    created_after: Annotated[
        datetime | None,
        Query(alias="createdAfter", description=_AFTER, json_schema_extra=sc.TIME_QUERY),
    ] = None,
    created_before: Annotated[
        datetime | None,
        Query(alias="createdBefore", description=_BEFORE, json_schema_extra=sc.TIME_QUERY),
    ] = None,
    limit: Annotated[int, Query(json_schema_extra=sc.LIMIT_QUERY)] = 20,
    cursor: Annotated[str | None, Query(description=_CURSOR)] = None,
) -> RunListQuery:
    return RunListQuery(status, version_id, created_after, created_before, limit, cursor)


RunListDep = Annotated[RunListQuery, Depends(run_list_query)]


@router.get("/runs", tags=["runs"], responses=sc.answers(200, sc.RunPage, 422))
def list_runs(
    p: PlatformDep,
    ws: WorkspaceDep,
    q: RunListDep,
    app_id: Annotated[str | None, Query(alias="appId")] = None,
) -> Data:
    """Runs of the workspace, newest first, a page at a time (``nextCursor``)."""
    return _list_runs(p, ws, q.filter(app_id), q.limit, q.cursor)


@router.get("/apps/{app_id}/runs", tags=["runs"], responses=sc.answers(200, sc.RunPage, 404, 422))
def list_app_runs(p: PlatformDep, ws: WorkspaceDep, app_id: str, q: RunListDep) -> Data:
    """Runs of one app, newest first."""
    app = p.apps.get(ws, app_id)  # 404 for another workspace's app
    return _list_runs(p, ws, q.filter(app.app.id), q.limit, q.cursor)


@router.get(
    "/runs/{run_id}/events",
    # For the docs: a streamed 200 (described in `responses`) and JSON errors.  The
    # endpoint answers with an EventStream.
    response_class=StreamingResponse,
    tags=["runs"],
    responses=sc.answers(
        200,
        None,
        404,
        422,
        ok_rate_limit_headers=False,
        ok_description="Server-Sent Events, from the first (or after the given one) to the "
        "terminal event.",
        ok_headers=sc.EVENT_STREAM_HEADERS,
        ok_content=sc.EVENT_STREAM,
        e422="`validation_error`: a Last-Event-ID or `after` that is not an event id.",
    ),
)
async def run_events(
    request: Request,
    p: PlatformDep,
    ws: WorkspaceDep,
    run_id: str,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Resume after this event (EventSource sends it on reconnect): an "
            "id the stream sent, or empty for the start.",
            json_schema_extra=sc.LAST_EVENT_ID_HEADER,
        ),
    ] = None,
    after: Annotated[
        int | None, Query(description="Resume after this event id; wins over Last-Event-ID.")
    ] = None,
) -> EventStream:
    """The run's events as Server-Sent Events; resume with ``Last-Event-ID``.  The
    stream ends after the terminal event."""
    run = await run_in_threadpool(p.runs.get, ws, run_id)
    resume = _last_id(last_event_id)  # checked even when `after` wins: no silent garbage
    start = after if after is not None else resume
    start = max(0, min(start, _MAX_SEQ))  # beyond SQLite's 64-bit integers the query fails
    source = FeedSource(
        db=p.db,
        bus=p.bus,
        render=lambda ev: _sse(p, run.id, ev),
        keepalive=p.settings.server.sse_keepalive_seconds,
    )
    return EventStream(
        request.app.state.feeds,
        run.id,
        source,
        start,
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


#: The largest event id a query can compare with (SQLite integers are signed 64-bit).
_MAX_SEQ = 2**63 - 1


def _last_id(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    try:
        return max(0, int(value.strip()))
    except ValueError:
        raise ValidationFailed(
            [
                Issue(
                    "invalid_value",
                    "must be an event id this stream sent",
                    field="header.last-event-id",
                )
            ]
        ) from None


def _sse(p: Platform, run_id: str, ev: RunEvent) -> bytes:
    data = dict(ev.data)
    if "outputs" in data:
        data["outputs"] = p.runs.output_views(data["outputs"])
    payload = {
        "seq": ev.seq,
        "type": ev.type,
        "runId": run_id,
        "createdAt": iso(ev.created_at),
        "data": data,
    }
    body = json.dumps(payload, separators=(",", ":"))
    return f"id: {ev.seq}\nevent: {ev.type}\ndata: {body}\n\n".encode()


@router.get("/nodes", tags=["nodes"], responses=sc.answers(200, sc.NodeCatalog))
def list_nodes(p: PlatformDep, ws: WorkspaceDep) -> Data:
    """The node catalog: each type's ports, and its params as JSON Schema."""
    return {"data": [t.describe() for t in p.registry]}


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\-]+")


@router.post(
    "/uploads",
    status_code=201,
    tags=["files"],
    responses=sc.answers(
        201,
        sc.UploadEnvelope,
        400,
        413,
        422,
        ok_description="The stored file and a link to it.",
        e400="`bad_request`: not multipart/form-data, or a malformed multipart body.",
        e413="`payload_too_large`: the file is over the media limit.",
        e422="`validation_error`: no file field named `file`, or an empty file.",
    ),
    openapi_extra=sc.multipart_body(sc.UploadForm, "The file, in a field named `file`."),
)
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


@router.get(
    "/uploads/{upload_id}", tags=["files"], responses=sc.answers(200, sc.UploadEnvelope, 404)
)
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


@router.get(
    "/files/{asset_id}/{filename}",
    tags=["files"],
    response_class=Response,
    responses=sc.FILE_ANSWERS
    | sc.answers(
        None,
        None,
        403,
        410,
        public=True,
        e403="`forbidden`: a missing, malformed, tampered or expired link (no more is said).",
    ),
    openapi_extra={**sc.PUBLIC, "parameters": [sc.RANGE_PARAMETER]},
)
def download(
    p: PlatformDep,
    asset_id: str,
    filename: str,
    expires: Annotated[
        str | None, Query(description="Unix seconds the link is valid until; from the link.")
    ] = None,
    signature: Annotated[str | None, Query(description="The link's signature.")] = None,
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


@router.get("/secrets", tags=["secrets"], responses=sc.answers(200, sc.SecretList))
def list_secrets(p: PlatformDep, ws: WorkspaceDep) -> Data:
    """Names of the workspace's secrets; values are never returned."""
    return {"data": [_secret_view(i) for i in p.secrets.list(ws)]}


@router.put(
    "/secrets/{name}",
    tags=["secrets"],
    responses=sc.answers(200, sc.SecretEnvelope, 400, 413, 422),
    openapi_extra=sc.json_body(sc.SecretPut),
)
def put_secret(p: PlatformDep, ws: WorkspaceDep, name: str, body: BodyDep) -> Data:
    """Create or replace a secret from ``{"value": "..."}``; stored encrypted."""
    b = _fields(body, {"value"})
    return {"data": _secret_view(p.secrets.put(ws, name, b.get("value")))}


@router.delete(
    "/secrets/{name}",
    status_code=204,
    tags=["secrets"],
    responses=sc.answers(
        204, None, 404, 413, ok_description="Deleted.", ok_rate_limit_headers=False
    ),
)
def delete_secret(p: PlatformDep, ws: WorkspaceDep, name: str) -> Response:
    """Delete a secret."""
    p.secrets.delete(ws, name)
    return Response(status_code=204)


def _secret_view(info: SecretInfo) -> Data:
    return {"name": info.name, "createdAt": iso(info.created_at), "updatedAt": iso(info.updated_at)}
