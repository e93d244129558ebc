"""Scaled mode's throughput: small runs through ``flowy serve`` (the API alone) and
``flowy worker`` processes on the machine's PostgreSQL and Redis, beside the same runs
in one embedded ``flowy serve``.  Not a row of the main table, which needs nothing but
Flowy: this one needs the services.

    python -m bench.scaled [--runs 1000] [--workers 1,2]

It prints a table and writes ``bench/results/scaled-<UTC time>.json``.  Each figure is
runs per second from the first POST to the last run's end (every run an echo: the cost
of the platform itself, no node work), submitted over 16 keep-alive connections.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import redis
from sqlalchemy import make_url

from bench import workflows
from bench.client import Connection, call
from bench.common import Deadline, machine, versions
from bench.server import FlowyServer
from flowy.ids import new_id

POSTGRES = os.environ.get("FLOWY_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("FLOWY_BENCH_REDIS", "redis://127.0.0.1:6379/0")
RESULTS = Path(__file__).resolve().parent / "results"
CONNECTIONS = 16
Stats = dict[str, float]


async def _submit(port: int, key: str, app_id: str, n: int) -> None:
    it = iter(range(n))

    async def sender() -> None:
        conn = Connection(port, {"Authorization": f"Bearer {key}"})
        try:
            for i in it:
                await conn.json("POST", f"/v1/apps/{app_id}/runs", {"inputs": {"node_1": f"{i}"}})
        finally:
            await conn.close()

    await asyncio.gather(*(sender() for _ in range(CONNECTIONS)))


def _throughput(server: FlowyServer, n: int, ended: Callable[[str], tuple[int, int]]) -> Stats:
    """Submit ``n`` echo runs; runs/s until ``ended(app_id)`` (ended, failed) says all
    ended."""
    app_id = call(
        server.port,
        "POST",
        "/v1/apps",
        {"title": "bench echo", "workflow": workflows.echo(), "published": True},
        server.key,
    )["data"]["id"]
    t0 = time.perf_counter()
    asyncio.run(_submit(server.port, server.key, app_id, n))
    submitted = time.perf_counter() - t0
    deadline = Deadline(600)
    while (done := ended(app_id))[0] < n:
        deadline.check(f"{n} runs")
        time.sleep(0.01)
    elapsed = time.perf_counter() - t0
    return {"runs_per_s": n / elapsed, "seconds": elapsed, "submit_s": submitted, "failed": done[1]}


def _scaled(workdir: Path, n: int, workers: int) -> Stats:
    """One API server and ``workers`` worker processes on a scratch database and queue."""
    name, queue = f"flowy_bench_{new_id()}", f"flowy-bench-{new_id()}"
    url = make_url(POSTGRES).set(database=name).render_as_string(hide_password=False)
    env = {
        "FLOWY_DATABASE_URL": url.replace("postgresql://", "postgresql+psycopg://", 1),
        "FLOWY_BROKER_URL": REDIS,
        "FLOWY_WORKER__QUEUE": queue,
        "FLOWY_SECRET_KEY": "bench",
    }
    with ExitStack() as stack:
        admin = stack.enter_context(psycopg.connect(POSTGRES, autocommit=True))
        admin.execute(f'CREATE DATABASE "{name}"')
        stack.callback(admin.execute, f'DROP DATABASE "{name}" WITH (FORCE)')
        stack.callback(_forget_queue, queue)
        server = FlowyServer(workdir, env=env)
        # Files on this machine's disk, shared; the workers know the servers' address.
        env["FLOWY_DATA_DIR"] = str(server.data_dir)
        env["FLOWY_SERVER__PUBLIC_URL"] = f"http://127.0.0.1:{server.port}"
        server.env.update(env)
        server.start()
        stack.callback(server.stop)
        logs = []
        for i in range(workers):
            log = workdir / f"worker{i}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "flowy.cli.main", "worker"],
                stdout=stack.enter_context(log.open("wb")),
                stderr=subprocess.STDOUT,
                env={**os.environ, **env},
            )
            stack.callback(_stop, proc)
            logs.append(log)
        deadline = Deadline(60)
        while not all(b" ready." in log.read_bytes() for log in logs):
            deadline.check("the workers' start")
            time.sleep(0.1)
        counter = stack.enter_context(psycopg.connect(url, autocommit=True))

        def ended(app_id: str) -> tuple[int, int]:
            row = counter.execute(
                "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed')), "
                "count(*) FILTER (WHERE status = 'failed') FROM runs WHERE app_id = %s",
                (app_id,),
            ).fetchone()
            assert row is not None
            return int(row[0]), int(row[1])

        return _throughput(server, n, ended)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _forget_queue(queue: str) -> None:
    client = redis.Redis.from_url(REDIS)
    keys = list(client.scan_iter(match=f"*{queue}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _embedded(workdir: Path, n: int) -> Stats:
    server = FlowyServer(workdir)
    server.start()
    try:
        return _throughput(server, n, lambda app_id: server.terminal_runs(app_id))
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaled", description=__doc__)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--workers", default="1,2", help="worker counts to measure")
    args = parser.parse_args(argv)
    counts = [int(w) for w in args.workers.split(",") if w]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="flowy-bench-scaled-") as tmp:
        base = _embedded(Path(tmp) / "embedded", args.runs)
        rows.append({"config": "embedded (1 server, 2 worker threads)", **base})
        for w in counts:
            got = _scaled(Path(tmp) / f"scaled-{w}", args.runs, w)
            label = f"scaled: 1 API server, {w} worker process{'es' if w > 1 else ''} (2 threads)"
            rows.append({"config": label, **got})
    print(f"\n{args.runs} echo runs, {CONNECTIONS} connections; ratio against embedded\n")
    print("| configuration | runs/s | ratio | failed |")
    print("|---|---|---|---|")
    for r in rows:
        ratio = r["runs_per_s"] / base["runs_per_s"]
        print(f"| {r['config']} | {r['runs_per_s']:,.0f} | {ratio:.2f}× | {r['failed']} |")
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"scaled-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "command": "python -m bench.scaled " + " ".join(argv or sys.argv[1:]),
                "machine": machine(),
                "versions": versions("flowy", "celery", "kombu", "redis", "psycopg"),
                "runs": args.runs,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
