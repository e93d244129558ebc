"""The benchmark suite still runs (tiny sizes; times are printed, never asserted)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_smoke_measures_its_rows() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--only", "4,7"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "| 4 |" in res.stdout and "| 7 |" in res.stdout  # the table is printed
    latest = json.loads((ROOT / "bench" / "results" / "latest-smoke.json").read_text())
    rows = {r["id"]: r for r in latest["rows"]}
    assert set(rows) == {4, 7}
    for row in rows.values():
        assert row["error"] is None
        assert isinstance(row["ratio"], float) and math.isfinite(row["ratio"])


def test_row_6_probe_accounts_for_the_threads_of_two_processes() -> None:
    res = subprocess.run(
        [sys.executable, "-m", "bench.probe6", "--runs", "200", "--processes", "2"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "200 runs of 128 px -> 64 px in 2 process(es)" in res.stdout
    # The runs' threads were found and their CPU time counted (the kernel counts it in
    # 10 ms ticks: the threads that work most on 100 runs a process show for sure).
    for kind in ("flowy-worker", "flowy-node"):
        assert f"  {kind} " in res.stdout, res.stdout
