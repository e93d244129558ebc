"""Video and audio nodes, run by the ffmpeg binary that ships inside ``imageio-ffmpeg``
(see :mod:`flowy.media.ffmpeg`).

Files travel on ``file`` ports as :class:`~flowy.engine.spec.Artifact` (bytes, content
type, name).  Each ffmpeg call works in a private temporary directory, has a time limit,
is killed when the run is canceled, and turns a failure into a NodeError carrying
ffmpeg's own last error line.  Nothing touches the network: ffmpeg only ever reads the
files written here.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Final, Literal

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, model_validator

from flowy.engine.spec import Artifact, NodeContext, Port, node
from flowy.errors import NodeError
from flowy.media.decode import decode_image
from flowy.media.ffmpeg import MediaInfo, encoders, input_args, probe, run_ffmpeg, workdir
from flowy.media.sniff import extension_for, sniff_content_type
from flowy.nodes.image import Color, contain_size, cover_crop, parse_color, scaled

#: Node and ffmpeg time limits for encoding a video.
ENCODE_NODE_TIMEOUT: Final = 300.0
ENCODE_TIMEOUT: Final = 280.0
#: How many image inputs ``video.from_images`` has.
SLIDE_INPUTS: Final = 8


def _write_input(directory: Path, file: Artifact, stem: str = "input") -> Path:
    if not isinstance(file, Artifact):
        raise NodeError(f"expected a file, got {type(file).__name__}")
    if not file.data:
        raise NodeError("the file is empty")
    content_type = sniff_content_type(file.data)
    known = content_type != "application/octet-stream"
    path = directory / (f"{stem}.{extension_for(content_type)}" if known else stem)
    path.write_bytes(file.data)
    return path


# --------------------------------------------------------------------------- frames


def _frame_at(ctx: NodeContext, video: Artifact, at: float | None, fraction: float) -> Image.Image:
    """The frame ``at`` seconds into ``video`` (or at ``fraction`` of its duration)."""
    with workdir() as tmp:
        directory = Path(tmp)
        path = _write_input(directory, video)
        info = probe(ctx, path, "video")
        if info.video_codec is None:
            raise NodeError("the file has no video stream")
        t = at if at is not None else fraction * (info.duration or 0.0)
        if info.duration is not None:
            if t > info.duration:
                raise NodeError(
                    f"time {t:g} s is past the end of the video ({info.duration:.2f} s long)"
                )
            # The last frame starts a little before the stated end.
            t = max(0.0, min(t, info.duration - 0.1))
        args = ["-ss", f"{t:.3f}", *input_args(path.name)]
        args += ["-frames:v", "1", "-c:v", "png", "frame.png"]
        run_ffmpeg(ctx, args, directory, what="frame extraction")
        out = directory / "frame.png"
        if not out.is_file() or out.stat().st_size == 0:
            raise NodeError(f"the video has no frame at {t:g} s")
        return decode_image(out.read_bytes(), max_pixels=ctx.max_pixels)


class ExtractFrameParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    time: float = Field(0.0, ge=0, le=86_400, description="Seconds from the start.")


@node(
    "video.extract_frame",
    title="Extract frame",
    category="video",
    params=ExtractFrameParams,
    inputs={
        "video": Port("file", "A video file"),
        "time": Port("number", "Overrides the time param (seconds)", optional=True),
    },
    outputs={"image": Port("image")},
)
def extract_frame(
    ctx: NodeContext, params: ExtractFrameParams, video: Artifact, time: float | None = None
) -> dict[str, object]:
    """The frame of a video at a time in seconds, as an image at the video's size.

    Fails when the time is past the end of the video or the file is not a video.
    """
    if time is not None and not 0 <= time <= 86_400:
        raise NodeError(f"time must be between 0 and 86400 s, got {time:g}")
    at = float(time) if time is not None else params.time
    return {"image": _frame_at(ctx, video, at, 0.0)}


class ThumbnailParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    position: float = Field(
        0.25, ge=0, le=1, description="Where to take the frame, as a fraction of the duration."
    )
    time: float | None = Field(
        None, ge=0, le=86_400, description="Seconds from the start; overrides position."
    )
    width: int = Field(640, ge=16, le=4096, description="Width of the thumbnail box, pixels.")
    height: int = Field(360, ge=16, le=4096, description="Height of the thumbnail box, pixels.")
    fit: Literal["contain", "cover"] = Field(
        "contain", description="'contain' keeps the whole frame, 'cover' fills the box exactly."
    )


@node(
    "video.thumbnail",
    title="Video thumbnail",
    category="video",
    params=ThumbnailParams,
    inputs={"video": Port("file", "A video file")},
    outputs={"image": Port("image")},
)
def thumbnail(ctx: NodeContext, params: ThumbnailParams, video: Artifact) -> dict[str, object]:
    """A thumbnail of a video: the frame at a fraction of its duration (or a time), scaled
    to fit (or fill) a box."""
    frame = _frame_at(ctx, video, params.time, params.position)
    box = (params.width, params.height)
    if params.fit == "cover":
        return {"image": cover_crop(frame, box)}
    return {"image": scaled(frame, contain_size(frame.size, box))}


# --------------------------------------------------------------------------- encoding


class FromImagesParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: Literal["mp4", "gif"] = Field("mp4", description="MP4 (H.264) video or animated GIF.")
    seconds_per_image: float = Field(
        2.0, ge=0.1, le=30, description="How long each image is shown, seconds."
    )
    transition: float = Field(
        0.0, ge=0, le=5, description="Cross-fade between images, seconds (0: cut)."
    )
    fps: int = Field(25, ge=1, le=60, description="Frames per second (GIFs use at most 15).")
    width: int = Field(0, ge=0, le=3840, description="Frame width; 0 takes the first image's.")
    height: int = Field(0, ge=0, le=2160, description="Frame height; 0 takes the first image's.")
    fit: Literal["cover", "contain"] = Field(
        "cover", description="'cover' fills the frame (cropping), 'contain' letterboxes."
    )
    background: Color = Field("#000000", description="Letterbox colour for 'contain'.")
    loop: bool = Field(True, description="GIF: play forever.")
    filename: str = Field(
        "video", pattern=r"^[A-Za-z0-9._\-]{1,64}$", description="File name, without extension."
    )


def _frame_size(params: FromImagesParams, first: Image.Image, even: bool) -> tuple[int, int]:
    width, height = params.width, params.height
    if not width and not height:
        width, height = contain_size(first.size, (1920, 1080), upscale=False)
    elif not height:
        height = max(1, round(width * first.height / first.width))
    elif not width:
        width = max(1, round(height * first.width / first.height))
    if even:  # H.264 in yuv420p needs even sides
        width, height = max(2, width - width % 2), max(2, height - height % 2)
    return width, height


def _slide(image: Image.Image, size: tuple[int, int], params: FromImagesParams) -> Image.Image:
    if params.fit == "cover":
        return cover_crop(image.convert("RGB"), size).convert("RGB")
    canvas = Image.new("RGB", size, parse_color(params.background)[:3])
    inner = scaled(image, contain_size(image.size, size)).convert("RGBA")
    canvas.paste(inner, ((size[0] - inner.width) // 2, (size[1] - inner.height) // 2), inner)
    return canvas


def _timeline(
    slides: list[Image.Image], hold: float, fade: float, fade_steps: int
) -> Iterator[tuple[Image.Image, float]]:
    """``(frame, seconds shown)`` for a slideshow: each slide shown ``hold`` seconds, the
    last ``fade`` of them (but the last slide's) a cross-fade into the next slide."""
    fade = min(fade, 0.9 * hold) if len(slides) > 1 and fade_steps > 0 else 0.0
    for i, slide in enumerate(slides):
        last = i == len(slides) - 1
        yield slide, hold if last else hold - fade
        if not last and fade > 0:
            for k in range(1, fade_steps + 1):
                yield Image.blend(slide, slides[i + 1], k / (fade_steps + 1)), fade / fade_steps


def _encode_mp4(
    ctx: NodeContext, slides: list[Image.Image], params: FromImagesParams
) -> tuple[bytes, str]:
    width, height = slides[0].size
    codec = (
        ["-c:v", "libx264", "-preset", "veryfast", "-crf", "20"]
        if "libx264" in encoders()
        else ["-c:v", "mpeg4", "-q:v", "3"]
    )

    def frames() -> Iterator[bytes]:
        # Frames are counted on the running time, so rounding never adds up to drift.
        steps = round(params.transition * params.fps)
        shown, sent = 0.0, 0
        for frame, seconds in _timeline(slides, params.seconds_per_image, params.transition, steps):
            shown += seconds
            raw = frame.tobytes()
            while sent < round(shown * params.fps):
                sent += 1
                yield raw

    with workdir() as tmp:
        directory = Path(tmp)
        args = [
            "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
            "-r", str(params.fps), "-i", "-",
            *codec, "-pix_fmt", "yuv420p", "-movflags", "+faststart", "out.mp4",
        ]  # fmt: skip
        run_ffmpeg(ctx, args, directory, timeout=ENCODE_TIMEOUT, stdin=frames(), what="encoding")
        return (directory / "out.mp4").read_bytes(), "video/mp4"


def _encode_gif(slides: list[Image.Image], params: FromImagesParams) -> tuple[bytes, str]:
    fade_steps = round(params.transition * min(params.fps, 15))
    frames, durations = [], []
    for frame, seconds in _timeline(
        slides, params.seconds_per_image, params.transition, fade_steps
    ):
        # Fast octree palettes: median cut (Pillow's default) is ~100 times slower.
        frames.append(frame.quantize(256, method=Image.Quantize.FASTOCTREE))
        durations.append(round(1000 * seconds))
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="GIF",
        save_all=True,
        append_images=frames[1:],
        duration=durations,
        loop=0 if params.loop else 1,
        optimize=False,
        disposal=1,
    )
    return buf.getvalue(), "image/gif"


@node(
    "video.from_images",
    title="Slideshow video",
    category="video",
    params=FromImagesParams,
    inputs={
        f"image_{i}": Port("image", "Optional; empty inputs are left out", optional=True)
        for i in range(1, SLIDE_INPUTS + 1)
    },
    outputs={"file": Port("file", "The MP4 video or animated GIF")},
    timeout_seconds=ENCODE_NODE_TIMEOUT,
)
def from_images(
    ctx: NodeContext, params: FromImagesParams, **images: Image.Image | None
) -> dict[str, object]:
    """Make a slideshow of up to eight images: an MP4 video (H.264, or MPEG-4 when the
    bundled ffmpeg lacks it) or an animated GIF, each image held for a time, with an
    optional cross-fade."""
    slides_in = [img for i in range(1, SLIDE_INPUTS + 1) if (img := images.get(f"image_{i}"))]
    if not slides_in:
        raise NodeError("no images to make a video of: give at least one of image_1 ... image_8")
    size = _frame_size(params, slides_in[0], even=params.format == "mp4")
    if size[0] * size[1] > ctx.max_pixels:
        raise NodeError(f"frames of {size[0]}×{size[1]} pixels are over the pixel limit")
    slides = [_slide(img, size, params) for img in slides_in]
    ctx.check_canceled()
    if params.format == "gif":
        data, content_type = _encode_gif(slides, params)
    else:
        data, content_type = _encode_mp4(ctx, slides, params)
    ext = "gif" if params.format == "gif" else "mp4"
    return {"file": Artifact(data, content_type, f"{params.filename}.{ext}")}


# --------------------------------------------------------------------------- audio


class TrimParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    start: float = Field(0.0, ge=0, le=86_400, description="Where to start, seconds.")
    end: float | None = Field(
        None, gt=0, le=86_400, description="Where to stop, seconds; empty: the end."
    )

    @model_validator(mode="after")
    def _ordered(self) -> TrimParams:
        if self.end is not None and self.end <= self.start:
            raise ValueError(f"end ({self.end:g} s) must be after start ({self.start:g} s)")
        return self


# ffmpeg demuxer -> the extension (and so muxer) that keeps the format.
_AUDIO_CONTAINERS: Final = {
    "wav": "wav",
    "mp3": "mp3",
    "ogg": "ogg",
    "flac": "flac",
    "aac": "aac",
    "aiff": "aiff",
    "mov": "m4a",
}
# Lossless codecs are re-encoded (an exact cut, no quality loss); most lossy ones are
# copied (cut at the nearest packet, a few milliseconds off, but no second generation of
# loss).  Vorbis cannot be copied accurately (its pre-roll keeps a second too much).
_LOSSLESS: Final = re.compile(r"^(pcm_\w+|flac)$")
_REENCODE: Final = {"vorbis": ["-c:a", "libvorbis", "-q:a", "6"]}


def _trim_codec(codec: str) -> list[str]:
    if _LOSSLESS.match(codec):
        return ["-c:a", codec]
    return _REENCODE.get(codec, ["-c:a", "copy"])


def _audio_ext(info: MediaInfo) -> str:
    names = info.format.split(",")
    for name, ext in _AUDIO_CONTAINERS.items():
        if name in names:
            return ext
    if "matroska" in names:
        return "webm" if info.audio_codec in ("opus", "vorbis") else "mka"
    raise NodeError(f"cannot keep the format of {info.format or 'this'} audio when trimming")


@node(
    "audio.trim",
    title="Trim audio",
    category="audio",
    params=TrimParams,
    inputs={"audio": Port("file", "An audio file (or a video, for its sound)")},
    outputs={"file": Port("file", "The trimmed audio, in the same format")},
)
def trim(ctx: NodeContext, params: TrimParams, audio: Artifact) -> dict[str, object]:
    """Cut audio to the part from start to end (seconds), keeping its format (MP3, WAV,
    M4A, Ogg, FLAC...).  An end past the audio's end means "to the end"; a start past it
    fails."""
    with workdir() as tmp:
        directory = Path(tmp)
        path = _write_input(directory, audio)
        info = probe(ctx, path, "audio")
        if info.audio_codec is None:
            raise NodeError("the file has no audio stream")
        if info.duration is not None and params.start >= info.duration:
            raise NodeError(
                f"start {params.start:g} s is past the end of the audio "
                f"({info.duration:.2f} s long)"
            )
        ext = _audio_ext(info)
        codec = _trim_codec(info.audio_codec)
        args = ["-ss", f"{params.start:.3f}"]
        if params.end is not None:
            args += ["-to", f"{params.end:.3f}"]
        args += [*input_args(path.name), "-map", "0:a:0", "-vn", *codec, f"trimmed.{ext}"]
        run_ffmpeg(ctx, args, directory, what="trimming")
        data = (directory / f"trimmed.{ext}").read_bytes()
    stem = audio.filename.rpartition(".")[0] or "audio"
    content_type = sniff_content_type(data)
    if content_type == "application/octet-stream":
        content_type = audio.content_type
    return {"file": Artifact(data, content_type, f"{stem}-trimmed.{ext}")}


NODES = [extract_frame, thumbnail, from_images, trim]
