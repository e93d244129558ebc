"""``comfyui.prompt``: queue a workflow on a ComfyUI server and fetch its images.

The workflow is ComfyUI's *API format* ("Save (API)" in ComfyUI): an object of node ids
to ``{"class_type", "inputs"}``.  Values can be put into it before queueing: static
``substitutions`` (``{"6.text": "a cat"}``) and the text and number inputs at
``text_target`` and ``number_target``.  The node posts ``{base_url}/prompt``, polls
``/history/{prompt_id}`` until the prompt ran, and downloads its images from ``/view``.

A ComfyUI on this machine or the LAN (the default ``http://127.0.0.1:8188``) is a
loopback or private address: the Flowy server needs ``FLOWY_ALLOW_PRIVATE_URLS=1``.
"""

from __future__ import annotations

import contextlib
import copy
import time
import uuid
from typing import Any
from urllib.parse import urlencode

from pydantic import Field

from flowy.engine.spec import SKIP, NodeContext, Port, node
from flowy.errors import NodeError, RunCanceled
from flowy.nodes.providers._http import Provider, ProviderOptions

COMFYUI = "ComfyUI"
DEFAULT_BASE_URL = "http://127.0.0.1:8188"
TIMEOUT_SECONDS = 900.0
_TARGET = r"^([^.\s]+\.[^.\s]+)?$"


class PromptParams(ProviderOptions):
    base_url: str = Field(DEFAULT_BASE_URL, description="The ComfyUI server.")
    workflow: dict[str, Any] | None = Field(
        None, description="The workflow in API format, when the workflow input is absent."
    )
    substitutions: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description='Values to set first: {"node_id.input": value}.'
    )
    text_target: str = Field("", pattern=_TARGET, description='Where the text goes: "6.text".')
    number_target: str = Field("", pattern=_TARGET, description='Where the number goes: "3.seed".')
    poll_interval: float = Field(0.5, ge=0.05, le=60)
    max_wait_seconds: float = Field(600.0, gt=0, le=3600, description="Give up after this.")
    api_key_secret: str = Field(
        "", description="Secret with a bearer token, if the server needs one."
    )
    timeout_seconds: float = Field(30.0, gt=0, le=600, description="Time limit of each request.")


def _set(p: Provider, workflow: dict[str, Any], target: str, value: object) -> None:
    node_id, _, name = target.partition(".")
    entry = workflow.get(node_id)
    if not name or not isinstance(entry, dict) or not isinstance(entry.get("inputs"), dict):
        raise p.error(f"cannot set {target!r}: the workflow has no node {node_id!r} with inputs")
    entry["inputs"][name] = value


def _prepare(
    p: Provider, params: PromptParams, workflow: object, text: str | None, number: object
) -> dict[str, Any]:
    source = params.workflow if workflow is None else workflow
    if not isinstance(source, dict) or not source:
        raise p.error("no workflow: connect the workflow input or set the workflow param")
    if "nodes" in source and "links" in source:
        raise p.error("the workflow is in ComfyUI's UI format; export it with 'Save (API)'")
    wf: dict[str, Any] = copy.deepcopy(source)
    for target, value in params.substitutions.items():
        if target.count(".") != 1:
            raise p.error(f"substitution {target!r} must be node_id.input")
        _set(p, wf, target, value)
    if text is not None and params.text_target:
        _set(p, wf, params.text_target, text)
    if number is not None and params.number_target:
        _set(p, wf, params.number_target, number)
    return wf


def _status(entry: dict[str, Any]) -> dict[str, Any]:
    status = entry.get("status")
    return status if isinstance(status, dict) else {}


def _execution_error(entry: dict[str, Any]) -> str:
    status = _status(entry)
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            info = message[1] if isinstance(message[1], dict) else {}
            where = f"node {info.get('node_id', '?')} ({info.get('node_type', '?')})"
            return f"{where} failed: {info.get('exception_message', 'no message')}".strip()
    return "the prompt failed"


def _wait(p: Provider, prompt_id: str, params: PromptParams) -> dict[str, Any]:
    """Poll the history until the prompt appears there, finished; dequeue it when the
    run is canceled."""
    end = time.monotonic() + params.max_wait_seconds
    try:
        while True:
            history = p.json(p.call("GET", p.url(f"history/{prompt_id}")))
            entry = history.get(prompt_id) if isinstance(history, dict) else None
            if isinstance(entry, dict):
                status = _status(entry)
                if status.get("status_str") == "error":
                    raise p.error(_execution_error(entry))
                if status.get("completed", True) or status.get("status_str") == "success":
                    return entry
            if time.monotonic() > end:
                raise p.error(
                    f"prompt {prompt_id} did not finish within {params.max_wait_seconds:g} s"
                )
            p.sleep(params.poll_interval)
    except RunCanceled:
        with contextlib.suppress(NodeError):  # best effort: the run is canceled anyway
            p.call("POST", p.url("queue"), json_body={"delete": [prompt_id]}, cancelable=False)
        raise


def _images(outputs: object) -> list[dict[str, Any]]:
    """The images of a history entry's outputs, saved ones ("output") first."""
    found: list[dict[str, Any]] = []
    if isinstance(outputs, dict):
        for node_output in outputs.values():
            if isinstance(node_output, dict):
                found.extend(
                    i
                    for i in node_output.get("images") or []
                    if isinstance(i, dict) and i.get("filename")
                )
    return sorted(found, key=lambda i: i.get("type") != "output")


@node(
    "comfyui.prompt",
    title="ComfyUI workflow",
    category="ai",
    params=PromptParams,
    inputs={
        "workflow": Port("json", "API-format workflow (else the workflow param).", True),
        "text": Port("text", "Set at text_target.", optional=True),
        "number": Port("number", "Set at number_target.", optional=True),
    },
    outputs={
        "image": Port("image", "The first image it saved (skipped when none)."),
        "outputs": Port("json", "Every node's outputs, as in ComfyUI's history."),
    },
    deterministic=False,
    timeout_seconds=TIMEOUT_SECONDS,
)
def prompt(
    ctx: NodeContext,
    params: PromptParams,
    workflow: object = None,
    text: str | None = None,
    number: object = None,
) -> dict[str, object]:
    """Run a ComfyUI workflow (API format) on a ComfyUI server and output its images.

    Queues it with POST {base_url}/prompt, polls GET /history/{prompt_id}, and fetches
    the first image with GET /view.  ComfyUI's validation errors and node exceptions
    are quoted.  A local ComfyUI needs FLOWY_ALLOW_PRIVATE_URLS=1 on the Flowy server.
    """
    p = Provider.of(COMFYUI, ctx, params.base_url, params)
    p.use_key(params.api_key_secret)
    wf = _prepare(p, params, workflow, text, number)
    queued = p.json(
        p.call("POST", p.url("prompt"), json_body={"prompt": wf, "client_id": uuid.uuid4().hex})
    )
    prompt_id = queued.get("prompt_id") if isinstance(queued, dict) else None
    if not isinstance(prompt_id, str) or not prompt_id:
        raise p.error("the answer to /prompt has no prompt_id")
    node_errors = queued.get("node_errors")
    if isinstance(node_errors, dict) and node_errors:
        raise p.error(f"the workflow has errors in nodes {', '.join(sorted(node_errors))}")
    ctx.progress(0.1)
    entry = _wait(p, prompt_id, params)
    outputs = entry.get("outputs") or {}
    images = _images(outputs)
    image: object = SKIP
    if images:
        first = images[0]
        query = urlencode(
            {
                "filename": str(first["filename"]),
                "subfolder": str(first.get("subfolder") or ""),
                "type": str(first.get("type") or "output"),
            }
        )
        image = p.image(p.url(f"view?{query}"))
    return {"image": image, "outputs": outputs}


NODES = [prompt]
