"""Tests for flowy.nodes.style: parsing free-text styles and applying them."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from flowy.nodes.style import Style, apply_style, parse_style
from flowy.nodes.vision import NEUTRAL_GREY


def _photo() -> Image.Image:
    rng = np.random.default_rng(7)
    return Image.fromarray(rng.integers(30, 220, (40, 50, 3), dtype=np.uint8))


def _grey() -> Image.Image:
    return Image.new("RGB", (32, 32), (128, 128, 128))


def test_studio_lighting_with_neutral_background() -> None:
    style = parse_style("Studio lighting, neutral background")
    assert style.recognized == ("studio lighting", "neutral background")
    assert style.backdrop == NEUTRAL_GREY
    assert style.brightness > 1.0
    assert style.contrast > 1.0


@pytest.mark.parametrize("text", [None, "", "   ", "please make it nice", "natural"])
def test_neutral_styles_change_nothing(text: str | None) -> None:
    style = parse_style(text)
    assert style.is_neutral
    assert style.backdrop is None
    image = _photo()
    result = apply_style(image, style)
    assert result is not image
    assert np.array_equal(np.asarray(result), np.asarray(image))


def test_unknown_words_are_ignored() -> None:
    style = parse_style("a warm, friendly smile for LinkedIn")
    assert style.recognized == ("warm",)
    assert style.warmth > 0


@pytest.mark.parametrize(
    ("text", "backdrop"),
    [
        ("white background", (242, 242, 242)),
        ("light grey background", (196, 196, 196)),
        ("light gray backdrop", (196, 196, 196)),
        ("DARK BACKGROUND", (40, 40, 42)),
        ("blue background", (70, 98, 136)),
        ("black background", (18, 18, 18)),
        ("neutral background", NEUTRAL_GREY),
    ],
)
def test_backdrop_colours(text: str, backdrop: tuple[int, int, int]) -> None:
    style = parse_style(text)
    assert style.backdrop == backdrop
    assert style.recognized == (" ".join(text.lower().replace("grey", "gray").split()),)
    # A background colour is not a look: "dark background" does not darken the photo.
    assert style.is_neutral


def test_last_backdrop_wins() -> None:
    assert parse_style("white background... no, black background").backdrop == (18, 18, 18)


def test_longest_phrase_wins() -> None:
    soft = parse_style("soft light")
    assert soft.recognized == ("soft light",)
    assert parse_style("soft, soft light").softness == soft.softness  # synonyms count once
    assert parse_style("dark").brightness < 1.0


def test_words_inside_other_words_do_not_match() -> None:
    assert parse_style("cooling tower, darkroom, software").recognized == ()


def test_effects_add_up_and_clamp() -> None:
    bright = parse_style("bright")
    both = parse_style("bright studio lighting")
    assert both.brightness > bright.brightness > 1.0
    assert parse_style("warm cool").warmth == 0.0
    extreme = parse_style("dramatic, high contrast, moody, studio lighting")
    assert 1.0 < extreme.contrast <= 1.6


@pytest.mark.parametrize("text", ["black and white", "B&W", "monochrome", "greyscale", "b/w"])
def test_black_and_white_is_grey(text: str) -> None:
    style = parse_style(text)
    assert style.grayscale
    out = np.asarray(apply_style(_photo(), style))
    assert np.array_equal(out[..., 0], out[..., 1])
    assert np.array_equal(out[..., 1], out[..., 2])


def test_warm_raises_red_over_blue() -> None:
    out = np.asarray(apply_style(_grey(), parse_style("warm")), dtype=np.float64)
    assert out[..., 0].mean() / out[..., 2].mean() > 1.1


def test_cool_raises_blue_over_red() -> None:
    out = np.asarray(apply_style(_grey(), parse_style("cool")), dtype=np.float64)
    assert out[..., 2].mean() / out[..., 0].mean() > 1.1


def test_bright_and_dark() -> None:
    image = _photo()
    base = np.asarray(image, dtype=np.float64).mean()
    assert np.asarray(apply_style(image, parse_style("bright")), dtype=np.float64).mean() > base
    assert np.asarray(apply_style(image, parse_style("moody")), dtype=np.float64).mean() < base


def test_vivid_and_muted_change_saturation() -> None:
    image = _photo()

    def spread(img: Image.Image) -> float:
        pixels = np.asarray(img, dtype=np.float64)
        return float((pixels.max(axis=-1) - pixels.min(axis=-1)).mean())

    assert spread(apply_style(image, parse_style("vivid"))) > spread(image)
    assert spread(apply_style(image, parse_style("muted"))) < spread(image)


def test_soft_light_changes_the_image() -> None:
    image = _photo()
    out = apply_style(image, parse_style("soft light"))
    assert out.size == image.size and out.mode == "RGB"
    assert not np.array_equal(np.asarray(out), np.asarray(image))


def test_alpha_is_preserved() -> None:
    image = Image.new("RGBA", (8, 8), (120, 120, 120, 77))
    out = apply_style(image, parse_style("black and white, bright, warm"))
    assert out.mode == "RGBA"
    assert out.getpixel((3, 3))[3] == 77  # type: ignore[index]


def test_style_defaults_are_neutral() -> None:
    assert Style().is_neutral
    assert parse_style(None) == Style()
