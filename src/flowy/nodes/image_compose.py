"""Nodes that combine images: overlay, logo watermark, contact-sheet grid, and cutting a
person out of a photo or onto a new background (mediapipe's selfie segmenter)."""

from __future__ import annotations

import math
from typing import Final, Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.spec import NodeContext, Port, node
from flowy.errors import NodeError
from flowy.nodes import vision
from flowy.nodes.image import (
    IMAGE_OUT,
    MAX_SIDE,
    Color,
    Position,
    check_output_size,
    color_input,
    contain_size,
    cover_crop,
    parse_color,
    place,
    scaled,
)
from flowy.nodes.image_text import ELLIPSIS, load_font

#: How many image inputs ``image.grid`` has (image_1 ... image_8).
GRID_INPUTS: Final = 8
# A person mask covering less than this fraction of the photo means nobody was found.
_MIN_PERSON_FRACTION: Final = 0.005


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _faded(layer: Image.Image, opacity: float) -> Image.Image:
    """An RGBA copy of ``layer`` with its alpha multiplied by ``opacity``."""
    rgba = layer.convert("RGBA")
    if opacity < 1.0:
        rgba.putalpha(rgba.getchannel("A").point(lambda v: round(v * opacity)))
    return rgba


def _paste_over(base: Image.Image, layer: Image.Image, xy: tuple[int, int]) -> Image.Image:
    """``layer`` (RGBA) alpha-composited over a copy of ``base`` at ``xy`` (may be negative
    or reach past the edges); the base's mode family (RGB or RGBA) is kept."""
    canvas = Image.new("RGBA", base.size, (0, 0, 0, 0))
    canvas.paste(layer, xy)
    out = Image.alpha_composite(base.convert("RGBA"), canvas)
    return out if "A" in base.getbands() else out.convert("RGB")


# --------------------------------------------------------------------------- overlays


class CompositeParams(_Params):
    x: int = Field(0, ge=-MAX_SIDE, le=65535, description="Left edge of the overlay, pixels.")
    y: int = Field(0, ge=-MAX_SIDE, le=65535, description="Top edge of the overlay, pixels.")
    scale: float = Field(1.0, ge=0.01, le=10, description="Resize the overlay by this factor.")
    opacity: float = Field(1.0, ge=0, le=1, description="Opacity of the overlay.")


@node(
    "image.composite",
    title="Overlay image",
    category="image",
    params=CompositeParams,
    inputs={
        "image": Port("image", "The base image"),
        "overlay": Port("image", "Placed over the base; its transparency is kept"),
    },
    outputs=IMAGE_OUT,
)
def composite(
    ctx: NodeContext, params: CompositeParams, image: Image.Image, overlay: Image.Image
) -> dict[str, object]:
    """Place one image over another at x, y (its top-left corner, pixels), optionally
    scaled, with its own transparency and an overall opacity."""
    if params.scale != 1.0:
        size = (
            max(1, round(overlay.width * params.scale)),
            max(1, round(overlay.height * params.scale)),
        )
        check_output_size(ctx, *size)
        overlay = scaled(overlay, size)
    right, bottom = params.x + overlay.width, params.y + overlay.height
    if params.x >= image.width or params.y >= image.height or right <= 0 or bottom <= 0:
        raise NodeError(
            f"the {overlay.width}×{overlay.height} overlay at x={params.x}, y={params.y} "
            f"lies entirely outside the {image.width}×{image.height} image"
        )
    layer = _faded(overlay, params.opacity)
    return {"image": _paste_over(image, layer, (params.x, params.y))}


class LogoParams(_Params):
    position: Position = Field("bottom-right", description="Where the logo goes.")
    size: float = Field(
        0.18, ge=0.02, le=1, description="Largest logo width and height, fraction of the image's."
    )
    margin: float = Field(
        0.03, ge=0, le=0.4, description="Distance from the edges, fraction of the shorter side."
    )
    opacity: float = Field(0.8, ge=0.05, le=1, description="Opacity of the logo.")


@node(
    "image.watermark_logo",
    title="Logo watermark",
    category="image",
    params=LogoParams,
    inputs={"image": Port("image"), "logo": Port("image", "Transparency is kept")},
    outputs=IMAGE_OUT,
)
def watermark_logo(
    ctx: NodeContext, params: LogoParams, image: Image.Image, logo: Image.Image
) -> dict[str, object]:
    """Stamp a logo in a corner (or at an edge or the centre), sized relative to the image,
    with an opacity."""
    box = (max(1, round(params.size * image.width)), max(1, round(params.size * image.height)))
    logo = scaled(logo, contain_size(logo.size, box))
    xy = place(params.position, image.size, logo.size, round(params.margin * min(image.size)))
    return {"image": _paste_over(image, _faded(logo, params.opacity), xy)}


# --------------------------------------------------------------------------- grid


class GridParams(_Params):
    columns: int = Field(
        0, ge=0, le=GRID_INPUTS, description="Columns; 0 picks a near-square grid."
    )
    cell_width: int = Field(400, ge=16, le=4096, description="Width of each cell, pixels.")
    cell_height: int = Field(400, ge=16, le=4096, description="Height of each cell, pixels.")
    gap: int = Field(16, ge=0, le=512, description="Space between and around cells, pixels.")
    fit: Literal["cover", "contain"] = Field(
        "cover", description="'cover' fills each cell (cropping), 'contain' shows all of it."
    )
    background: Color = Field("#ffffff", description="Colour behind and between the cells.")
    labels: list[str] = Field(
        default_factory=list,
        max_length=GRID_INPUTS,
        description="Captions under the cells, in input order (label 3 goes with image_3).",
    )
    label_color: Color | None = Field(
        None, description="Caption colour; by default black or white against the background."
    )
    label_size: float = Field(
        0.07, ge=0.02, le=0.3, description="Caption height as a fraction of the cell height."
    )


def _label_band(text: str, width: int, px: int, color: tuple[int, int, int, int]) -> Image.Image:
    """A transparent ``width``-wide strip with ``text`` centred on one line (cut with …)."""
    font = load_font(px)
    line = text.strip()
    if font.getlength(line) > width:
        while line and font.getlength(line + ELLIPSIS) > width:
            line = line[:-1]
        line += ELLIPSIS
    band = Image.new("RGBA", (width, round(px * 1.6)), color[:3] + (0,))
    mask = Image.new("L", band.size, 0)
    ImageDraw.Draw(mask).text((width / 2, band.height / 2), line, font=font, fill=255, anchor="mm")
    band.putalpha(mask.point(lambda v: v * color[3] // 255))
    return band


@node(
    "image.grid",
    title="Grid / contact sheet",
    category="image",
    params=GridParams,
    inputs={
        f"image_{i}": Port("image", "Optional; empty inputs are left out", optional=True)
        for i in range(1, GRID_INPUTS + 1)
    },
    outputs=IMAGE_OUT,
)
def grid(ctx: NodeContext, params: GridParams, **images: Image.Image | None) -> dict[str, object]:
    """Lay out up to eight images in a grid of equal cells (a contact sheet or collage),
    with a gap, a background colour and optional captions; empty inputs are skipped."""
    given = [
        (i, img) for i in range(1, GRID_INPUTS + 1) if (img := images.get(f"image_{i}")) is not None
    ]
    if not given:
        raise NodeError("no images to lay out: give at least one of image_1 ... image_8")
    count = len(given)
    columns = min(params.columns or math.ceil(math.sqrt(count)), count)
    rows = math.ceil(count / columns)
    cw, ch, gap = params.cell_width, params.cell_height, params.gap
    has_labels = any(label.strip() for label in params.labels)
    label_px = max(8, round(params.label_size * ch))
    band_h = round(label_px * 1.6) if has_labels else 0
    width = columns * cw + (columns + 1) * gap
    height = rows * (ch + band_h) + (rows + 1) * gap
    check_output_size(ctx, width, height)
    bg = parse_color(params.background)
    sheet = Image.new("RGBA", (width, height), bg)
    if params.label_color is not None:
        label_color = parse_color(params.label_color)
    else:
        luma = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
        label_color = (20, 20, 20, 255) if luma > 140 or bg[3] < 128 else (240, 240, 240, 255)
    for slot, (index, img) in enumerate(given):
        ctx.check_canceled()
        row, col = divmod(slot, columns)
        left = gap + col * (cw + gap)
        top = gap + row * (ch + band_h + gap)
        if params.fit == "cover":
            cell = cover_crop(img, (cw, ch)).convert("RGBA")
            sheet.alpha_composite(cell, (left, top))
        else:
            cell = scaled(img, contain_size(img.size, (cw, ch))).convert("RGBA")
            x, y = place("center", (cw, ch), cell.size)
            sheet.alpha_composite(cell, (left + x, top + y))
        label = params.labels[index - 1] if index <= len(params.labels) else ""
        if has_labels and label.strip():
            sheet.alpha_composite(_label_band(label, cw, label_px, label_color), (left, top + ch))
        ctx.progress((slot + 1) / count)
    return {"image": sheet if bg[3] < 255 else sheet.convert("RGB")}


# --------------------------------------------------------------------------- people


def _person_alpha(image: Image.Image) -> vision.FloatArray:
    """The person mask of ``image`` (float H×W, 0–1); NodeError when nobody is in it."""
    mask = vision.person_mask(image)
    if float(np.mean(mask > 0.5)) < _MIN_PERSON_FRACTION:
        raise NodeError("no person found in the photo; use a photo with a person in it")
    return mask


class RemoveBackgroundParams(_Params):
    crop: bool = Field(False, description="Crop to the person (with a small margin).")


@node(
    "image.remove_background",
    title="Remove background",
    category="image",
    params=RemoveBackgroundParams,
    inputs={"image": Port("image")},
    outputs={
        "image": Port("image", "The person on a transparent background (RGBA)"),
        "mask": Port("image", "White where the person is"),
    },
)
def remove_background(
    ctx: NodeContext, params: RemoveBackgroundParams, image: Image.Image
) -> dict[str, object]:
    """Cut the person out of a photo: the background becomes transparent, with soft,
    halo-free edges.  Fails when no person is found."""
    mask = _person_alpha(image)
    ctx.check_canceled()
    alpha = mask
    if "A" in image.getbands():
        alpha = alpha * (np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0)
    # Edge colours taken from the person, not the old background (see vision).
    fg = vision._decontaminate(np.asarray(image.convert("RGB"), dtype=np.float32), alpha)
    a8 = np.clip(np.rint(alpha * 255.0), 0, 255).astype(np.uint8)
    rgba = np.dstack([np.clip(np.rint(fg), 0, 255).astype(np.uint8), a8])
    out = Image.fromarray(rgba, "RGBA")
    matte = Image.fromarray(a8, "L")
    if params.crop:
        bbox = Image.fromarray(np.where(a8 > 127, 255, 0).astype(np.uint8), "L").getbbox()
        if bbox is not None:
            grow = round(0.03 * max(image.size))
            bbox = (
                max(0, bbox[0] - grow),
                max(0, bbox[1] - grow),
                min(image.width, bbox[2] + grow),
                min(image.height, bbox[3] + grow),
            )
            out, matte = out.crop(bbox), matte.crop(bbox)
    return {"image": out, "mask": matte.convert("RGB")}


class ReplaceBackgroundParams(_Params):
    color: Color = Field(
        "#ffffff", description="Background colour when no background image is given."
    )
    blur: float = Field(
        0.0,
        ge=0,
        le=0.1,
        description="Blur the new background by this fraction of the image size "
        "(a shallow depth-of-field look).",
    )


@node(
    "image.replace_background",
    title="Replace background",
    category="image",
    params=ReplaceBackgroundParams,
    inputs={
        "image": Port("image", "A photo with a person"),
        "background": Port("image", "The new background; cover-cropped to the photo", True),
        "color": Port("text", "Background colour (hex or name) when no image is given", True),
    },
    outputs=IMAGE_OUT,
)
def replace_background(
    ctx: NodeContext,
    params: ReplaceBackgroundParams,
    image: Image.Image,
    background: Image.Image | None = None,
    color: str | None = None,
) -> dict[str, object]:
    """Put the person of a photo on a new background: another image (scaled to cover the
    photo, never stretched) or a plain colour.  Fails when no person is found."""
    fill = color_input(color, params.color)
    mask = _person_alpha(image)
    ctx.check_canceled()
    if background is not None:
        backdrop = cover_crop(background, image.size).convert("RGB")
    else:
        backdrop = Image.new("RGB", image.size, fill[:3])
    if params.blur > 0:
        backdrop = backdrop.filter(ImageFilter.GaussianBlur(params.blur * max(image.size)))
    return {"image": vision.replace_background(image, mask, backdrop)}


NODES = [composite, watermark_logo, grid, remove_background, replace_background]
