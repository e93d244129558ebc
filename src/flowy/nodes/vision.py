"""Face detection, portrait framing and background replacement for headshot workflows.

Pure functions on Pillow images and numpy arrays: no web, storage or database imports.
The models are MediaPipe's face detector (full-range) and selfie segmenter, both shipped
inside the ``mediapipe`` wheel, so everything runs offline.

MediaPipe graphs are not thread-safe and take noticeable time to build, so a call
borrows a detector or segmenter of its own from a pool (:class:`_Models`) and gives it
back after: one is built only when every other is in use, so the graphs built are as
many as calls ever ran at once, not one per thread that ever ran such a node.
``mediapipe`` itself is imported lazily: it costs about a second, and
importing this module (e.g. to register nodes) should not.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Final

import cv2
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from flowy.errors import NodeError

logger = logging.getLogger(__name__)

#: Default backdrop colour: a mid grey, the classic neutral studio paper.
NEUTRAL_GREY: Final[tuple[int, int, int]] = (128, 128, 128)

# Detection and segmentation models work on ~192-256 px inputs; feeding them a 24 MP
# photo only costs conversion time, so images are shrunk to this long side first.
_MAX_MODEL_SIDE: Final = 1024
# Edge refinement runs at up to this size: at camera resolution it would cost seconds
# for sub-pixel gains; the refined mask is scaled up smoothly instead.
_MAX_REFINE_SIDE: Final = 2048
# Refined mask values up to this are treated as background (see _refine_edges).
_MASK_CHOKE: Final = 0.15

# Framing of the head-and-shoulders crop, as fractions of the frame height.  MediaPipe's
# face box runs from the forehead to the chin (eyes ≈ 37 % down the box), so with the
# box top at 24 % and the box 35 % tall the eyes sit near the upper-third line (37 %),
# hair keeps ~10 % headroom above it and the lower ~40 % is neck and shoulders.
_FACE_HEIGHT_FRACTION: Final = 0.35
_FACE_TOP_FRACTION: Final = 0.24
# When the ideal frame reaches outside the photo, zoom in (up to the face filling this
# fraction of the frame) before falling back to padding: real pixels beat invented ones.
_MAX_FACE_HEIGHT_FRACTION: Final = 0.50

# Backdrop: gain at the light spot behind the head and at the far corners.
_BACKDROP_CENTER_GAIN: Final = 1.10
_BACKDROP_EDGE_GAIN: Final = 0.80
# Fixed seed: the dither noise is there to break banding, not to vary between runs.
_BACKDROP_SEED: Final = 0x5EED

#: Face detectors are kept for this many score thresholds at most (the least recently
#: used go first), so arbitrary user-supplied thresholds cannot pile up graphs.
_MAX_DETECTOR_THRESHOLDS: Final = 4

FloatArray = NDArray[np.float32]
BoolArray = NDArray[np.bool_]


@dataclass(frozen=True)
class FaceBox:
    """A detected face: pixel box in the image it was detected in, and model score 0–1."""

    x: int
    y: int
    width: int
    height: int
    score: float

    @property
    def center(self) -> tuple[float, float]:
        """The box centre ``(x, y)`` in pixels."""
        return (self.x + self.width / 2, self.y + self.height / 2)

    @property
    def area(self) -> int:
        return self.width * self.height

    def to_dict(self) -> dict[str, int | float]:
        """JSON-ready form, e.g. for a node's output metadata."""
        return asdict(self)


# --------------------------------------------------------------------------- models


class _Models:
    """Idle MediaPipe graphs by key, lent to one caller at a time.

    :meth:`borrow` hands out an idle graph for its key or builds one when none is idle;
    the graph comes back when the caller is done (or is closed, if the call raised).
    Keys beyond ``max_keys`` push out the least recently used key's idle graphs (closed).
    """

    def __init__(self, max_keys: int) -> None:
        self.max_keys = max_keys
        self._lock = threading.Lock()
        self._idle: OrderedDict[object, list[Any]] = OrderedDict()
        self.built = 0

    @contextmanager
    def borrow(self, key: object, build: Callable[[], Any]) -> Iterator[Any]:
        with self._lock:
            idle = self._idle.get(key)
            model = idle.pop() if idle else None
            if key in self._idle:
                self._idle.move_to_end(key)
        if model is None:
            model = build()  # outside the lock: others may borrow meanwhile
            with self._lock:
                self.built += 1
        try:
            yield model
        except BaseException:
            model.close()  # a graph that failed may be left in any state: not lent again
            raise
        self._give_back(key, model)

    def _give_back(self, key: object, model: Any) -> None:
        evicted: list[Any] = []
        with self._lock:
            self._idle.setdefault(key, []).append(model)
            self._idle.move_to_end(key)
            while len(self._idle) > self.max_keys:
                evicted.extend(self._idle.popitem(last=False)[1])
        for old in evicted:
            old.close()


_detectors = _Models(_MAX_DETECTOR_THRESHOLDS)
_segmenters = _Models(1)


def _face_detector(min_score: float) -> AbstractContextManager[Any]:
    """A MediaPipe full-range face detector for ``min_score``, lent for one call.

    The score threshold is baked into the graph (it also feeds non-max suppression), so
    detectors are kept per threshold rather than filtering one detector's output.  The
    threshold is rounded to 0.01.
    """
    key = round(min_score, 2)

    def build() -> Any:
        from mediapipe.python.solutions import face_detection

        logger.debug("building a face detector (min_score=%s)", key)
        return face_detection.FaceDetection(model_selection=1, min_detection_confidence=key)

    return _detectors.borrow(key, build)


def _segmenter() -> AbstractContextManager[Any]:
    """A MediaPipe selfie segmenter (general 256×256 model), lent for one call."""

    def build() -> Any:
        from mediapipe.python.solutions import selfie_segmentation

        logger.debug("building a selfie segmenter")
        return selfie_segmentation.SelfieSegmentation(model_selection=0)

    return _segmenters.borrow("selfie", build)


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """``image`` scaled down so its long side is at most ``max_side`` (never enlarged)."""
    scale = max_side / max(image.size)
    if scale >= 1:
        return image
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    # reducing_gap: shrink by whole factors first, much faster on camera-size photos.
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def _model_input(image: Image.Image) -> NDArray[np.uint8]:
    """``image`` as a contiguous, writable uint8 RGB array, long side ≤ _MAX_MODEL_SIDE."""
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    return np.array(_shrink(rgb, _MAX_MODEL_SIDE), dtype=np.uint8)


# --------------------------------------------------------------------------- faces


def detect_faces(image: Image.Image, *, min_score: float = 0.5) -> list[FaceBox]:
    """Find faces in ``image``; boxes in its pixel coordinates, largest first.

    Boxes are clipped to the image; an empty list means no face scored ``min_score``.

    Raises:
        ValueError: when ``min_score`` is outside 0–1.
        NodeError: when the detection model itself fails.
    """
    if not 0.0 <= min_score <= 1.0:
        raise ValueError(f"min_score must be within 0-1, got {min_score}")
    pixels = _model_input(image)
    try:
        with _face_detector(min_score) as detector:
            result = detector.process(pixels)
    except RuntimeError as exc:
        raise NodeError(f"face detection failed: {exc}") from exc
    # MediaPipe reports boxes relative to the frame, so they map straight back onto the
    # full-size image whatever downscaling _model_input did.
    faces = [
        box
        for detection in (result.detections or [])
        if (box := _to_face_box(detection, image.size)) is not None
    ]
    faces.sort(key=lambda face: face.area, reverse=True)
    logger.debug("detected %d face(s) in %dx%d image", len(faces), *image.size)
    return faces


def _to_face_box(detection: Any, size: tuple[int, int]) -> FaceBox | None:
    """A MediaPipe detection as a pixel FaceBox clipped to ``size``; None if nothing left."""
    width, height = size
    rel = detection.location_data.relative_bounding_box
    left = max(0, math.floor(rel.xmin * width))
    top = max(0, math.floor(rel.ymin * height))
    right = min(width, math.ceil((rel.xmin + rel.width) * width))
    bottom = min(height, math.ceil((rel.ymin + rel.height) * height))
    if right <= left or bottom <= top:
        return None
    score = float(detection.score[0]) if detection.score else 0.0
    return FaceBox(x=left, y=top, width=right - left, height=bottom - top, score=score)


def main_face(image: Image.Image, *, min_score: float = 0.5) -> FaceBox:
    """The largest face in ``image``.

    Raises:
        NodeError: ``"no face found in the photo"`` when there is none.
    """
    faces = detect_faces(image, min_score=min_score)
    if not faces:
        raise NodeError("no face found in the photo")
    return faces[0]


# --------------------------------------------------------------------------- framing


def portrait_crop(
    image: Image.Image, face: FaceBox, *, width: int = 768, height: int = 960
) -> Image.Image:
    """Head-and-shoulders crop of ``image`` around ``face``, exactly ``width``×``height``.

    See :func:`portrait_crop_with_padding`, which also says which pixels are padding.
    """
    cropped, _ = portrait_crop_with_padding(image, face, width=width, height=height)
    return cropped


def portrait_crop_with_padding(
    image: Image.Image, face: FaceBox, *, width: int = 768, height: int = 960
) -> tuple[Image.Image, BoolArray]:
    """Head-and-shoulders crop plus a bool ``height``×``width`` mask of padded pixels.

    The face is centred horizontally, its box top at 24 % of the frame and its height
    35 % of the frame (eyes near the upper-third line, shoulders in view).  If that frame
    leaves the photo, the crop first zooms in a little (face up to 50 % of the frame);
    whatever still lies outside is filled by repeating the edge pixels — never by
    stretching — and flagged ``True`` in the mask.  Resampling is Lanczos; ``RGB``,
    ``RGBA``, ``L`` and ``LA`` images keep their mode, others become RGB(A).

    Raises:
        ValueError: when ``width`` or ``height`` is not positive, or the face box is empty
            or lies outside the image.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"crop size must be positive, got {width}x{height}")
    if face.width <= 0 or face.height <= 0:
        raise ValueError(f"face box must not be empty, got {face.width}x{face.height}")
    image = _resamplable(image)
    left, top, frame_w, frame_h = _portrait_frame(face, image.size, width / height)
    source, (off_x, off_y) = _padded_region(image, left, top, frame_w, frame_h)
    box = (left - off_x, top - off_y, left - off_x + frame_w, top - off_y + frame_h)
    cropped = source.resize((width, height), Image.Resampling.LANCZOS, box=box)
    padding = _padding_mask(image.size, (left, top, frame_w, frame_h), (width, height))
    return cropped, padding


def _resamplable(image: Image.Image) -> Image.Image:
    """``image`` in a mode Lanczos can resample and numpy can pad (palette, 1-bit... cannot)."""
    if image.mode in ("RGB", "RGBA", "L", "LA"):
        return image
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _portrait_frame(
    face: FaceBox, size: tuple[int, int], aspect: float
) -> tuple[float, float, float, float]:
    """The crop frame ``(left, top, width, height)`` in source pixels (may leave the image)."""
    image_w, image_h = size
    center_x = face.x + face.width / 2
    ideal_h = face.height / _FACE_HEIGHT_FRACTION
    tightest_h = face.height / _MAX_FACE_HEIGHT_FRACTION
    # Largest frame height whose every side stays inside the image, given the face anchor.
    fitting_h = min(
        2 * center_x / aspect,
        2 * (image_w - center_x) / aspect,
        face.y / _FACE_TOP_FRACTION,
        (image_h - face.y) / (1 - _FACE_TOP_FRACTION),
    )
    frame_h = max(tightest_h, min(ideal_h, fitting_h))
    frame_w = frame_h * aspect
    return (center_x - frame_w / 2, face.y - _FACE_TOP_FRACTION * frame_h, frame_w, frame_h)


def _padded_region(
    image: Image.Image, left: float, top: float, frame_w: float, frame_h: float
) -> tuple[Image.Image, tuple[int, int]]:
    """The part of ``image`` under the frame, edge-padded to cover it entirely.

    Returns the region and the source coordinates of its top-left pixel.  Only the region
    is copied, so a small face in a huge photo does not pad the whole photo.
    """
    x0, y0 = math.floor(left), math.floor(top)
    x1, y1 = math.ceil(left + frame_w), math.ceil(top + frame_h)
    inside = (max(0, x0), max(0, y0), min(image.width, x1), min(image.height, y1))
    pads = (inside[0] - x0, inside[1] - y0, x1 - inside[2], y1 - inside[3])
    if not any(pads):
        return image.crop(inside), (x0, y0)
    if inside[2] <= inside[0] or inside[3] <= inside[1]:
        # The frame misses the image entirely (a bogus face box); nothing to repeat.
        raise ValueError("the face box lies outside the image")
    pixels = np.asarray(image.crop(inside))
    pad_left, pad_top, pad_right, pad_bottom = pads
    widths = [(pad_top, pad_bottom), (pad_left, pad_right)] + [(0, 0)] * (pixels.ndim - 2)
    padded = np.pad(pixels, widths, mode="edge")
    return Image.fromarray(padded), (x0, y0)


def _padding_mask(
    image_size: tuple[int, int],
    frame: tuple[float, float, float, float],
    out_size: tuple[int, int],
) -> BoolArray:
    """Bool mask (out_h × out_w): True where an output pixel's centre falls off the image."""
    left, top, frame_w, frame_h = frame
    out_w, out_h = out_size
    xs = left + (np.arange(out_w) + 0.5) * (frame_w / out_w)
    ys = top + (np.arange(out_h) + 0.5) * (frame_h / out_h)
    off_x = (xs < 0) | (xs >= image_size[0])
    off_y = (ys < 0) | (ys >= image_size[1])
    mask: BoolArray = off_y[:, None] | off_x[None, :]
    return mask


# --------------------------------------------------------------------------- background


def person_mask(image: Image.Image) -> FloatArray:
    """Soft person mask: float32 H×W in [0, 1] at the size of ``image`` (1 = person).

    The segmenter's mask is coarse (256 px model); its edge is then snapped to the
    image's own edges with a guided filter, which keeps hair soft and stops a ring of
    the old background from riding along the silhouette.

    Raises:
        NodeError: when the segmentation model itself fails.
    """
    pixels = _model_input(image)
    try:
        with _segmenter() as segmenter:
            result = segmenter.process(pixels)
    except RuntimeError as exc:
        raise NodeError(f"person segmentation failed: {exc}") from exc
    mask: FloatArray = np.asarray(result.segmentation_mask, dtype=np.float32)
    guide_image = _shrink(image.convert("L"), _MAX_REFINE_SIDE)
    mask = _resize_mask(mask, guide_image.size)
    refined = _refine_edges(mask, np.asarray(guide_image, dtype=np.float32) / 255.0)
    return _resize_mask(refined, image.size)


def _resize_mask(mask: FloatArray, size: tuple[int, int]) -> FloatArray:
    """``mask`` bilinearly resized to ``size`` = (width, height), if not already."""
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def _refine_edges(mask: FloatArray, guide: FloatArray) -> FloatArray:
    """Guided filter (He et al., grey guide) of ``mask`` by ``guide``, clipped to [0, 1].

    Written with box filters because cv2.ximgproc.guidedFilter only exists in
    opencv-contrib builds.  The radius (~0.8 % of the long side) spans the coarse mask's
    blur; ``eps`` sets how strong an image edge must be to pull the mask edge onto it.
    """
    radius = max(2, round(0.008 * max(mask.shape)))
    eps = 1e-3

    def box(values: FloatArray) -> FloatArray:
        size = (2 * radius + 1, 2 * radius + 1)
        smoothed = cv2.boxFilter(values, -1, size, borderType=cv2.BORDER_REFLECT)
        return np.asarray(smoothed, dtype=np.float32)

    mean_g, mean_m = box(guide), box(mask)
    covariance = box(guide * mask) - mean_g * mean_m
    variance = box(guide * guide) - mean_g * mean_g
    slope = covariance / (variance + eps)
    offset = mean_m - slope * mean_g
    refined = box(slope) * guide + box(offset)
    # The coarse mask reaches a little past the true silhouette, and the filter carries
    # that bias into a faint glow outside it; pulling the low end to 0 removes both.
    choked = (refined - _MASK_CHOKE) / (0.95 - _MASK_CHOKE)
    clipped: FloatArray = np.clip(choked, 0.0, 1.0).astype(np.float32, copy=False)
    return clipped


def studio_backdrop(size: tuple[int, int], color: tuple[int, int, int]) -> Image.Image:
    """A ``size`` = (width, height) RGB studio backdrop in ``color``.

    A soft radial light spot sits behind where the subject's head goes (upper middle),
    falling off smoothly toward darker corners, like a lit paper backdrop.  Triangular
    dither noise (±1 level) prevents banding in the 8-bit gradient.

    Raises:
        ValueError: when a dimension is not positive or a colour channel is outside 0–255.
    """
    width, height = size
    if width <= 0 or height <= 0:
        raise ValueError(f"backdrop size must be positive, got {width}x{height}")
    if len(color) != 3 or any(not 0 <= c <= 255 for c in color):
        raise ValueError(f"backdrop colour must be three 0-255 values, got {color!r}")
    gain = _backdrop_gain(width, height)
    base = np.asarray(color, dtype=np.float32)
    rng = np.random.default_rng(_BACKDROP_SEED)
    # Difference of two uniforms: triangular noise, the textbook dither for banding.
    dither = rng.random((height, width, 1), dtype=np.float32)
    dither -= rng.random((height, width, 1), dtype=np.float32)
    pixels = gain[:, :, None] * base[None, None, :] + dither
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def _backdrop_gain(width: int, height: int) -> FloatArray:
    """Per-pixel brightness multiplier: bright spot behind the head, smooth falloff."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    # An ellipse matched to the frame, centred a bit above the middle (behind the head).
    dx = (xs - 0.5 * width) / (0.75 * width)
    dy = (ys - 0.38 * height) / (0.80 * height)
    radius = np.clip(np.sqrt(dx * dx + dy * dy), 0.0, 1.0)
    falloff = radius * radius * (3.0 - 2.0 * radius)  # smoothstep: no visible ring
    gain: FloatArray = (
        _BACKDROP_CENTER_GAIN + (_BACKDROP_EDGE_GAIN - _BACKDROP_CENTER_GAIN) * falloff
    )
    return gain


def replace_background(
    image: Image.Image, mask: NDArray[np.floating[Any]], backdrop: Image.Image
) -> Image.Image:
    """Composite the person in ``image`` over ``backdrop`` using ``mask`` as alpha; RGB.

    ``mask`` is float H×W in [0, 1] (see :func:`person_mask`).  If ``image`` has an alpha
    channel, transparent pixels count as background too.  A backdrop of another size is
    resized to fit.  Colours in the soft edge are taken from the nearby person rather
    than the old background, so no halo of the old background rings the subject.

    Raises:
        ValueError: when ``mask`` is not H×W for ``image``.
    """
    if mask.shape != (image.height, image.width):
        raise ValueError(
            f"mask shape {mask.shape} does not match image {image.width}x{image.height}"
        )
    alpha = np.clip(mask.astype(np.float32, copy=False), 0.0, 1.0)
    if "A" in image.getbands():
        alpha = alpha * (np.asarray(image.getchannel("A"), dtype=np.float32) / 255.0)
    if backdrop.size != image.size:
        logger.debug("resizing backdrop %s to image size %s", backdrop.size, image.size)
        backdrop = backdrop.resize(image.size, Image.Resampling.BICUBIC)
    fg = _decontaminate(np.asarray(image.convert("RGB"), dtype=np.float32), alpha)
    bg = np.asarray(backdrop.convert("RGB"), dtype=np.float32)
    a = alpha[:, :, None]
    out = fg * a + bg * (1.0 - a)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8))


def _decontaminate(fg: FloatArray, alpha: FloatArray) -> FloatArray:
    """Replace old-background colour bleeding into the mask edge with nearby person colour.

    The mask edge is never exact, so pixels along it (even some the mask calls solid)
    are partly old background; composited as they are they draw a thin ring of it (a
    light halo around hair, typically).  In a narrow band along the edge, each pixel's
    colour is faded toward the average colour of the person pixels well inside nearby
    (a normalised convolution).
    """
    # How far inside the silhouette a pixel is: 1 well inside, falling off over the band.
    band = max(1.0, 0.003 * max(alpha.shape))
    inner = cv2.GaussianBlur(alpha, (0, 0), band)
    t = np.clip((inner - 0.75) / 0.24, 0.0, 1.0)
    trust = t * t * (3.0 - 2.0 * t)
    # Average colour of trusted pixels nearby, over a wider neighbourhood.
    sigma = max(2.0, 0.01 * max(alpha.shape))
    weighted = cv2.GaussianBlur(fg * trust[:, :, None], (0, 0), sigma)
    total = cv2.GaussianBlur(trust, (0, 0), sigma)[:, :, None]
    # Where no trusted pixel is near (a sliver of mask), keep the pixel's own colour.
    nearby = np.where(total > 1e-3, weighted / np.maximum(total, 1e-3), fg)
    cleaned: FloatArray = fg * trust[:, :, None] + nearby * (1.0 - trust[:, :, None])
    return cleaned
