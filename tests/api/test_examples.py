"""Every example app, run end to end on one real server, with real photos.

Set ``FLOWY_SAVE_EXAMPLES=/some/dir`` to keep each output there for a look.
"""

from __future__ import annotations

import base64
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
import requests
from PIL import Image, ImageEnhance
from skimage import data

from flowy.media.decode import encode_image
from flowy.nodes.vision import detect_faces
from tests.flowy_process import FlowyProcess

TITLES = ("Background swap", "Social card", "Watermark", "Photo enhance", "Contact sheet")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    flowy = FlowyProcess(
        tmp_path_factory.mktemp("examples"), env={"FLOWY_ALLOW_PRIVATE_URLS": "1"}
    ).start()
    yield flowy
    flowy.stop()


@pytest.fixture(scope="module")
def apps(server: FlowyProcess) -> dict[str, str]:
    listed = server.get("/apps").json()["data"]
    return {a["title"]: a["id"] for a in listed}


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def data_uri(blob: bytes, content_type: str = "image/png") -> str:
    return f"data:{content_type};base64," + base64.b64encode(blob).decode()


def upload(server: FlowyProcess, blob: bytes, name: str) -> str:
    res = server.post("/uploads", files={"file": (name, blob)})
    assert res.status_code == 201, res.text
    return str(res.json()["data"]["url"])


def run(server: FlowyProcess, app_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    res = server.post(f"/apps/{app_id}/runs", json={"inputs": inputs})
    assert res.status_code == 201, res.text
    return server.wait_run(res.json()["data"]["runId"], timeout=120)


def filename(out: dict[str, Any]) -> str:
    """The download name of an output file: the last segment of its link's path."""
    return str(out["url"]).split("?", 1)[0].rsplit("/", 1)[-1]


def output(result: dict[str, Any], name: str, index: int = 0) -> bytes:
    """The bytes of an output file of a completed run (kept when FLOWY_SAVE_EXAMPLES)."""
    assert result["status"] == "completed", result["error"]
    out = result["outputs"][index]
    blob = requests.get(out["url"], timeout=30).content
    folder = os.environ.get("FLOWY_SAVE_EXAMPLES")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        ext = filename(out).rsplit(".", 1)[-1]
        (Path(folder) / f"{name}.{ext}").write_bytes(blob)
    return blob


def image_of(blob: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blob)).convert("RGB"), dtype=np.float64)


def test_every_example_is_installed_and_published(apps: dict[str, str]) -> None:
    assert set(TITLES) <= set(apps)
    assert "Headshot generator" in apps


def test_background_swap_onto_a_photo_and_onto_a_colour(
    server: FlowyProcess, apps: dict[str, str]
) -> None:
    app = apps["Background swap"]
    person = upload(server, png(data.astronaut()), "astronaut.png")
    coffee = data.coffee()
    result = run(server, app, {"node_1": person, "node_2": data_uri(png(coffee))})
    swapped = image_of(output(result, "background-swap-photo"))
    assert swapped.shape == (512, 512, 3)
    # The face is the astronaut's, the top-right corner now the (cover-cropped) coffee.
    face = np.asarray(data.astronaut(), dtype=np.float64)[90:170, 190:250]
    assert np.abs(swapped[90:170, 190:250] - face).mean() < 6
    cropped = np.asarray(
        Image.fromarray(coffee).resize((600, 400)).crop((44, 0, 556, 400)).resize((512, 400))
    )
    assert np.abs(swapped[:60, 420:] - np.asarray(data.astronaut())[:60, 420:]).mean() > 30
    assert swapped[:60, 430:].mean() < cropped[:60, 430:].mean() + 40

    result = run(server, app, {"node_1": person, "node_3": "#2f5d8a"})
    plain = image_of(output(result, "background-swap-colour"))
    assert np.abs(plain[:40, 440:].reshape(-1, 3).mean(axis=0) - (0x2F, 0x5D, 0x8A)).max() < 4
    assert np.abs(plain[90:170, 190:250] - face).mean() < 6

    failed = run(server, app, {"node_1": person, "node_3": "no such colour"})
    assert failed["status"] == "failed"
    assert failed["error"].startswith("node_4 (Replace background): 'no such colour' is not a")


def test_social_card_is_1200x630_with_the_face_and_legible_text(
    server: FlowyProcess, apps: dict[str, str]
) -> None:
    photo = upload(server, png(data.astronaut()), "astronaut.png")
    inputs = {
        "node_1": photo,
        "node_2": "Flowy turns node graphs into apps anyone can run",
        "node_3": "Self-hosted · open source · flowy.example",
    }
    card_blob = output(run(server, apps["Social card"], inputs), "social-card")
    card = Image.open(io.BytesIO(card_blob))
    assert card.format == "JPEG" and card.size == (1200, 630)
    faces = detect_faces(card)
    assert faces, "the cover crop lost the face"
    assert faces[0].y > 0 and faces[0].y + faces[0].height < 630
    pixels = image_of(card_blob)
    text_zone = pixels[380:600, 60:1000]
    white = (text_zone.min(axis=2) > 225).mean()
    assert white > 0.04, "no title text in the bottom left"
    # Darkened behind the text: what is not text is dark, so white type stands out.
    assert np.median(text_zone.mean(axis=2)) < 90
    assert pixels[:200].mean() > np.median(text_zone.mean(axis=2)) + 40

    no_subtitle = image_of(
        output(run(server, apps["Social card"], {"node_1": photo, "node_2": "Hi"}), "card-short")
    )
    assert no_subtitle.shape == (630, 1200, 3)


def test_watermark_changes_only_its_corner_or_the_whole_photo_when_tiled(
    server: FlowyProcess, apps: dict[str, str]
) -> None:
    coffee = data.coffee()
    photo = upload(server, png(coffee), "coffee.png")
    app = apps["Watermark"]
    marked = image_of(
        output(run(server, app, {"node_1": photo, "node_2": "© Flowy 2026"}), "watermark")
    )
    assert marked.shape == coffee.shape
    # The photo as the app encodes it (JPEG, quality 92) but without the watermark.
    plain = image_of(encode_image(Image.fromarray(coffee), "jpeg", quality=92)[0])
    diff = np.abs(marked - plain).mean(axis=2)
    corner = diff[330:, 380:]  # the bottom-right corner carries the text
    assert corner.mean() > 4 and (corner > 60).mean() > 0.03
    assert diff[:300, :350].max() < 4  # JPEG blocks away from it are as they were
    tiled = image_of(
        output(
            run(server, app, {"node_1": photo, "node_2": "PREVIEW", "node_3": "tiled"}),
            "watermark-tiled",
        )
    )
    tile_diff = np.abs(tiled - plain).mean(axis=2)
    for quadrant in (tile_diff[:200, :300], tile_diff[:200, 300:], tile_diff[200:, :300]):
        assert quadrant.mean() > 4
    bad = run(server, app, {"node_1": photo, "node_2": "   "})
    assert bad["status"] == "failed" and "no watermark text" in bad["error"]


def _local_contrast(pixels: np.ndarray) -> float:
    grey = pixels.mean(axis=2)
    blurred = np.asarray(
        Image.fromarray(grey.astype(np.uint8)).resize((64, 64)).resize(grey.shape[::-1]),
        dtype=np.float64,
    )
    return float(np.abs(grey - blurred).mean())


def test_photo_enhance_adds_local_contrast_and_applies_a_look(
    server: FlowyProcess, apps: dict[str, str]
) -> None:
    flat = ImageEnhance.Contrast(Image.fromarray(data.chelsea())).enhance(0.45)
    flat_pixels = np.asarray(flat, dtype=np.float64)
    photo = upload(server, png(np.asarray(flat)), "flat-cat.png")
    app = apps["Photo enhance"]
    enhanced = image_of(output(run(server, app, {"node_1": photo}), "enhance-natural"))
    assert enhanced.shape == flat_pixels.shape
    assert _local_contrast(enhanced) > 1.4 * _local_contrast(flat_pixels)
    assert enhanced.std() > 1.3 * flat_pixels.std()
    noir = image_of(
        output(run(server, app, {"node_1": photo, "node_3": "noir", "node_2": 1}), "enhance-noir")
    )
    # Nearly black and white (the look is applied at 80 %).
    colourful = np.abs(flat_pixels[..., 0] - flat_pixels[..., 2]).mean()
    assert np.abs(noir[..., 0] - noir[..., 2]).mean() < 0.35 * colourful
    none = image_of(output(run(server, app, {"node_1": photo, "node_2": 0}), "enhance-none"))
    assert np.abs(none - flat_pixels).mean() < 4  # strength 0: only sharpening and JPEG
    refused = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": photo, "node_2": 3}})
    assert refused.status_code == 422 and "must be at most 1" in refused.text


def test_contact_sheet_lays_out_the_given_photos(
    server: FlowyProcess, apps: dict[str, str]
) -> None:
    photos = [
        data.astronaut(),
        data.coffee(),
        data.chelsea(),
        data.rocket(),
        data.hubble_deep_field(),
    ]
    urls = [upload(server, png(p), f"p{i}.png") for i, p in enumerate(photos)]
    app = apps["Contact sheet"]
    three = image_of(
        output(
            run(server, app, {"node_1": urls[0], "node_3": urls[1], "node_6": urls[2]}),
            "contact-sheet-3",
        )
    )
    assert three.shape == (400 + 2 * 12, 3 * 400 + 4 * 12, 3)
    assert np.abs(three[:12].mean(axis=(0, 1)) - 0xF2).max() < 3  # background in the gap
    # Each cell holds its photo: compare average colours with the source photos.
    for col, source in enumerate(photos[:3]):
        left = 12 + col * 412
        cell = three[12:412, left : left + 400]
        assert np.abs(cell.mean(axis=(0, 1)) - source.mean(axis=(0, 1))).max() < 25
    five = image_of(
        output(
            run(server, app, {f"node_{i + 1}": url for i, url in enumerate(urls)}),
            "contact-sheet-5",
        )
    )
    assert five.shape == (2 * 400 + 3 * 12, 3 * 400 + 4 * 12, 3)
    assert np.abs(five[430:820, 860:1240].mean(axis=(0, 1)) - 0xF2).max() < 3  # empty cell


# --------------------------------------------------------------------------- files


def _ffmpeg(*args: str) -> None:
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    subprocess.run([exe, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def test_video_and_audio_files_through_an_app(server: FlowyProcess, tmp_path: Path) -> None:
    video, audio = tmp_path / "clip.mp4", tmp_path / "tone.mp3"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=2", "-pix_fmt",
            "yuv420p", str(video))  # fmt: skip
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=4", str(audio))
    workflow = {
        "nodes": [
            {"id": "node_1", "type": "input.video_url", "label": "Clip"},
            {"id": "node_2", "type": "input.audio_url", "label": "Sound"},
            {"id": "node_3", "type": "video.extract_frame", "params": {"time": 1.0},
             "inputs": {"video": {"node": "node_1", "port": "file"}}},
            {"id": "node_4", "type": "audio.trim", "params": {"start": 1.0, "end": 2.5},
             "inputs": {"audio": {"node": "node_2", "port": "file"}}},
            {"id": "node_5", "type": "output.image", "label": "Frame",
             "inputs": {"image": {"node": "node_3", "port": "image"}}},
            {"id": "node_6", "type": "output.file", "label": "Clip of the sound",
             "params": {"filename": "excerpt"},
             "inputs": {"file": {"node": "node_4", "port": "file"}}},
        ]
    }  # fmt: skip
    res = server.post("/apps", json={"title": "Media", "workflow": workflow, "published": True})
    assert res.status_code == 201, res.text
    app = res.json()["data"]
    assert [i["kind"] for i in app["inputs"]] == ["video_url", "audio_url"]
    assert [o["outputType"] for o in app["outputs"]] == ["image", "file"]
    inputs = {
        "node_1": upload(server, video.read_bytes(), "clip.mp4"),
        "node_2": data_uri(audio.read_bytes(), "audio/mpeg"),
    }
    result = run(server, app["id"], inputs)
    assert Image.open(io.BytesIO(output(result, "frame"))).size == (320, 240)
    file_out = result["outputs"][1]
    assert file_out["kind"] == "file" and filename(file_out) == "excerpt.mp3"
    assert file_out["contentType"] == "audio/mpeg"
    trimmed = tmp_path / "excerpt.mp3"
    trimmed.write_bytes(output(result, "excerpt", 1))
    _frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert abs(seconds - 2.0) < 0.05
    pcm = subprocess.run(
        [imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(trimmed), "-f", "s16le",
         "-ac", "1", "-ar", "8000", "-"],
        capture_output=True, check=True,
    ).stdout  # fmt: skip
    assert abs(len(pcm) / 2 / 8000 - 1.5) < 0.06

    wrong = run(
        server, app["id"], {"node_1": data_uri(png(data.coffee())), "node_2": inputs["node_2"]}
    )
    assert wrong["status"] == "failed"
    assert wrong["error"].startswith("node_1 (Clip): not a video file: the content is image/png")
