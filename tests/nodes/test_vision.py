"""Tests for flowy.nodes.vision on a real photo: skimage's public-domain astronaut."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

from flowy.errors import NodeError
from flowy.nodes import vision
from flowy.nodes.vision import (
    NEUTRAL_GREY,
    FaceBox,
    detect_faces,
    main_face,
    person_mask,
    portrait_crop,
    portrait_crop_with_padding,
    replace_background,
    studio_backdrop,
)

# Where Eileen Collins' face is in the 512×512 astronaut image.
FACE_X = (170, 270)
FACE_Y = (60, 190)


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


@pytest.fixture(scope="module")
def face(astronaut: Image.Image) -> FaceBox:
    return main_face(astronaut)


def test_detects_the_astronauts_face(astronaut: Image.Image) -> None:
    faces = detect_faces(astronaut)
    assert len(faces) == 1
    box = faces[0]
    cx, cy = box.center
    assert FACE_X[0] <= cx <= FACE_X[1]
    assert FACE_Y[0] <= cy <= FACE_Y[1]
    assert 60 <= box.height <= 160
    assert box.score > 0.5
    assert box.to_dict() == {
        "x": box.x,
        "y": box.y,
        "width": box.width,
        "height": box.height,
        "score": box.score,
    }


def test_large_image_is_detected_in_its_own_coordinates(astronaut: Image.Image) -> None:
    big = astronaut.resize((2048, 2048), Image.Resampling.BILINEAR)
    (box,) = detect_faces(big)
    cx, cy = box.center
    assert FACE_X[0] * 4 <= cx <= FACE_X[1] * 4
    assert FACE_Y[0] * 4 <= cy <= FACE_Y[1] * 4


def test_boxes_are_clipped_to_the_image(astronaut: Image.Image) -> None:
    # Cut through the face: the detector's box extends past the left edge.
    cut = astronaut.crop((210, 20, 470, 300))
    (box,) = detect_faces(cut, min_score=0.3)
    assert box.x == 0  # clipped at the left edge ...
    assert box.width < box.height  # ... so the (square) box lost its left part
    assert box.y >= 0
    assert box.x + box.width <= cut.width and box.y + box.height <= cut.height


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_no_face_gives_empty_list(name: str) -> None:
    image = Image.fromarray(getattr(data, name)())
    assert detect_faces(image) == []
    with pytest.raises(NodeError, match="no face"):
        main_face(image)


def test_solid_colour_has_no_face() -> None:
    assert detect_faces(Image.new("RGB", (300, 300), (200, 180, 160))) == []


def test_detectors_work_from_several_threads(astronaut: Image.Image) -> None:
    results: list[list[FaceBox]] = []
    lock = threading.Lock()

    def detect() -> None:
        found = detect_faces(astronaut)
        with lock:
            results.append(found)

    threads = [threading.Thread(target=detect) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 4
    assert all(found == results[0] and len(found) == 1 for found in results)


def test_threads_taking_turns_share_one_graph(astronaut: Image.Image) -> None:
    """A graph is built per call running at once, not per thread that ever ran one:
    eight threads in turn, each on its first call, build no detector or segmenter
    beyond the first, and get what a fresh one finds."""
    first = detect_faces(astronaut, min_score=0.61)  # a threshold of its own
    person_mask(astronaut)
    built = vision._detectors.built, vision._segmenters.built
    found: list[list[FaceBox]] = []
    masks: list[np.ndarray] = []
    for _ in range(8):
        t = threading.Thread(
            target=lambda: (
                found.append(detect_faces(astronaut, min_score=0.61)),
                masks.append(person_mask(astronaut)),
            )
        )
        t.start()
        t.join()
    assert (vision._detectors.built, vision._segmenters.built) == built
    assert all(f == first for f in found)
    assert all(np.array_equal(m, masks[0]) for m in masks)


class _Graph:
    def __init__(self, n: int) -> None:
        self.n = n
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_model_pool_builds_one_graph_per_caller_at_once() -> None:
    pool = vision._Models(max_keys=2)
    made: list[_Graph] = []

    def build() -> _Graph:
        made.append(_Graph(len(made)))
        return made[-1]

    with pool.borrow("a", build) as g1, pool.borrow("a", build) as g2:
        assert g1 is not g2  # two at once: two graphs
    with pool.borrow("a", build) as g3:
        assert g3 in (g1, g2)  # then lent again
    assert len(made) == 2
    # A call that raised closes its graph rather than lend it again.
    with pytest.raises(RuntimeError), pool.borrow("a", build) as g4:
        raise RuntimeError("graph broke")
    assert g4.closed
    with pool.borrow("a", build) as g5:
        assert g5 is not g4
    # Past max_keys, the least recently used key's idle graphs are closed.
    with pool.borrow("b", build):
        pass
    with pool.borrow("c", build):
        pass
    assert all(g.closed for g in (g1, g2) if g is not g4)
    assert pool.built == len(made)


def test_portrait_crop_frames_head_and_shoulders(astronaut: Image.Image, face: FaceBox) -> None:
    crop = portrait_crop(astronaut, face)
    assert crop.size == (768, 960)
    (box,) = detect_faces(crop)
    cx, cy = box.center
    assert abs(cx - 384) <= 0.10 * 768
    assert cy < 480
    assert 0.30 <= box.height / 960 <= 0.45  # face ≈ 35–40 % of the frame


def test_portrait_crop_custom_size(astronaut: Image.Image, face: FaceBox) -> None:
    assert portrait_crop(astronaut, face, width=400, height=500).size == (400, 500)


def test_portrait_crop_pads_instead_of_distorting(astronaut: Image.Image) -> None:
    # Face near the top-left corner: the frame must leave the image.
    tight = astronaut.crop((140, 50, 340, 260))
    face = main_face(tight)
    crop, padding = portrait_crop_with_padding(tight, face)
    assert crop.size == (768, 960)
    assert padding.shape == (960, 768) and padding.dtype == bool
    assert padding.any() and not padding.all()
    assert padding[0].all()  # the top rows lie above the photo
    (box,) = detect_faces(crop)
    assert abs(box.center[0] - 384) <= 0.10 * 768
    # Not distorted: the detected face box stays square-ish, as in the source.
    assert 0.8 <= box.width / box.height <= 1.25


def test_no_padding_when_the_frame_fits(astronaut: Image.Image, face: FaceBox) -> None:
    _, padding = portrait_crop_with_padding(astronaut, face)
    assert not padding.any()


def test_person_mask_covers_the_astronaut(astronaut: Image.Image, face: FaceBox) -> None:
    mask = person_mask(astronaut)
    assert mask.shape == (512, 512)
    assert mask.dtype == np.float32
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    face_region = mask[face.y : face.y + face.height, face.x : face.x + face.width]
    assert face_region.mean() > 0.8
    assert mask[:60, 440:].mean() < 0.2  # top-right corner: background
    assert mask[:40, :40].mean() < 0.2  # top-left corner: background


def test_studio_backdrop_is_smooth_and_lighter_behind_the_head() -> None:
    backdrop = studio_backdrop((300, 400), NEUTRAL_GREY)
    assert backdrop.size == (300, 400) and backdrop.mode == "RGB"
    pixels = np.asarray(backdrop, dtype=np.float32)
    head = pixels[130:170, 130:170].mean()
    corner = pixels[:20, :20].mean()
    assert head > corner + 10
    assert abs(head - 128) < 25  # still recognisably the requested grey
    # Dithered: neighbouring pixels differ by at most a couple of levels.
    assert np.abs(np.diff(pixels, axis=1)).max() <= 3
    # Deterministic.
    assert np.array_equal(pixels, np.asarray(studio_backdrop((300, 400), NEUTRAL_GREY)))


def test_studio_backdrop_rejects_bad_colour() -> None:
    with pytest.raises(ValueError):
        studio_backdrop((10, 10), (0, 0, 300))


def test_replace_background_puts_backdrop_in_the_corners(
    astronaut: Image.Image, face: FaceBox
) -> None:
    crop = portrait_crop(astronaut, face)
    mask = person_mask(crop)
    backdrop = studio_backdrop(crop.size, (40, 90, 160))
    result = replace_background(crop, mask, backdrop)
    assert result.size == crop.size and result.mode == "RGB"
    out = np.asarray(result, dtype=np.float32)
    expected = np.asarray(backdrop, dtype=np.float32)
    for rows, cols in [(slice(0, 40), slice(0, 40)), (slice(0, 40), slice(-40, None))]:
        assert np.abs(out[rows, cols] - expected[rows, cols]).mean() < 8
    # Well inside the silhouette the photo is untouched (only a thin edge band is
    # recoloured to hide the old background).
    solid = cv2.erode((mask > 0.99).astype(np.uint8), np.ones((15, 15), np.uint8)) > 0
    assert solid.mean() > 0.3
    original = np.asarray(crop, dtype=np.float32)
    assert np.abs(out[solid] - original[solid]).max() <= 3


def test_replace_background_checks_mask_shape(astronaut: Image.Image) -> None:
    with pytest.raises(ValueError, match="mask shape"):
        replace_background(
            astronaut, np.ones((10, 10), np.float32), studio_backdrop((512, 512), NEUTRAL_GREY)
        )
