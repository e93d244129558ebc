"""Turn a free-text photo "style" (e.g. "studio lighting, warm, white background") into
light and colour adjustments, and apply them to an image.

:func:`parse_style` understands a fixed vocabulary of phrases, case-insensitively and in
any order; words it does not know are ignored, so any text is a valid style.  Effects of
several phrases add up and are clamped to tasteful ranges.  :func:`apply_style` applies
the result with Pillow; the backdrop colour is only carried, for the background step.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Final

from PIL import Image, ImageChops, ImageEnhance, ImageFilter

from flowy.nodes.vision import NEUTRAL_GREY

logger = logging.getLogger(__name__)

Color = tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    """Adjustments parsed from a style text; the defaults change nothing.

    ``brightness``, ``contrast`` and ``saturation`` are multipliers (1 = unchanged);
    ``warmth`` is an offset (0 = unchanged, +0.1 ≈ R +10 % / B −10 %, negative = cooler);
    ``softness`` 0–1 is the strength of a diffusion glow; ``backdrop`` the requested
    background colour, if any; ``recognized`` the vocabulary phrases found, in order.
    """

    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    warmth: float = 0.0
    grayscale: bool = False
    softness: float = 0.0
    backdrop: Color | None = None
    recognized: tuple[str, ...] = field(default=())

    @property
    def is_neutral(self) -> bool:
        """True when applying this style leaves the pixels unchanged."""
        return (
            self.brightness == 1.0
            and self.contrast == 1.0
            and self.saturation == 1.0
            and self.warmth == 0.0
            and not self.grayscale
            and self.softness == 0.0
        )


@dataclass(frozen=True)
class _Effect:
    """What one phrase contributes: deltas added onto the neutral style."""

    brightness: float = 0.0
    contrast: float = 0.0
    saturation: float = 0.0
    warmth: float = 0.0
    softness: float = 0.0
    grayscale: bool = False
    backdrop: Color | None = None


# Synonyms share one _Effect object, and each effect counts once however many of its
# synonyms appear: "soft, soft light" is not twice as soft.
_STUDIO = _Effect(brightness=0.05, contrast=0.08)
_SOFT = _Effect(softness=0.35, contrast=-0.08)
_DRAMATIC = _Effect(contrast=0.25, brightness=-0.04)
_HIGH_CONTRAST = _Effect(contrast=0.25)
_LOW_CONTRAST = _Effect(contrast=-0.15)
_BRIGHT = _Effect(brightness=0.12)
_DARK = _Effect(brightness=-0.12)
_MOODY = _Effect(brightness=-0.10, contrast=0.10, saturation=-0.10)
_WARM = _Effect(warmth=0.08)
_COOL = _Effect(warmth=-0.08)
_VIVID = _Effect(saturation=0.25)
_MUTED = _Effect(saturation=-0.30)
_MONO = _Effect(grayscale=True)
_NATURAL = _Effect()

_LOOKS: Final[dict[str, _Effect]] = {
    "studio lighting": _STUDIO,
    "studio light": _STUDIO,
    "studio": _STUDIO,
    "soft light": _SOFT,
    "soft lighting": _SOFT,
    "soft": _SOFT,
    "dramatic": _DRAMATIC,
    "dramatic lighting": _DRAMATIC,
    "high contrast": _HIGH_CONTRAST,
    "contrasty": _HIGH_CONTRAST,
    "low contrast": _LOW_CONTRAST,
    "bright": _BRIGHT,
    "brighter": _BRIGHT,
    "high key": _BRIGHT,
    "dark": _DARK,
    "darker": _DARK,
    "low key": _DARK,
    "moody": _MOODY,
    "warm": _WARM,
    "warmer": _WARM,
    "warm tones": _WARM,
    "cool": _COOL,
    "cooler": _COOL,
    "cold": _COOL,
    "cool tones": _COOL,
    "vivid": _VIVID,
    "vibrant": _VIVID,
    "colorful": _VIVID,
    "saturated": _VIVID,
    "muted": _MUTED,
    "desaturated": _MUTED,
    "subdued": _MUTED,
    "black and white": _MONO,
    "black & white": _MONO,
    "b&w": _MONO,
    "b/w": _MONO,
    "monochrome": _MONO,
    "grayscale": _MONO,
    "natural": _NATURAL,
    "neutral": _NATURAL,
}

# Backdrop colours, muted the way studio paper is (pure saturated colours look cheap).
_BACKDROP_COLORS: Final[dict[str, Color]] = {
    "neutral": NEUTRAL_GREY,
    "gray": NEUTRAL_GREY,
    "light gray": (196, 196, 196),
    "dark gray": (64, 64, 64),
    "white": (242, 242, 242),
    "black": (18, 18, 18),
    "dark": (40, 40, 42),
    "blue": (70, 98, 136),
    "light blue": (170, 194, 214),
    "navy": (32, 44, 78),
    "green": (84, 110, 88),
    "beige": (222, 210, 188),
    "cream": (236, 228, 208),
    "brown": (104, 82, 64),
}


def _backdrop_effects() -> dict[str, _Effect]:
    """The phrases "<colour> background" and "<colour> backdrop" for every colour."""
    effects: dict[str, _Effect] = {}
    for name, color in _BACKDROP_COLORS.items():
        effect = _Effect(backdrop=color)
        effects[f"{name} background"] = effect
        effects[f"{name} backdrop"] = effect
    return effects


_VOCABULARY: Final[dict[str, _Effect]] = {**_LOOKS, **_backdrop_effects()}

# One regex, alternatives longest first, so "neutral background" wins over "neutral"
# and "soft light" over "soft".  Phrases must stand alone: not inside a longer word
# ("cool" in "cooling") and not glued to "&" or "/" ("b&w").
_PHRASE_RE: Final = re.compile(
    r"(?<![\w&/])(?:"
    + "|".join(
        re.escape(p).replace(r"\ ", r"\s+") for p in sorted(_VOCABULARY, key=len, reverse=True)
    )
    + r")(?![\w&/])"
)

# Spelling variants folded before matching.
_SPELLINGS: Final[tuple[tuple[str, str], ...]] = (
    (r"\bgrey", "gray"),
    (r"\bcolour", "color"),
    (r"[-_]", " "),
)

# Clamp ranges for the combined effects: stacked phrases must still look like a photo.
_BRIGHTNESS_RANGE: Final = (0.6, 1.5)
_CONTRAST_RANGE: Final = (0.6, 1.6)
_SATURATION_RANGE: Final = (0.0, 2.0)
_WARMTH_RANGE: Final = (-0.3, 0.3)
_SOFTNESS_RANGE: Final = (0.0, 1.0)


# --------------------------------------------------------------------------- parsing


def parse_style(text: str | None) -> Style:
    """Parse a free-text style; ``None``, empty or unknown text gives the neutral style.

    Never raises: unknown words are ignored (and logged at debug level).
    """
    if not text or not text.strip():
        return Style()
    phrases = _find_phrases(text)
    style = _combine(phrases)
    logger.debug("style %r -> %s", text, style)
    return style


def _normalise(text: str) -> str:
    """Lower-case and fold spelling variants (grey/gray, colour/color, hyphens)."""
    folded = text.lower()
    for pattern, replacement in _SPELLINGS:
        folded = re.sub(pattern, replacement, folded)
    return folded


def _find_phrases(text: str) -> list[str]:
    """Vocabulary phrases in ``text``, in order of appearance, without repeats."""
    found: list[str] = []
    for match in _PHRASE_RE.finditer(_normalise(text)):
        phrase = " ".join(match.group(0).split())  # collapse inner whitespace
        if phrase not in found:
            found.append(phrase)
    return found


def _combine(phrases: list[str]) -> Style:
    """Add up the effects of ``phrases`` (each effect once) and clamp the totals."""
    brightness = contrast = saturation = warmth = softness = 0.0
    grayscale = False
    backdrop: Color | None = None
    applied: list[_Effect] = []
    for phrase in phrases:
        effect = _VOCABULARY[phrase]
        if effect.backdrop is not None:
            backdrop = effect.backdrop  # the last background named wins
        if any(effect is seen for seen in applied):
            continue
        applied.append(effect)
        brightness += effect.brightness
        contrast += effect.contrast
        saturation += effect.saturation
        warmth += effect.warmth
        softness += effect.softness
        grayscale = grayscale or effect.grayscale
    return Style(
        brightness=_clamp(1.0 + brightness, _BRIGHTNESS_RANGE),
        contrast=_clamp(1.0 + contrast, _CONTRAST_RANGE),
        saturation=_clamp(1.0 + saturation, _SATURATION_RANGE),
        warmth=_clamp(warmth, _WARMTH_RANGE),
        grayscale=grayscale,
        softness=_clamp(softness, _SOFTNESS_RANGE),
        backdrop=backdrop,
        recognized=tuple(phrases),
    )


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    # round() keeps sums like 1.05 + 0.12 free of float noise (1.1700000000000002).
    return round(min(max(value, bounds[0]), bounds[1]), 6)


# --------------------------------------------------------------------------- applying


def apply_style(image: Image.Image, style: Style) -> Image.Image:
    """Apply ``style``'s light and colour adjustments to ``image``.

    Returns a new image in the same mode family: RGB stays RGB; an alpha channel is
    kept untouched; other modes are converted to RGB.  A neutral style returns an equal
    copy.  ``style.backdrop`` is not used here (the background step uses it).
    """
    if style.is_neutral:
        return image.copy()
    alpha = image.getchannel("A") if "A" in image.getbands() else None
    rgb = image.convert("RGB")
    if style.warmth:
        rgb = _warm(rgb, style.warmth)
    if style.brightness != 1.0:
        rgb = ImageEnhance.Brightness(rgb).enhance(style.brightness)
    if style.contrast != 1.0:
        rgb = ImageEnhance.Contrast(rgb).enhance(style.contrast)
    if style.grayscale:
        rgb = rgb.convert("L").convert("RGB")
    elif style.saturation != 1.0:
        rgb = ImageEnhance.Color(rgb).enhance(style.saturation)
    if style.softness > 0:
        rgb = _soften(rgb, style.softness)
    if alpha is not None:
        rgb.putalpha(alpha)
    return rgb


def _warm(image: Image.Image, warmth: float) -> Image.Image:
    """Shift colour temperature: positive scales red up and blue down, negative reverses.

    Green moves a little with red so warm skin does not turn magenta.
    """
    gains = (1.0 + warmth, 1.0 + 0.2 * warmth, 1.0 - warmth)
    table = [min(255, max(0, round(v * gain))) for gain in gains for v in range(256)]
    return image.point(table)


def _soften(image: Image.Image, softness: float) -> Image.Image:
    """Diffusion glow: blend in a blurred copy that only ever lightens.

    Taking the lighter of sharp and blurred spreads highlights into the shadows (the
    look of a diffusion filter) while skin texture underneath stays sharp-ish.
    """
    radius = max(1.0, 0.012 * max(image.size))
    blurred = image.filter(ImageFilter.GaussianBlur(radius))
    glow = ImageChops.lighter(image, blurred)
    return Image.blend(image, glow, alpha=0.5 * softness)
