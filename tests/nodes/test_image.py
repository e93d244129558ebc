"""The image nodes on real photos from scikit-image: geometry, adjustments, text, logos,
grids and backgrounds, called directly with a small fake context."""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageEnhance
from skimage import data

from flowy.engine.graph import parse_workflow
from flowy.engine.registry import default_registry
from flowy.engine.spec import Artifact, NodeType
from flowy.errors import GraphInvalid, NodeError, RunCanceled
from flowy.media.fetch import FetchPolicy
from flowy.nodes import av, image, image_compose, image_ops, image_text
from flowy.nodes import io as io_nodes
from flowy.nodes.vision import detect_faces

# Where Eileen Collins' face is in the 512×512 astronaut image (see test_vision).
FACE = (slice(80, 170), slice(185, 255))  # rows, columns


@dataclass
class FakeContext:
    run_id: str = "run_1"
    node_id: str = "node_1"
    input_value: object = None
    media: Any = None
    max_pixels: int = 64_000_000
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)
    canceled: bool = False
    progressed: list[float] = field(default_factory=list)

    def check_canceled(self) -> None:
        if self.canceled:
            raise RunCanceled("run was canceled", self.node_id)

    def secret(self, name: str) -> str:
        raise NodeError(f"no secret {name}")

    def progress(self, fraction: float) -> None:
        self.progressed.append(fraction)


def call(nt: NodeType, params: dict[str, Any] | None = None, **inputs: Any) -> Any:
    """Run a node function the way the executor does; the value of its only/first output."""
    ctx = inputs.pop("ctx", None) or FakeContext()
    result = nt.run(ctx, nt.params.model_validate(params or {}), **inputs)
    return result[next(iter(nt.outputs))]


def px(img: Image.Image) -> np.ndarray:
    return np.asarray(img, dtype=np.float64)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def coffee() -> Image.Image:
    return Image.fromarray(data.coffee())  # 600×400


@pytest.fixture(scope="module")
def cat() -> Image.Image:
    return Image.fromarray(data.chelsea())  # 451×300


@pytest.fixture(scope="module")
def logo() -> Image.Image:
    """scikit-image's round logo (500×500), its white surround made transparent."""
    pixels = data.logo().copy()
    pixels[..., 3] = np.where(pixels[..., :3].min(axis=2) > 245, 0, 255)
    return Image.fromarray(pixels)


def invalid(node_type: str, params: dict[str, Any], inputs: tuple[str, ...] = ("image",)) -> str:
    """The validation message of a one-node workflow with these params."""
    nodes = [
        {"id": "node_1", "type": "input.image_url"},
        {
            "id": "node_2",
            "type": node_type,
            "params": params,
            "inputs": {name: {"node": "node_1", "port": "image"} for name in inputs},
        },
        {
            "id": "node_3",
            "type": "output.json",
            "inputs": {"value": {"node": "node_1", "port": "image"}},
        },
    ]
    with pytest.raises(GraphInvalid) as caught:
        parse_workflow({"nodes": nodes}, default_registry(load_entry_points=False))
    return caught.value.message


# --------------------------------------------------------------------------- catalog


def test_every_media_node_is_in_the_catalog_with_a_description() -> None:
    registry = default_registry(load_entry_points=False)
    for module in (image, image_ops, image_compose, image_text, av, io_nodes):
        for nt in module.NODES:
            assert registry.get(nt.type) is nt
            entry = nt.describe()
            assert entry["description"] and entry["params"]["type"] == "object"
            assert entry["params"].get("additionalProperties") is False or not entry["params"].get(
                "properties"
            )
    assert {"image.resize", "image.face_crop", "image.style"} <= {t.type for t in registry}
    ports = registry.get("video.extract_frame")
    assert ports is not None and ports.describe()["inputs"]["video"]["type"] == "file"
    assert registry.get("output.file") is not None


def test_bad_params_are_refused_when_the_workflow_is_saved() -> None:
    assert "node_2: param width: Input should be greater than or equal to 1" in invalid(
        "image.crop", {"width": 0, "height": 10}
    )
    assert "'bogus' is not a colour" in invalid("image.pad", {"color": "bogus"})
    assert "param preset: Input should be 'warm'" in invalid("image.color_grade", {"preset": "x"})
    assert "param sharpness: Extra inputs are not permitted" in invalid(
        "image.adjust", {"sharpness": 2}
    )
    assert "param labels: List should have at most 8 items" in invalid(
        "image.grid", {"labels": ["a"] * 9}, ("image_1",)
    )
    assert "param size: Input should be less than or equal to 0.5" in invalid(
        "image.text_overlay", {"size": 2}
    )


# --------------------------------------------------------------------------- geometry


def test_fit_keeps_the_aspect_inside_the_box(astronaut: Image.Image, cat: Image.Image) -> None:
    assert call(image.fit, {"width": 300, "height": 200}, image=astronaut).size == (200, 200)
    assert call(image.fit, {"width": 200, "height": 200}, image=cat).size == (200, 133)
    assert call(image.fit, {"width": 2000, "height": 2000}, image=cat).size == (2000, 1330)
    same = call(image.fit, {"width": 2000, "height": 2000, "upscale": False}, image=cat)
    assert same.size == cat.size and same is not cat


def test_cover_fills_exactly_and_can_keep_the_face(astronaut: Image.Image) -> None:
    assert call(image.cover, {"width": 200, "height": 100}, image=astronaut).size == (200, 100)
    centred = call(image.cover, {"width": 1200, "height": 630}, image=astronaut)
    framed = call(image.cover, {"width": 1200, "height": 630, "focus": "face"}, image=astronaut)
    assert centred.size == framed.size == (1200, 630)
    face = detect_faces(framed)[0]
    assert face.y > 10 and face.y + face.height < 620  # the whole face, not cut at the top
    assert not detect_faces(centred) or detect_faces(centred)[0].y < face.y
    top = call(image.cover, {"width": 512, "height": 100, "focus": "top"}, image=astronaut)
    assert np.abs(px(top) - px(astronaut)[:100]).mean() < 1


def test_pad_centres_the_image_on_a_colour(cat: Image.Image) -> None:
    out = call(image.pad, {"width": 500, "height": 400, "color": "#ff0000"}, image=cat)
    assert out.size == (500, 400) and out.mode == "RGB"
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert np.array_equal(px(out)[50:350, 24:475], px(cat))
    clear = call(image.pad, {"width": 500, "height": 400, "color": "transparent"}, image=cat)
    assert clear.mode == "RGBA" and clear.getpixel((0, 0))[3] == 0
    with pytest.raises(NodeError, match=r"the image is 451×300, larger than the 400×400 canvas"):
        call(image.pad, {"width": 400, "height": 400}, image=cat)


def test_crop_cuts_the_rectangle_or_says_what_is_outside(astronaut: Image.Image) -> None:
    out = call(image.crop, {"x": 10, "y": 20, "width": 100, "height": 50}, image=astronaut)
    assert np.array_equal(px(out), px(astronaut)[20:70, 10:110])
    with pytest.raises(NodeError) as caught:
        call(image.crop, {"x": 500, "y": 0, "width": 100, "height": 600}, image=astronaut)
    message = caught.value.message
    assert message.startswith("crop x=500, y=0, 100×600 does not fit the 512×512 image")
    assert "x+width=600 is past the image width 512" in message
    assert "y+height=600 is past the image height 512" in message


def test_rotate_and_flip(cat: Image.Image) -> None:
    quarter = call(image.rotate, {"angle": 90}, image=cat)
    assert np.array_equal(px(quarter), np.rot90(px(cat)))
    tilted = call(image.rotate, {"angle": 30}, image=cat)
    assert tilted.mode == "RGBA" and tilted.width > cat.width and tilted.height > cat.height
    assert tilted.getpixel((0, 0))[3] == 0  # a transparent corner
    kept = call(image.rotate, {"angle": -15, "expand": False, "fill": "white"}, image=cat)
    assert kept.size == cat.size and kept.mode == "RGB" and kept.getpixel((0, 0)) == (255,) * 3
    assert np.array_equal(px(call(image.flip, image=cat)), px(cat)[:, ::-1])
    assert np.array_equal(px(call(image.flip, {"direction": "vertical"}, image=cat)), px(cat)[::-1])


def test_info_and_convert(cat: Image.Image, logo: Image.Image) -> None:
    result = image.info.run(FakeContext(), image.info.params(), image=cat)
    assert result["info"] == {
        "width": 451,
        "height": 300,
        "mode": "RGB",
        "has_alpha": False,
        "orientation": "landscape",
    }
    assert (result["width"], result["height"]) == (451, 300)
    assert call(image.info, image=logo)["has_alpha"] is True
    jpeg = call(image.convert, {"format": "jpeg", "quality": 80, "filename": "cat"}, image=cat)
    assert isinstance(jpeg, Artifact) and jpeg.content_type == "image/jpeg"
    assert jpeg.filename == "cat.jpg" and Image.open(io.BytesIO(jpeg.data)).size == (451, 300)
    webp = call(image.convert, {"format": "webp"}, image=logo)
    assert webp.filename == "image.webp" and Image.open(io.BytesIO(webp.data)).mode == "RGBA"
    assert webp.content_type == "image/webp"


def test_output_size_is_bounded_by_the_pixel_limit(cat: Image.Image) -> None:
    with pytest.raises(NodeError, match="over the limit of 1000000 pixels"):
        call(
            image.cover,
            {"width": 2000, "height": 2000},
            image=cat,
            ctx=FakeContext(max_pixels=10**6),
        )


# --------------------------------------------------------------------------- adjustments


def test_adjust_defaults_change_nothing_and_each_control_works(astronaut: Image.Image) -> None:
    base = px(astronaut)
    assert np.array_equal(px(call(image_ops.adjust, image=astronaut)), base)
    brighter = px(call(image_ops.adjust, {"brightness": 1.4}, image=astronaut))
    assert brighter.mean() > base.mean() + 20
    flatter = px(call(image_ops.adjust, {"contrast": 0.5}, image=astronaut))
    assert flatter.std() < 0.6 * base.std()
    grey = px(call(image_ops.adjust, {"saturation": 0}, image=astronaut))
    assert np.abs(grey[..., 0] - grey[..., 2]).max() <= 1
    lifted = px(call(image_ops.adjust, {"gamma": 2}, image=astronaut))
    assert lifted.mean() > base.mean() + 25
    warm = px(call(image_ops.adjust, {"temperature": 1}, image=astronaut))
    assert (warm[..., 0] - warm[..., 2]).mean() > (base[..., 0] - base[..., 2]).mean() + 30


def _detail(pixels: np.ndarray) -> float:
    grey = pixels.mean(axis=2) if pixels.ndim == 3 else pixels
    return float(np.abs(np.diff(grey, axis=0)).mean() + np.abs(np.diff(grey, axis=1)).mean())


def test_blur_sharpen_and_denoise(astronaut: Image.Image) -> None:
    base = _detail(px(astronaut))
    assert _detail(px(call(image_ops.blur, {"radius": 3}, image=astronaut))) < 0.5 * base
    assert (
        _detail(px(call(image_ops.blur, {"radius": 3, "method": "box"}, image=astronaut)))
        < 0.5 * base
    )
    assert _detail(px(call(image_ops.sharpen, {"amount": 2}, image=astronaut))) > 1.3 * base
    clean = px(astronaut)
    rng = np.random.default_rng(7)
    noisy = np.clip(clean + rng.normal(0, 15, clean.shape), 0, 255).astype(np.uint8)
    ctx = FakeContext()
    for method in ("nlmeans", "bilateral", "median"):
        out = px(
            call(
                image_ops.denoise,
                {"method": method, "strength": 10},
                image=Image.fromarray(noisy),
                ctx=ctx,
            )
        )
        assert np.abs(out - clean).mean() < 0.8 * np.abs(noisy - clean).mean(), method
    assert ctx.progressed and ctx.progressed[-1] == 1.0


def test_denoise_stops_when_the_run_is_canceled(astronaut: Image.Image) -> None:
    with pytest.raises(RunCanceled):
        call(image_ops.denoise, image=astronaut, ctx=FakeContext(canceled=True))


def test_grayscale_and_sepia_keep_alpha(astronaut: Image.Image, logo: Image.Image) -> None:
    grey = px(call(image_ops.grayscale, image=astronaut))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])
    grey_logo = call(image_ops.grayscale, image=logo)
    assert grey_logo.mode == "RGBA"
    assert np.array_equal(np.asarray(grey_logo)[..., 3], np.asarray(logo)[..., 3])
    toned = px(call(image_ops.sepia, image=astronaut))
    assert (toned[..., 0] >= toned[..., 1]).mean() > 0.99 and (
        toned[..., 1] >= toned[..., 2]
    ).mean() > 0.99
    assert np.array_equal(
        px(call(image_ops.sepia, {"strength": 0}, image=astronaut)), px(astronaut)
    )


def test_colour_grades(astronaut: Image.Image) -> None:
    base = px(astronaut)
    warmth = (base[..., 0] - base[..., 2]).mean()
    warm = px(call(image_ops.color_grade, {"preset": "warm"}, image=astronaut))
    cool = px(call(image_ops.color_grade, {"preset": "cool"}, image=astronaut))
    assert (warm[..., 0] - warm[..., 2]).mean() > warmth + 10
    assert (cool[..., 0] - cool[..., 2]).mean() < warmth - 10
    noir = px(call(image_ops.color_grade, {"preset": "noir"}, image=astronaut))
    assert np.abs(noir[..., 0] - noir[..., 2]).max() <= 1
    for preset in image_ops.GRADE_PRESETS:
        graded = px(call(image_ops.color_grade, {"preset": preset}, image=astronaut))
        assert graded.shape == base.shape and np.abs(graded - base).mean() > 3, preset
    half = px(call(image_ops.color_grade, {"preset": "vintage", "strength": 0.5}, image=astronaut))
    full = px(call(image_ops.color_grade, {"preset": "vintage"}, image=astronaut))
    assert np.abs(half - (base + full) / 2).mean() < 1
    # Ports override the params; "none" leaves the photo alone; unknown names fail.
    assert np.array_equal(px(call(image_ops.color_grade, image=astronaut, preset="none")), base)
    assert np.array_equal(px(call(image_ops.color_grade, image=astronaut, strength=0)), base)
    with pytest.raises(NodeError, match="unknown colour grade 'sparkly'; use one of warm, cool"):
        call(image_ops.color_grade, image=astronaut, preset="Sparkly")
    with pytest.raises(NodeError, match="strength must be between 0 and 1, got 3"):
        call(image_ops.color_grade, image=astronaut, strength=3)


def _local_contrast(pixels: np.ndarray) -> float:
    """Mean absolute difference from a 16-pixel local mean, on lightness."""
    grey = Image.fromarray(pixels.mean(axis=2).astype(np.uint8))
    local = grey.resize((grey.width // 16, grey.height // 16), Image.Resampling.BOX)
    smooth = local.resize(grey.size, Image.Resampling.BILINEAR)
    return float(np.abs(px(grey) - px(smooth)).mean())


def test_auto_enhance_raises_local_contrast_and_keeps_colours(cat: Image.Image) -> None:
    flat = ImageEnhance.Contrast(cat).enhance(0.4)
    out = px(call(image_ops.auto_enhance, {"strength": 1}, image=flat))
    assert _local_contrast(out) > 1.5 * _local_contrast(px(flat))
    assert out.std() > 1.5 * px(flat).std()  # the levels were stretched too
    # Lightness changes, hue does not: the red-minus-blue order of the cat stays.
    red_minus_blue = out[..., 0] - out[..., 2]
    assert (np.sign(red_minus_blue) == np.sign(px(flat)[..., 0] - px(flat)[..., 2])).mean() > 0.9
    assert np.array_equal(px(call(image_ops.auto_enhance, image=flat, strength=0)), px(flat))
    with pytest.raises(NodeError, match="strength must be between 0 and 1, got -1"):
        call(image_ops.auto_enhance, image=flat, strength=-1)


# --------------------------------------------------------------------------- text


def _changed(before: Image.Image, after: Image.Image) -> np.ndarray:
    return np.abs(px(after.convert("RGB")) - px(before.convert("RGB"))).max(axis=2) > 0


def test_the_typeface_is_dejavu_sans_with_accents() -> None:
    font = image_text.load_font(40)
    assert font.getname() == ("DejaVu Sans", "Book")
    assert image_text.load_font(40, bold=True).getname() == ("DejaVu Sans", "Bold")
    assert font.getbbox("é")[3] > font.getbbox("e")[3] - 1 and font.getlength("©") > 10


def test_text_overlay_writes_only_where_it_is_placed(astronaut: Image.Image) -> None:
    out = call(image_text.text_overlay, {"position": "bottom-left"}, image=astronaut, text="Hello")
    changed = _changed(astronaut, out)
    assert changed[380:, :256].sum() > 500  # the text is in the bottom-left
    assert not changed[:300].any() and not changed[:, 300:].any()
    white = (px(out)[380:, :256].min(axis=2) > 240).sum()
    assert white > 300  # white type
    boxed = call(
        image_text.text_overlay,
        {"position": "top", "background": "box", "size": 0.06},
        image=astronaut,
        text="Top",
        subtitle="and a subtitle",
    )
    changed = _changed(astronaut, boxed)
    assert changed[:150].sum() > 2000 and not changed[250:].any()
    graded = call(image_text.text_overlay, {"background": "gradient"}, image=astronaut, text="Hi")
    assert px(graded)[480:].mean() < px(astronaut)[480:].mean() - 25  # darkened at the bottom
    assert not _changed(astronaut, graded)[:200].any()


def test_long_text_wraps_shrinks_and_is_cut(astronaut: Image.Image) -> None:
    font = image_text.load_font(40)
    lines = image_text.wrap("the quick brown fox jumps over the lazy dog " * 3, font, 300)
    assert len(lines) > 3 and all(font.getlength(line) <= 300 for line in lines)
    laid = image_text.layout([("word " * 200, 40, True)], 300, 3)
    assert len(laid) == 3 and laid[-1].text.endswith("…") and laid[0].size == 20
    assert image_text.wrap("Supercalifragilistic", font, 100)[0] != "Supercalifragilistic"
    out = call(image_text.text_overlay, image=astronaut, text="word " * 500)
    assert out.size == astronaut.size
    with pytest.raises(NodeError, match="no text to write"):
        call(image_text.text_overlay, image=astronaut, text="  ")


def test_text_watermark_in_a_corner_or_tiled(coffee: Image.Image) -> None:
    out = call(image_text.watermark_text, {"text": "© Flowy"}, image=coffee)
    changed = _changed(coffee, out)
    assert (
        changed[300:, 400:].sum() > 300 and not changed[:250].any() and not changed[:, :350].any()
    )
    # Translucent: the photo still shows through the letters.
    letters = changed[300:, 400:]
    assert np.abs(px(out)[300:, 400:][letters] - px(coffee)[300:, 400:][letters]).mean() < 150
    left = call(image_text.watermark_text, image=coffee, text="Mine", position="top-left")
    assert _changed(coffee, left)[:100, :200].any() and not _changed(coffee, left)[200:].any()
    tiled = call(image_text.watermark_text, {"text": "PREVIEW", "position": "tiled"}, image=coffee)
    changed = _changed(coffee, tiled)
    for quadrant in (
        changed[:200, :300],
        changed[:200, 300:],
        changed[200:, :300],
        changed[200:, 300:],
    ):
        assert quadrant.mean() > 0.05
    with pytest.raises(NodeError, match="unknown position 'middle'; use one of top-left"):
        call(image_text.watermark_text, image=coffee, text="x", position="middle")
    with pytest.raises(NodeError, match="no watermark text"):
        call(image_text.watermark_text, image=coffee)


# --------------------------------------------------------------------------- compose


def test_composite_places_the_overlay_at_x_y(coffee: Image.Image, logo: Image.Image) -> None:
    out = call(
        image_compose.composite, {"x": 50, "y": 40, "scale": 0.2}, image=coffee, overlay=logo
    )
    assert out.size == coffee.size and out.mode == "RGB"
    changed = _changed(coffee, out)
    rows, cols = np.nonzero(changed)
    assert rows.min() >= 40 and rows.max() < 140 and cols.min() >= 50 and cols.max() < 150
    faint = call(
        image_compose.composite,
        {"x": 50, "y": 40, "scale": 0.2, "opacity": 0.3},
        image=coffee,
        overlay=logo,
    )
    strong_diff = np.abs(px(out) - px(coffee)).sum()
    assert 0.2 * strong_diff < np.abs(px(faint) - px(coffee)).sum() < 0.4 * strong_diff
    edge = call(
        image_compose.composite, {"x": -50, "y": 350}, image=coffee, overlay=logo.resize((100, 100))
    )
    assert _changed(coffee, edge)[350:, :50].any()
    with pytest.raises(NodeError, match="lies entirely outside the 600×400 image"):
        call(image_compose.composite, {"x": 600}, image=coffee, overlay=logo)


def test_logo_watermark_goes_in_its_corner(cat: Image.Image, logo: Image.Image) -> None:
    out = call(image_compose.watermark_logo, {"size": 0.2, "margin": 0.05}, image=cat, logo=logo)
    changed = _changed(cat, out)
    rows, cols = np.nonzero(changed)
    # 20 % of 300 px high (a square logo), 15 px from the bottom-right corner.
    assert rows.max() < 300 - 14 and cols.max() < 451 - 14
    assert rows.min() >= 300 - 15 - 61 and cols.min() >= 451 - 15 - 61
    center = call(image_compose.watermark_logo, {"position": "center"}, image=cat, logo=logo)
    rows, cols = np.nonzero(_changed(cat, center))
    assert (
        abs((rows.min() + rows.max()) / 2 - 150) < 3
        and abs((cols.min() + cols.max()) / 2 - 225) < 3
    )


def test_grid_layout_sizes_and_labels(
    astronaut: Image.Image, coffee: Image.Image, cat: Image.Image
) -> None:
    params = {"cell_width": 100, "cell_height": 80, "gap": 10}
    one = call(image_compose.grid, params, image_1=astronaut)
    assert one.size == (120, 100)
    three = call(image_compose.grid, params, image_1=astronaut, image_4=coffee, image_8=cat)
    assert three.size == (2 * 100 + 3 * 10, 2 * 80 + 3 * 10)  # 2 columns x 2 rows
    assert three.getpixel((5, 5)) == (255, 255, 255)
    cell = px(image.cover_crop(astronaut, (100, 80)))
    assert np.abs(px(three)[10:90, 10:110] - cell).mean() < 1  # image_1 in the first cell
    assert np.abs(px(three)[100:180, 10:110] - px(image.cover_crop(cat, (100, 80)))).mean() < 1
    wide = call(
        image_compose.grid, {**params, "columns": 3}, image_1=astronaut, image_2=coffee, image_3=cat
    )
    assert wide.size == (340, 100)
    labelled = call(
        image_compose.grid,
        {**params, "labels": ["one", "", "three"], "background": "#202020"},
        image_1=astronaut,
        image_3=cat,
    )
    band = px(labelled)[90 : 100 + 9, 10:110]  # the caption band under cell 1
    assert labelled.height > 100 and (band.min(axis=2) > 200).any()  # light text on dark
    contain = call(
        image_compose.grid, {**params, "fit": "contain", "background": "#ff0000"}, image_1=coffee
    )
    assert contain.getpixel((60, 12)) == (255, 0, 0)  # letterbox above the wide photo
    with pytest.raises(NodeError, match="no images to lay out"):
        call(image_compose.grid, params)


def test_remove_background_keeps_the_person(astronaut: Image.Image) -> None:
    out = call(image_compose.remove_background, image=astronaut)
    assert out.mode == "RGBA" and out.size == astronaut.size
    alpha = np.asarray(out)[..., 3] / 255.0
    assert alpha[FACE].mean() > 0.8
    assert alpha[:60, 440:].mean() < 0.2 and alpha[:60, :60].mean() < 0.2
    rgb = np.asarray(out)[..., :3][FACE].astype(float)
    assert np.abs(rgb - px(astronaut)[FACE]).mean() < 5
    roomy = Image.new("RGB", (1000, 800), (128, 128, 128))
    roomy.paste(astronaut, (300, 288))
    cropped = call(image_compose.remove_background, {"crop": True}, image=roomy)
    assert 450 < cropped.width < 620 and 450 < cropped.height < 560
    nobody = Image.fromarray(np.tile(np.linspace(40, 220, 320, dtype=np.uint8), (240, 1))).convert(
        "RGB"
    )
    with pytest.raises(NodeError, match="no person found in the photo"):
        call(image_compose.remove_background, image=nobody)


def test_replace_background_with_a_colour_or_a_photo(
    astronaut: Image.Image, coffee: Image.Image
) -> None:
    blue = px(call(image_compose.replace_background, image=astronaut, color="#2f5d8a"))
    assert np.abs(blue[:50, 450:].reshape(-1, 3).mean(axis=0) - (0x2F, 0x5D, 0x8A)).max() < 3
    assert np.abs(blue[FACE] - px(astronaut)[FACE]).mean() < 5
    white = px(call(image_compose.replace_background, {"color": "white"}, image=astronaut))
    assert white[:50, 450:].mean() > 250
    photo = px(call(image_compose.replace_background, image=astronaut, background=coffee))
    covered = px(image.cover_crop(coffee, (512, 512)))
    assert np.abs(photo[:50, 450:] - covered[:50, 450:]).mean() < 5
    with pytest.raises(NodeError, match="'plaid' is not a colour"):
        call(image_compose.replace_background, image=astronaut, color="plaid")
