"""Running the ffmpeg binary that ships inside ``imageio-ffmpeg``: time limits,
cancellation, readable errors, and reading a file's format, duration and streams.

Each call works in a directory the caller owns (see :func:`workdir`).  A failure becomes
a :class:`~flowy.errors.NodeError` carrying ffmpeg's own last error line, with the
private directory's path taken out.  ffmpeg only ever reads files written there: it is
never given a URL.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Protocol

from flowy.errors import NodeError

#: Demuxers ffmpeg may use on a file given to it: ordinary audio and video containers.
#: Playlist and script formats (HLS, concat, ...) are left out, as they make ffmpeg open
#: further files or URLs named inside the file.
DEMUXERS: Final = (
    "mov,matroska,webm,avi,mpeg,mpegts,flv,gif,ogg,mp3,wav,flac,aac,aiff,asf,amr,caf,w64,"
    "ivf,m4v,h264,hevc,mjpeg"
)


def input_args(name: str) -> list[str]:
    """ffmpeg arguments that open the local file ``name`` as an input, and nothing else:
    only the file protocol (no network), only the :data:`DEMUXERS`."""
    return ["-protocol_whitelist", "file", "-format_whitelist", DEMUXERS, "-i", name]


#: Default time limit of one ffmpeg call, seconds (below the default node time limit).
FFMPEG_TIMEOUT: Final = 100.0
_POLL: Final = 0.05
_LOG: Final = "ffmpeg.log"


class Cancelable(Protocol):
    """What ffmpeg calls need of a node context: to notice a canceled run."""

    @property
    def canceled(self) -> bool: ...

    def check_canceled(self) -> None: ...


@functools.cache
def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg binary."""
    import imageio_ffmpeg

    try:
        return str(imageio_ffmpeg.get_ffmpeg_exe())
    except RuntimeError as exc:  # no binary for this platform
        raise NodeError(f"ffmpeg is not available: {exc}") from None


@functools.cache
def encoders() -> frozenset[str]:
    """Names of the encoders the bundled ffmpeg has (e.g. ``libx264``, ``mpeg4``)."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    return frozenset(re.findall(r"^\s*[VAS][\w.]{5}\s+(\S+)", result.stdout, re.MULTILINE))


def workdir() -> tempfile.TemporaryDirectory[str]:
    """A private temporary directory for one piece of work, removed afterwards."""
    return tempfile.TemporaryDirectory(prefix="flowy-av-")


def error_line(stderr: str, directory: Path) -> str:
    """ffmpeg's most useful error line: the last non-empty one, without its
    ``[module @ 0x..]`` prefix and without the private directory's path."""
    lines = [
        re.sub(r"^\[[^\]]*\]\s*", "", line).replace(f"{directory}/", "").strip()
        for line in stderr.splitlines()
    ]
    lines = [line for line in lines if line]
    return lines[-1] if lines else "no error message"


def run_ffmpeg(
    ctx: Cancelable,
    args: list[str],
    directory: Path,
    *,
    timeout: float = FFMPEG_TIMEOUT,
    stdin: Iterable[bytes] | None = None,
    what: str = "ffmpeg",
    loglevel: str = "error",
) -> str:
    """Run ffmpeg with ``args`` in ``directory``; return what it wrote to stderr.

    ``stdin`` chunks (raw video frames, say) are written to its standard input.  Raises
    RunCanceled when the run is canceled, NodeError when it takes longer than
    ``timeout`` seconds or exits with an error (with its last error line).
    """
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", loglevel, "-y"]
    if stdin is None:
        cmd.append("-nostdin")
    deadline = time.monotonic() + timeout
    with (directory / _LOG).open("w+b") as log:
        proc = subprocess.Popen(
            [*cmd, *args],
            cwd=directory,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
        # A safety net for a write that blocks: the process dies at the deadline anyway.
        killer = threading.Timer(timeout + 1.0, proc.kill)
        killer.start()
        try:
            if stdin is not None:
                _feed(ctx, proc, stdin, deadline, timeout, what)
            while proc.poll() is None:
                _check(ctx, proc, deadline, timeout, what)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(_POLL)
        finally:
            killer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        log.seek(0)
        stderr = log.read().decode("utf-8", "replace")
    if proc.returncode != 0 and time.monotonic() > deadline:
        raise NodeError(f"{what} took longer than {timeout:g} s")
    if proc.returncode != 0:
        raise NodeError(f"{what} failed: {error_line(stderr, directory)}")
    return stderr


def _check(
    ctx: Cancelable, proc: subprocess.Popen[bytes], deadline: float, timeout: float, what: str
) -> None:
    if ctx.canceled:
        proc.kill()
        ctx.check_canceled()
    if time.monotonic() > deadline:
        proc.kill()
        raise NodeError(f"{what} took longer than {timeout:g} s")


def _feed(
    ctx: Cancelable,
    proc: subprocess.Popen[bytes],
    chunks: Iterable[bytes],
    deadline: float,
    timeout: float,
    what: str,
) -> None:
    assert proc.stdin is not None
    try:
        for chunk in chunks:
            _check(ctx, proc, deadline, timeout, what)
            proc.stdin.write(chunk)
    except (BrokenPipeError, ValueError):
        pass  # ffmpeg stopped reading; its exit status and log say why
    finally:
        with contextlib.suppress(BrokenPipeError):
            proc.stdin.close()


@dataclass(frozen=True)
class MediaInfo:
    """What ffmpeg reports about a media file."""

    format: str  # ffmpeg's demuxer names, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None
    width: int | None
    height: int | None
    video_codec: str | None
    audio_codec: str | None


def probe(ctx: Cancelable, path: Path, kind: str = "media") -> MediaInfo:
    """Read a file's format, duration, frame size and codecs (``ffmpeg -i``).

    Raises NodeError naming ``kind`` (``video``, ``audio``) when ffmpeg cannot read it.
    """
    try:
        run_ffmpeg(ctx, input_args(path.name), path.parent, loglevel="info", what="probe")
    except NodeError as exc:
        stderr = (path.parent / _LOG).read_text("utf-8", "replace")
        # Without an output file ffmpeg always exits 1; "Input #0" means it read the file.
        if "Input #0" not in stderr:
            cause = exc.message.removeprefix("probe failed: ")
            if "not on whitelist" in stderr:
                cause = "the format is not an audio or video format Flowy reads"
            article = "an" if kind[:1] in ("a", "e", "i", "o", "u") else "a"
            raise NodeError(f"not {article} {kind} file ffmpeg can read: {cause}") from None
    else:  # pragma: no cover - ffmpeg -i without an output exits 1
        stderr = (path.parent / _LOG).read_text("utf-8", "replace")
    fmt = re.search(r"Input #0, (.+?), from ", stderr)
    dur = re.search(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)", stderr)
    # ", 320x240" and never the "0x31637661" of a codec tag.
    video = re.search(r"Stream #0:\d+.*?: Video: (\w+).*?, (\d{1,5})x(\d{1,5})\b", stderr)
    audio = re.search(r"Stream #0:\d+.*?: Audio: (\w+)", stderr)
    duration = None
    if dur:
        duration = int(dur.group(1)) * 3600 + int(dur.group(2)) * 60 + float(dur.group(3))
    return MediaInfo(
        format=fmt.group(1) if fmt else "",
        duration=duration,
        width=int(video.group(2)) if video else None,
        height=int(video.group(3)) if video else None,
        video_codec=video.group(1) if video else None,
        audio_codec=audio.group(1) if audio else None,
    )
