"""Image geometry nodes (fit, cover, pad, crop, rotate, flip), image facts and conversion,
and the helpers the other image node modules share (colours, placement, alpha).

Every node returns a new image: values on ports may be cached and shared between nodes,
so an input image is never modified in place.  An alpha channel is kept wherever the
operation allows it.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageColor
from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from flowy.engine.spec import Artifact, NodeContext, Port, node
from flowy.errors import NodeError
from flowy.media.decode import encode_image
from flowy.nodes import vision

# --------------------------------------------------------------------------- shared helpers

RGBA = tuple[int, int, int, int]

LANCZOS: Final = Image.Resampling.LANCZOS

#: Where a thing goes inside a frame (text, logo, a padded image).
Position = Literal[
    "top-left", "top", "top-right", "left", "center", "right", "bottom-left", "bottom",
    "bottom-right",
]  # fmt: skip

#: Largest width or height a node may be asked to produce.
MAX_SIDE: Final = 8192


def parse_color(value: str) -> RGBA:
    """A CSS colour (``#rgb``, ``#rrggbb``, ``#rrggbbaa``, ``rgb(...)``, a name such as
    ``white`` or ``teal``, or ``transparent``) as RGBA; ValueError naming the value."""
    text = value.strip().lower()
    if text in ("transparent", "none"):
        return (0, 0, 0, 0)
    try:
        color = ImageColor.getrgb(text)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a colour; use a hex colour like #1e90ff or a name like white"
        ) from None
    if len(color) == 3:
        return (color[0], color[1], color[2], 255)
    return (color[0], color[1], color[2], color[3])


def _check_color(value: str) -> str:
    parse_color(value)
    return value


#: A colour param: validated when the workflow is saved, parsed with :func:`parse_color`.
Color = Annotated[str, AfterValidator(_check_color)]


def color_input(value: str | None, fallback: str) -> RGBA:
    """A colour given on an input port at run time (NodeError when it is not a colour),
    or the param's colour when the port gave nothing."""
    if value is None or not value.strip():
        return parse_color(fallback)
    try:
        return parse_color(value)
    except ValueError as exc:
        raise NodeError(str(exc)) from None


def split_alpha(image: Image.Image) -> tuple[Image.Image, Image.Image | None]:
    """``image`` as RGB, and its alpha channel (None when it has none)."""
    if image.mode == "RGB":
        return image, None
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        return rgba.convert("RGB"), rgba.getchannel("A")
    return image.convert("RGB"), None


def with_alpha(rgb: Image.Image, alpha: Image.Image | None) -> Image.Image:
    """``rgb`` with ``alpha`` put back (a new image; ``rgb`` is not modified)."""
    if alpha is None:
        return rgb
    out = rgb.convert("RGBA")
    out.putalpha(alpha)
    return out


def rgb_array(image: Image.Image) -> NDArray[np.float32]:
    """The RGB pixels of ``image`` as float32 H×W×3 in 0–255."""
    return np.asarray(image.convert("RGB"), dtype=np.float32)


def from_array(pixels: NDArray[np.floating[Any]] | NDArray[np.uint8]) -> Image.Image:
    """An 8-bit image from float or uint8 pixels (rounded and clipped to 0–255)."""
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def place(
    position: str, outer: tuple[int, int], inner: tuple[int, int], margin: int = 0
) -> tuple[int, int]:
    """Top-left corner that puts a box of size ``inner`` at ``position`` in ``outer``."""
    (ow, oh), (iw, ih) = outer, inner
    if position.endswith("left"):
        x = margin
    elif position.endswith("right"):
        x = ow - iw - margin
    else:
        x = (ow - iw) // 2
    if position.startswith("top"):
        y = margin
    elif position.startswith("bottom"):
        y = oh - ih - margin
    else:
        y = (oh - ih) // 2
    return x, y


def check_output_size(ctx: NodeContext, width: int, height: int) -> None:
    """NodeError when an image of ``width`` × ``height`` would pass the pixel limit."""
    if width * height > ctx.max_pixels:
        raise NodeError(
            f"the result would be {width}×{height} pixels, over the limit of "
            f"{ctx.max_pixels} pixels; ask for a smaller size"
        )


def scaled(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``image`` resized to ``size`` (Lanczos; palette and 1-bit images become RGB(A))."""
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    if image.size == size:
        return image.copy()
    return image.resize(size, LANCZOS, reducing_gap=3.0)


def cover_box(
    size: tuple[int, int], target: tuple[int, int], focus: tuple[float, float]
) -> tuple[float, float, float, float]:
    """The source box ``(left, top, right, bottom)`` that, scaled to ``target``, fills it.

    ``focus`` is the source point (pixels) to keep near the middle of the result; the box
    is moved as little as needed to stay inside the image.
    """
    (w, h), (tw, th) = size, target
    scale = max(tw / w, th / h)
    bw, bh = tw / scale, th / scale
    left = min(max(focus[0] - bw / 2, 0.0), w - bw)
    top = min(max(focus[1] - bh / 2, 0.0), h - bh)
    return (left, top, left + bw, top + bh)


def cover_crop(
    image: Image.Image, size: tuple[int, int], focus: tuple[float, float] | None = None
) -> Image.Image:
    """``image`` scaled to fill ``size`` exactly, the overflow cropped around ``focus``
    (default: the centre)."""
    if focus is None:
        focus = (image.width / 2, image.height / 2)
    box = cover_box(image.size, size, focus)
    if image.mode not in ("RGB", "RGBA", "L", "LA"):
        image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
    return image.resize(size, LANCZOS, box=box, reducing_gap=3.0)


def contain_size(
    size: tuple[int, int], box: tuple[int, int], upscale: bool = True
) -> tuple[int, int]:
    """The largest size with the aspect of ``size`` inside ``box``."""
    scale = min(box[0] / size[0], box[1] / size[1])
    if not upscale:
        scale = min(scale, 1.0)
    return (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))


# --------------------------------------------------------------------------- params


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FitParams(_Params):
    width: int = Field(1024, ge=1, le=MAX_SIDE, description="Width of the box, pixels.")
    height: int = Field(1024, ge=1, le=MAX_SIDE, description="Height of the box, pixels.")
    upscale: bool = Field(True, description="Enlarge images smaller than the box.")


class CoverParams(_Params):
    width: int = Field(1200, ge=1, le=MAX_SIDE, description="Width of the result, pixels.")
    height: int = Field(630, ge=1, le=MAX_SIDE, description="Height of the result, pixels.")
    focus: Literal["center", "top", "bottom", "left", "right", "face"] = Field(
        "center",
        description="What to keep when cropping; 'face' keeps the largest face in frame "
        "(the centre when there is none).",
    )


class PadParams(_Params):
    width: int = Field(1024, ge=1, le=MAX_SIDE, description="Width of the result, pixels.")
    height: int = Field(1024, ge=1, le=MAX_SIDE, description="Height of the result, pixels.")
    color: Color = Field("#ffffff", description="Colour of the padding, or 'transparent'.")
    position: Position = Field("center", description="Where the image sits in the result.")


class CropParams(_Params):
    x: int = Field(0, ge=0, le=65535, description="Left edge of the crop, pixels.")
    y: int = Field(0, ge=0, le=65535, description="Top edge of the crop, pixels.")
    width: int = Field(ge=1, le=65535, description="Width of the crop, pixels.")
    height: int = Field(ge=1, le=65535, description="Height of the crop, pixels.")


class RotateParams(_Params):
    angle: float = Field(90, ge=-360, le=360, description="Degrees, counter-clockwise.")
    expand: bool = Field(True, description="Grow the canvas so no corner is cut off.")
    fill: Color = Field("transparent", description="Colour of the uncovered corners.")


class FlipParams(_Params):
    direction: Literal["horizontal", "vertical", "both"] = Field(
        "horizontal", description="'horizontal' mirrors left-right, 'vertical' top-bottom."
    )


class ConvertParams(_Params):
    format: Literal["png", "jpeg", "webp"] = Field("png", description="File format.")
    quality: int = Field(90, ge=1, le=100, description="JPEG/WebP quality.")
    filename: str = Field(
        "image",
        pattern=r"^[A-Za-z0-9._\-]{1,64}$",
        description="File name, without extension.",
    )


# --------------------------------------------------------------------------- nodes

#: The ports of a node that takes one image and gives one.
IMAGE_IN: Final = {"image": Port("image")}
IMAGE_OUT: Final = {"image": Port("image")}


@node(
    "image.fit",
    title="Fit into box",
    category="image",
    params=FitParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def fit(ctx: NodeContext, params: FitParams, image: Image.Image) -> dict[str, object]:
    """Scale an image to fit inside width × height, keeping its aspect ratio (nothing is
    cropped; the result may be smaller than the box on one side)."""
    size = contain_size(image.size, (params.width, params.height), params.upscale)
    return {"image": scaled(image, size)}


@node(
    "image.cover",
    title="Cover and crop",
    category="image",
    params=CoverParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def cover(ctx: NodeContext, params: CoverParams, image: Image.Image) -> dict[str, object]:
    """Scale an image to fill exactly width × height, cropping what overflows (around the
    centre, an edge, or the largest face)."""
    check_output_size(ctx, params.width, params.height)
    w, h = image.size
    focus = {
        "center": (w / 2, h / 2),
        "top": (w / 2, 0.0),
        "bottom": (w / 2, float(h)),
        "left": (0.0, h / 2),
        "right": (float(w), h / 2),
    }.get(params.focus)
    if focus is None:  # face
        faces = vision.detect_faces(image)
        ctx.check_canceled()
        if faces:
            cx, cy = faces[0].center
            # A little above the middle: a face centred vertically looks low in a frame.
            focus = (cx, cy + 0.1 * min(h, w * params.height / params.width))
        else:
            focus = (w / 2, h / 2)
    return {"image": cover_crop(image, (params.width, params.height), focus)}


@node(
    "image.pad",
    title="Pad to size",
    category="image",
    params=PadParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def pad(ctx: NodeContext, params: PadParams, image: Image.Image) -> dict[str, object]:
    """Place an image on a width × height canvas of a colour, without scaling it.

    Fails when the image is larger than the canvas (fit it into the box first).
    """
    if image.width > params.width or image.height > params.height:
        raise NodeError(
            f"the image is {image.width}×{image.height}, larger than the "
            f"{params.width}×{params.height} canvas; fit it into the box first"
        )
    check_output_size(ctx, params.width, params.height)
    color = parse_color(params.color)
    transparent = color[3] < 255 or "A" in image.getbands()
    mode = "RGBA" if transparent else "RGB"
    canvas = Image.new(mode, (params.width, params.height), color if transparent else color[:3])
    layer = image.convert(mode)
    x, y = place(params.position, canvas.size, image.size)
    if transparent:
        canvas.alpha_composite(layer, (x, y))
    else:
        canvas.paste(layer, (x, y))
    return {"image": canvas}


@node(
    "image.crop",
    title="Crop",
    category="image",
    params=CropParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def crop(ctx: NodeContext, params: CropParams, image: Image.Image) -> dict[str, object]:
    """Cut out the rectangle x, y, width × height (pixels from the top-left corner).

    Fails, saying by how much, when the rectangle does not lie inside the image.
    """
    right, bottom = params.x + params.width, params.y + params.height
    problems = []
    if right > image.width:
        problems.append(f"its right edge x+width={right} is past the image width {image.width}")
    if bottom > image.height:
        problems.append(
            f"its bottom edge y+height={bottom} is past the image height {image.height}"
        )
    if problems:
        raise NodeError(
            f"crop x={params.x}, y={params.y}, {params.width}×{params.height} does not fit "
            f"the {image.width}×{image.height} image: " + " and ".join(problems)
        )
    return {"image": image.crop((params.x, params.y, right, bottom))}


@node(
    "image.rotate",
    title="Rotate",
    category="image",
    params=RotateParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def rotate(ctx: NodeContext, params: RotateParams, image: Image.Image) -> dict[str, object]:
    """Rotate an image counter-clockwise by an angle in degrees (negative: clockwise).

    Quarter turns are exact; other angles are resampled bicubically, and the uncovered
    corners get the fill colour (transparent by default).
    """
    angle = params.angle % 360
    quarter = {
        90.0: Image.Transpose.ROTATE_90,
        180.0: Image.Transpose.ROTATE_180,
        270.0: Image.Transpose.ROTATE_270,
    }
    if angle == 0:
        return {"image": image.copy()}
    if angle in quarter and (params.expand or angle == 180 or image.width == image.height):
        return {"image": image.transpose(quarter[angle])}
    fill = parse_color(params.fill)
    source = image.convert("RGBA") if fill[3] < 255 or "A" in image.getbands() else image
    if source.mode not in ("RGB", "RGBA"):
        source = source.convert("RGB")
    color = fill if source.mode == "RGBA" else fill[:3]
    rotated = source.rotate(
        angle, resample=Image.Resampling.BICUBIC, expand=params.expand, fillcolor=color
    )
    check_output_size(ctx, rotated.width, rotated.height)
    return {"image": rotated}


@node(
    "image.flip",
    title="Flip",
    category="image",
    params=FlipParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def flip(ctx: NodeContext, params: FlipParams, image: Image.Image) -> dict[str, object]:
    """Mirror an image left-right (horizontal), top-bottom (vertical), or both."""
    if params.direction == "horizontal":
        return {"image": image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)}
    if params.direction == "vertical":
        return {"image": image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)}
    return {"image": image.transpose(Image.Transpose.ROTATE_180)}


@node(
    "image.info",
    title="Image info",
    category="image",
    inputs={"image": Port("image")},
    outputs={
        "info": Port("json", "{width, height, mode, has_alpha, orientation}"),
        "width": Port("number"),
        "height": Port("number"),
    },
)
def info(ctx: NodeContext, params: BaseModel, image: Image.Image) -> dict[str, object]:
    """Facts about an image: its width and height in pixels, mode, whether it has an
    alpha channel, and its orientation (landscape, portrait or square)."""
    w, h = image.size
    orientation = "square" if w == h else ("landscape" if w > h else "portrait")
    facts = {
        "width": w,
        "height": h,
        "mode": image.mode,
        "has_alpha": "A" in image.getbands() or "transparency" in image.info,
        "orientation": orientation,
    }
    return {"info": facts, "width": w, "height": h}


@node(
    "image.convert",
    title="Convert to file",
    category="image",
    version="2",  # 2: PNG deflated run-length first (media.decode.encode_png)
    params=ConvertParams,
    inputs={"image": Port("image")},
    outputs={"file": Port("file", "The encoded image")},
)
def convert(ctx: NodeContext, params: ConvertParams, image: Image.Image) -> dict[str, object]:
    """Encode an image as a PNG, JPEG or WebP file (JPEG flattens transparency onto
    white); wire it to a file output, or on to nodes that take files."""
    data, content_type = encode_image(image, params.format, quality=params.quality)
    ext = "jpg" if params.format == "jpeg" else params.format
    return {"file": Artifact(data, content_type, f"{params.filename}.{ext}")}


NODES = [fit, cover, pad, crop, rotate, flip, info, convert]
