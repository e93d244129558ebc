"""Image adjustment and filter nodes: light and colour, blur, sharpen, denoise, black and
white, sepia, colour grades and automatic enhancement.

Each node works on the RGB pixels and keeps an alpha channel as it is.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageEnhance, ImageFilter
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.spec import NodeContext, Port, node
from flowy.errors import NodeError
from flowy.nodes.image import IMAGE_IN, IMAGE_OUT, from_array, rgb_array, split_alpha, with_alpha

FloatArray = NDArray[np.float32]

# Rec. 601 luma weights, as Pillow's convert("L") uses.
_LUMA: Final = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _luma(pixels: FloatArray) -> FloatArray:
    out: FloatArray = pixels @ _LUMA
    return out


def _blend(original: FloatArray, graded: FloatArray, strength: float) -> FloatArray:
    out: FloatArray = original + strength * (graded - original)
    return out


def strength_input(value: float | None, fallback: float, name: str = "strength") -> float:
    """A 0–1 strength from an input port (NodeError when out of range) or the param."""
    if value is None:
        return fallback
    if not 0.0 <= float(value) <= 1.0:
        raise NodeError(f"{name} must be between 0 and 1, got {value:g}")
    return float(value)


# --------------------------------------------------------------------------- adjust


class AdjustParams(_Params):
    brightness: float = Field(1.0, ge=0, le=3, description="1 unchanged; 0.5 darker, 1.5 brighter.")
    contrast: float = Field(1.0, ge=0, le=3, description="1 unchanged; below 1 flatter.")
    saturation: float = Field(1.0, ge=0, le=3, description="1 unchanged; 0 black and white.")
    gamma: float = Field(
        1.0, ge=0.2, le=5, description="Midtones: above 1 brighter, below 1 darker."
    )
    temperature: float = Field(
        0.0, ge=-1, le=1, description="Colour temperature: positive warmer, negative cooler."
    )


def _channel_lut(fn: NDArray[np.float64]) -> list[int]:
    return [int(v) for v in np.clip(np.rint(fn), 0, 255).astype(np.int64).ravel()]


@node(
    "image.adjust",
    title="Adjust light and colour",
    category="image",
    params=AdjustParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def adjust(ctx: NodeContext, params: AdjustParams, image: Image.Image) -> dict[str, object]:
    """Adjust brightness, contrast, saturation, gamma and colour temperature (every value
    at its default leaves the image unchanged)."""
    rgb, alpha = split_alpha(image)
    levels = np.arange(256, dtype=np.float64)
    if params.temperature or params.gamma != 1.0:
        t = 0.3 * params.temperature
        curve = 255.0 * (levels / 255.0) ** (1.0 / params.gamma)
        # Green follows red a little so warm skin does not turn magenta.
        gains = (1.0 + t, 1.0 + 0.2 * t, 1.0 - t)
        rgb = rgb.point(_channel_lut(np.concatenate([curve * g for g in gains])))
    if params.brightness != 1.0:
        rgb = ImageEnhance.Brightness(rgb).enhance(params.brightness)
    if params.contrast != 1.0:
        rgb = ImageEnhance.Contrast(rgb).enhance(params.contrast)
    if params.saturation != 1.0:
        rgb = ImageEnhance.Color(rgb).enhance(params.saturation)
    return {"image": with_alpha(rgb.copy() if rgb is image else rgb, alpha)}


# --------------------------------------------------------------------------- filters


class BlurParams(_Params):
    radius: float = Field(4.0, ge=0, le=250, description="Blur radius, pixels.")
    method: Literal["gaussian", "box"] = Field("gaussian", description="Kind of blur.")


@node(
    "image.blur",
    title="Blur",
    category="image",
    params=BlurParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def blur(ctx: NodeContext, params: BlurParams, image: Image.Image) -> dict[str, object]:
    """Blur an image (Gaussian or box) by a radius in pixels."""
    rgb, alpha = split_alpha(image)
    f = (
        ImageFilter.GaussianBlur(params.radius)
        if params.method == "gaussian"
        else ImageFilter.BoxBlur(params.radius)
    )
    out = with_alpha(rgb.filter(f), alpha.filter(f) if alpha is not None else None)
    return {"image": out}


class SharpenParams(_Params):
    amount: float = Field(1.0, ge=0, le=5, description="Strength: 1 is a clear sharpening, 0 none.")
    radius: float = Field(2.0, ge=0.1, le=50, description="Size of the detail, pixels.")
    threshold: int = Field(
        3, ge=0, le=255, description="Leave differences below this alone (keeps noise down)."
    )


@node(
    "image.sharpen",
    title="Sharpen",
    category="image",
    params=SharpenParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def sharpen(ctx: NodeContext, params: SharpenParams, image: Image.Image) -> dict[str, object]:
    """Sharpen detail with an unsharp mask."""
    rgb, alpha = split_alpha(image)
    f = ImageFilter.UnsharpMask(
        radius=params.radius, percent=round(params.amount * 100), threshold=params.threshold
    )
    return {"image": with_alpha(rgb.filter(f), alpha)}


class DenoiseParams(_Params):
    strength: float = Field(
        6.0, ge=1, le=30, description="How much noise to remove; high values smear detail."
    )
    method: Literal["nlmeans", "bilateral", "median"] = Field(
        "nlmeans",
        description="'nlmeans' keeps detail best (slowest); 'bilateral' is fast and "
        "edge-preserving; 'median' removes speckles.",
    )


# NL-means works on horizontal bands this tall (with overlap), so a large photo can be
# canceled between bands and reports progress.
_BAND: Final = 512
_BAND_OVERLAP: Final = 16


def _nlmeans(ctx: NodeContext, pixels: NDArray[np.uint8], h: float) -> NDArray[np.uint8]:
    height = pixels.shape[0]
    out = np.empty_like(pixels)
    for top in range(0, height, _BAND):
        ctx.check_canceled()
        lo, hi = max(0, top - _BAND_OVERLAP), min(height, top + _BAND + _BAND_OVERLAP)
        band = cv2.fastNlMeansDenoisingColored(
            np.ascontiguousarray(pixels[lo:hi]), None, h, h, 7, 21
        )
        end = min(height, top + _BAND)
        out[top:end] = band[top - lo : top - lo + (end - top)]
        ctx.progress(end / height)
    return out


@node(
    "image.denoise",
    title="Denoise",
    category="image",
    params=DenoiseParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def denoise(ctx: NodeContext, params: DenoiseParams, image: Image.Image) -> dict[str, object]:
    """Remove noise and grain while keeping edges (non-local means, bilateral or median)."""
    rgb, alpha = split_alpha(image)
    pixels = np.asarray(rgb, dtype=np.uint8)
    out: NDArray[Any]
    if params.method == "nlmeans":
        out = _nlmeans(ctx, pixels, params.strength)
    elif params.method == "bilateral":
        out = cv2.bilateralFilter(pixels, 9, params.strength * 6, 5)
    else:
        size = 3 if params.strength < 12 else 5
        out = cv2.medianBlur(np.ascontiguousarray(pixels), size)
    return {"image": with_alpha(Image.fromarray(np.asarray(out, dtype=np.uint8)), alpha)}


# --------------------------------------------------------------------------- colour


@node(
    "image.grayscale",
    title="Black and white",
    category="image",
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def grayscale(ctx: NodeContext, params: BaseModel, image: Image.Image) -> dict[str, object]:
    """Turn an image black and white (luminance; the result stays RGB with R = G = B)."""
    rgb, alpha = split_alpha(image)
    return {"image": with_alpha(rgb.convert("L").convert("RGB"), alpha)}


class SepiaParams(_Params):
    strength: float = Field(1.0, ge=0, le=1, description="0 unchanged, 1 full sepia.")


_SEPIA: Final = np.array(
    [[0.393, 0.769, 0.189], [0.349, 0.686, 0.168], [0.272, 0.534, 0.131]], dtype=np.float32
)


@node(
    "image.sepia",
    title="Sepia",
    category="image",
    params=SepiaParams,
    inputs=IMAGE_IN,
    outputs=IMAGE_OUT,
)
def sepia(ctx: NodeContext, params: SepiaParams, image: Image.Image) -> dict[str, object]:
    """Give an image the brown tone of an old photograph."""
    rgb, alpha = split_alpha(image)
    pixels = rgb_array(rgb)
    toned = pixels @ _SEPIA.T
    return {"image": with_alpha(from_array(_blend(pixels, toned, params.strength)), alpha)}


GradePreset = Literal["warm", "cool", "teal-orange", "vintage", "vivid", "noir"]
GRADE_PRESETS: Final[tuple[str, ...]] = ("warm", "cool", "teal-orange", "vintage", "vivid", "noir")


def _saturate(p: FloatArray, factor: float) -> FloatArray:
    grey = _luma(p)[..., None]
    out: FloatArray = grey + factor * (p - grey)
    return out


def _s_curve(p: FloatArray, amount: float) -> FloatArray:
    """Contrast around mid-grey with a smooth S-curve (no clipping at the ends)."""
    x = np.clip(p / 255.0, 0.0, 1.0)
    s = x * x * (3.0 - 2.0 * x)
    out: FloatArray = 255.0 * (x + amount * (s - x))
    return out


def _vignette(p: FloatArray, amount: float) -> FloatArray:
    h, w = p.shape[:2]
    ys = np.linspace(-1.0, 1.0, h, dtype=np.float32)[:, None]
    xs = np.linspace(-1.0, 1.0, w, dtype=np.float32)[None, :]
    r2 = np.clip((xs * xs + ys * ys) / 2.0, 0.0, 1.0)
    out: FloatArray = p * (1.0 - amount * r2)[..., None]
    return out


def grade(pixels: FloatArray, preset: str) -> FloatArray:
    """``pixels`` (float RGB 0–255) graded by ``preset``, at full strength."""
    p = pixels
    if preset == "warm":
        return _saturate(p * np.array([1.08, 1.02, 0.90], dtype=np.float32), 1.05)
    if preset == "cool":
        return _saturate(p * np.array([0.92, 1.0, 1.08], dtype=np.float32), 0.97)
    if preset == "teal-orange":
        lum = (_luma(p) / 255.0)[..., None]
        shadows, highlights = (1.0 - lum) ** 2, lum**2
        teal = np.array([-28.0, 6.0, 24.0], dtype=np.float32)
        orange = np.array([26.0, 6.0, -26.0], dtype=np.float32)
        return _s_curve(_saturate(p + shadows * teal + highlights * orange, 1.1), 0.25)
    if preset == "vintage":
        faded = 20.0 + p * (232.0 - 20.0) / 255.0  # lifted blacks, dimmed whites
        tinted = faded * np.array([1.06, 1.01, 0.86], dtype=np.float32) + 6.0
        return _vignette(_saturate(tinted, 0.72), 0.25)
    if preset == "vivid":
        return _s_curve(_saturate(p, 1.35), 0.2)
    if preset == "noir":
        grey = _luma(p)[..., None].repeat(3, axis=-1)
        return _vignette(_s_curve(grey, 0.6), 0.3)
    raise ValueError(f"unknown colour grade {preset!r}")


class ColorGradeParams(_Params):
    preset: GradePreset = Field("warm", description="The look: " + ", ".join(GRADE_PRESETS) + ".")
    strength: float = Field(1.0, ge=0, le=1, description="0 unchanged, 1 the full look.")


@node(
    "image.color_grade",
    title="Colour grade",
    category="image",
    params=ColorGradeParams,
    inputs={
        "image": Port("image"),
        "preset": Port("text", "Overrides the preset; 'none' leaves the image as it is", True),
        "strength": Port("number", "Overrides the strength (0-1)", optional=True),
    },
    outputs=IMAGE_OUT,
)
def color_grade(
    ctx: NodeContext,
    params: ColorGradeParams,
    image: Image.Image,
    preset: str | None = None,
    strength: float | None = None,
) -> dict[str, object]:
    """Give an image a colour look: warm, cool, teal-orange (film), vintage (faded, warm,
    vignette), vivid, or noir (contrasty black and white), at a strength."""
    name = (preset or "").strip().lower() or params.preset
    amount = strength_input(strength, params.strength)
    if name in ("none", "original", "natural"):
        return {"image": image.copy()}
    if name not in GRADE_PRESETS:
        raise NodeError(
            f"unknown colour grade {name!r}; use one of {', '.join(GRADE_PRESETS)} or none"
        )
    rgb, alpha = split_alpha(image)
    pixels = rgb_array(rgb)
    return {"image": with_alpha(from_array(_blend(pixels, grade(pixels, name), amount)), alpha)}


# --------------------------------------------------------------------------- auto enhance


class AutoEnhanceParams(_Params):
    strength: float = Field(0.7, ge=0, le=1, description="0 unchanged, 1 the full effect.")
    clip_limit: float = Field(
        2.0, ge=1, le=8, description="Local contrast limit (CLAHE); higher is punchier."
    )
    tiles: int = Field(8, ge=2, le=32, description="Local contrast grid, tiles per side.")


def auto_enhance_pixels(pixels: NDArray[np.uint8], clip_limit: float, tiles: int) -> FloatArray:
    """CLAHE on the lightness channel (Lab), then gentle auto levels; float RGB 0–255."""
    lab = cv2.cvtColor(np.ascontiguousarray(pixels), cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(tiles, tiles))
    lab[..., 0] = clahe.apply(lab[..., 0])
    out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB).astype(np.float32)
    # Auto levels on luminance, the same for every channel so hues do not shift; the
    # stretch is capped so a deliberately dark or misty photo is not forced to extremes.
    lum = _luma(out)
    low, high = np.percentile(lum, [0.5, 99.5])
    low, high = min(float(low), 40.0), max(float(high), 215.0)
    stretched: FloatArray = (out - low) * (255.0 / max(high - low, 1.0))
    return stretched


@node(
    "image.auto_enhance",
    title="Auto enhance",
    category="image",
    params=AutoEnhanceParams,
    inputs={
        "image": Port("image"),
        "strength": Port("number", "Overrides the strength (0-1)", optional=True),
    },
    outputs=IMAGE_OUT,
)
def auto_enhance(
    ctx: NodeContext,
    params: AutoEnhanceParams,
    image: Image.Image,
    strength: float | None = None,
) -> dict[str, object]:
    """Bring out detail and fix flat or dull light automatically: local contrast (CLAHE on
    lightness, colours kept) plus gentle auto levels."""
    amount = strength_input(strength, params.strength)
    rgb, alpha = split_alpha(image)
    pixels = np.asarray(rgb, dtype=np.uint8)
    enhanced = auto_enhance_pixels(pixels, params.clip_limit, params.tiles)
    out = _blend(pixels.astype(np.float32), enhanced, amount)
    return {"image": with_alpha(from_array(out), alpha)}


NODES = [
    adjust,
    blur,
    sharpen,
    denoise,
    grayscale,
    sepia,
    color_grade,
    auto_enhance,
]
