"""Row 11: many concurrent Server-Sent Event streams of one run on one API process.

The server is pinned to core 0, the client process (``python -m bench.sse``) to core 1.
The client opens every stream, says READY, and only then does the run start: it waits in
the queue behind a "blocker" run (one worker) that is canceled at READY.  Each event's
delivery latency is its arrival time at the client minus its ``createdAt``; only events
created after READY count towards latency (the earlier ones are replays), but every
stream must receive every event, in order, ending with the terminal one.

The floor is the same number of streams on a bare FastAPI endpoint fanning events out
from memory (``bench.floors``), with the same client.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from bench import workflows
from bench.client import build_request, call
from bench.common import (
    HTTP_PACKAGES,
    LOADER_CPU,
    SERVER_CPU,
    Config,
    Row,
    fmt_ratio,
    percentile,
    pin,
    redact,
    versions,
)
from bench.server import ROOT, FloorServer, FlowyServer

_EVENT = re.compile(rb"data: (\{[^\n]*\})\n\n")
_TERMINAL = {"run.completed", "run.failed", "run.canceled"}
EVENTS_FLOOR = 15


# --------------------------------------------------------------------------- client process


class _Stream(asyncio.Protocol):
    def __init__(self, request: bytes) -> None:
        self.request = request
        self.buf = b""
        self.pos = 0
        self.events: list[tuple[float, bytes]] = []
        loop = asyncio.get_running_loop()
        self.ready: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have write().
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self.buf += data
        for m in _EVENT.finditer(self.buf, self.pos):
            self.events.append((now, m.group(1)))
            self.pos = m.end()
        if not self.ready.done() and b"retry:" in self.buf:
            self.ready.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"stream closed early: {self.buf[:200]!r}"))
        if not self.done.done():
            self.done.set_result(None)


def _factory(stream: _Stream) -> Callable[[], _Stream]:
    return lambda: stream


async def _client(
    port: int, path: str, headers: dict[str, str], n: int, timeout: float
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    req = build_request(
        "GET", path, {**headers, "Accept": "text/event-stream", "Connection": "close"}
    )
    streams: list[_Stream] = []
    t_connect = time.time()
    for start in range(0, n, 100):
        batch = [_Stream(req) for _ in range(min(100, n - start))]
        await asyncio.gather(
            *(loop.create_connection(_factory(s), "127.0.0.1", port) for s in batch)
        )
        await asyncio.wait_for(asyncio.gather(*(s.ready for s in batch)), timeout)
        streams.extend(batch)
    ready = time.time()
    print(f"READY {ready}", flush=True)
    _, pending = await asyncio.wait(
        [asyncio.ensure_future(s.done) for s in streams], timeout=timeout
    )
    return _summarise(streams, ready, ready - t_connect, len(pending))


def _summarise(
    streams: list[_Stream], ready: float, connect_s: float, unfinished: int
) -> dict[str, Any]:
    latencies: list[float] = []
    by_type: dict[str, list[float]] = {}
    complete = 0
    seq_sets: set[tuple[int, ...]] = set()
    for s in streams:
        seqs: list[int] = []
        last_type = ""
        for recv, raw in s.events:
            ev = json.loads(raw)
            seqs.append(int(ev["seq"]))
            last_type = ev["type"]
            created = datetime.fromisoformat(ev["createdAt"]).timestamp()
            if created >= ready:
                latencies.append((recv - created) * 1000)
                by_type.setdefault(f"{ev['seq']:02d} {last_type}", []).append(latencies[-1])
        seq_sets.add(tuple(seqs))
        if seqs == list(range(1, len(seqs) + 1)) and last_type in _TERMINAL:
            complete += 1
    return {
        "streams": len(streams),
        "complete_streams": complete,
        "unfinished_streams": unfinished,
        "identical_event_sequences": len(seq_sets) == 1,
        "events_per_stream": max((len(s.events) for s in streams), default=0),
        "live_deliveries": len(latencies),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "max_ms": round(max(latencies), 2) if latencies else float("nan"),
        "connect_seconds": round(connect_s, 2),
        "p50_ms_by_event": {k: round(percentile(v, 50), 1) for k, v in sorted(by_type.items())},
        "max_ms_by_event": {k: round(max(v), 1) for k, v in sorted(by_type.items())},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="open N SSE streams, report delivery latency")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--path", required=True)
    ap.add_argument("--header", action="append", default=[])
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--timeout", type=float, default=120)
    args = ap.parse_args()
    headers = {k.strip(): v.strip() for k, _, v in (h.partition(":") for h in args.header)}
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(
        json.dumps(asyncio.run(_client(args.port, args.path, headers, args.n, args.timeout))),
        flush=True,
    )


# --------------------------------------------------------------------------- orchestration


class _ClientProcess:
    def __init__(
        self, port: int, path: str, headers: dict[str, str], n: int, timeout: float
    ) -> None:
        self.argv = [
            *pin(LOADER_CPU),
            sys.executable,
            "-m",
            "bench.sse",
            "--port",
            str(port),
            "--path",
            path,
            "--n",
            str(n),
            "--timeout",
            str(timeout),
        ]
        for k, v in headers.items():
            self.argv += ["--header", f"{k}: {v}"]
        self.proc = subprocess.Popen(
            self.argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)

    def wait_ready(self, timeout: float) -> None:
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            line = "(nothing before the timeout)"
        if line is None or not line.startswith("READY"):
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"SSE client not ready: {line!r} {err[-2000:]}")

    def result(self, timeout: float) -> dict[str, Any]:
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        while (line := self.lines.get(timeout=5)) is not None:
            if line.startswith("{"):
                data: dict[str, Any] = json.loads(line)
                return data
        err = self.proc.stderr.read() if self.proc.stderr else ""
        raise RuntimeError(f"SSE client gave no result: {err[-2000:]}")

    @property
    def command(self) -> str:
        return redact(" ".join(a if " " not in a else repr(a) for a in self.argv))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def _flowy_side(cfg: Config, n: int, timeout: float) -> tuple[dict[str, Any], str]:
    with FlowyServer(cfg.workdir, cpu=SERVER_CPU, env={"FLOWY_WORKER__CONCURRENCY": "1"}) as srv:
        srv.start()

        def api(method: str, path: str, payload: object = None) -> Any:
            return call(srv.port, method, path, payload, srv.key)

        blocker_app = api(
            "POST",
            "/v1/apps",
            {"title": "Blocker", "workflow": workflows.delays(120), "published": True},
        )["data"]["id"]
        target_app = api(
            "POST",
            "/v1/apps",
            {"title": "Events", "workflow": workflows.delays(1.0, 0.5), "published": True},
        )["data"]["id"]
        blocker = api("POST", f"/v1/apps/{blocker_app}/runs", {"inputs": {"node_1": "hold"}})[
            "data"
        ]["runId"]
        deadline = time.monotonic() + 30
        while api("GET", f"/v1/runs/{blocker}")["data"]["status"] != "running":
            if time.monotonic() > deadline:
                raise TimeoutError("blocker run never started")
            time.sleep(0.05)
        target = api("POST", f"/v1/apps/{target_app}/runs", {"inputs": {"node_1": "go"}})["data"][
            "runId"
        ]
        client = _ClientProcess(srv.port, f"/v1/runs/{target}/events", srv.auth, n, timeout)
        try:
            client.wait_ready(timeout)
            api("POST", f"/v1/runs/{blocker}/cancel")
            return client.result(timeout + 30), client.command
        finally:
            client.kill()


def _floor_side(cfg: Config, n: int, timeout: float) -> tuple[dict[str, Any], str]:
    with FloorServer(cfg.workdir, cpu=SERVER_CPU) as floor:
        floor.start()
        client = _ClientProcess(floor.port, "/sse", {}, n, timeout)
        try:
            client.wait_ready(timeout)
            call(floor.port, "POST", f"/sse/start?count={EVENTS_FLOOR}&interval=0.1")
            return client.result(timeout + 30), client.command
        finally:
            client.kill()


def row_sse(cfg: Config) -> Row:
    n = cfg.n(1000, 50)
    row = Row(
        11,
        f"SSE: {n:,} concurrent /v1/runs/{{id}}/events streams",
        "bare FastAPI SSE fan-out from memory",
        "all get every event; p99 ≤50 ms",
        command=cfg.command,
    )
    timeout = cfg.secs(180, 40)
    fl, fl_cmd = _flowy_side(cfg, n, timeout)
    fo, _ = _floor_side(cfg, n, timeout)
    all_got = fl["complete_streams"] == n and fl["identical_event_sequences"]
    row.measured = f"{fl['complete_streams']}/{n} complete, p99 {fl['p99_ms']:.1f} ms"
    row.floor = f"{fo['complete_streams']}/{n}, p99 {fo['p99_ms']:.1f} ms"
    row.ratio = fl["p99_ms"] / fo["p99_ms"] if fo["p99_ms"] > 0 else None
    row.ratio_text = fmt_ratio(row.ratio) + " (p99)" if row.ratio else "n/a"
    row.ok = all_got and fl["p99_ms"] <= 50
    row.details = {
        "flowy": fl,
        "floor": fo,
        "client": fl_cmd,
        "server_cpu": SERVER_CPU,
        "client_cpu": LOADER_CPU,
    }
    row.versions = versions(*HTTP_PACKAGES)
    return row


if __name__ == "__main__":
    main()
