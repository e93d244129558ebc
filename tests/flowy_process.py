"""A real Flowy server process on a free port, for tests that talk HTTP to it."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class FlowyProcess:
    """``flowy serve`` (or, with ``command="worker"``, ``flowy worker``) in a subprocess,
    with its data directory and log."""

    data_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    command: str = "serve"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    key: str | None = None
    output: list[str] = field(default_factory=list)
    _reader: threading.Thread | None = field(default=None, repr=False)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api(self) -> str:
        return f"{self.base}/v1"

    def start(self, timeout: float = 60.0) -> FlowyProcess:
        env = {
            **os.environ,
            "FLOWY_DATA_DIR": str(self.data_dir),
            "FLOWY_WORKER__SWEEP_SECONDS": "0.5",
            **self.env,
        }
        self.output = []
        args = ["serve", "--port", str(self.port)] if self.command == "serve" else [self.command]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowy.cli.main", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        reader = self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        reader.start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc.wait()
                time.sleep(0.2)  # let the reader drain the last lines
                self._close()
                raise RuntimeError(f"flowy {self.command} exited:\n" + "".join(self.output))
            if self._ready():
                break
            time.sleep(0.1)
        else:
            self.kill()
            raise RuntimeError(f"flowy {self.command} did not start:\n" + "".join(self.output))
        for line in self.output:
            m = re.match(r"export FLOWY_KEY=(\S+)", line)
            if m:
                self.key = m.group(1)
        return self

    def _ready(self) -> bool:
        if self.command == "worker":  # Celery's line once it consumes
            return any(re.search(r"@\S+ ready\.", line) for line in self.output)
        try:
            return requests.get(f"{self.api}/health", timeout=1).status_code == 200
        except (requests.ConnectionError, requests.Timeout):
            return False

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
        self._close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._close()

    def _close(self) -> None:
        # The output ends when every process that holds it has: with worker processes,
        # they outlive a killed server by a moment, still writing.
        if self._reader is not None:
            self._reader.join(timeout=20)
            self._reader = None
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}"}

    def request(
        self, method: str, path: str, key: str | None = None, **kw: Any
    ) -> requests.Response:
        headers = {**self.headers(key), **kw.pop("headers", {})}
        return requests.request(method, self.api + path, headers=headers, timeout=30, **kw)

    def get(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return self.request("GET", path, key, **kw)

    def post(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return self.request("POST", path, key, **kw)

    def patch(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return self.request("PATCH", path, key, **kw)

    def delete(self, path: str, key: str | None = None, **kw: Any) -> requests.Response:
        return self.request("DELETE", path, key, **kw)

    def wait_run(self, run_id: str, key: str | None = None, timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data: dict[str, Any] = self.get(f"/runs/{run_id}", key).json()["data"]
            if data["status"] in ("completed", "failed", "canceled"):
                return data
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not finish: {data}")

    def cli(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run the ``flowy`` CLI against this server and data directory."""
        full_env = {
            **os.environ,
            "FLOWY_DATA_DIR": str(self.data_dir),
            "FLOWY_API": self.api,
            "FLOWY_KEY": self.key or "",
            **env,
        }
        return subprocess.run(
            [sys.executable, "-m", "flowy.cli.main", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
        )


class StaticServer:
    """Serves a directory over HTTP on 127.0.0.1 (the photo a run fetches)."""

    def __init__(self, root: Path) -> None:
        root_str = str(root)

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *a: Any, **kw: Any) -> None:
                super().__init__(*a, directory=root_str, **kw)

            def log_message(self, *_a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def __enter__(self) -> StaticServer:
        self.thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
