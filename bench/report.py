"""The bench's outputs: a JSON file under bench/results/ and a table on stdout."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Row

RESULTS = Path(__file__).resolve().parent / "results"


def write_json(rows: Sequence[Row], meta: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    kind = "smoke" if meta.get("smoke") else "full"
    path = RESULTS / f"bench-{kind}-{stamp}.json"
    doc = {"meta": meta, "rows": [r.to_json() for r in rows]}
    path.write_text(json.dumps(doc, indent=2, default=str) + "\n")
    (RESULTS / f"latest-{kind}.json").write_text(path.read_text())
    return path


def _status(row: Row) -> str:
    if row.error:
        return "ERROR"
    return {True: "ok", False: "MISS", None: "-"}[row.ok]


def _table(headers: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(headers)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in lines:
        out.append("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(out)


def render(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    """The table (markdown), then each row's versions and command."""
    m = meta["machine"]
    head = [
        f"Flowy bench ({'smoke' if meta.get('smoke') else 'full'}), {m['date']}",
        f"machine: {m['uname']}; nproc {m['nproc']}; {m['cpu']}; python {m['python']}",
        f"two processes on this machine run {m['parallel_speedup_2_procs']}x as fast as one "
        "(2.0 = two free cores)",
        f"flowy source sha256 {meta['flowy_source_sha256_start']}"
        + (
            ""
            if meta["flowy_source_sha256_start"] == meta["flowy_source_sha256_end"]
            else f" -> {meta['flowy_source_sha256_end']} (WARNING: src/flowy changed during "
            "the run; rows may mix versions)"
        ),
        "",
    ]
    lines = [
        [
            str(r.id),
            r.path,
            r.measured,
            r.against,
            r.floor,
            r.ratio_text,
            r.target,
            _status(r),
        ]
        for r in rows
    ]
    body = _table(
        ["#", "path", "measured", "measured against", "floor", "ratio", "target", "result"],
        lines,
    )
    prov = ["", "Provenance (versions | command) per row:"]
    for r in rows:
        v = ", ".join(f"{k} {val}" for k, val in r.versions.items())
        prov.append(f"  {r.id}. [{v}] $ {r.command}  ({r.seconds:.1f} s)")
        if r.error:
            prov.append(f"     error: {r.error}")
    return "\n".join(head) + body + "\n" + "\n".join(prov)
