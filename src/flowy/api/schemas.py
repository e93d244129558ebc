"""The shapes of the HTTP API, for ``/v1/openapi.json`` only.

Routes answer plain dicts (built in :mod:`flowy.api.views` and the services) and parse
their JSON bodies themselves, so Flowy's own error messages reach callers; these models
*document* those shapes and are never used to validate or serialise a request.  Field
names are the camelCase the API speaks (aliases of snake_case attributes).  ``extra``
is forbidden on answers so that a field the code adds without documenting it fails the
OpenAPI test (``tests/api/test_openapi.py``), which checks real answers against them.

Also here: the ``responses=`` and ``openapi_extra=`` fragments the routes use
(:func:`json_body`, :func:`answers`), and the response headers they name.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from string import Template
from typing import Annotated, Any, Literal

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import SkipJsonSchema, WithJsonSchema, models_json_schema

from flowy.services.states import NodeStatus, RunStatus
from flowy.services.webhooks import EVENT_TYPES
from flowy.settings import Settings

#: Object ids: 24 lowercase hex characters (:mod:`flowy.ids`).
ID_PATTERN = r"^[0-9a-f]{24}$"
#: A title must hold something besides whitespace (Python's idea of whitespace, which
#: ``str.strip`` uses: it includes U+001C..U+001F and U+0085, unlike JavaScript's).
NOT_BLANK = r"[^\t-\r\x1c- \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"
#: Secret names (:data:`flowy.services.secrets.NAME`).
SECRET_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,99}$"
#: Workflow node ids (:data:`flowy.engine.graph.NODE_ID`).
NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$"

#: Webhook URLs, exactly as :func:`flowy.services.webhooks.check_url` takes them: an
#: absolute http(s) URL with a host, an optional port (0-65535), and no whitespace or
#: control characters.  (No IPv6 literals: the pattern leaves brackets out.  Also out:
#: the few characters whose NFKC form holds one of ``/?#@:``, which Python refuses in a
#: host.)
_WS = r"\x00-\x20\x7f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
_NFKC = (
    r"\u2047-\u2049\u2100\u2101\u2105\u2106\u2a74\ufe13\ufe16\ufe55\ufe56\ufe5f\ufe6b"
    r"\uff03\uff0f\uff1a\uff1f\uff20"
)
_PORT = r"(?:[0-9]{0,4}|[0-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
WEBHOOK_URL_PATTERN = (
    rf"^[Hh][Tt][Tt][Pp][Ss]?://(?:[^{_WS}{_NFKC}/?#\[\]]*@)?[^{_WS}{_NFKC}/?#@:\[\]]+"
    rf"(?::{_PORT})?(?:[/?#][^{_WS}]*)?$"
)
WebhookEvent = Annotated[str, WithJsonSchema({"type": "string", "enum": list(EVENT_TYPES)})]

Id = Annotated[str, Field(pattern=ID_PATTERN, examples=["64c3f2a1e8b9c0d1f2e3a4b5"])]
Time = Annotated[datetime, Field(examples=["2024-07-28T14:03:12.512345Z"])]


class _Shape(BaseModel):
    """Answers: camelCase, and nothing but the documented fields."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class _Request(BaseModel):
    """Request bodies: camelCase; unknown fields are refused (422 ``unknown_field``)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class PortType(StrEnum):
    IMAGE = "image"
    TEXT = "text"
    NUMBER = "number"
    BOOLEAN = "boolean"
    JSON = "json"
    FILE = "file"
    ANY = "any"


# --------------------------------------------------------------------------- errors


class ErrorDetail(BaseModel):
    """One problem, naming the request field (``inputs.node_1``) or workflow node."""

    model_config = ConfigDict(extra="forbid")
    code: str = Field(examples=["required"])
    message: str = Field(examples=["'Your photo' (image_url) is required"])
    field: str | SkipJsonSchema[None] = Field(None, examples=["inputs.node_1"])
    node: str | SkipJsonSchema[None] = Field(None, examples=["node_1"])


class ErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: str = Field(
        description="Stable error code: bad_request, unauthorized, forbidden, not_found, "
        "method_not_allowed, conflict, gone, payload_too_large, validation_error, "
        "invalid_workflow, rate_limited, internal_error.",
        examples=["validation_error"],
    )
    message: str = Field(description="What is wrong, every problem at once.")
    details: list[ErrorDetail] | None = Field(
        description="Each problem on its own (validation and malformed bodies); null otherwise."
    )


class ErrorBody(BaseModel):
    """Every failure answers this one shape."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "code": "validation_error",
                        "message": "inputs.node_1: 'Your photo' (image_url) is required",
                        "details": [
                            {
                                "code": "required",
                                "field": "inputs.node_1",
                                "node": "node_1",
                                "message": "'Your photo' (image_url) is required",
                            }
                        ],
                    }
                }
            ]
        },
    )
    error: ErrorInfo


# --------------------------------------------------------------------------- workflows


class Wire(BaseModel):
    """An input fed by another node's output."""

    model_config = ConfigDict(extra="forbid")
    node: str = Field(description="Id of the node whose output feeds this input.")
    port: str = Field(description="Name of that node's output.")


class WorkflowNode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=NODE_ID_PATTERN, examples=["node_3"])
    type: str = Field(description="A node type of the catalog (GET /v1/nodes).")
    label: str | None = Field(None, description="Shown to callers for input and output nodes.")
    params: dict[str, Any] = Field(
        default_factory=dict, description="Checked against the type's params JSON Schema."
    )
    inputs: dict[str, Wire] = Field(default_factory=dict, description="input port -> wire")


class Workflow(BaseModel):
    """A node graph.  Input nodes become the app's inputs and output nodes its outputs;
    node types, params, wires, port types and cycles are checked on save (422
    ``invalid_workflow`` with every problem)."""

    model_config = ConfigDict(extra="forbid")
    nodes: list[WorkflowNode]


# --------------------------------------------------------------------------- apps


class AppSummary(_Shape):
    id: Id
    title: str
    published: bool = Field(description="Only published apps can be run.")
    run_count: int = Field(ge=0)
    description: str
    created_at: Time
    updated_at: Time


class AppInput(_Shape):
    """An input of an app: one input node of its workflow."""

    node_id: str = Field(description="The key of this input in a run's `inputs`.")
    label: str
    kind: str = Field(
        description="text, image_url, number, boolean, choice, audio_url, video_url or file_url"
    )
    required: bool
    description: str | SkipJsonSchema[None] = None
    default: str | float | bool | SkipJsonSchema[None] = None
    options: list[str] | SkipJsonSchema[None] = Field(None, description="choice inputs")
    minimum: float | SkipJsonSchema[None] = Field(None, description="number inputs")
    maximum: float | SkipJsonSchema[None] = Field(None, description="number inputs")
    max_length: int | SkipJsonSchema[None] = Field(None, description="text inputs")
    integer: bool | SkipJsonSchema[None] = Field(
        None, description="number inputs: whole numbers only"
    )


class AppOutput(_Shape):
    node_id: str
    label: str
    output_type: str = Field(description="image, text, json or file")


class AppDetail(AppSummary):
    version: int = Field(ge=1, description="Number of the current version.")
    version_id: Id
    inputs: list[AppInput]
    outputs: list[AppOutput]
    workflow: Workflow


_PHOTO = "http://127.0.0.1:8000/v1/files/64c3f2a1e8b9c0d1f2e3a4b7/me.jpg?expires=1722178992&signature=Zk9yM2Vu4d0eX8q1pYH3u6Kc0mXwq2iVbL5r7tNs1aE"
APP_EXAMPLE: dict[str, Any] = {
    "id": "64c3f2a1e8b9c0d1f2e3a4b5",
    "title": "Headshot generator",
    "published": True,
    "runCount": 3,
    "description": "Turns a photo of a person into a head-and-shoulders portrait.",
    "createdAt": "2024-07-28T14:03:12.512345Z",
    "updatedAt": "2024-07-28T14:03:12.512351Z",
    "version": 1,
    "versionId": "64c3f2a1e8b9c0d1f2e3a4b6",
    "inputs": [
        {
            "nodeId": "node_1",
            "label": "Your photo",
            "kind": "image_url",
            "required": True,
            "description": "A photo with one face, facing the camera.",
        },
        {
            "nodeId": "node_2",
            "label": "Style",
            "kind": "text",
            "required": False,
            "description": "e.g. 'studio lighting, neutral background'",
            "maxLength": 500,
        },
    ],
    "outputs": [{"nodeId": "node_9", "label": "Headshot", "outputType": "image"}],
    "workflow": {
        "nodes": [
            {"id": "node_1", "type": "input.image_url", "label": "Your photo"},
            {"id": "node_2", "type": "input.text", "label": "Style"},
            {
                "id": "node_3",
                "type": "image.face_crop",
                "label": "Crop to face",
                "params": {"width": 768, "height": 960},
                "inputs": {"image": {"node": "node_1", "port": "image"}},
            },
            {
                "id": "node_9",
                "type": "output.image",
                "label": "Headshot",
                "inputs": {"image": {"node": "node_3", "port": "image"}},
            },
        ]
    },
}


class AppCreate(_Request):
    """``POST /v1/apps``.  Unknown fields are refused (422)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "title": "Thumbnail",
                    "published": True,
                    "workflow": {
                        "nodes": [
                            {"id": "node_1", "type": "input.image_url", "label": "Photo"},
                            {
                                "id": "node_2",
                                "type": "image.resize",
                                "params": {"width": 256, "height": 256},
                                "inputs": {"image": {"node": "node_1", "port": "image"}},
                            },
                            {
                                "id": "node_3",
                                "type": "output.image",
                                "label": "Thumbnail",
                                "inputs": {"image": {"node": "node_2", "port": "image"}},
                            },
                        ]
                    },
                }
            ]
        },
    )
    title: str = Field(max_length=200, pattern=NOT_BLANK)
    workflow: Workflow
    description: str = ""
    published: bool = Field(False, description="Only published apps can be run.")


class AppUpdate(_Request):
    """``PATCH /v1/apps/{app_id}``: only the fields given change; null is "unchanged" for
    ``title`` and ``workflow``.  A new workflow makes a new version."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"title": "New"}]})
    title: Annotated[str, Field(max_length=200, pattern=NOT_BLANK)] | None = None
    description: str | SkipJsonSchema[None] = None
    workflow: Workflow | None = None
    published: bool | SkipJsonSchema[None] = None


# --------------------------------------------------------------------------- runs


class RunCreate(_Request):
    """``POST /v1/apps/{app_id}/runs``.  Every problem is reported at once (422, each
    naming its field, e.g. ``inputs.node_1``) and a refused request creates nothing."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"inputs": {"node_1": _PHOTO, "node_2": "studio lighting, neutral background"}}
            ]
        },
    )
    inputs: dict[str, Any] = Field(
        description="nodeId -> value, for the app's inputs (GET /v1/apps/{app_id}): a "
        "string for text and choice, a number, true/false, or for media an http(s) URL, a "
        "data: URI or an upload's URL.  Inputs that are not required may be left out."
    )
    timeout_seconds: Annotated[float, Field(gt=0, le=24 * 3600)] | None = Field(
        None,
        description="Fail the run when it has not ended this many seconds after it was "
        "made; null or absent: no limit besides the per-node ones.",
    )
    webhook: Annotated[str, Field(max_length=2048, pattern=WEBHOOK_URL_PATTERN)] | None = Field(
        None,
        description="An absolute http(s) URL to POST the run's events to (Standard "
        "Webhooks, signed with the run webhook secret: GET /v1/webhooks/run-secret).",
    )
    webhook_events_filter: Annotated[list[WebhookEvent], Field(min_length=1)] | None = Field(
        None,
        description="Which events to send to `webhook` (only with `webhook`); "
        "default: the end of the run, however it ends.",
    )


class RunCreated(_Shape):
    """The run as it was made (without ``Prefer: wait``)."""

    run_id: Id
    status: RunStatus
    app_id: Id
    created_at: Time


class FileOutput(_Shape):
    """A file an output node made, behind a link signed afresh on every read."""

    node_id: str
    kind: str = Field(examples=["image"])
    url: str = Field(description="Signed link; expires at `expiresAt`.")
    expires_at: Time
    content_type: str = Field(examples=["image/png"])
    size: int = Field(ge=0)


class DeletedFileOutput(_Shape):
    """A file output removed by retention (its link would answer 410)."""

    node_id: str
    kind: str
    url: None
    deleted: Literal[True]
    deleted_at: Time
    content_type: str | None
    size: int | None


class ValueOutput(_Shape):
    """A text, number or JSON output; ``skipped`` when its branch was not taken."""

    node_id: str
    kind: str = Field(examples=["text"])
    value: Any = Field(description="Any JSON value (null when skipped).")
    skipped: Literal[True] | SkipJsonSchema[None] = None


RunOutput = Annotated[FileOutput | DeletedFileOutput | ValueOutput, Field(title="RunOutput")]


class NodeState(_Shape):
    """Where one node of a run is: status, timings, progress and error."""

    node_id: str
    status: NodeStatus
    type: str | SkipJsonSchema[None] = Field(None, description="Its node type.")
    label: str | SkipJsonSchema[None] = None
    started_at: Time | SkipJsonSchema[None] = None
    completed_at: Time | SkipJsonSchema[None] = None
    duration_ms: float | SkipJsonSchema[None] = Field(None, ge=0)
    progress: float | SkipJsonSchema[None] = Field(None, ge=0, le=1)
    error: str | SkipJsonSchema[None] = None
    cached: bool | SkipJsonSchema[None] = Field(
        None, description="true: the result was reused from an earlier identical run."
    )


class RunSummary(_Shape):
    """A run as lists show it (without ``nodes``)."""

    run_id: Id
    app_id: Id
    version_id: Id = Field(description="The app version the run keeps to.")
    status: RunStatus
    outputs: list[RunOutput] = Field(
        description="Outputs made so far (a failed or canceled run keeps them)."
    )
    error: str | None = Field(
        description="Why it failed, naming the node, e.g. `node_3 (Crop to face): no face "
        "found in the photo`."
    )
    error_node: str | None
    created_at: Time
    started_at: Time | None
    completed_at: Time | None
    attempt: int = Field(ge=0, description="Workers that have started it (1 normally).")
    deadline_at: Time | None


class RunPublic(RunSummary):
    """A run: ``status`` goes queued -> running -> completed / failed / canceled."""

    nodes: list[NodeState]


class RunEvent(_Shape):
    """The ``data`` of one event of ``GET /v1/runs/{run_id}/events``."""

    seq: int = Field(ge=1, description="Also the SSE `id`; resume after it with Last-Event-ID.")
    type: str = Field(
        description="run.queued, run.started, run.requeued, run.cancel_requested, "
        "run.outputs, run.completed, run.failed, run.canceled, node.started, "
        "node.progress, node.finished, node.failed, node.skipped, node.log ({nodeId, message})"
    )
    run_id: Id
    created_at: Time
    data: dict[str, Any]


# --------------------------------------------------------------------------- files


class Upload(_Shape):
    id: Id
    url: str = Field(description="Signed link, accepted by any media input of a run.")
    expires_at: Time
    content_type: str = Field(examples=["image/jpeg"], description="Judged from the content.")
    size: int = Field(ge=1)
    filename: str
    created_at: Time


class UploadForm(BaseModel):
    """``multipart/form-data`` with the file in a field named ``file``."""

    file: bytes = Field(json_schema_extra={"format": "binary", "minLength": 1})


# --------------------------------------------------------------------------- secrets


class SecretPut(_Request):
    value: str = Field(min_length=1, max_length=16_384, description="Stored encrypted.")


class SecretInfo(_Shape):
    """A secret's name and dates; its value is never shown."""

    name: str = Field(pattern=SECRET_NAME_PATTERN, examples=["OPENAI_API_KEY"])
    created_at: Time
    updated_at: Time


# --------------------------------------------------------------------------- node catalog


class InputPort(_Shape):
    type: PortType
    description: str
    optional: bool


class OutputPort(_Shape):
    type: PortType
    description: str


class NodeTypeInfo(_Shape):
    type: str = Field(examples=["image.face_crop"])
    title: str
    category: str
    description: str
    version: str
    deterministic: bool
    input_kind: str | None = Field(description="Set on input nodes: the app input kind.")
    output_kind: str | None = Field(description="Set on output nodes: the app output kind.")
    inputs: dict[str, InputPort]
    outputs: dict[str, OutputPort]
    params: dict[str, Any] = Field(description="JSON Schema of the node's params.")


# --------------------------------------------------------------------------- envelopes


class AppList(_Shape):
    data: list[AppSummary]


class AppEnvelope(_Shape):
    model_config = ConfigDict(json_schema_extra={"examples": [{"data": APP_EXAMPLE}]})
    data: AppDetail


class RunStarted(_Shape):
    data: RunCreated | RunPublic = Field(
        description="The new run; with `Prefer: wait=N`, the run as GET /v1/runs/{run_id} shows it."
    )


class RunEnvelope(_Shape):
    data: RunPublic


class RunPage(_Shape):
    data: list[RunSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


class UploadEnvelope(_Shape):
    data: Upload


class SecretList(_Shape):
    data: list[SecretInfo]


class SecretEnvelope(_Shape):
    data: SecretInfo


class NodeCatalog(_Shape):
    data: list[NodeTypeInfo]


class HealthStatus(_Shape):
    status: Literal["ok"]


class Health(_Shape):
    data: HealthStatus


# --------------------------------------------------------------------------- webhooks

WebhookUrl = Annotated[
    str,
    Field(
        max_length=2048,
        pattern=WEBHOOK_URL_PATTERN,
        description="Where to POST; the outbound address guard checks it at each attempt.",
        examples=["https://example.com/hooks/flowy"],
    ),
]
WebhookEvents = Annotated[
    list[WebhookEvent],
    Field(min_length=1, description="The events to send; the order does not matter."),
]
WHSEC = Annotated[str, Field(pattern=r"^whsec_[A-Za-z0-9+/]+=*$", examples=["whsec_MfKQ9r8G..."])]


class WebhookEndpointCreate(_Request):
    """``POST /v1/webhooks``.  Unknown fields are refused (422)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"url": "https://example.com/hooks/flowy"}]}
    )
    url: WebhookUrl
    events: WebhookEvents | None = Field(
        None, description="Default (absent or null): run.completed, run.failed, run.canceled."
    )
    description: str = Field("", max_length=500)
    enabled: bool = True


class WebhookEndpointUpdate(_Request):
    """``PATCH /v1/webhooks/{endpoint_id}``: only the fields given change."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"enabled": False}]})
    url: WebhookUrl | SkipJsonSchema[None] = None
    events: WebhookEvents | SkipJsonSchema[None] = None
    description: Annotated[str, Field(max_length=500)] | SkipJsonSchema[None] = None
    enabled: bool | SkipJsonSchema[None] = Field(
        None, description="Enabling clears `disabledReason`; disabling fails pending deliveries."
    )


class WebhookEndpoint(_Shape):
    id: Id
    url: str
    events: list[WebhookEvent]
    description: str
    enabled: bool
    disabled_reason: str | None = Field(
        description="Why Flowy disabled it (the receiver answered 410 Gone), if it did."
    )
    created_at: Time
    updated_at: Time


class WebhookEndpointWithSecret(WebhookEndpoint):
    secret: WHSEC = Field(description="Signs its messages; shown only in this answer.")


class WebhookAttemptInfo(_Shape):
    number: int = Field(ge=1)
    timestamp: int = Field(description="The `webhook-timestamp` sent (unix seconds).")
    url: str
    status_code: int | None = Field(description="The receiver's status; null: no answer.")
    error: str | None
    response: str | None = Field(description="The start of the receiver's answer body.")
    duration_ms: int = Field(ge=0)
    created_at: Time


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(_Shape):
    """One message on its way to one receiver, with every attempt so far."""

    id: Id
    message_id: str = Field(description="The `webhook-id`: the same on every attempt.")
    event_type: WebhookEvent
    run_id: Id
    endpoint_id: Id | None = Field(description="null: the run's own `webhook`.")
    url: str | None
    status: DeliveryStatus
    attempt_count: int = Field(ge=0)
    next_attempt_at: Time | None
    last_status_code: int | None
    last_error: str | None
    created_at: Time
    delivered_at: Time | None
    attempts: list[WebhookAttemptInfo]


REDELIVER_409 = "`conflict`: the delivery's endpoint is disabled, or an attempt of it is in flight."


class RunWebhookSecret(_Shape):
    secret: WHSEC


class RunWebhookSecretEnvelope(_Shape):
    data: RunWebhookSecret


class WebhookEndpointList(_Shape):
    data: list[WebhookEndpoint]


class WebhookEndpointEnvelope(_Shape):
    data: WebhookEndpoint


class WebhookEndpointWithSecretEnvelope(_Shape):
    data: WebhookEndpointWithSecret


class WebhookDeliveryEnvelope(_Shape):
    data: WebhookDelivery


class WebhookDeliveryPage(_Shape):
    data: list[WebhookDelivery] = Field(description="Newest first.")
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page; null: last.")


#: Request bodies documented by reference (``openapi_extra``); app.py registers them.
REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    AppCreate,
    AppUpdate,
    RunCreate,
    SecretPut,
    UploadForm,
    WebhookEndpointCreate,
    WebhookEndpointUpdate,
)
#: Answers that routes do not name in ``responses`` but the docs refer to.
EXTRA_MODELS: tuple[type[BaseModel], ...] = (RunEvent,)


# --------------------------------------------------------------------------- fragments


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def json_body(model: type[BaseModel], description: str | None = None) -> dict[str, Any]:
    """``openapi_extra`` documenting a required JSON request body."""
    body: dict[str, Any] = {
        "required": True,
        "content": {"application/json": {"schema": _ref(model.__name__)}},
    }
    if description:
        body["description"] = description
    return {"requestBody": body}


def multipart_body(model: type[BaseModel], description: str) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "multipart/form-data": {
                    "schema": _ref(model.__name__),
                    "encoding": {"file": {"contentType": "*/*"}},
                }
            },
        }
    }


#: ``openapi_extra`` of a route anyone may call (no API key).
PUBLIC: dict[str, Any] = {"security": []}


def _int_header(description: str) -> dict[str, Any]:
    return {"description": description, "schema": {"type": "integer", "minimum": 0}}


RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Limit": _int_header("Requests a key may make in one burst."),
    "RateLimit-Remaining": _int_header("Requests left in the current burst."),
    "RateLimit-Reset": _int_header("Seconds until the burst is full again."),
    "RateLimit-Policy": {
        "description": "`burst;w=seconds`: the key's quota and the window it refills over.",
        "schema": {"type": "string", "pattern": r"^[0-9]+;w=[0-9]+$", "examples": ["200;w=10"]},
    },
}
"""Sent on the answers of authenticated requests that succeed, and on 429."""

_HEADER_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds until the key may send again.",
        "required": True,
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADER_WWW_AUTHENTICATE = {
    "WWW-Authenticate": {
        "description": "Always `Bearer`.",
        "required": True,
        "schema": {"type": "string", "const": "Bearer"},
    }
}

WORKFLOW_422 = (
    "`validation_error` or `invalid_workflow`: every problem at once, each naming its "
    "field or node.  A workflow this schema accepts can still be refused: its node types "
    "must be in the catalog, params must match each type's JSON Schema, wires must join "
    "existing ports of matching types, and the graph must be acyclic with an output node."
)

_ERRORS: dict[int, str] = {
    400: "`bad_request`: malformed JSON, a body that is not JSON, or an upload that is "
    "not multipart/form-data.",
    401: "`unauthorized`: missing, malformed, wrong or revoked API key.",
    403: "`forbidden`: a tampered, malformed or expired file link (the answer says no more).",
    404: "`not_found`: unknown id, or an object of another workspace.",
    409: "`conflict`",
    410: "`gone`: the file was deleted after its retention period.",
    413: "`payload_too_large`: a body over the limit (1 MiB; uploads: the media limit).",
    422: "`validation_error` (or `invalid_workflow`): every problem at once, each "
    "naming its field or node.",
    429: "`rate_limited`: the key is over its request rate; retry after `Retry-After`.",
}


def answers(
    ok: int | None = None,
    model: type[BaseModel] | None = None,
    *errors: int,
    ok_description: str = "OK",
    ok_headers: dict[str, Any] | None = None,
    public: bool = False,
    ok_rate_limit_headers: bool = True,
    ok_content: dict[str, Any] | None = None,
    **descriptions: str,
) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: its success answer and the errors it can give.

    Authenticated routes (``public=False``) also get 401 and 429, and the rate-limit
    headers on success unless ``ok_rate_limit_headers`` is False (routes that answer a
    ``Response`` of their own: FastAPI adds dependency headers only to the answers it
    builds).  ``ok_content`` documents a success that is not JSON.  ``descriptions``
    override an error's text (``e409="..."``).
    """
    out: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        limited = not public and ok_rate_limit_headers
        headers = {**(RATE_LIMIT_HEADERS if limited else {}), **(ok_headers or {})}
        entry: dict[str, Any] = {"description": ok_description}
        if model is not None:
            entry["model"] = model
        if ok_content is not None:
            entry["content"] = ok_content
        if headers:
            entry["headers"] = headers
        out[ok] = entry
    codes = set(errors) | ({401, 429} if not public else set())
    for code in sorted(codes):
        err: dict[str, Any] = {
            "model": ErrorBody,
            "description": descriptions.get(f"e{code}", _ERRORS[code]),
        }
        if code == 401:
            err["headers"] = _HEADER_WWW_AUTHENTICATE
        elif code == 429:
            err["headers"] = {**_HEADER_RETRY_AFTER, **RATE_LIMIT_HEADERS}
        out[code] = err
    return out


# --------------------------------------------------------------------------- parameters

_YEAR = "(?!0000)[0-9]{4}"  # Python's datetimes start at year 1
_MONTH_DAY = "(0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])"  # every month has days 1 to 28
_CLOCK = "([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9](\\.[0-9]+)?)?"
#: ``json_schema_extra`` of the ``createdAfter``/``createdBefore`` filters: what the
#: server parses (pydantic's datetime): an RFC 3339 date-time, one without an offset
#: (UTC), a date, or unix time.
TIME_QUERY: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time", "pattern": f"^{_YEAR}-"},
        {"type": "string", "format": "date", "pattern": f"^{_YEAR}-"},
        {"type": "string", "pattern": f"^{_YEAR}-{_MONTH_DAY}[Tt ]{_CLOCK}$"},
        {
            "type": "string",
            "pattern": r"^[+-]?[0-9]{1,13}(\.[0-9]*)?$",
            "description": "unix time: seconds, or milliseconds beyond ±2e10",
        },
    ],
    "examples": ["2024-07-28T00:00:00Z"],
}
#: ``json_schema_extra`` of a page size.
LIMIT_QUERY: dict[str, Any] = {"minimum": 1, "maximum": 100}
#: ``json_schema_extra`` of a run status filter.
RUN_STATUS_QUERY: dict[str, Any] = {"enum": [s.value for s in RunStatus]}

_PRINTABLE = r"!-~\u00a1-\u00ac\u00ae-\u00ff"
#: ``json_schema_extra`` of ``Idempotency-Key``: 1 to 255 printable characters (header
#: values are Latin-1; surrounding spaces are not part of a header value).
IDEMPOTENCY_KEY_HEADER: dict[str, Any] = {
    "minLength": 1,
    "maxLength": 255,
    "pattern": rf"^[{_PRINTABLE}](?:[ {_PRINTABLE}]*[{_PRINTABLE}])?$",
    "examples": ["5f0c7d2e-3b1a-4e8e-9a51-0c1d2e3f4a5b"],
}
#: ``json_schema_extra`` of ``Last-Event-ID``.
LAST_EVENT_ID_HEADER: dict[str, Any] = {"pattern": "^[0-9]*$", "examples": ["3"]}

#: ``openapi_extra`` for a list of deliveries: its query parameters' constraints (merged
#: into FastAPI's parameters by :func:`install_openapi`).
DELIVERY_QUERY: dict[str, Any] = {
    "x-parameters": {
        "status": {"enum": [s.value for s in DeliveryStatus]},
        "limit": LIMIT_QUERY,
        "cursor": {"description": "The `nextCursor` of the previous page."},
        "runId": {"description": "Only deliveries about this run."},
        "endpointId": {"description": "Only deliveries to this endpoint (404 if unknown)."},
    }
}

#: Path parameters, by name: their schema and description.
PATH_PARAMETERS: dict[str, tuple[dict[str, Any], str]] = {
    "app_id": ({"type": "string", "pattern": ID_PATTERN}, "An app of the workspace."),
    "run_id": ({"type": "string", "pattern": ID_PATTERN}, "A run of the workspace."),
    "upload_id": ({"type": "string", "pattern": ID_PATTERN}, "An upload of the workspace."),
    "asset_id": ({"type": "string", "pattern": ID_PATTERN}, "The stored file."),
    "filename": ({"type": "string"}, "The file's name, as in its link."),
    "name": (
        {"type": "string", "pattern": SECRET_NAME_PATTERN},
        "Letters, digits and _ (at most 100), not starting with a digit.",
    ),
    "endpoint_id": ({"type": "string", "pattern": ID_PATTERN}, "A webhook endpoint."),
    "delivery_id": ({"type": "string", "pattern": ID_PATTERN}, "A webhook delivery."),
}


# --------------------------------------------------------------------------- special answers

RUN_STARTED_HEADERS: dict[str, Any] = {
    "Idempotent-Replayed": {
        "description": "`true` when this is the stored answer to an earlier request with the "
        "same Idempotency-Key and body (no new run was made).",
        "schema": {"type": "string", "const": "true"},
    },
    "Preference-Applied": {
        "description": "`wait=N` when `Prefer: wait=N` was honoured (N capped at 60).",
        "schema": {"type": "string", "pattern": r"^wait=[0-9]+$"},
    },
}

EVENT_STREAM: dict[str, Any] = {
    "text/event-stream": {
        "schema": {
            "title": "ServerSentEvent",
            "description": "One event of the stream: `id` is its sequence number, `event` "
            "its type and `data` a JSON RunEvent.  The stream opens with `retry: 1000`, "
            "sends `: keep-alive` comments in quiet stretches and ends after the terminal "
            "event (run.completed, run.failed or run.canceled).",
            "type": "object",
            "required": ["event", "data", "id"],
            "properties": {
                "id": {"type": "string", "pattern": r"^[0-9]+$"},
                "event": {"type": "string", "pattern": r"^(run|node)\.[a-z_]+$"},
                "data": {
                    "type": "string",
                    "contentMediaType": "application/json",
                    "contentSchema": _ref("RunEvent"),
                },
                "retry": {"type": "integer"},
            },
        }
    }
}
EVENT_STREAM_HEADERS: dict[str, Any] = {
    "Cache-Control": {"required": True, "schema": {"type": "string", "const": "no-store"}},
}

_ANY_FILE = {"*/*": {"schema": {"type": "string", "format": "binary"}}}
FILE_HEADERS: dict[str, Any] = {
    "Content-Disposition": {
        "description": "`inline` for images, `attachment` otherwise, with the file's name.",
        "required": True,
        "schema": {"type": "string", "pattern": r'^(inline|attachment); filename=".*"$'},
    },
    "X-Content-Type-Options": {"required": True, "schema": {"type": "string", "const": "nosniff"}},
    "Content-Security-Policy": {
        "required": True,
        "schema": {"type": "string", "const": "default-src 'none'; sandbox"},
    },
    "Cache-Control": {"schema": {"type": "string"}},
}
FILE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file, with the content type it was stored with.",
        "content": _ANY_FILE,
        "headers": FILE_HEADERS,
    },
    206: {
        "description": "Part of the file, for a `Range: bytes=...` request.",
        "content": _ANY_FILE,
        "headers": {
            **FILE_HEADERS,
            "Content-Range": {"required": True, "schema": {"type": "string"}},
        },
    },
    400: {
        "description": "A malformed `Range` header (only a genuine link gets this far).",
        "content": {"text/plain": {"schema": {"type": "string"}}},
    },
    416: {
        "description": "The `Range` starts past the end of the file.",
        "content": {"text/plain": {"schema": {"type": "string"}}},
        "headers": {"Content-Range": {"required": True, "schema": {"type": "string"}}},
    },
}
RANGE_PARAMETER: dict[str, Any] = {
    "name": "Range",
    "in": "header",
    "required": False,
    "description": "`bytes=start-end`: only that part of the file (206).",
    "schema": {"type": "string", "examples": ["bytes=0-1023"]},
}


# --------------------------------------------------------------------------- the document

BEARER = "bearerAuth"
_API_DESCRIPTION = Template("""\
Flowy runs node-graph workflows as **apps**: list a workspace's apps, read an app's
inputs, start a run with `{"inputs": {nodeId: value}}`, get its `runId` at once, then poll
`GET /v1/runs/{run_id}` (or follow `GET /v1/runs/{run_id}/events`) until it is
`completed`, `failed` or `canceled`, and download outputs from signed links.

Every request but the health check and file downloads carries
`Authorization: Bearer <API key>`.  Answers are `{"data": ...}`; every failure is
`{"error": {"code", "message", "details"}}`.  Request bodies are limited to
$max_body bytes (uploads: $max_upload bytes).  $rate
""")


def install_openapi(app: FastAPI, settings: Settings) -> None:
    """Finish FastAPI's document: request-body components, bearer security, Flowy's
    error shape instead of FastAPI's, and this server's limits."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(generate(), settings)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _finish(doc: dict[str, Any], settings: Settings) -> dict[str, Any]:
    limits = settings.limits
    doc["info"]["description"] = _API_DESCRIPTION.substitute(
        max_body=settings.server.max_body_bytes,
        max_upload=settings.media.max_bytes,
        rate=(
            f"Each API key may send {limits.requests_per_minute} requests a minute in bursts "
            f"of {limits.burst} (`RateLimit-*` headers; 429 with `Retry-After` beyond that)."
            if limits.requests_per_minute > 0
            else "This server sets no request rate limit."
        ),
    )
    components = doc.setdefault("components", {})
    schemas: dict[str, Any] = components.setdefault("schemas", {})
    _, defs = models_json_schema(
        [(m, "validation") for m in REQUEST_MODELS] + [(m, "serialization") for m in EXTRA_MODELS],
        ref_template="#/components/schemas/{model}",
    )
    for name, schema in defs.get("$defs", {}).items():
        # FastAPI leaves out `"default": null`; anything else differing is a clash.
        if name in schemas and _without_defaults(schemas[name]) != _without_defaults(schema):
            raise RuntimeError(f"two different OpenAPI schemas are named {name!r}")
        schemas.setdefault(name, schema)
    # FastAPI's own validation error shape is never sent: Flowy answers ErrorBody.
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas["RunCreate"]["properties"]["inputs"]["maxProperties"] = settings.limits.max_inputs
    components["securitySchemes"] = {
        BEARER: {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key (`flowy_sk_...`), made by `flowy keys create`.",
        }
    }
    doc["security"] = [{BEARER: []}]
    for item in doc.get("paths", {}).values():
        for operation in item.values():
            extra = operation.pop("x-parameters", {})
            for param in operation.get("parameters", []):
                _finish_parameter(param)
                if param["name"] in extra:
                    more = dict(extra[param["name"]])
                    if "description" in more:
                        param["description"] = more["description"]
                    param["schema"] = {**param["schema"], **more}
            responses = operation.get("responses", {})
            if "HTTPValidationError" in str(responses.get("422", {})):
                del responses["422"]  # FastAPI's guess; the route never answers it
            if limits.requests_per_minute <= 0:  # no rate limit: no 429, no RateLimit-*
                responses.pop("429", None)
                for response in responses.values():
                    headers = response.pop("headers", {})
                    kept = {k: v for k, v in headers.items() if k not in RATE_LIMIT_HEADERS}
                    if kept:
                        response["headers"] = kept
            for response in responses.values():
                for media in response.get("content", {}).values():
                    schema = media.get("schema", {})
                    # The `-> Data` annotation adds a loose object next to the documented
                    # model's $ref; the model is the truth.
                    if "$ref" in schema and str(schema.get("title", "")).startswith("Response "):
                        media["schema"] = {"$ref": schema["$ref"]}
    return doc


def _finish_parameter(param: dict[str, Any]) -> None:
    schema = param.get("schema", {})
    # An absent parameter is what None means: `anyOf [X, null]` is X in a URL or header.
    variants = schema.get("anyOf")
    if isinstance(variants, list) and {"type": "null"} in variants and len(variants) == 2:
        (kept,) = (v for v in variants if v != {"type": "null"})
        del schema["anyOf"]
        if "default" in schema and schema["default"] is None:
            del schema["default"]
        param["schema"] = {**kept, **schema}
    if param.get("in") == "path" and param["name"] in PATH_PARAMETERS:
        path_schema, description = PATH_PARAMETERS[param["name"]]
        param["schema"] = {**param["schema"], **path_schema}
        param.setdefault("description", description)


def _without_defaults(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _without_defaults(v) for k, v in schema.items() if k != "default"}
    if isinstance(schema, list):
        return [_without_defaults(v) for v in schema]
    return schema
