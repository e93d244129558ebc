"""``python -m bench [--smoke] [--only 1,4,9]``: run the benchmark rows, print the table,
write bench/results/*.json.  See bench/README.md."""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import shlex
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import Config, Row, machine, source_digest
from bench.report import render, write_json

#: Row id -> (module, function).  Modules are imported when their row runs, so a quick
#: ``--only 4`` does not pay for mediapipe.
ROWS: dict[int, tuple[str, str]] = {
    1: ("bench.http", "row_get_run"),
    2: ("bench.http", "row_create_run"),
    3: ("bench.runs", "row_first_node"),
    4: ("bench.engine", "row_engine"),
    5: ("bench.runs", "row_headshot"),
    6: ("bench.runs", "row_small_runs"),
    7: ("bench.runs", "row_cache_hit"),
    8: ("bench.served", "row_memory"),
    9: ("bench.served", "row_comfy"),  # also yields row 10
    11: ("bench.sse", "row_sse"),
}


def settle() -> None:
    """Start a row on a quiet machine: what the rows before it wrote is flushed to disk
    now (the kernel would do it some 30 s later, in the middle of another row's timing)
    and their garbage is collected."""
    os.sync()
    gc.collect()


def _parse_only(text: str | None) -> list[int]:
    if not text:
        return sorted(ROWS)
    ids = sorted({int(x) for x in text.split(",") if x.strip()})
    ids = [9 if i == 10 else i for i in ids]  # 10 comes with 9
    unknown = [i for i in ids if i not in ROWS]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}; rows are 1-11")
    return sorted(set(ids))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CI): well under a minute")
    ap.add_argument("--only", help="comma-separated row ids, e.g. 1,4,9")
    ap.add_argument("--workdir", type=Path, help="scratch directory (default: a temp dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    for noisy in ("flowy", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    command = shlex.join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])])
    ids = _parse_only(args.only)
    host = machine()  # before any thread starts: it forks a two-process calibration
    digest = source_digest()
    with tempfile.TemporaryDirectory(prefix="flowy-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        cfg = Config(smoke=args.smoke, command=command, workdir=workdir)
        rows: list[Row] = []
        started = time.monotonic()
        for rid in ids:
            module, name = ROWS[rid]
            settle()
            t0 = time.monotonic()
            print(f"[bench] row {rid} ({module}.{name}) ...", file=sys.stderr, flush=True)
            try:
                fn: Callable[[Config], Row | list[Row]] = getattr(
                    importlib.import_module(module), name
                )
                got = fn(cfg)
                new = got if isinstance(got, list) else [got]
            except Exception as exc:  # one broken row must not hide the others
                traceback.print_exc()
                new = [
                    Row(
                        rid, module, "-", "-", command=command, error=f"{type(exc).__name__}: {exc}"
                    )
                ]
            for r in new:
                r.seconds = time.monotonic() - t0
                print(
                    f"[bench]   {r.id}: {r.measured} vs {r.floor} -> {r.ratio_text}",
                    file=sys.stderr,
                )
            rows.extend(new)
        runs_mod = sys.modules.get("bench.runs")
        if runs_mod is not None:
            runs_mod.close_shared()
        meta = {
            "smoke": args.smoke,
            "command": command,
            "machine": host,
            "flowy_source_sha256_start": digest,
            "flowy_source_sha256_end": source_digest(),
            "total_seconds": round(time.monotonic() - started, 1),
        }
        path = write_json(rows, meta)
    print(render(rows, meta))
    print(f"\nwrote {path} (total {meta['total_seconds']} s)")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
