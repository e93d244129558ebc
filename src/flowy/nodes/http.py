"""``http.request``: call a web service from a workflow, behind the outbound guard.

The request goes through :func:`flowy.media.fetch.request`, so it obeys the same policy
as media URLs: http(s) only, private and loopback addresses refused unless the operator
set ``FLOWY_ALLOW_PRIVATE_URLS=1``, cloud metadata addresses always refused, every
redirect checked again, the answer capped in size and the exchange in time.

Header values may reference workspace secrets as ``{{secret:NAME}}``
(``Authorization: Bearer {{secret:GITHUB_TOKEN}}``); their values are filled in at run
time and never appear in errors or logs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Iterable
from typing import Any, Literal
from urllib.parse import urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from flowy.engine.spec import NodeContext, Port, node
from flowy.errors import NodeError
from flowy.media.fetch import Response, request

SECRET_REF = re.compile(r"\{\{\s*secret:([A-Za-z_][A-Za-z0-9_]{0,99})\s*\}\}")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$")


def resolve_secrets(ctx: NodeContext, text: str, used: list[str]) -> str:
    """``text`` with every ``{{secret:NAME}}`` replaced by the secret's value; the values
    used are appended to ``used`` so that messages can be scrubbed of them."""

    def sub(m: re.Match[str]) -> str:
        value = ctx.secret(m.group(1))
        used.append(value)
        return value

    return SECRET_REF.sub(sub, text)


def redact(message: str, secrets: Iterable[str]) -> str:
    """``message`` with every secret value in it replaced by ``[redacted]``."""
    for value in sorted(set(secrets), key=len, reverse=True):
        if value:
            message = message.replace(value, "[redacted]")
    return message


class HttpParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "GET"
    url: str = Field("", max_length=8000, description="Used when the url input is absent.")
    query: dict[str, str] = Field(default_factory=dict, description="Added to the URL.")
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Request headers; values may use {{secret:NAME}} for workspace secrets.",
    )
    body_type: Literal["json", "form", "text", "none"] = Field(
        "json", description="How the body is sent: JSON, form-urlencoded, plain text."
    )
    body: Any = Field(None, description="The body when the body input is absent.")
    timeout_seconds: float = Field(30.0, gt=0, le=300, description="Whole-request time limit.")
    fail_on_error: bool = Field(False, description="Fail the node on a non-2xx status.")

    @field_validator("headers")
    @classmethod
    def _header_names(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"invalid header name {name[:60]!r}")
        return v


def _body(params: HttpParams, body: object) -> tuple[bytes | None, str | None]:
    value = params.body if body is None else body
    if params.body_type == "none" or value is None:
        return None, None
    if params.body_type == "json":
        return json.dumps(value, ensure_ascii=False).encode("utf-8"), "application/json"
    if params.body_type == "form":
        if not isinstance(value, dict):
            raise NodeError(f"a form body must be a JSON object, got {type(value).__name__}")
        fields = {k: v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}
        return urlencode(fields).encode("ascii"), "application/x-www-form-urlencoded"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text.encode("utf-8"), "text/plain; charset=utf-8"


def _with_query(url: str, query: dict[str, str]) -> str:
    if not query:
        return url
    parts = urlsplit(url)
    extra = urlencode(query)
    return urlunsplit(parts._replace(query=f"{parts.query}&{extra}" if parts.query else extra))


def _headers_json(response: Response) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in response.headers:
        key = name.lower()
        out[key] = f"{out[key]}, {value}" if key in out else value
    return out


@node(
    "http.request",
    title="HTTP request",
    category="network",
    params=HttpParams,
    inputs={
        "url": Port("text", "The URL (else the url param).", optional=True),
        "body": Port("any", "The body (else the body param).", optional=True),
    },
    outputs={
        "status": Port("number"),
        "body": Port("text"),
        "json": Port("json", "The body parsed as JSON, or null."),
        "headers": Port("json", "Response headers, names lower-cased."),
    },
    deterministic=False,
)
def http_request(
    ctx: NodeContext, params: HttpParams, url: str | None = None, body: object = None
) -> dict[str, object]:
    """Send an HTTP request (GET, POST, PUT, PATCH, DELETE) and output the answer.

    The URL may not reach private or loopback addresses unless the server allows them
    (FLOWY_ALLOW_PRIVATE_URLS=1).  Header values can use ``{{secret:NAME}}`` to insert a
    workspace secret (set with PUT /v1/secrets/NAME).  Any status is an answer; set
    ``fail_on_error`` to fail the node on a non-2xx status instead.
    """
    target = (url or "").strip() or params.url.strip()
    if not target:
        raise NodeError("no URL: connect the url input or set the url param")
    used: list[str] = []
    headers = {k: resolve_secrets(ctx, v, used) for k, v in params.headers.items()}
    data, content_type = _body(params, body)
    if content_type and not any(k.lower() == "content-type" for k in headers):
        headers["Content-Type"] = content_type
    policy = dataclasses.replace(ctx.fetch_policy, timeout=params.timeout_seconds)
    ctx.check_canceled()
    try:
        response = request(
            params.method, _with_query(target, params.query), policy, headers=headers, body=data
        )
    except NodeError as exc:
        raise NodeError(redact(exc.message, used)) from None
    ctx.check_canceled()
    text = response.text
    if params.fail_on_error and not response.ok:
        snippet = " ".join(text.split())[:300]
        raise NodeError(redact(f"{params.method} answered HTTP {response.status}: {snippet}", used))
    try:
        parsed: object = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = None
    return {
        "status": response.status,
        "body": text,
        "json": parsed,
        "headers": _headers_json(response),
    }


NODES = [http_request]
