"""Closed-loop HTTP load: ``wrk`` when it is installed, else a Python asyncio loader; either
way in its own process, pinned to the core the server is not on.

As a module it is the Python loader::

    python -m bench.loadgen --port 8000 --path /v1/runs/ID --header "Authorization: Bearer K" \
        --connections 16 --duration 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.client import Connection
from bench.common import LOADER_CPU, percentile, pin, redact, wrk_version
from bench.server import ROOT


@dataclass(frozen=True)
class Load:
    """What one load run measured."""

    rps: float
    requests: int
    non2xx: int
    errors: int
    p50_ms: float
    p99_ms: float
    tool: str
    command: str


@dataclass(frozen=True)
class Target:
    port: int
    path: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""


def run_load(target: Target, *, connections: int, duration: float, workdir: Path) -> Load:
    """Drive ``target`` for ``duration`` seconds with ``connections`` keep-alive connections
    (``FLOWY_BENCH_LOADER=python`` forces the Python loader even when wrk is installed)."""
    if os.environ.get("FLOWY_BENCH_LOADER") != "python" and shutil.which("wrk"):
        return _wrk(target, connections, duration, workdir)
    return _python(target, connections, duration, workdir)


# --------------------------------------------------------------------------- wrk

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    return float(m.group(1)) * _UNITS[m.group(2)] if m else float("nan")


def _lua(target: Target) -> str:
    lines = [f'wrk.method = "{target.method}"']
    for k, v in target.headers:
        lines.append(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}")
    if target.body:
        lines.append(f"wrk.body = {json.dumps(target.body.decode())}")
    return "\n".join(lines) + "\n"


def _wrk(target: Target, connections: int, duration: float, workdir: Path) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", dir=workdir, delete=False) as f:
        f.write(_lua(target))
        script = f.name
    argv = [
        *pin(LOADER_CPU),
        "wrk",
        "-t2",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "10s",
        "--latency",
        "-s",
        script,
        f"http://127.0.0.1:{target.port}{target.path}",
    ]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    out = res.stdout
    if res.returncode != 0 or "Requests/sec" not in out:
        raise RuntimeError(f"wrk failed ({res.returncode}): {out}\n{res.stderr}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    dist = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    return Load(
        rps=rps,
        requests=total,
        non2xx=int(non2xx.group(1)) if non2xx else 0,
        errors=sum(int(x) for x in errors.groups()) if errors else 0,
        p50_ms=_ms(dist.get("50", "")),
        p99_ms=_ms(dist.get("99", "")),
        tool=wrk_version() or "wrk",
        command=redact(" ".join(argv)),
    )


# --------------------------------------------------------------------------- python


def _python(target: Target, connections: int, duration: float, workdir: Path) -> Load:
    body_file = workdir / f"body-{time.monotonic_ns()}.bin"
    body_file.write_bytes(target.body)
    argv = [
        *pin(LOADER_CPU),
        sys.executable,
        "-m",
        "bench.loadgen",
        "--port",
        str(target.port),
        "--path",
        target.path,
        "--method",
        target.method,
        "--body-file",
        str(body_file),
        "--connections",
        str(connections),
        "--duration",
        str(duration),
    ]
    for k, v in target.headers:
        argv += ["--header", f"{k}: {v}"]
    res = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, cwd=ROOT)
    if res.returncode != 0:
        raise RuntimeError(f"python loader failed: {res.stderr[-2000:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    shown = [a if " " not in a else repr(a) for a in argv]
    return Load(**{**data, "tool": "python asyncio loader", "command": redact(" ".join(shown))})


async def _drive(target: Target, connections: int, duration: float) -> dict[str, float]:
    latencies: list[float] = []
    counts = {"requests": 0, "non2xx": 0, "errors": 0}
    deadline = time.perf_counter() + duration
    headers = dict(target.headers)

    async def worker() -> None:
        conn = Connection(target.port, headers)
        try:
            while (t0 := time.perf_counter()) < deadline:
                try:
                    res = await conn.request(target.method, target.path, target.body, timeout=10)
                except (TimeoutError, OSError, ValueError):
                    counts["errors"] += 1
                    await conn.close()
                    continue
                latencies.append(time.perf_counter() - t0)
                counts["requests"] += 1
                if not 200 <= res.status < 400:
                    counts["non2xx"] += 1
        finally:
            await conn.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    ms = [x * 1000 for x in latencies]
    return {
        **counts,
        "rps": counts["requests"] / elapsed,
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="closed-loop HTTP/1.1 load on 127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--method", default="GET")
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--body-file")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--duration", type=float, default=5.0)
    args = ap.parse_args()
    headers = tuple((k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in args.header))
    body = Path(args.body_file).read_bytes() if args.body_file else b""
    target = Target(args.port, args.path, args.method, headers, body)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(_drive(target, args.connections, args.duration))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
