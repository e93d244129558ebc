"""Tests for flowy.media.decode: decoding untrusted bytes safely, and encoding."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from flowy.errors import MediaError
from flowy.media.decode import decode_image, encode_image, encode_png

LIMIT = 50_000_000


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    xs = np.linspace(0, 255, width, dtype=np.float32)
    ys = np.linspace(0, 255, height, dtype=np.float32)
    rgb = np.stack(
        [np.add.outer(ys * 0, xs), np.add.outer(ys, xs * 0), np.full((height, width), 90.0)],
        axis=-1,
    )
    return Image.fromarray(rgb.astype(np.uint8))


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _png_header_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width×height pixels (a decompression bomb shape)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def test_png_round_trip_is_lossless() -> None:
    original = _gradient()
    decoded = decode_image(encode_png(original), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.size == original.size
    assert np.array_equal(np.asarray(decoded), np.asarray(original))


def test_jpeg_round_trip_is_close() -> None:
    original = _gradient()
    data, content_type = encode_image(original, "jpeg", quality=95)
    assert content_type == "image/jpeg"
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.size == original.size
    diff = np.abs(np.asarray(decoded, dtype=int) - np.asarray(original, dtype=int))
    assert diff.mean() < 3


def test_alpha_is_kept_as_rgba() -> None:
    image = Image.new("RGBA", (10, 10), (10, 20, 30, 128))
    decoded = decode_image(encode_png(image), max_pixels=LIMIT)
    assert decoded.mode == "RGBA"
    assert decoded.getpixel((0, 0)) == (10, 20, 30, 128)


@pytest.mark.parametrize(
    ("image", "expected_mode"),
    [
        (Image.new("L", (8, 8), 100), "RGB"),
        (Image.new("LA", (8, 8), (100, 50)), "RGBA"),
        (Image.new("P", (8, 8), 3), "RGB"),
        (Image.new("1", (8, 8), 1), "RGB"),
    ],
)
def test_other_modes_become_rgb_or_rgba(image: Image.Image, expected_mode: str) -> None:
    assert decode_image(encode_png(image), max_pixels=LIMIT).mode == expected_mode


def test_16_bit_greyscale_is_scaled_not_clipped() -> None:
    wide = Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16))
    decoded = decode_image(_save(wide, "PNG"), max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    assert decoded.getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg_becomes_rgb() -> None:
    data = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", quality=95)
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.mode == "RGB"
    r, g, b = decoded.getpixel((4, 4))  # type: ignore[misc]
    assert r > 200 and g < 60 and b < 60


def test_exif_orientation_is_applied() -> None:
    image = _gradient(80, 40)
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    data = _save(image, "JPEG", exif=exif.tobytes(), quality=95)
    assert Image.open(io.BytesIO(data)).size == (80, 40)  # stored landscape
    decoded = decode_image(data, max_pixels=LIMIT)
    assert decoded.size == (40, 80)  # shown portrait


def test_first_frame_of_animated_gif() -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    decoded = decode_image(buffer.getvalue(), max_pixels=LIMIT)
    assert decoded.size == (6, 6)
    assert decoded.convert("RGB").getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"definitely not an image, just some text",
        bytes(range(256)) * 4,
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",  # EPS is not allowed
    ],
)
def test_garbage_is_not_decodable(data: bytes) -> None:
    with pytest.raises(MediaError, match="not a decodable image"):
        decode_image(data, max_pixels=LIMIT)


def test_truncated_png_is_not_decodable() -> None:
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data = encode_png(Image.fromarray(noise))
    with pytest.raises(MediaError, match="not a decodable image") as caught:
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)
    assert caught.value.__cause__ is not None


def test_truncated_jpeg_is_not_decodable() -> None:
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    data, _ = encode_image(Image.fromarray(noise), "jpeg")
    with pytest.raises(MediaError, match="not a decodable image"):
        decode_image(data[: len(data) // 2], max_pixels=LIMIT)


def test_image_over_our_limit_is_refused_before_decoding() -> None:
    data = _png_header_claiming(5000, 4000)  # 20 MP claimed, no real pixel data
    with pytest.raises(MediaError, match="too large") as caught:
        decode_image(data, max_pixels=10_000_000)
    assert "5000×4000" in str(caught.value)
    assert "10000000" in str(caught.value)


def test_small_limit_refuses_real_image() -> None:
    with pytest.raises(MediaError, match=r"image is too large: 64×48 pixels"):
        decode_image(encode_png(_gradient()), max_pixels=1000)


def test_decompression_bomb_beyond_pillows_ceiling_is_refused() -> None:
    # 20000×20000 = 400 MP: Pillow itself refuses this inside Image.open.
    data = _png_header_claiming(20000, 20000)
    assert len(data) < 200
    with pytest.raises(MediaError, match="too large"):
        decode_image(data, max_pixels=10**12)


def test_pillow_bomb_warning_does_not_escape() -> None:
    # 10000×10000 = 100 MP triggers Pillow's DecompressionBombWarning (an error under
    # this test suite's filterwarnings=error); the image is then refused by our limit.
    data = _png_header_claiming(10000, 10000)
    with pytest.raises(MediaError, match="too large"):
        decode_image(data, max_pixels=50_000_000)


def test_encode_png_and_formats() -> None:
    image = Image.new("RGBA", (5, 5), (255, 0, 0, 0))
    png = encode_png(image, compress_level=9)
    assert png.startswith(b"\x89PNG")
    webp, webp_type = encode_image(image, "WebP")
    assert webp_type == "image/webp"
    assert Image.open(io.BytesIO(webp)).format == "WEBP"
    jpeg, jpeg_type = encode_image(image, "jpg")
    assert jpeg_type == "image/jpeg"
    flattened = Image.open(io.BytesIO(jpeg)).convert("RGB")
    r, g, b = flattened.getpixel((2, 2))  # type: ignore[misc]
    assert min(r, g, b) > 240  # transparent red became white, not black or red


def test_encode_image_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unsupported image format"):
        encode_image(Image.new("RGB", (2, 2)), "gif")


def _photo_like(size: int = 192) -> Image.Image:
    """Smooth shading plus sensor-like noise: what PNG filters turn into short runs."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x, y, (x + y) // 2], axis=-1) * (255 / (size - 1))
    noisy = base + rng.normal(0, 6, base.shape)
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def _text_like() -> Image.Image:
    """A repeated glyph pattern: deflate's long matches find the repeats, runs do not."""
    from PIL import ImageDraw

    image = Image.new("RGB", (320, 160), "white")
    draw = ImageDraw.Draw(image)
    for row in range(8):
        draw.text((4, 4 + 19 * row), "flowy renders the same words again " * 2, fill="black")
    return image


def _pillow_png(image: Image.Image, level: int, strategy: int) -> bytes:
    return _save(image, "PNG", compress_level=level, compress_type=strategy)


def test_png_of_a_photo_is_run_length_deflated_no_larger_and_lossless() -> None:
    photo = _photo_like()
    data = encode_png(photo)
    assert data == _pillow_png(photo, 4, 3)  # zlib's Z_RLE
    assert len(data) <= len(_pillow_png(photo, 4, -1))  # Pillow's own level 4
    assert np.array_equal(np.asarray(decode_image(data, max_pixels=LIMIT)), np.asarray(photo))


def test_png_of_text_keeps_the_smaller_default_deflate() -> None:
    text = _text_like()
    data = encode_png(text)
    rle = _pillow_png(text, 4, 3)
    assert data == _pillow_png(text, 4, -1)
    assert len(data) < len(rle)
    assert np.array_equal(np.asarray(decode_image(data, max_pixels=LIMIT)), np.asarray(text))


def test_png_levels_7_to_9_and_0_use_pillows_default_strategy() -> None:
    photo = _photo_like(64)
    assert encode_png(photo, compress_level=9) == _pillow_png(photo, 9, -1)
    assert encode_png(photo, compress_level=0) == _pillow_png(photo, 0, -1)
    with pytest.raises(ValueError, match="compress_level"):
        encode_png(photo, compress_level=10)
