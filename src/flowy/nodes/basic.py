"""General-purpose nodes: resizing and a timed delay."""

from __future__ import annotations

import time
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.spec import NodeContext, Port, node

_RESAMPLE = {
    "lanczos": Image.Resampling.LANCZOS,
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


class ResizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    width: int = Field(ge=1, le=16384, description="Target width, pixels.")
    height: int = Field(ge=1, le=16384, description="Target height, pixels.")
    method: Literal["lanczos", "bicubic", "bilinear", "nearest"] = "lanczos"


@node(
    "image.resize",
    title="Resize",
    category="image",
    params=ResizeParams,
    inputs={"image": Port("image")},
    outputs={"image": Port("image")},
)
def resize(ctx: NodeContext, params: ResizeParams, image: Image.Image) -> dict[str, object]:
    """Resize an image to exactly width × height."""
    return {"image": image.resize((params.width, params.height), _RESAMPLE[params.method])}


class DelayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(1.0, ge=0, le=3600, description="How long to wait.")


@node(
    "util.delay",
    title="Delay",
    category="utility",
    params=DelayParams,
    inputs={"value": Port("any")},
    outputs={"value": Port("any")},
    deterministic=False,
)
def delay(ctx: NodeContext, params: DelayParams, value: object) -> dict[str, object]:
    """Pass a value through after waiting (pacing calls to rate-limited services)."""
    ctx.log(f"waiting {params.seconds:g} s")
    end = time.monotonic() + params.seconds
    while (left := end - time.monotonic()) > 0:
        ctx.check_canceled()
        ctx.progress(1 - left / params.seconds)
        time.sleep(min(left, 0.05))
    return {"value": value}


NODES = [resize, delay]
