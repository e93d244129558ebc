"""Rows 1 and 2: request throughput of the API process against bare FastAPI floors.

Flowy (``flowy serve``) and the floor app (``bench.floors``) run at the same time, both
pinned to core 0; the load generator is pinned to core 1.  Measurements alternate
floor / Flowy for a few rounds and each side's median is kept, so drift of a noisy
machine hits both sides alike.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from bench import workflows
from bench.client import Connection, call
from bench.common import (
    HTTP_PACKAGES,
    LOADER_CPU,
    SERVER_CPU,
    Config,
    Row,
    astronaut,
    data_uri,
    fmt_rate,
    fmt_ratio,
    median,
    png,
    versions,
)
from bench.loadgen import Load, Target, run_load
from bench.server import FloorServer, FlowyServer

#: As the issue measured its floors: wrk -t2 -c64.
CONNECTIONS = 64


def _alternate(
    cfg: Config,
    flowy: Target,
    floor: Target,
    *,
    after_flowy: Callable[[], tuple[float, int]] | None = None,
) -> tuple[list[Load], list[Load], list[tuple[float, int]]]:
    """Floor, Flowy, floor, Flowy, ...; ``after_flowy`` (draining the runs a round queued)
    runs after every Flowy load that another measurement follows, and after the last one
    in a full run (its figure is reported).  Smoke runs skip the warm-up."""
    rounds = cfg.n(3, 1)
    duration = cfg.secs(4, 1)
    drains: list[tuple[float, int]] = []
    if not cfg.smoke:
        for t in (floor, flowy):
            run_load(t, connections=CONNECTIONS, duration=1.5, workdir=cfg.workdir)
        if after_flowy:
            drains.append(after_flowy())
    flo: list[Load] = []
    fl: list[Load] = []
    for i in range(rounds):
        flo.append(run_load(floor, connections=CONNECTIONS, duration=duration, workdir=cfg.workdir))
        fl.append(run_load(flowy, connections=CONNECTIONS, duration=duration, workdir=cfg.workdir))
        if after_flowy and (i < rounds - 1 or not cfg.smoke):
            drains.append(after_flowy())
    return fl, flo, drains


def _ok_rps(x: Load) -> float:
    """Requests per second that got a 2xx/3xx answer (a refusal is not throughput)."""
    return x.rps * (x.requests - x.non2xx) / x.requests if x.requests else 0.0


def _fill(row: Row, fl: list[Load], flo: list[Load], target: float) -> None:
    a = median(_ok_rps(x) for x in fl)
    b = median(_ok_rps(x) for x in flo)
    bad = sum(x.non2xx + x.errors for x in (*fl, *flo))
    if bad:
        row.error = f"{bad} non-2xx answers or socket errors; see details"
    row.measured = fmt_rate(a)
    row.floor = fmt_rate(b)
    row.ratio = a / b
    row.ratio_text = fmt_ratio(row.ratio)
    row.ok = row.ratio >= target and all(x.non2xx == 0 and x.errors == 0 for x in fl)
    row.details.update(
        flowy=[asdict(x) for x in fl],
        floor=[asdict(x) for x in flo],
        flowy_p50_ms=median(x.p50_ms for x in fl),
        flowy_p99_ms=median(x.p99_ms for x in fl),
        floor_p50_ms=median(x.p50_ms for x in flo),
        floor_p99_ms=median(x.p99_ms for x in flo),
        connections=CONNECTIONS,
        server_cpu=SERVER_CPU,
        loader_cpu=LOADER_CPU,
    )
    row.versions = {**versions(*HTTP_PACKAGES), "loader": fl[0].tool}
    row.command = f"{row.command}  [loader: {fl[0].command}]"


def row_get_run(cfg: Config) -> Row:
    row = Row(
        1,
        "GET /v1/runs/{id} (auth, read, sign URLs)",
        "FastAPI+pydantic endpoint, no DB",
        "≥0.5×",
        command=cfg.command,
    )
    with (
        FlowyServer(cfg.workdir, cpu=SERVER_CPU) as srv,
        FloorServer(cfg.workdir, cpu=SERVER_CPU) as floor,
    ):
        srv.start()
        floor.start()
        app = call(
            srv.port,
            "POST",
            "/v1/apps",
            {"title": "Resize", "workflow": workflows.resize(32, 32), "published": True},
            srv.key,
        )
        app_id = app["data"]["id"]
        image = data_uri(png(astronaut(64)))
        run = _run_and_wait(srv, app_id, {"node_1": image})
        if not run["outputs"] or "url" not in run["outputs"][0]:
            raise RuntimeError(f"setup run has no file output to sign: {run}")
        auth = tuple(srv.auth.items())
        flowy = Target(srv.port, f"/v1/runs/{run['runId']}", headers=auth)
        flo = Target(floor.port, f"/v1/runs/{run['runId']}", headers=auth)
        fl, fo, _ = _alternate(cfg, flowy, flo)
        _fill(row, fl, fo, 0.5)
        row.details["server"] = srv.command
        row.details["floor_server"] = floor.command
    return row


def _run_and_wait(srv: FlowyServer, app_id: str, inputs: dict[str, object]) -> dict[str, Any]:
    async def go() -> dict[str, Any]:
        conn = Connection(srv.port, srv.auth)
        try:
            res = await conn.json(
                "POST", f"/v1/apps/{app_id}/runs", {"inputs": inputs}, {"Prefer": "wait=60"}
            )
            data: dict[str, Any] = res["data"]
            return data
        finally:
            await conn.close()

    out = asyncio.run(go())
    if out.get("status") != "completed":
        raise RuntimeError(f"setup run did not complete: {out}")
    return out


def row_create_run(cfg: Config) -> Row:
    row = Row(
        2,
        "POST /v1/apps/{id}/runs (embedded)",
        "bare FastAPI, 1 SQLite WAL INSERT/request",
        "≥1.5×",
        command=cfg.command,
    )
    with (
        FlowyServer(cfg.workdir, cpu=SERVER_CPU) as srv,
        FloorServer(cfg.workdir, cpu=SERVER_CPU) as floor,
    ):
        srv.start()
        floor.start()
        app = call(
            srv.port,
            "POST",
            "/v1/apps",
            {"title": "Echo", "workflow": workflows.echo(), "published": True},
            srv.key,
        )
        app_id = app["data"]["id"]
        body = json.dumps({"inputs": {"node_1": "hello"}}).encode()
        headers = (*srv.auth.items(), ("Content-Type", "application/json"))
        flowy = Target(srv.port, f"/v1/apps/{app_id}/runs", "POST", headers, body)
        flo = Target(floor.port, f"/v1/apps/{app_id}/runs", "POST", headers, body)
        # The runs a round queues are executed by the same process afterwards; wait for
        # them so the next floor round has the core to itself.
        fl, fo, drains = _alternate(
            cfg, flowy, flo, after_flowy=lambda: srv.wait_idle(app_id, timeout=cfg.secs(240, 60))
        )
        _fill(row, fl, fo, 1.5)
        # What the same stack answers with no work at all (row 1's floor), for scale: the
        # target asks for 1.5x the insert floor, which may exceed it.
        noop = Target(floor.port, "/v1/runs/" + "0" * 24, headers=tuple(srv.auth.items()))
        idle = run_load(noop, connections=CONNECTIONS, duration=cfg.secs(4, 1), workdir=cfg.workdir)
        row.details["floor_no_db_get_rps"] = round(_ok_rps(idle), 1)
        row.details["target_rps"] = round(1.5 * median(_ok_rps(x) for x in fo), 1)
        row.details["drain_after_each_round"] = [
            {"seconds": round(sec, 2), "backlog_runs": n} for sec, n in drains
        ]
        row.details["note"] = (
            "runs queued during a round execute in the same process (2 workers) and compete "
            "with the API for the core; they are drained before the next round"
        )
        sec, backlog = drains[-1] if drains else (0.0, 0)
        if sec > 0:
            row.details["backlog_drain_runs_per_second"] = round(backlog / sec, 1)
        row.details["server"] = srv.command
        row.details["floor_server"] = floor.command
    return row
