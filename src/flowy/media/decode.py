"""Decode untrusted image bytes into a safe, normalised Pillow image, and encode results.

Everything that reaches :func:`decode_image` is treated as hostile: the format is found
by Pillow looking at the content (never a file name or a Content-Type header), the pixel
count is checked from the header *before* any pixel data is decompressed, and every
decoder failure becomes a :class:`~flowy.errors.MediaError` with the cause attached.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import numpy as np
import PIL
from PIL import Image, ImageOps, UnidentifiedImageError

from flowy.errors import MediaError

logger = logging.getLogger(__name__)

# Only plugins for ordinary photo / web formats are allowed to identify the input.
# Keeping the list short shrinks the attack surface: Pillow's EPS plugin, for one,
# shells out to Ghostscript, and exotic plugins are far less battle-tested.
# (Multi-picture JPEGs from phone cameras, "MPO", come in through the JPEG plugin.)
DECODABLE_FORMATS: Final[tuple[str, ...]] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")

# Output formats of :func:`encode_image`: canonical name -> (Pillow format, content type).
_OUTPUT_FORMATS: Final[dict[str, tuple[str, str]]] = {
    "png": ("PNG", "image/png"),
    "jpeg": ("JPEG", "image/jpeg"),
    "webp": ("WEBP", "image/webp"),
}
_FORMAT_ALIASES: Final[dict[str, str]] = {"jpg": "jpeg"}

# Modes that carry an alpha channel worth keeping as RGBA.
_ALPHA_MODES: Final[frozenset[str]] = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# High-bit-depth greyscale modes: Pillow's own convert("L") clips these instead of scaling.
_WIDE_GREY_MODES: Final[frozenset[str]] = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})


#: Names what :func:`decode_image` makes of given bytes.  Images are cached by their
#: source bytes under this name, so it changes whenever the same bytes could decode to
#: other pixels: a change to decode_image (bump the number) or another Pillow.
DECODER_VERSION: Final[str] = f"decode_image-1/pillow-{PIL.__version__}"


# --------------------------------------------------------------------------- decoding


def open_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Check ``data`` the way :func:`decode_image` would, from the header alone, and
    answer it opened, its pixels not yet decoded (cheap): :func:`load_image` decodes
    them later, without parsing the header again.

    Raises:
        MediaError: as :func:`decode_image` does for content that is not an image in an
            allowed format or is too large.  Damage further into the pixel data shows
            only when the image is decoded.
    """
    with _quiet_pillow("probing"):
        return _open(data, max_pixels=max_pixels)


def load_image(image: Image.Image, *, max_pixels: int) -> Image.Image:
    """Decode an image :func:`open_image` answered (with the same ``max_pixels``), as
    :func:`decode_image` decodes bytes.  Call it once per opened image.

    Raises:
        MediaError: as :func:`decode_image` does for damaged pixel data.
    """
    with _quiet_pillow("decoding"):
        image = _load(image, max_pixels=max_pixels)
    return _normalise_mode(_apply_exif_orientation(image))


def decode_image(data: bytes, *, max_pixels: int) -> Image.Image:
    """Decode image bytes into a fully loaded RGB or RGBA image, upright per EXIF.

    The format is identified from the content only, restricted to
    :data:`DECODABLE_FORMATS`.  Multi-frame images (GIF, multi-page TIFF) yield their
    first frame.  The result is ``RGB``, or ``RGBA`` when the source has transparency;
    palette, greyscale, CMYK and 16-bit images are converted.

    Raises:
        MediaError: ``"image is too large: ..."`` when width × height exceeds
            ``max_pixels`` (checked from the header, before pixel data is decoded) or
            when Pillow's own decompression-bomb guard trips;
            ``"not a decodable image: ..."`` when the bytes are empty, not an image in an
            allowed format, truncated or corrupt.
    """
    with _quiet_pillow("decoding"):
        image = _open_and_load(data, max_pixels=max_pixels)
    image = _apply_exif_orientation(image)
    return _normalise_mode(image)


@contextmanager
def _quiet_pillow(doing: str) -> Iterator[None]:
    """Keep Pillow's warnings out of the caller's way.

    Pillow reports oddities (bad EXIF, its bomb heuristic, ...) as warnings.  They must
    not leak into callers — a run is not the place for them, and under "warnings as
    errors" they would turn a decodable image into a crash — so record and log them.
    (catch_warnings swaps process-global state; a concurrent thread's warning may land
    in this record or escape it, which only ever affects logging, never the result.)
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for warning in caught:
        logger.debug("pillow warning while %s: %s", doing, warning.message)


@contextmanager
def _as_media_error() -> Iterator[None]:
    """Pillow's failures as MediaError: its bomb guard is "too large"; the rest - its
    plugins raise a zoo of types on hostile input (OSError, SyntaxError, struct.error,
    ValueError, ...) - all mean "not an image" to the caller."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise MediaError(f"image is too large: {exc}") from exc
    except Exception as exc:
        raise MediaError(f"not a decodable image: {_describe(exc)}") from exc


def _open_and_load(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open ``data``, enforce the pixel limit from the header, then decode the pixels."""
    return _load(_open(data, max_pixels=max_pixels), max_pixels=max_pixels)


def _load(image: Image.Image, *, max_pixels: int) -> Image.Image:
    """Decode the pixels of an opened image; its size may not grow past ``max_pixels``."""
    with _as_media_error():
        image.load()
    # Some plugins (ICO-like containers, TIFF) may settle on a different frame size while
    # loading; the limit is about what we now hold in memory, so check again.
    _check_pixels(image.size, max_pixels)
    return image


def _open(data: bytes, *, max_pixels: int) -> Image.Image:
    """Open ``data`` (header only) and enforce the pixel limit on its declared size."""
    if not data:
        raise MediaError("not a decodable image: the input is empty")
    # Pillow's hard ceiling (twice Image.MAX_IMAGE_PIXELS) fires inside open(), before we
    # can look at the size ourselves; it is the same condition, so the same message.
    with _as_media_error():
        image = Image.open(io.BytesIO(data), formats=DECODABLE_FORMATS)

    # Image.open only parsed the header: the size is known, no pixels were inflated yet.
    _check_pixels(image.size, max_pixels)
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Raise MediaError when ``size`` has more than ``max_pixels`` pixels (or none)."""
    width, height = size
    if width <= 0 or height <= 0:
        raise MediaError(f"not a decodable image: invalid size {width}×{height}")
    if width * height > max_pixels:
        raise MediaError(
            f"image is too large: {width}×{height} pixels exceeds the limit of {max_pixels}"
        )


def _describe(exc: BaseException) -> str:
    """A short human-readable cause for an exception, never empty."""
    if isinstance(exc, UnidentifiedImageError):
        # Pillow's text names an internal BytesIO object: say what the caller can act on.
        return (
            "the content is not in a supported image format (" + ", ".join(DECODABLE_FORMATS) + ")"
        )
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _apply_exif_orientation(image: Image.Image) -> Image.Image:
    """Rotate/flip ``image`` upright according to its EXIF Orientation tag.

    A malformed EXIF block is not worth failing the whole decode over: the pixels are
    fine, so the image is kept as stored and the problem logged.
    """
    try:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            upright = ImageOps.exif_transpose(image)
    except Exception as exc:
        logger.warning("ignoring unreadable EXIF orientation: %s", _describe(exc))
        return image
    return upright if upright is not None else image


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to ``RGB``, or ``RGBA`` when there is transparency."""
    mode = image.mode
    if mode in ("RGB", "RGBA"):
        return image
    if mode in _ALPHA_MODES:
        return image.convert("RGBA")
    if mode == "P":
        # A palette image is transparent when it names a transparent index or has an
        # alpha palette; convert("RGBA") honours both.
        palette = image.palette
        has_alpha = "transparency" in image.info or (palette is not None and palette.mode == "RGBA")
        return image.convert("RGBA" if has_alpha else "RGB")
    if mode in _WIDE_GREY_MODES:
        return _wide_grey_to_rgb(image)
    if mode == "F":
        return _float_grey_to_rgb(image)
    if "transparency" in image.info:
        # e.g. an "L" or "RGB" PNG with a tRNS colour key.
        return image.convert("RGBA")
    # "1", "L", "CMYK", "YCbCr", "LAB", "HSV": Pillow's conversions are correct here.
    return image.convert("RGB")


def _wide_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Scale 16-bit (or 32-bit int) greyscale down to 8 bits instead of clipping it."""
    values = np.asarray(image, dtype=np.float64)
    # 16-bit sources fill 0..65535; an "I" image that stays within 0..255 is 8-bit data
    # stored wide (some TIFF writers do that) and must not be darkened 257-fold.
    scale = 255.0 / 65535.0 if values.max(initial=0.0) > 255.0 else 1.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def _float_grey_to_rgb(image: Image.Image) -> Image.Image:
    """Map float greyscale to 8 bits: 0..1 data is stretched, anything else clipped."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float64))
    scale = 255.0 if values.max(initial=0.0) <= 1.0 else 1.0
    grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


# --------------------------------------------------------------------------- encoding


#: zlib strategies Pillow's PNG encoder accepts as ``compress_type``.
_Z_DEFAULT_STRATEGY: Final[int] = -1  # Pillow's own default (zlib's Z_FILTERED for PNG)
_Z_RLE: Final[int] = 3
#: An RLE encoding this small a part of the raw pixels means repeated structure (text,
#: flat graphics), where deflate's long matches pay off: encode it that way as well.
_RLE_STRUCTURED_RATIO: Final[float] = 0.25


def encode_png(image: Image.Image, *, compress_level: int = 4) -> bytes:
    """Encode ``image`` as PNG (no metadata carried over).

    ``compress_level`` 0–9 trades speed for size; 4 is a good middle for photos.  At
    levels 1–6 the filtered rows are first deflated with zlib's run-length strategy: on
    photographs that is 2–2.4× as fast as the default strategy and no larger (measured:
    a 512 px photo at level 4, 16 ms and 405 KB against 38 ms and 409 KB), because their
    filtered rows hold runs, not repeated strings.  When that encoding shrinks the pixels
    more than fourfold, the image has repeated structure (text, flat graphics): it is
    then also encoded with the default strategy and the smaller result kept.  Levels 7–9
    ask for the smallest file and use the default strategy only.

    Raises:
        ValueError: when ``compress_level`` is outside 0–9.
    """
    if not 0 <= compress_level <= 9:
        raise ValueError(f"compress_level must be 0-9, got {compress_level}")
    image = _png_compatible(image)
    if compress_level == 0 or compress_level >= 7:
        return _save_png(image, compress_level, _Z_DEFAULT_STRATEGY)
    rle = _save_png(image, compress_level, _Z_RLE)
    raw = image.width * image.height * len(image.getbands())
    if len(rle) > raw * _RLE_STRUCTURED_RATIO:
        return rle
    deflated = _save_png(image, compress_level, _Z_DEFAULT_STRATEGY)
    return deflated if len(deflated) < len(rle) else rle


def _save_png(image: Image.Image, compress_level: int, strategy: int) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level, compress_type=strategy)
    return buffer.getvalue()


def encode_image(image: Image.Image, fmt: str, *, quality: int = 90) -> tuple[bytes, str]:
    """Encode ``image`` as ``png``, ``jpeg`` (or ``jpg``) or ``webp``.

    Returns the encoded bytes and their content type.  JPEG cannot store alpha, so a
    transparent image is flattened onto white.  ``quality`` (1–100) applies to JPEG and
    WebP.  No metadata (EXIF, GPS, ...) is written.

    Raises:
        ValueError: for an unsupported format or a quality outside 1–100.
    """
    name = _FORMAT_ALIASES.get(fmt.strip().lower(), fmt.strip().lower())
    if name not in _OUTPUT_FORMATS:
        supported = ", ".join(sorted(_OUTPUT_FORMATS))
        raise ValueError(f"unsupported image format {fmt!r}; use one of {supported}")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be 1-100, got {quality}")
    pil_format, content_type = _OUTPUT_FORMATS[name]
    if name == "png":
        return encode_png(image), content_type

    buffer = io.BytesIO()
    if name == "jpeg":
        _flatten_onto_white(image).save(buffer, format=pil_format, quality=quality, optimize=True)
    else:
        _rgb_or_rgba(image).save(buffer, format=pil_format, quality=quality, method=4)
    return buffer.getvalue(), content_type


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in _ALPHA_MODES or "transparency" in image.info


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    """The image as RGB, or RGBA when it has transparency."""
    if image.mode in ("RGB", "RGBA"):
        return image
    return image.convert("RGBA" if _has_alpha(image) else "RGB")


def _png_compatible(image: Image.Image) -> Image.Image:
    """PNG stores these modes natively; anything else (CMYK, F, ...) becomes RGB(A)."""
    if image.mode in ("1", "L", "LA", "P", "RGB", "RGBA", "I;16"):
        return image
    return _rgb_or_rgba(image)


def _flatten_onto_white(image: Image.Image) -> Image.Image:
    """The image as RGB (or L), any transparency composited onto a white background."""
    if not _has_alpha(image):
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    rgba = image.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")
