"""Input and output nodes: where an app's run inputs enter and its results leave."""

from __future__ import annotations

import json
from typing import Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.inputs import (
    BooleanInputParams,
    ChoiceInputParams,
    MediaInputParams,
    NumberInputParams,
    TextInputParams,
)
from flowy.engine.spec import Artifact, NodeContext, Port, node
from flowy.media.decode import decode_image as _decode
from flowy.media.decode import encode_image


@node(
    "input.text",
    title="Text input",
    category="input",
    input_kind="text",
    params=TextInputParams,
    outputs={"text": Port("text")},
    deterministic=True,
)
def text_input(ctx: NodeContext, params: TextInputParams) -> dict[str, object]:
    """A text the caller gives (empty when optional and not given)."""
    value = ctx.input_value if ctx.input_value is not None else (params.default or "")
    return {"text": str(value)}


@node(
    "input.number",
    title="Number input",
    category="input",
    input_kind="number",
    params=NumberInputParams,
    outputs={"number": Port("number")},
)
def number_input(ctx: NodeContext, params: NumberInputParams) -> dict[str, object]:
    """A number the caller gives."""
    value = ctx.input_value if ctx.input_value is not None else (params.default or 0)
    return {"number": value}


@node(
    "input.boolean",
    title="Boolean input",
    category="input",
    input_kind="boolean",
    params=BooleanInputParams,
    outputs={"value": Port("boolean")},
)
def boolean_input(ctx: NodeContext, params: BooleanInputParams) -> dict[str, object]:
    """A yes/no the caller gives."""
    value = ctx.input_value if ctx.input_value is not None else bool(params.default)
    return {"value": bool(value)}


@node(
    "input.choice",
    title="Choice input",
    category="input",
    input_kind="choice",
    params=ChoiceInputParams,
    outputs={"text": Port("text")},
)
def choice_input(ctx: NodeContext, params: ChoiceInputParams) -> dict[str, object]:
    """One of a fixed set of options, picked by the caller."""
    value = ctx.input_value if ctx.input_value is not None else params.default
    return {"text": value if value is not None else params.options[0]}


@node(
    "input.image_url",
    title="Image input",
    category="input",
    input_kind="image_url",
    params=MediaInputParams,
    outputs={"image": Port("image")},
    deterministic=False,
)
def image_input(ctx: NodeContext, params: MediaInputParams) -> dict[str, object]:
    """An image the caller passes by URL (http(s), data: URI or an upload's URL).

    The server fetches it behind the address guard and decodes it (EXIF orientation
    applied); a URL that cannot be fetched or is not an image fails the run.
    """
    url = ctx.input_value if ctx.input_value is not None else params.default
    data = ctx.media.read(str(url))
    ctx.check_canceled()
    return {"image": _decode(data, max_pixels=ctx.max_pixels)}


class ImageOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    format: Literal["png", "jpeg", "webp"] = Field("png", description="File format.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality.")
    filename: str = Field(
        "output",
        pattern=r"^[A-Za-z0-9._\-]{1,64}$",
        description="File name, without extension, of the download.",
    )


class ValueOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None


@node(
    "output.image",
    title="Image output",
    category="output",
    output_kind="image",
    params=ImageOutputParams,
    inputs={"image": Port("image")},
    outputs={},
)
def image_output(
    ctx: NodeContext, params: ImageOutputParams, image: Image.Image
) -> dict[str, object]:
    """Encode an image as a downloadable file of the app's result."""
    data, content_type = encode_image(image, params.format, quality=params.quality)
    ext = "jpg" if params.format == "jpeg" else params.format
    return {"value": Artifact(data, content_type, f"{params.filename}.{ext}")}


@node(
    "output.text",
    title="Text output",
    category="output",
    output_kind="text",
    params=ValueOutputParams,
    inputs={"text": Port("text")},
    outputs={},
)
def text_output(ctx: NodeContext, params: ValueOutputParams, text: str) -> dict[str, object]:
    """A text result of the app, returned inline as ``value``."""
    return {"value": str(text)}


@node(
    "output.json",
    title="JSON output",
    category="output",
    output_kind="json",
    params=ValueOutputParams,
    inputs={"value": Port("any")},
    outputs={},
)
def json_output(ctx: NodeContext, params: ValueOutputParams, value: object) -> dict[str, object]:
    """A JSON result of the app, returned inline as ``value``."""
    # Round-trip now so a value that is not JSON fails here, naming this node.
    try:
        return {"value": json.loads(json.dumps(value))}
    except (TypeError, ValueError) as exc:
        from flowy.errors import NodeError

        raise NodeError(f"value is not JSON: {exc}") from None


NODES = [
    text_input,
    number_input,
    boolean_input,
    choice_input,
    image_input,
    image_output,
    text_output,
    json_output,
]
