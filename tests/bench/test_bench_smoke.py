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
