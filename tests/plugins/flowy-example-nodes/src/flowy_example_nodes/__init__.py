"""Example third-party Flowy nodes: a word counter and a pixelate filter."""

from __future__ import annotations

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.spec import NodeContext, NoParams, Port, node
from flowy.errors import NodeError


@node(
    "example.word_count",
    title="Word count",
    category="text",
    inputs={"text": Port("text", "Any text")},
    outputs={"count": Port("number", "How many words")},
)
def word_count(ctx: NodeContext, params: NoParams, text: str) -> dict[str, object]:
    """Count the words of a text."""
    return {"count": len(text.split())}


class PixelateParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    block: int = Field(8, ge=2, le=256, description="Size of a pixel block, in pixels.")


@node(
    "example.pixelate",
    title="Pixelate",
    category="image",
    params=PixelateParams,
    inputs={"image": Port("image")},
    outputs={"image": Port("image")},
)
def pixelate(ctx: NodeContext, params: PixelateParams, image: Image.Image) -> dict[str, object]:
    """Turn an image into blocks of ``block`` pixels."""
    if min(image.size) < params.block:
        raise NodeError(f"the image ({image.width}×{image.height}) is smaller than one block")
    small = image.resize(
        (max(1, image.width // params.block), max(1, image.height // params.block)),
        Image.Resampling.BILINEAR,
    )
    return {"image": small.resize(image.size, Image.Resampling.NEAREST)}


NODES = [word_count, pixelate]
