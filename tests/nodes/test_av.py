"""Video and audio nodes, the file input/output nodes and content sniffing, on small
clips made here with the bundled ffmpeg (``testsrc`` video, ``sine`` audio)."""

from __future__ import annotations

import io
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image
from skimage import data

from flowy.engine.graph import parse_workflow
from flowy.engine.registry import default_registry
from flowy.engine.spec import SKIP, Artifact, NodeType
from flowy.errors import GraphInvalid, MediaError, NodeError, RunCanceled
from flowy.media.fetch import FetchPolicy
from flowy.media.ffmpeg import encoders, probe, run_ffmpeg, workdir
from flowy.media.sniff import sniff_content_type
from flowy.nodes import av
from flowy.nodes import io as io_nodes

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


@dataclass
class FakeMedia:
    files: dict[str, bytes] = field(default_factory=dict)

    def read(self, value: str) -> bytes:
        if value not in self.files:
            raise MediaError(f"could not fetch {value}")
        return self.files[value]


@dataclass
class FakeContext:
    run_id: str = "run_1"
    node_id: str = "node_1"
    input_value: object = None
    media: Any = field(default_factory=FakeMedia)
    max_pixels: int = 64_000_000
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)
    canceled: bool = False

    def check_canceled(self) -> None:
        if self.canceled:
            raise RunCanceled("run was canceled", self.node_id)

    def secret(self, name: str) -> str:
        raise NodeError(f"no secret {name}")

    def progress(self, fraction: float) -> None:
        pass


def call(nt: NodeType, params: dict[str, Any] | None = None, **inputs: Any) -> Any:
    ctx = inputs.pop("ctx", None) or FakeContext()
    result = nt.run(ctx, nt.params.model_validate(params or {}), **inputs)
    return result[next(iter(nt.outputs))] if nt.outputs else result["value"]


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def artifact(path: Path) -> Artifact:
    blob = path.read_bytes()
    return Artifact(blob, sniff_content_type(blob), path.name)


def seconds_of_audio(blob: bytes, tmp: Path) -> float:
    """Duration by decoding every sample (8 kHz mono 16-bit), not by trusting headers."""
    path = tmp / "decode-me"
    path.write_bytes(blob)
    pcm = subprocess.run(
        [FFMPEG, "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", "8000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    return len(pcm) / 2 / 8000


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clips")
    made = {
        "video": root / "clip.mp4",
        "wav": root / "tone.wav",
        "mp3": root / "tone.mp3",
        "ogg": root / "tone.ogg",
        "m4a": root / "tone.m4a",
        "flac": root / "tone.flac",
    }
    # 3 s of the moving test card at 25 fps, with a tone, so the clip has both streams.
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=320x240:rate=25:duration=3",
           "-f", "lavfi", "-i", "sine=frequency=440:duration=3",
           "-pix_fmt", "yuv420p", "-shortest", str(made["video"]))  # fmt: skip
    for kind in ("wav", "mp3", "ogg", "m4a", "flac"):
        ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=5", str(made[kind]))
    return made


# --------------------------------------------------------------------------- frames


def _reference_frame(path: Path, index: int) -> np.ndarray:
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    for i, raw in enumerate(reader):
        if i == index:
            reader.close()
            w, h = meta["size"]
            return np.frombuffer(raw, np.uint8).reshape(h, w, 3).astype(np.float64)
    raise AssertionError("no such frame")


def test_extract_frame_gives_the_frame_at_that_time(clips: dict[str, Path]) -> None:
    video = artifact(clips["video"])
    frame = call(av.extract_frame, {"time": 1.0}, video=video)
    assert frame.size == (320, 240) and frame.mode == "RGB"
    pixels = np.asarray(frame, dtype=np.float64)
    assert np.abs(pixels - _reference_frame(clips["video"], 25)).mean() < 3
    assert np.abs(pixels - _reference_frame(clips["video"], 50)).mean() > 3  # not any frame
    later = call(av.extract_frame, video=video, time=2.0)  # the port overrides the param
    assert (
        np.abs(np.asarray(later, dtype=np.float64) - _reference_frame(clips["video"], 50)).mean()
        < 3
    )
    last = call(av.extract_frame, {"time": 3.0}, video=video)
    assert last.size == (320, 240)


def test_extract_frame_names_what_is_wrong(clips: dict[str, Path]) -> None:
    video = artifact(clips["video"])
    with pytest.raises(NodeError, match=r"time 4.5 s is past the end of the video \(3.00 s long\)"):
        call(av.extract_frame, {"time": 4.5}, video=video)
    with pytest.raises(NodeError, match="the file has no video stream"):
        call(av.extract_frame, video=artifact(clips["wav"]))
    png = io.BytesIO()
    Image.fromarray(data.coffee()).save(png, "PNG")
    with pytest.raises(NodeError, match="not a video file ffmpeg can read: .*[Ii]nvalid data"):
        call(
            av.extract_frame, video=Artifact(b"\x00garbage" * 500, "application/octet-stream", "x")
        )
    # A playlist would make ffmpeg open what it names (here a local file): refused.
    playlist = (
        b"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(NodeError, match="not a video file ffmpeg can read"):
        call(av.extract_frame, video=Artifact(playlist, "application/octet-stream", "x.m3u8"))
    with workdir() as tmp:
        (Path(tmp) / "list.m3u8").write_bytes(playlist)
        with pytest.raises(NodeError, match="the format is not an audio or video format Flowy"):
            probe(FakeContext(), Path(tmp) / "list.m3u8", "video")
    with pytest.raises(NodeError, match="the file is empty"):
        call(av.extract_frame, video=Artifact(b"", "application/octet-stream", "x"))
    with pytest.raises(NodeError, match="time must be between 0 and 86400 s, got -1"):
        call(av.extract_frame, video=video, time=-1)


def test_thumbnail_fits_or_fills_the_box(clips: dict[str, Path]) -> None:
    video = artifact(clips["video"])
    assert call(av.thumbnail, {"width": 160, "height": 160}, video=video).size == (160, 120)
    assert call(av.thumbnail, {"width": 100, "height": 100, "fit": "cover"}, video=video).size == (
        100,
        100,
    )
    at_start = call(av.thumbnail, {"position": 0, "width": 320, "height": 240}, video=video)
    assert (
        np.abs(np.asarray(at_start, dtype=np.float64) - _reference_frame(clips["video"], 0)).mean()
        < 3
    )


# --------------------------------------------------------------------------- encoding


def test_slideshow_mp4_has_the_right_length_and_size(tmp_path: Path) -> None:
    slides = {
        "image_1": Image.fromarray(data.astronaut()),
        "image_3": Image.fromarray(data.coffee()),
    }
    file = call(
        av.from_images, {"seconds_per_image": 1.5, "width": 321, "height": 200, "fps": 10}, **slides
    )
    assert isinstance(file, Artifact) and file.content_type == "video/mp4"
    assert file.filename == "video.mp4" and sniff_content_type(file.data) == "video/mp4"
    path = tmp_path / "slides.mp4"
    path.write_bytes(file.data)
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == 30 and abs(seconds - 3.0) < 0.01
    meta = next(imageio_ffmpeg.read_frames(str(path)))
    assert tuple(meta["size"]) == (320, 200)  # even sides for H.264
    codec = "h264" if "libx264" in encoders() else "mpeg4"
    assert codec in meta["codec"]
    faded = call(av.from_images, {"seconds_per_image": 1, "transition": 0.5, "fps": 10}, **slides)
    path.write_bytes(faded.data)
    frames, _ = imageio_ffmpeg.count_frames_and_secs(str(path))
    assert frames == 20  # the cross-fade overlaps the slides, it does not lengthen the video


def test_slideshow_gif(tmp_path: Path) -> None:
    slides = {
        f"image_{i}": Image.fromarray(img)
        for i, img in enumerate([data.astronaut(), data.chelsea(), data.coffee()], 1)
    }
    file = call(
        av.from_images,
        {"format": "gif", "seconds_per_image": 0.5, "width": 200, "height": 150},
        **slides,
    )
    assert file.content_type == "image/gif" and file.filename == "video.gif"
    gif = Image.open(io.BytesIO(file.data))
    assert gif.size == (200, 150) and gif.n_frames == 3
    assert gif.info["duration"] == 500
    with pytest.raises(NodeError, match="no images to make a video of"):
        call(av.from_images)


# --------------------------------------------------------------------------- audio


@pytest.mark.parametrize("kind", ["wav", "mp3", "ogg", "m4a", "flac"])
def test_trim_keeps_the_format_and_cuts_to_the_duration(
    kind: str, clips: dict[str, Path], tmp_path: Path
) -> None:
    source = artifact(clips[kind])
    out = call(av.trim, {"start": 1.0, "end": 3.5}, audio=source)
    assert out.content_type == source.content_type
    assert out.filename == f"tone-trimmed.{kind}"
    exact = kind in ("wav", "flac")  # re-encoded losslessly; the others are cut at packets
    assert abs(seconds_of_audio(out.data, tmp_path) - 2.5) < (0.002 if exact else 0.06)


def test_trim_to_the_end_and_errors(clips: dict[str, Path], tmp_path: Path) -> None:
    wav = artifact(clips["wav"])
    rest = call(av.trim, {"start": 3.0, "end": 60}, audio=wav)
    assert abs(seconds_of_audio(rest.data, tmp_path) - 2.0) < 0.002
    sound = call(av.trim, {"start": 0.5}, audio=artifact(clips["video"]))
    assert sound.filename == "clip-trimmed.m4a" and sound.content_type == "audio/mp4"
    assert abs(seconds_of_audio(sound.data, tmp_path) - 2.5) < 0.06
    with pytest.raises(NodeError, match=r"start 7 s is past the end of the audio \(5.00 s long\)"):
        call(av.trim, {"start": 7}, audio=wav)
    silent = tmp_path / "silent.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:duration=1", "-pix_fmt", "yuv420p", str(silent))
    with pytest.raises(NodeError, match="the file has no audio stream"):
        call(av.trim, audio=artifact(silent))
    with pytest.raises(NodeError, match="not an audio file ffmpeg can read"):
        call(av.trim, audio=Artifact(b"%PDF-1.4 nothing", "application/pdf", "x.pdf"))


def test_bad_av_params_are_refused_when_the_workflow_is_saved() -> None:
    def workflow(params: dict[str, Any]) -> dict[str, Any]:
        return {
            "nodes": [
                {"id": "node_1", "type": "input.audio_url"},
                {"id": "node_2", "type": "audio.trim", "params": params,
                 "inputs": {"audio": {"node": "node_1", "port": "file"}}},
                {"id": "node_3", "type": "output.file",
                 "inputs": {"file": {"node": "node_2", "port": "file"}}},
            ]
        }  # fmt: skip

    registry = default_registry(load_entry_points=False)
    parse_workflow(workflow({"start": 1, "end": 2}), registry)
    with pytest.raises(
        GraphInvalid, match=r"node_2: params: Value error, end \(1 s\) must be after start \(2 s\)"
    ):
        parse_workflow(workflow({"start": 2, "end": 1}), registry)
    with pytest.raises(
        GraphInvalid, match="node_2: param start: Input should be greater than or equal to 0"
    ):
        parse_workflow(workflow({"start": -1}), registry)
    bad_wire = workflow({})
    bad_wire["nodes"][2]["type"] = "output.image"
    bad_wire["nodes"][2]["inputs"] = {"image": {"node": "node_2", "port": "file"}}
    with pytest.raises(GraphInvalid, match="input 'image' takes image but node_2.file gives file"):
        parse_workflow(bad_wire, registry)


# --------------------------------------------------------------------------- ffmpeg runner


def test_ffmpeg_is_stopped_at_its_time_limit_and_on_cancel() -> None:
    endless = ["-f", "lavfi", "-i", "testsrc=size=640x480:rate=25", "-f", "null", "-"]
    with workdir() as tmp:
        started = time.monotonic()
        with pytest.raises(NodeError, match="encoding took longer than 0.5 s"):
            run_ffmpeg(FakeContext(), endless, Path(tmp), timeout=0.5, what="encoding")
        assert time.monotonic() - started < 5
        started = time.monotonic()
        with pytest.raises(RunCanceled):
            run_ffmpeg(FakeContext(canceled=True), endless, Path(tmp), timeout=30)
        assert time.monotonic() - started < 5


def test_ffmpeg_errors_carry_its_last_line_without_private_paths(clips: dict[str, Path]) -> None:
    with workdir() as tmp:
        with pytest.raises(NodeError) as caught:
            run_ffmpeg(FakeContext(), ["-i", "missing.mp4", "out.mp4"], Path(tmp), what="trimming")
        assert caught.value.message.startswith("trimming failed: ")
        assert "No such file" in caught.value.message and tmp not in caught.value.message
        (Path(tmp) / "clip.mp4").write_bytes(clips["video"].read_bytes())
        info = probe(FakeContext(), Path(tmp) / "clip.mp4", "video")
    assert (info.width, info.height, info.video_codec, info.audio_codec) == (
        320,
        240,
        "h264",
        "aac",
    )
    assert info.duration is not None and abs(info.duration - 3.0) < 0.05
    assert "mp4" in info.format.split(",")


# --------------------------------------------------------------------------- file ports


def test_file_inputs_sniff_the_content_and_name_the_file(clips: dict[str, Path]) -> None:
    mp3 = clips["mp3"].read_bytes()
    url = "http://example.test/v1/files/abc/My%20Song.MP3?expires=1&signature=x"
    ctx = FakeContext(input_value=url, media=FakeMedia({url: mp3}))
    params = io_nodes.MediaInputParams()
    out = io_nodes.audio_input.run(ctx, params)["file"]
    assert out == Artifact(mp3, "audio/mpeg", "My_Song.mp3")
    uri = "data:audio/wav;base64,AAAA"
    wav = clips["wav"].read_bytes()
    ctx = FakeContext(input_value=uri, media=FakeMedia({uri: wav}))
    assert io_nodes.audio_input.run(ctx, params)["file"].filename == "audio.wav"
    video = clips["video"].read_bytes()
    ctx = FakeContext(
        input_value="https://x.test/clip", media=FakeMedia({"https://x.test/clip": video})
    )
    got = io_nodes.video_input.run(ctx, params)["file"]
    assert (got.content_type, got.filename) == ("video/mp4", "clip.mp4")
    ctx = FakeContext(
        input_value="https://x.test/a.pdf", media=FakeMedia({"https://x.test/a.pdf": b"%PDF-1.7 x"})
    )
    assert io_nodes.file_input.run(ctx, params)["file"].content_type == "application/pdf"
    with pytest.raises(MediaError, match="not a video file: the content is application/pdf"):
        io_nodes.video_input.run(ctx, params)
    with pytest.raises(MediaError, match="not an audio file: the content is application/pdf"):
        io_nodes.audio_input.run(ctx, params)
    optional = io_nodes.MediaInputParams(required=False)
    assert io_nodes.audio_input.run(FakeContext(), optional)["file"] is SKIP
    assert io_nodes.image_input.run(FakeContext(), optional)["image"] is SKIP


def test_file_output_names_the_download() -> None:
    file = Artifact(b"ID3...", "audio/mpeg", "tone-trimmed.mp3")
    params = io_nodes.FileOutputParams
    assert io_nodes.file_output.run(FakeContext(), params(), file=file)["value"] == file
    renamed = io_nodes.file_output.run(FakeContext(), params(filename="excerpt"), file=file)
    assert renamed["value"] == Artifact(b"ID3...", "audio/mpeg", "excerpt.mp3")
    bare = Artifact(b"ID3...", "audio/mpeg", "noext")
    assert (
        io_nodes.file_output.run(FakeContext(), params(filename="x"), file=bare)["value"].filename
        == "x.mp3"
    )


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"ID3\x04\x00", "audio/mpeg"),
        (b"\xff\xfb\x90\x64", "audio/mpeg"),
        (b"\xff\xf1\x50\x80", "audio/aac"),
        (b"OggS\x00\x02", "audio/ogg"),
        (b"fLaC\x00\x00", "audio/flac"),
        (b"RIFF\x00\x00\x00\x00WAVEfmt ", "audio/wav"),
        (b"RIFF\x00\x00\x00\x00AVI LIST", "video/x-msvideo"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x1cftypM4A \x00\x00", "audio/mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00", "video/quicktime"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00", "video/mp4"),
        (b"\x1a\x45\xdf\xa3\x9f\x42", "video/webm"),
        (b"\x89PNG\r\n\x1a\n", "image/png"),
        (b"%PDF-1.7", "application/pdf"),
        (b"hello", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_sniffing(head: bytes, expected: str) -> None:
    assert sniff_content_type(head) == expected
