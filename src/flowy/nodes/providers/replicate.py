"""``replicate.predict``: run a model on Replicate and wait for its output.

Creates a prediction (``POST /v1/models/{owner}/{name}/predictions`` for an official
model, ``POST /v1/predictions`` with a version id otherwise) with ``Prefer: wait`` so
short predictions answer at once, then polls ``urls.get`` until the prediction
succeeded, failed or was canceled.  A run canceled meanwhile cancels the prediction.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from PIL import Image
from pydantic import Field, model_validator

from flowy.engine.spec import SKIP, NodeContext, Port, node
from flowy.errors import NodeError, RunCanceled
from flowy.nodes.providers._http import Provider, ProviderOptions, data_url

REPLICATE = "Replicate"
DEFAULT_BASE_URL = "https://api.replicate.com/v1"
TIMEOUT_SECONDS = 900.0
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff")
_RUNNING = ("starting", "processing")


class PredictParams(ProviderOptions):
    base_url: str = DEFAULT_BASE_URL
    model: str = Field(
        "",
        pattern=r"^([A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+)?$",
        description="owner/name of an official model (or give a version).",
    )
    version: str = Field(
        "", pattern=r"^[A-Za-z0-9_.:/-]{0,200}$", description="A model version id."
    )
    input: dict[str, Any] = Field(default_factory=dict, description="The model's input.")
    prompt_field: str = Field("prompt", min_length=1, max_length=100)
    image_field: str = Field("image", min_length=1, max_length=100)
    wait_seconds: int = Field(60, ge=1, le=60, description="Prefer: wait on creation.")
    poll_interval: float = Field(1.0, ge=0.05, le=60)
    max_wait_seconds: float = Field(600.0, gt=0, le=3600, description="Give up after this.")
    api_token_secret: str = Field("REPLICATE_API_TOKEN", description="Secret with the token.")

    @model_validator(mode="after")
    def _model_or_version(self) -> PredictParams:
        if bool(self.model) == bool(self.version):
            raise ValueError("give either model (owner/name) or version, not both")
        if self.timeout_seconds <= self.wait_seconds:
            # Else the creating request times out while Replicate holds it, and a retry
            # would start a second prediction.
            raise ValueError("timeout_seconds must be longer than wait_seconds")
        return self


def _urls(value: object) -> Iterator[str]:
    """Every URL (http(s) or data:) in a prediction's output, depth first."""
    if isinstance(value, str):
        if value.startswith(("http://", "https://", "data:")):
            yield value
    elif isinstance(value, list):
        for v in value:
            yield from _urls(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _urls(v)


def _is_image(url: str) -> bool:
    if url.startswith("data:"):
        return url[5:].lower().startswith("image/")
    return urlsplit(url).path.lower().endswith(_IMAGE_EXTENSIONS)


def _failure(prediction: dict[str, Any]) -> str:
    error = prediction.get("error")
    if isinstance(error, dict):
        error = error.get("message") or error.get("detail") or error
    if not error:
        logs = str(prediction.get("logs") or "").strip().splitlines()
        error = logs[-1] if logs else "no error message"
    return str(error)[:500]


def _wait_for(p: Provider, prediction: dict[str, Any], params: PredictParams) -> dict[str, Any]:
    """Poll ``urls.get`` until the prediction ends; cancel it if the run is canceled."""
    end = time.monotonic() + params.max_wait_seconds
    urls = prediction.get("urls") if isinstance(prediction.get("urls"), dict) else {}
    try:
        while prediction.get("status") in _RUNNING:
            if time.monotonic() > end:
                raise p.error(
                    f"prediction {prediction.get('id')} did not finish within "
                    f"{params.max_wait_seconds:g} s"
                )
            get = urls.get("get") if isinstance(urls, dict) else None
            if not isinstance(get, str):
                raise p.error("the prediction has no urls.get to poll")
            p.sleep(params.poll_interval)
            answer = p.json(p.call("GET", get))
            if not isinstance(answer, dict):
                raise p.error("the prediction is not a JSON object")
            prediction = answer
            p.ctx.progress(0.5)
    except RunCanceled:
        cancel = urls.get("cancel") if isinstance(urls, dict) else None
        if isinstance(cancel, str):
            with contextlib.suppress(NodeError):  # best effort: the run is canceled anyway
                p.call("POST", cancel, cancelable=False)
        raise
    return prediction


@node(
    "replicate.predict",
    title="Replicate model",
    category="ai",
    params=PredictParams,
    inputs={
        "input": Port("json", "Merged over the input param.", optional=True),
        "prompt": Port("text", "Set as input[prompt_field].", optional=True),
        "image": Port("image", "Set as input[image_field] (a data: URL).", optional=True),
    },
    outputs={
        "output": Port("json", "The prediction's output as Replicate gave it."),
        "image": Port("image", "The first image of the output (skipped when none)."),
    },
    deterministic=False,
    timeout_seconds=TIMEOUT_SECONDS,
)
def predict(
    ctx: NodeContext,
    params: PredictParams,
    input: object = None,
    prompt: str | None = None,
    image: Image.Image | None = None,
) -> dict[str, object]:
    """Run a Replicate model and output its result.

    The token comes from the workspace secret REPLICATE_API_TOKEN (set it with
    PUT /v1/secrets/REPLICATE_API_TOKEN).  Output files are fetched behind the guard;
    ``image`` is the first image among them, and is skipped when there is none.
    """
    p = Provider.of(REPLICATE, ctx, params.base_url, params)
    p.use_key(params.api_token_secret)
    model_input: dict[str, Any] = dict(params.input)
    if input is not None:
        if not isinstance(input, dict):
            raise p.error(f"the input must be a JSON object, got {type(input).__name__}")
        model_input.update(input)
    if prompt is not None:
        model_input[params.prompt_field] = prompt
    if image is not None:
        model_input[params.image_field] = data_url(image)

    if params.model:
        url = p.url(f"models/{params.model}/predictions")
        body: dict[str, Any] = {"input": model_input}
    else:
        url = p.url("predictions")
        body = {"version": params.version, "input": model_input}
    created = p.json(
        p.call("POST", url, json_body=body, headers={"Prefer": f"wait={params.wait_seconds}"})
    )
    if not isinstance(created, dict):
        raise p.error("the prediction is not a JSON object")
    ctx.progress(0.1)
    prediction = _wait_for(p, created, params)
    status = prediction.get("status")
    pid = prediction.get("id", "?")
    if status == "failed":
        raise p.error(f"prediction {pid} failed: {_failure(prediction)}")
    if status == "canceled":
        raise p.error(f"prediction {pid} was canceled")
    if status != "succeeded":
        raise p.error(f"prediction {pid} ended with unknown status {status!r}")
    output = prediction.get("output")
    first = next((u for u in _urls(output) if _is_image(u)), None)
    return {"output": output, "image": p.image(first) if first else SKIP}


NODES = [predict]
