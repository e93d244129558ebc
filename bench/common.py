"""What every benchmark row shares: the row record, statistics, the machine, test images.

Nothing here talks to Flowy; it is plain measurement plumbing.
"""

from __future__ import annotations

import base64
import io
import os
import platform
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from PIL import Image

#: Packages whose versions matter to a row, by topic.
HTTP_PACKAGES = ("fastapi", "starlette", "uvicorn", "pydantic", "sqlalchemy", "uvloop", "httptools")
IMAGE_PACKAGES = ("pillow", "numpy", "opencv-contrib-python", "mediapipe")
ENGINE_PACKAGES = ("pydantic",)

SERVER_CPU = 0
LOADER_CPU = 1


@dataclass
class Row:
    """One line of the report: a Flowy path measured side by side with its floor."""

    id: int
    path: str
    against: str
    target: str
    measured: str = "n/a"
    floor: str = "n/a"
    ratio: float | None = None
    ratio_text: str = "n/a"
    ok: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    command: str = ""
    seconds: float = 0.0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Config:
    """Sizes of one bench invocation; ``smoke`` shrinks everything for CI."""

    smoke: bool
    command: str
    workdir: Path

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def secs(self, full: float, smoke: float) -> float:
        return smoke if self.smoke else full


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, ``q`` in [0, 100]; NaN for no values."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(values: Iterable[float]) -> float:
    xs = list(values)
    return statistics.median(xs) if xs else float("nan")


def summary_ms(values_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean in milliseconds of durations given in seconds."""
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(percentile(ms, 50), 3),
        "p90_ms": round(percentile(ms, 90), 3),
        "p99_ms": round(percentile(ms, 99), 3),
        "max_ms": round(max(ms), 3) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 3) if ms else float("nan"),
    }


# --------------------------------------------------------------------------- the machine


@cache
def package_version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "missing"


def versions(*packages: str) -> dict[str, str]:
    """flowy, Python and the named packages' installed versions."""
    out = {"flowy": package_version("flowy"), "python": platform.python_version()}
    out.update({p: package_version(p) for p in packages})
    return out


@cache
def wrk_version() -> str | None:
    path = shutil.which("wrk")
    if path is None:
        return None
    res = subprocess.run([path, "-v"], capture_output=True, text=True, timeout=10)
    first = (res.stdout + res.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


def _burn(n: int) -> float:
    t0 = time.perf_counter()
    x = 0
    for i in range(n):
        x += i * i
    return time.perf_counter() - t0


def parallel_speedup(n: int = 3_000_000) -> float:
    """How much faster two processes finish two equal CPU-bound loops than one process
    running both: ~2.0 on two free cores, ~1.0 when the "cores" share one CPU's time.
    It bounds every ratio that needs both cores (rows 6 and 9)."""
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as ex:
        list(ex.map(_burn, [1000, 1000]))  # start both workers
        best_one = best_two = float("inf")
        for _ in range(3):
            t0 = time.perf_counter()
            list(ex.map(_burn, [n]))
            list(ex.map(_burn, [n]))
            best_one = min(best_one, time.perf_counter() - t0)
            t0 = time.perf_counter()
            list(ex.map(_burn, [n, n]))
            best_two = min(best_two, time.perf_counter() - t0)
    return best_one / best_two


def source_digest() -> str:
    """SHA-256 over the installed flowy package's .py files: the tree other engineers edit
    may change during a run, and the report says so when it did."""
    import hashlib

    import flowy

    root = Path(flowy.__file__).resolve().parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "uname": " ".join(platform.uname()),
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": sys.version.split()[0],
        "taskset": shutil.which("taskset") is not None,
        "wrk": wrk_version(),
        "parallel_speedup_2_procs": round(parallel_speedup(), 2),
    }


def pin(cpu: int) -> list[str]:
    """A ``taskset`` prefix binding a command to ``cpu``; empty when that is not possible."""
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    return ["taskset", "-c", str(cpu)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_mib(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of a process in MiB, from /proc (no psutil needed)."""
    rss = hwm = float("nan")
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    return rss, hwm


class Deadline:
    """A wall-clock budget that every loop of a row checks."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    @property
    def left(self) -> float:
        return self.end - time.monotonic()

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise TimeoutError(f"{what}: over its {self.seconds:g} s budget")


# --------------------------------------------------------------------------- images


@cache
def astronaut(size: int) -> Image.Image:
    """scikit-image's public-domain astronaut portrait, Lanczos-resized to ``size``²."""
    from skimage import data

    img = Image.fromarray(data.astronaut())  # type: ignore[no-untyped-call]
    return img if img.size == (size, size) else img.resize((size, size), Image.Resampling.LANCZOS)


def variant(image: Image.Image, i: int) -> Image.Image:
    """``image`` with its corner pixels encoding ``i``: same work, different content (no
    cache hit between variants)."""
    out = image.copy()
    out.putpixel((0, 0), (i & 0xFF, (i >> 8) & 0xFF, (i >> 16) & 0xFF))
    return out


def png(image: Image.Image, level: int = 4) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=level)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


_KEY = re.compile(r"flowy_sk_[A-Za-z0-9_\-]+")


def redact(text: str) -> str:
    """A command line fit to print: API keys (of the bench's throwaway servers) elided."""
    return _KEY.sub("flowy_sk_…", text)


def fmt_rate(x: float, unit: str = "req/s") -> str:
    return f"{x:,.0f} {unit}" if x >= 100 else f"{x:,.1f} {unit}"


def fmt_ratio(x: float) -> str:
    return f"{x:.2f}×" if x < 100 else f"{x:,.0f}×"
