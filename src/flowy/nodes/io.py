"""Input and output nodes: where an app's run inputs enter and its results leave."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Literal
from urllib.parse import unquote, urlsplit

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.cache import source_key
from flowy.engine.inputs import (
    BooleanInputParams,
    ChoiceInputParams,
    MediaInputParams,
    NumberInputParams,
    TextInputParams,
)
from flowy.engine.lazy import Lazy
from flowy.engine.spec import SKIP, Artifact, NodeContext, Port, node
from flowy.errors import MediaError, NodeError
from flowy.media.decode import DECODER_VERSION, encode_image, open_image
from flowy.media.decode import load_image as _decode
from flowy.media.sniff import extension_for, sniff_content_type


@node(
    "input.text",
    title="Text input",
    category="input",
    input_kind="text",
    params=TextInputParams,
    outputs={"text": Port("text")},
    deterministic=True,
    inline=True,
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
    inline=True,
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
    inline=True,
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
    inline=True,
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
    applied); a URL that cannot be fetched or is not an image fails the run.  An optional
    image the caller leaves out gives nothing: nodes that need it are skipped, optional
    inputs fed by it get none.
    """
    url = ctx.input_value if ctx.input_value is not None else params.default
    if url is None:
        return {"image": SKIP}
    data = ctx.media.read(str(url))
    ctx.check_canceled()
    # What is not an image, or too large, fails here, naming this node: the header tells.
    opened = open_image(data, max_pixels=ctx.max_pixels)
    # The pixels are decoded only for a node that runs: a repeat run whose every reader
    # of this image is served from the result cache never decodes it.  Then the header
    # read here serves: it is not parsed twice.
    key = source_key(f"image:{DECODER_VERSION}", data)
    return {"image": Lazy(key, _decoder(opened, ctx.max_pixels, ctx.node_id))}


def _decoder(opened: Image.Image, max_pixels: int, node_id: str) -> Callable[[], Image.Image]:
    def decode() -> Image.Image:
        try:
            return _decode(opened, max_pixels=max_pixels)
        except MediaError as exc:
            # Raised in the node that reads the image: say where the image came from.
            raise MediaError(f"{exc.message} (the image of input {node_id})") from exc

    return decode


_SAFE_NAME = re.compile(r"[^A-Za-z0-9._\-]+")


def _filename(url: str, content_type: str, fallback: str) -> str:
    """A safe download name for a fetched file: the URL's last path segment (an upload
    link ends with the upload's name), its extension set from the sniffed type."""
    stem, ext = fallback, ""
    if not url.startswith("data:"):
        last = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
        base, dot, suffix = _SAFE_NAME.sub("_", last).strip("._").rpartition(".")
        stem = (base if dot else suffix)[:64] or fallback
        ext = suffix[:10].lower() if dot else ""
    if content_type != "application/octet-stream" or not ext:
        ext = extension_for(content_type)
    return f"{stem}.{ext}"


def _file_input(ctx: NodeContext, params: MediaInputParams, kind: str) -> dict[str, object]:
    url = ctx.input_value if ctx.input_value is not None else params.default
    if url is None:
        return {"file": SKIP}
    data = ctx.media.read(str(url))
    ctx.check_canceled()
    if not data:
        raise MediaError(f"the {kind} file is empty")
    content_type = sniff_content_type(data)
    major = content_type.split("/", 1)[0]
    unknown = content_type == "application/octet-stream"
    if kind == "audio" and not (unknown or major in ("audio", "video")):
        raise MediaError(f"not an audio file: the content is {content_type}")
    if kind == "video" and not (unknown or major == "video" or content_type == "image/gif"):
        raise MediaError(f"not a video file: the content is {content_type}")
    return {"file": Artifact(data, content_type, _filename(str(url), content_type, kind))}


@node(
    "input.audio_url",
    title="Audio input",
    category="input",
    input_kind="audio_url",
    params=MediaInputParams,
    outputs={"file": Port("file", "The audio file")},
    deterministic=False,
)
def audio_input(ctx: NodeContext, params: MediaInputParams) -> dict[str, object]:
    """An audio file the caller passes by URL (http(s), data: URI or an upload's URL):
    MP3, WAV, M4A/AAC, Ogg, FLAC, or a video whose sound is wanted.  Content that is
    clearly not audio (an image, a PDF) fails the run."""
    return _file_input(ctx, params, "audio")


@node(
    "input.video_url",
    title="Video input",
    category="input",
    input_kind="video_url",
    params=MediaInputParams,
    outputs={"file": Port("file", "The video file")},
    deterministic=False,
)
def video_input(ctx: NodeContext, params: MediaInputParams) -> dict[str, object]:
    """A video the caller passes by URL (http(s), data: URI or an upload's URL): MP4,
    MOV, WebM, AVI or an animated GIF.  Content that is clearly not video fails the run."""
    return _file_input(ctx, params, "video")


@node(
    "input.file_url",
    title="File input",
    category="input",
    input_kind="file_url",
    params=MediaInputParams,
    outputs={"file": Port("file")},
    deterministic=False,
)
def file_input(ctx: NodeContext, params: MediaInputParams) -> dict[str, object]:
    """Any file the caller passes by URL (http(s), data: URI or an upload's URL); its type
    is judged from its content."""
    return _file_input(ctx, params, "file")


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


class FileOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None
    filename: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._\-]{1,64}$",
        description="File name, without extension, of the download; by default the "
        "file's own name.",
    )


class ValueOutputParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None


@node(
    "output.image",
    title="Image output",
    category="output",
    version="2",  # 2: PNG deflated run-length first (media.decode.encode_png)
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
    "output.file",
    title="File output",
    category="output",
    output_kind="file",
    params=FileOutputParams,
    inputs={"file": Port("file")},
    outputs={},
)
def file_output(ctx: NodeContext, params: FileOutputParams, file: Artifact) -> dict[str, object]:
    """A file result of the app (video, audio, document...), downloadable by signed URL;
    its extension follows its content."""
    if not isinstance(file, Artifact):
        raise NodeError(f"expected a file, got {type(file).__name__}")
    if params.filename is None:
        return {"value": file}
    ext = file.filename.rpartition(".")[2] if "." in file.filename else ""
    ext = ext or extension_for(file.content_type)
    return {"value": Artifact(file.data, file.content_type, f"{params.filename}.{ext}")}


@node(
    "output.text",
    title="Text output",
    category="output",
    output_kind="text",
    params=ValueOutputParams,
    inputs={"text": Port("text")},
    outputs={},
    inline=True,
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
    inline=True,
)
def json_output(ctx: NodeContext, params: ValueOutputParams, value: object) -> dict[str, object]:
    """A JSON result of the app, returned inline as ``value``."""
    # Round-trip now so a value that is not JSON fails here, naming this node.
    try:
        return {"value": json.loads(json.dumps(value))}
    except (TypeError, ValueError) as exc:
        raise NodeError(f"value is not JSON: {exc}") from None


NODES = [
    text_input,
    number_input,
    boolean_input,
    choice_input,
    image_input,
    audio_input,
    video_input,
    file_input,
    image_output,
    file_output,
    text_output,
    json_output,
]
