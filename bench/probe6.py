"""``python -m bench.probe6``: where row 6's time goes, for whoever works on that row.

Row 6 runs 1,000 small image runs through an in-process Platform.  This probe runs the
same batch and prints, per run, the CPU time each kind of thread spent (read from
``/proc/self/task``, so nothing is instrumented) beside the wall time and the plain
loop's.  Two variants put figures on the two ways out that the issue tracker discusses:

- ``--cpu 0`` pins the whole process to one core: how much the second core buys the
  threaded design (the GIL lets little of a run's Python overlap);
- ``--processes 2`` runs the batch split over that many independent Platforms, one per
  process, each with its own data directory: an upper bound for running runs in worker
  processes (no hand-off between them at all).

It prints figures only; the bench's table is ``python -m bench``.  Linux only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import workflows
from bench.common import astronaut, data_uri, png, variant
from bench.runs import Bench, small_image_floor

SRC, DST = 128, 64


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of each thread of this process, by native id."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        out[int(tid)] = (int(fields[11]) + int(fields[12])) / tick
    return out


def _kind(name: str) -> str:
    """``flowy-node_3`` -> ``flowy-node``: threads of one pool count together."""
    return name.rstrip("0123456789_-") or name


def _images(n: int, offset: int) -> list[str]:
    base = astronaut(SRC)
    return [data_uri(png(variant(base, offset + i))) for i in range(n)]


def batch(
    workdir: Path, n: int, offset: int = 0, ready: Any = None, go: Any = None
) -> dict[str, Any]:
    """Run ``n`` distinct resize runs, submitted at once through ``RunService.start`` as
    row 6 does; answer the wall time and the CPU time by thread kind."""
    b = Bench(workdir, f"probe6-{offset}")
    try:
        uris = _images(n, offset)
        app = b.app("Small resize", workflows.resize(DST, DST))
        warm = _images(20, offset + n)
        for uri in warm:
            b.run(app, {"node_1": uri})
        if ready is not None:
            ready.put("ready")
            go.wait()
        before = thread_cpu()
        t0 = time.perf_counter()
        accepted = [b.p.runs.start(b.ws, app, {"inputs": {"node_1": u}}) for u in uris]
        for f in accepted:
            f.result(timeout=300)
        while b.ended(app) < n + len(warm):
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        after = thread_cpu()
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id}
        cpu: dict[str, float] = {}
        for tid, seconds in after.items():
            kind = _kind(names.get(tid, f"thread {tid}"))
            cpu[kind] = cpu.get(kind, 0.0) + seconds - before.get(tid, 0.0)
        return {"wall": wall, "cpu": cpu}
    finally:
        b.close()


def _child(workdir: str, n: int, offset: int, ready: Any, go: Any, out: Any) -> None:
    out.put(batch(Path(workdir), n, offset, ready, go))


def in_processes(workdir: Path, n: int, procs: int) -> dict[str, Any]:
    """The batch split over ``procs`` processes that start it at the same moment."""
    ctx = multiprocessing.get_context("spawn")
    ready, go, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    share = n // procs
    children = [
        ctx.Process(target=_child, args=(str(workdir), share, k * 100_000, ready, go, out))
        for k in range(procs)
    ]
    for c in children:
        c.start()
    for _ in children:
        ready.get(timeout=300)
    t0 = time.perf_counter()
    go.set()
    results = [out.get(timeout=600) for _ in children]
    wall = time.perf_counter() - t0
    for c in children:
        c.join()
    cpu: dict[str, float] = {}
    for r in results:
        for kind, seconds in r["cpu"].items():
            cpu[kind] = cpu.get(kind, 0.0) + seconds
    return {"wall": wall, "cpu": cpu, "runs": share * procs}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.probe6", description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--cpu", type=int, help="pin the process to this core")
    ap.add_argument("--processes", type=int, default=1, help="split the runs over processes")
    args = ap.parse_args(argv)
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})
    with tempfile.TemporaryDirectory(prefix="flowy-probe6-") as tmp:
        if args.processes > 1:
            res = in_processes(Path(tmp), args.runs, args.processes)
            n = res["runs"]
        else:
            res = batch(Path(tmp), args.runs)
            n = args.runs
    floor = small_image_floor(_images(n, 0), DST)
    wall_ms = res["wall"] / n * 1000
    floor_ms = floor / n * 1000
    where = f"pinned to core {args.cpu}" if args.cpu is not None else "unpinned"
    print(
        f"{n} runs of {SRC} px -> {DST} px in {args.processes} process(es), {where}: "
        f"{wall_ms:.3f} ms/run; plain loop {floor_ms:.3f} ms/run; "
        f"ratio {floor / res['wall']:.2f}x"
    )
    total = sum(res["cpu"].values())
    print(f"CPU per run, by thread ({total / n * 1000:.3f} ms in all):")
    for kind, seconds in sorted(res["cpu"].items(), key=lambda kv: -kv[1]):
        if seconds > 0:
            print(f"  {kind:24s} {seconds / n * 1000:7.3f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
