"""Server processes the HTTP rows talk to: ``flowy serve`` and the floor app, each in a
subprocess (optionally pinned to one core), on 127.0.0.1 and a free port."""

from __future__ import annotations

import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import TracebackType
from typing import Self

from bench.common import free_port, pin

ROOT = Path(__file__).resolve().parent.parent
TERMINAL = ("completed", "failed", "canceled")


def _raise_nofile() -> None:
    """In the child: allow as many sockets as the hard limit permits (1,000 SSE streams)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))


class Process:
    """A server subprocess with its log file; stopped with SIGTERM, then SIGKILL."""

    def __init__(self, name: str, argv: list[str], workdir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.argv = [a.replace("{port}", str(self.port)) for a in argv]
        self.log_path = workdir / f"{name}-{self.port}.log"
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def start(self, health: str = "/health", timeout: float = 90.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                preexec_fn=_raise_nofile,  # noqa: PLW1509 - no threads hold locks here
            )
        deadline = time.monotonic() + timeout
        url = f"http://127.0.0.1:{self.port}{health}"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log()}")
            try:
                with urllib.request.urlopen(url, timeout=2) as res:
                    if res.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} did not answer {health}:\n{self.log()}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()


class FlowyServer(Process):
    """``flowy serve`` (embedded mode) in its own data directory; knows its API key."""

    def __init__(
        self, workdir: Path, *, cpu: int | None = None, env: dict[str, str] | None = None
    ) -> None:
        self.data_dir = workdir / f"flowy-data-{time.monotonic_ns()}"
        argv = [
            *(pin(cpu) if cpu is not None else []),
            sys.executable,
            "-m",
            "flowy.cli.main",
            "serve",
            "--port",
            "{port}",
        ]
        base_env = {
            "FLOWY_DATA_DIR": str(self.data_dir),
            # The per-key request limit is a policy, not a capacity: off, so the rows
            # measure what the server can do (every other setting is the default).
            "FLOWY_LIMITS__REQUESTS_PER_MINUTE": "0",
        }
        super().__init__("flowy", argv, workdir, {**base_env, **(env or {})})
        self.key = ""

    def start(self, health: str = "/v1/health", timeout: float = 90.0) -> None:
        super().start(health, timeout)
        m = re.search(r"export FLOWY_KEY=(\S+)", self.log())
        if not m:
            raise RuntimeError(f"no API key in the banner:\n{self.log()}")
        self.key = m.group(1)

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def terminal_runs(self, app_id: str | None = None) -> tuple[int, int]:
        """(ended, failed) runs of an app (or of all apps), read straight from the SQLite
        file (read-only; in WAL mode it never blocks the server's writers)."""
        uri = f"file:{self.data_dir / 'flowy.db'}?mode=ro"
        where, args = ("WHERE app_id = ?", (app_id,)) if app_id else ("", ())
        with sqlite3.connect(uri, uri=True, timeout=30) as conn:
            rows = conn.execute(
                f"SELECT status, count(*) FROM runs {where} GROUP BY status", args
            ).fetchall()
        counts = dict(rows)
        return sum(counts.get(s, 0) for s in TERMINAL), counts.get("failed", 0)

    def wait_idle(self, app_id: str, timeout: float) -> tuple[float, int]:
        """Block until no run of the app is queued or running; answer the seconds waited
        and how many runs were pending when it began."""
        t0 = time.monotonic()
        first = -1
        uri = f"file:{self.data_dir / 'flowy.db'}?mode=ro"
        while time.monotonic() - t0 < timeout:
            with sqlite3.connect(uri, uri=True, timeout=30) as conn:
                (pending,) = conn.execute(
                    "SELECT count(*) FROM runs "
                    "WHERE app_id = ? AND status IN ('queued', 'running')",
                    (app_id,),
                ).fetchone()
            first = pending if first < 0 else first
            if pending == 0:
                return time.monotonic() - t0, first
            time.sleep(0.05)
        raise TimeoutError(f"runs of {app_id} still pending after {timeout} s")

    def wait_runs(self, app_id: str | None, n: int, timeout: float, poll: float = 0.01) -> float:
        """Block until ``n`` runs of the app ended; answer the monotonic time it was seen."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ended, failed = self.terminal_runs(app_id)
            if failed:
                raise RuntimeError(f"{failed} run(s) failed:\n{self.log()}")
            if ended >= n:
                return time.monotonic()
            time.sleep(poll)
        raise TimeoutError(f"only {self.terminal_runs(app_id)[0]}/{n} runs ended in {timeout} s")


class FloorServer(Process):
    """``python -m bench.floors``: the bare FastAPI app the HTTP rows compare against."""

    def __init__(self, workdir: Path, *, cpu: int | None = None) -> None:
        db = workdir / f"floor-{time.monotonic_ns()}.db"
        argv = [
            *(pin(cpu) if cpu is not None else []),
            sys.executable,
            "-m",
            "bench.floors",
            "--port",
            "{port}",
            "--db",
            str(db),
        ]
        super().__init__("floor", argv, workdir, {})

    def start(self, health: str = "/health", timeout: float = 60.0) -> None:
        super().start(health, timeout)
