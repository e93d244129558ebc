"""Text on images: captions and titles (``image.text_overlay``) and text watermarks
(``image.watermark_text``).

The typeface is DejaVu Sans (regular and bold), which ships inside matplotlib, a
dependency of mediapipe; it covers Latin, Greek and Cyrillic with accents and symbols
(©, —, …).  Should it be missing, Pillow's built-in scalable font is used (ASCII only).
Sizes are fractions of the image, so a workflow looks the same at any resolution.
"""

from __future__ import annotations

import functools
import importlib.util
import io
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, get_args

from PIL import Image, ImageDraw, ImageFilter, ImageFont
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.spec import NodeContext, Port, node
from flowy.errors import NodeError
from flowy.nodes.image import IMAGE_OUT, Color, Position, parse_color, place

logger = logging.getLogger(__name__)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont
_FONT_FILES: Final = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}
ELLIPSIS: Final = "…"


@functools.cache
def _font_bytes(bold: bool) -> bytes | None:
    """The TTF bytes of DejaVu Sans from matplotlib's data, found without importing it."""
    spec = importlib.util.find_spec("matplotlib")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = Path(root) / "mpl-data" / "fonts" / "ttf" / _FONT_FILES[bold]
        if path.is_file():
            return path.read_bytes()
    logger.warning("DejaVu Sans not found; text uses Pillow's built-in font")
    return None


def load_font(size: int, *, bold: bool = False) -> Font:
    """The typeface at ``size`` pixels (a fresh object: fonts are not shared by threads)."""
    data = _font_bytes(bold)
    if data is not None:
        return ImageFont.truetype(io.BytesIO(data), size)
    return ImageFont.load_default(size=size)


def _width(font: Font, text: str) -> float:
    return float(font.getlength(text))


def wrap(text: str, font: Font, max_width: float) -> list[str]:
    """``text`` broken into lines no wider than ``max_width`` (at spaces where possible;
    a word too long for a line is broken between characters).  Newlines are kept."""
    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if _width(font, candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            line = ""
            for char in word:  # a word wider than the line: break it
                if line and _width(font, line + char) > max_width:
                    lines.append(line)
                    line = ""
                line += char
        lines.append(line)
    return lines


def _ellipsize(lines: list[str], max_lines: int, font: Font, max_width: float) -> list[str]:
    if len(lines) <= max_lines:
        return lines
    kept = lines[:max_lines]
    last = kept[-1].rstrip()
    while last and _width(font, last + ELLIPSIS) > max_width:
        last = last[:-1].rstrip()
    kept[-1] = last + ELLIPSIS
    return kept


@dataclass(frozen=True)
class Line:
    text: str
    font: Font
    size: int


def layout(
    parts: list[tuple[str, int, bool]], max_width: float, max_lines: int, min_scale: float = 0.5
) -> list[Line]:
    """Lines for text ``parts`` ``(text, size px, bold)``, shrunk together (down to
    ``min_scale``) until each part fits in ``max_lines`` lines; the rest is cut with …"""
    scale = 1.0
    while True:
        laid: list[Line] = []
        fits = True
        for text, size, bold in parts:
            px = max(6, round(size * scale))
            font = load_font(px, bold=bold)
            lines = wrap(text, font, max_width)
            if len(lines) > max_lines:
                fits = False
                lines = _ellipsize(lines, max_lines, font, max_width)
            laid.extend(Line(t, font, px) for t in lines)
        if fits or scale <= min_scale:
            return laid
        scale = max(min_scale, scale * 0.9)


@dataclass(frozen=True)
class TextLook:
    color: tuple[int, int, int, int]
    align: Literal["left", "center", "right"] = "left"
    line_spacing: float = 1.15
    stroke: float = 0.0  # stroke width as a fraction of each line's size
    stroke_color: tuple[int, int, int, int] = (0, 0, 0, 255)
    shadow: bool = True
    gap: float = 0.35  # extra space before a line whose size changes, fraction of its size


def render(lines: list[Line], look: TextLook) -> tuple[Image.Image, int]:
    """An RGBA layer holding ``lines``, and the padding around the text inside it.

    Glyphs are drawn as coverage masks and coloured afterwards: drawing straight onto a
    transparent layer would darken the anti-aliased edges into a grey fringe.
    """
    biggest = max(line.size for line in lines)
    pad = math.ceil(biggest * (0.25 + look.stroke))
    strokes = [round(line.size * look.stroke) for line in lines]
    widths = [
        math.ceil(_width(line.font, line.text)) + 2 * stroke
        for line, stroke in zip(lines, strokes, strict=True)
    ]
    block_w = max(widths)
    tops, y = [], 0.0
    for i, line in enumerate(lines):
        if i and line.size != lines[i - 1].size:
            y += look.gap * line.size
        tops.append(y)
        y += line.size * look.line_spacing
    block_h = math.ceil(y - lines[-1].size * (look.line_spacing - 1.0) + biggest * 0.25)
    size = (block_w + 2 * pad, block_h + 2 * pad)
    outline = Image.new("L", size, 0)  # glyphs with their stroke
    glyphs = Image.new("L", size, 0)  # glyphs alone
    for line, width, stroke, top in zip(lines, widths, strokes, tops, strict=True):
        x = {"left": 0.0, "center": (block_w - width) / 2, "right": float(block_w - width)}
        xy = (pad + x[look.align] + stroke, pad + top)
        ImageDraw.Draw(glyphs).text(xy, line.text, font=line.font, fill=255)
        if stroke:
            ImageDraw.Draw(outline).text(
                xy, line.text, font=line.font, fill=255, stroke_width=stroke, stroke_fill=255
            )
    if not look.stroke:
        outline = glyphs
    layer = Image.new("RGBA", size, look.stroke_color[:3] + (0,))
    layer.paste(Image.new("RGBA", size, look.color), (0, 0), glyphs)
    layer.putalpha(outline.point(lambda v: v * look.color[3] // 255))
    if look.shadow:
        radius = max(1.0, biggest * 0.06)
        offset = max(1, round(biggest * 0.04))
        shadow_alpha = outline.filter(ImageFilter.GaussianBlur(radius)).point(lambda v: v * 3 // 4)
        shadow = Image.new("RGBA", size, (0, 0, 0, 0))
        shadow.paste((0, 0, 0, 255), (offset, offset), shadow_alpha)
        layer = Image.alpha_composite(shadow, layer)
    return layer, pad


def _fade(layer: Image.Image, opacity: float) -> Image.Image:
    if opacity >= 1.0:
        return layer
    alpha = layer.getchannel("A").point(lambda v: round(v * opacity))
    faded = layer.copy()
    faded.putalpha(alpha)
    return faded


def _onto(image: Image.Image, layer: Image.Image, xy: tuple[int, int]) -> Image.Image:
    """``layer`` (RGBA) composited onto a copy of ``image`` at ``xy``; the mode is kept."""
    base = image.convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    overlay.paste(layer, xy)
    out = Image.alpha_composite(base, overlay)
    return out if "A" in image.getbands() else out.convert("RGB")


def _scrim(
    size: tuple[int, int],
    box: tuple[int, int, int, int],
    kind: str,
    color: tuple[int, int, int, int],
    opacity: float,
    vertical: str,
) -> Image.Image:
    """A darkening layer behind the text ``box`` (left, top, right, bottom) of an image."""
    w, h = size
    alpha = round(255 * opacity * color[3] / 255)
    layer = Image.new("RGBA", size, (*color[:3], 0))
    if kind == "box":
        left, top, right, bottom = box
        radius = max(2, round(0.15 * min(bottom - top, right - left)))
        shape = Image.new("L", size, 0)
        ImageDraw.Draw(shape).rounded_rectangle(box, radius=radius, fill=alpha)
        layer.putalpha(shape)
        return layer
    if vertical == "middle":
        layer.putalpha(alpha)
        return layer
    # Gradient from the image edge the text sits at, fading out past the text.
    reach = (box[3] if vertical == "top" else h - box[1]) * 1.35
    distance = [y if vertical == "top" else h - 1 - y for y in range(h)]
    column = Image.new("L", (1, h))
    for y, d in enumerate(distance):
        t = min(1.0, d / max(reach, 1.0))
        column.putpixel((0, y), round(alpha * (1.0 - t * t * (3.0 - 2.0 * t))))
    layer.putalpha(column.resize(size))
    return layer


Align = Literal["auto", "left", "center", "right"]


def _align(align: Align, position: str) -> Literal["left", "center", "right"]:
    if align != "auto":
        return align
    if position.endswith("left"):
        return "left"
    if position.endswith("right"):
        return "right"
    return "center"


def _text_value(port: str | None, param: str) -> str:
    return port if port is not None and port.strip() else param


class TextOverlayParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field("", max_length=2000, description="The text, unless wired from an input.")
    subtitle: str = Field(
        "", max_length=2000, description="Smaller text under it, unless wired from an input."
    )
    position: Position = Field("bottom-left", description="Where the text block goes.")
    size: float = Field(
        0.08, ge=0.01, le=0.5, description="Text height as a fraction of the shorter side."
    )
    subtitle_scale: float = Field(0.55, ge=0.2, le=1, description="Subtitle size / text size.")
    bold: bool = Field(True, description="Bold text (the subtitle is always regular).")
    color: Color = Field("#ffffff", description="Text colour.")
    opacity: float = Field(1.0, ge=0, le=1, description="Opacity of the text.")
    align: Align = Field("auto", description="Line alignment; 'auto' follows the position.")
    max_width: float = Field(
        0.88, ge=0.1, le=1, description="Widest line, as a fraction of the image width."
    )
    max_lines: int = Field(
        3, ge=1, le=20, description="Lines per text before it shrinks, then is cut with …"
    )
    line_spacing: float = Field(1.15, ge=0.8, le=3, description="Line height / text size.")
    margin: float = Field(
        0.06, ge=0, le=0.4, description="Distance from the edges, fraction of the shorter side."
    )
    shadow: bool = Field(True, description="Soft drop shadow for legibility.")
    stroke: float = Field(0.0, ge=0, le=0.2, description="Outline width / text size.")
    stroke_color: Color = Field("#000000", description="Outline colour.")
    background: Literal["none", "box", "gradient"] = Field(
        "none",
        description="Darken behind the text: a box around it, or a gradient from the edge.",
    )
    background_color: Color = Field("#000000", description="Colour of the box or gradient.")
    background_opacity: float = Field(0.6, ge=0, le=1, description="Opacity of the background.")


@node(
    "image.text_overlay",
    title="Text overlay",
    category="image",
    params=TextOverlayParams,
    inputs={
        "image": Port("image"),
        "text": Port("text", "Overrides the text param when not empty", optional=True),
        "subtitle": Port("text", "Overrides the subtitle param when not empty", optional=True),
    },
    outputs=IMAGE_OUT,
)
def text_overlay(
    ctx: NodeContext,
    params: TextOverlayParams,
    image: Image.Image,
    text: str | None = None,
    subtitle: str | None = None,
) -> dict[str, object]:
    """Write a title or caption (and an optional smaller subtitle) on an image: wrapped to
    a width, shrunk to fit a number of lines, with shadow, outline or a darkened
    background for legibility."""
    title, sub = _text_value(text, params.text).strip(), _text_value(subtitle, params.subtitle)
    if not title and not sub.strip():
        raise NodeError("no text to write: wire a text input or set the text param")
    short = min(image.size)
    px = max(6, round(params.size * short))
    parts = [(title, px, params.bold)] if title else []
    if sub.strip():
        parts.append((sub.strip(), max(6, round(px * params.subtitle_scale)), False))
    max_width = params.max_width * image.width
    lines = layout(parts, max_width, params.max_lines)
    look = TextLook(
        color=parse_color(params.color),
        align=_align(params.align, params.position),
        line_spacing=params.line_spacing,
        stroke=params.stroke,
        stroke_color=parse_color(params.stroke_color),
        shadow=params.shadow,
    )
    layer, pad = render(lines, look)
    margin = round(params.margin * short)
    x, y = place(
        params.position, image.size, (layer.width - 2 * pad, layer.height - 2 * pad), margin
    )
    out = image
    if params.background != "none" and params.background_opacity > 0:
        grow = round(0.5 * lines[0].size) if params.background == "box" else 0
        box = (
            x - grow,
            y - grow,
            x + layer.width - 2 * pad + grow,
            y + layer.height - 2 * pad + grow,
        )
        vertical = "top" if params.position.startswith("top") else "bottom"
        if params.position in ("left", "center", "right"):
            vertical = "middle"
        scrim = _scrim(
            image.size,
            box,
            params.background,
            parse_color(params.background_color),
            params.background_opacity,
            vertical,
        )
        out = _onto(out, scrim, (0, 0))
    return {"image": _onto(out, _fade(layer, params.opacity), (x - pad, y - pad))}


WATERMARK_POSITIONS: Final[tuple[str, ...]] = (*get_args(Position), "tiled")


class WatermarkTextParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: str = Field("", max_length=200, description="The watermark, unless wired from an input.")
    position: Position | Literal["tiled"] = Field(
        "bottom-right", description="A corner, edge or the centre, or 'tiled' across the image."
    )
    size: float = Field(
        0.05, ge=0.01, le=0.5, description="Text height as a fraction of the shorter side."
    )
    color: Color = Field("#ffffff", description="Text colour.")
    opacity: float = Field(0.6, ge=0.05, le=1, description="Opacity of the watermark.")
    margin: float = Field(
        0.03, ge=0, le=0.4, description="Distance from the edges, fraction of the shorter side."
    )
    bold: bool = Field(True, description="Bold text.")
    shadow: bool = Field(True, description="Soft shadow so it reads on light areas too.")
    stroke: float = Field(0.0, ge=0, le=0.2, description="Outline width / text size.")
    stroke_color: Color = Field("#000000", description="Outline colour.")
    angle: float = Field(30, ge=-90, le=90, description="Tilt of tiled text, degrees.")
    spacing: float = Field(
        1.0, ge=0.2, le=5, description="Gap between tiles as a fraction of the text size."
    )


@node(
    "image.watermark_text",
    title="Text watermark",
    category="image",
    params=WatermarkTextParams,
    inputs={
        "image": Port("image"),
        "text": Port("text", "Overrides the text param when not empty", optional=True),
        "position": Port("text", "Overrides the position param when not empty", optional=True),
    },
    outputs=IMAGE_OUT,
)
def watermark_text(
    ctx: NodeContext,
    params: WatermarkTextParams,
    image: Image.Image,
    text: str | None = None,
    position: str | None = None,
) -> dict[str, object]:
    """Stamp a translucent text watermark in a corner, at an edge, the centre, or tiled
    diagonally across the whole image."""
    value = " ".join(_text_value(text, params.text).split())
    if not value:
        raise NodeError("no watermark text: wire a text input or set the text param")
    where = _text_value(position, params.position).strip().lower()
    if where not in WATERMARK_POSITIONS:
        raise NodeError(f"unknown position {where!r}; use one of {', '.join(WATERMARK_POSITIONS)}")
    short = min(image.size)
    px = max(6, round(params.size * short))
    lines = layout([(value, px, params.bold)], 0.9 * image.width, 1)
    look = TextLook(
        color=parse_color(params.color),
        stroke=params.stroke,
        stroke_color=parse_color(params.stroke_color),
        shadow=params.shadow,
    )
    layer, pad = render(lines, look)
    layer = _fade(layer, params.opacity)
    if where != "tiled":
        inner = (layer.width - 2 * pad, layer.height - 2 * pad)
        x, y = place(where, image.size, inner, round(params.margin * short))
        return {"image": _onto(image, layer, (x - pad, y - pad))}
    tile = layer.rotate(params.angle, resample=Image.Resampling.BICUBIC, expand=True)
    gap = round(params.spacing * lines[0].size)
    step_x, step_y = tile.width + gap, max(1, round((layer.height - 2 * pad) + gap * 2))
    # Tiles are laid on a sheet one tile larger on every side (alpha_composite takes no
    # negative offsets), then the middle is cut out.
    sheet = Image.new("RGBA", (image.width + 2 * tile.width, image.height + 2 * tile.height))
    for row, top in enumerate(range(0, sheet.height - tile.height + 1, step_y)):
        ctx.check_canceled()
        shift = (row % 2) * step_x // 2
        for left in range(shift, sheet.width - tile.width + 1, step_x):
            sheet.alpha_composite(tile, (left, top))
    sheet = sheet.crop(
        (tile.width, tile.height, tile.width + image.width, tile.height + image.height)
    )
    return {"image": _onto(image, sheet, (0, 0))}


NODES = [text_overlay, watermark_text]
