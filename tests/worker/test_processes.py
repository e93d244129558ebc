"""Worker processes (``worker.processes``): runs execute outside the server process, which
keeps the API, the event bus and the sweeper; a dead worker process loses no run."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowy.db.models import Run
from flowy.db.session import Database, WriteLock
from flowy.engine.registry import NodeRegistry, default_registry
from flowy.errors import FlowyError
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.services.webhooks import DELIVERIES_QUEUED
from flowy.settings import Settings
from flowy.worker.processes import ProcessWorkerPool
from tests.flowy_process import FlowyProcess
from tests.worker.runs import events, wait_status
from tests.workflows import delay

ECHO = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "text.template",
            "params": {"template": "echo {{ text_1 }} from a worker"},
            "inputs": {"text_1": {"node": "node_1", "port": "text"}},
        },
        {
            "id": "node_3",
            "type": "output.text",
            "inputs": {"text": {"node": "node_2", "port": "text"}},
        },
    ]
}


def _settings(data_dir: Path, **worker: Any) -> Settings:
    return Settings(
        _env_file=None,
        data_dir=data_dir,
        worker={"processes": 2, "concurrency": 1, "sweep_seconds": 0.2, **worker},
    )


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = Platform.build(_settings(tmp_path / "data"))
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _pool(p: Platform) -> ProcessWorkerPool:
    assert isinstance(p.workers, ProcessWorkerPool)
    return p.workers


def _worker_pids(p: Platform) -> list[int]:
    return [w.process.pid for w in _pool(p)._workers if w is not None and w.process.pid]


def _wait_ended(p: Platform, ws: str, run_id: str, timeout: float = 30) -> Any:
    """The run once it ended, waiting on the server's event bus (no polling): what the
    bus hears of a worker process's commits is relayed to it."""
    deadline = time.monotonic() + timeout
    with p.bus.subscribe(run_id) as sub:
        while (run := p.runs.get(ws, run_id)).status not in ("completed", "failed", "canceled"):
            left = deadline - time.monotonic()
            assert left > 0, f"run {run_id} still {run.status}"
            sub.wait_sync(left)
    return run


def test_runs_execute_in_the_worker_processes(platform: Platform) -> None:
    p = platform
    ws = create_workspace(p.db, "procs")
    app = p.apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id
    runs = [p.runs.create(ws, app, {"inputs": {"node_1": f"hello {i}"}}) for i in range(40)]
    for i, created in enumerate(runs):
        run = _wait_ended(p, ws, created.id)
        assert run.status == "completed", run.error
        assert run.outputs[0]["value"] == f"echo hello {i} from a worker"
        assert events(p, created.id)[-1] == "run.completed"
    assert all(pid != os.getpid() for pid in _worker_pids(p))
    assert len(_worker_pids(p)) == 2


def _slow_run(p: Platform, seconds: float, text: str) -> tuple[str, str, str]:
    """A run of a ``seconds``-long app, once a worker runs it: (workspace, app, run)."""
    ws = create_workspace(p.db, "procs")
    app = p.apps.create(ws, title="Slow", workflow=delay(seconds), published=True).app.id
    run = p.runs.create(ws, app, {"inputs": {"node_1": text}})
    wait_status(p, ws, run.id, "running")
    return ws, app, run.id


def test_a_cancel_reaches_a_run_in_a_worker_process(platform: Platform) -> None:
    p = platform
    ws, _, run_id = _slow_run(p, 30, "x")
    t0 = time.monotonic()
    p.runs.cancel(ws, run_id)
    ended = _wait_ended(p, ws, run_id, timeout=10)
    assert ended.status == "canceled"
    # Well before the worker's next heartbeat (15 s) would have seen the request.
    assert time.monotonic() - t0 < 10


def test_a_killed_worker_process_loses_no_run(platform: Platform) -> None:
    p = platform
    ws, app, run_id = _slow_run(p, 1.0, "survivor")
    with p.db.read() as s:
        owner = s.scalar(select(Run.lease_owner).where(Run.id == run_id))
    pool = _pool(p)
    victim = next(w for w in pool._workers if w is not None and w.owner == owner)
    os.kill(victim.process.pid or 0, signal.SIGKILL)
    ended = _wait_ended(p, ws, run_id)
    assert ended.status == "completed", ended.error
    assert ended.outputs[0]["value"] == "survivor"
    assert ended.attempt == 2  # the killed process spent one attempt
    # Another process took its place, and runs go on.
    deadline = time.monotonic() + 30
    while not all(w is not None and w.ready.is_set() for w in pool._workers):
        assert time.monotonic() < deadline, "no worker process replaced the killed one"
        time.sleep(0.05)
    assert victim.process.pid not in _worker_pids(p)
    again = p.runs.create(ws, app, {"inputs": {"node_1": "after"}})
    assert _wait_ended(p, ws, again.id).status == "completed"


def test_stop_hands_runs_in_flight_back_for_the_next_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    p = Platform.build(_settings(data, shutdown_grace_seconds=0))
    p.start()
    ws, _, run_id = _slow_run(p, 1.0, "later")
    pids = _worker_pids(p)
    p.stop()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or _is_zombie(pid), "a worker outlived stop"
    again = Platform.build(_settings(data))
    again.start()
    try:
        ended = _wait_ended(again, ws, run_id)
        assert ended.status == "completed"
        assert ended.outputs[0]["value"] == "later"
        assert ended.attempt == 1  # the hand-back spent no attempt
    finally:
        again.stop()


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_webhook_queued_by_a_worker_process_wakes_the_server(platform: Platform) -> None:
    """The flags of a worker's commits reach the server's hooks (its webhook dispatcher
    sends at once rather than at its next poll)."""
    p = platform
    p.dispatcher.stop()  # nothing is sent anywhere: only the wake-up is looked at
    woken = threading.Event()
    p.db.flag_hooks.setdefault(DELIVERIES_QUEUED, []).append(woken.set)
    ws = create_workspace(p.db, "procs")
    app = p.apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id
    run = p.runs.create(
        ws,
        app,
        {
            "inputs": {"node_1": "hook"},
            "webhook": "https://example.com/hook",
            "webhookEventsFilter": ["run.completed"],
        },
    )
    assert _wait_ended(p, ws, run.id).status == "completed"
    assert woken.wait(10)


def broken_registry() -> NodeRegistry:
    raise RuntimeError("this catalog cannot be built")


def test_a_worker_process_that_cannot_start_stops_the_start(tmp_path: Path) -> None:
    # The server's own catalog is fine; the worker processes' cannot be made.
    p = Platform.build(
        _settings(tmp_path / "data"), default_registry(), registry_factory=broken_registry
    )
    with pytest.raises(FlowyError, match="worker process 0 did not start"):
        p.start()
    p.stop()


def _try_lock(path: str, answer: Any) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        answer.put("held")
    else:
        answer.put("free")
    finally:
        os.close(fd)


def test_the_write_lock_excludes_other_processes_until_its_last_exit(tmp_path: Path) -> None:
    path = tmp_path / "write.lock"
    lock = WriteLock(path)
    ctx = multiprocessing.get_context("spawn")

    def other() -> str:
        answer = ctx.Queue()
        proc = ctx.Process(target=_try_lock, args=(str(path), answer))
        proc.start()
        proc.join(30)
        return str(answer.get(timeout=5))

    with lock:
        with lock:  # re-entrant on its thread
            assert other() == "held"
        assert other() == "held"  # the inner exit keeps it
    assert other() == "free"
    lock.close()


def test_writes_of_a_database_with_a_process_lock_take_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    db = Database(url, process_lock=tmp_path / "write.lock")
    try:
        with db.write() as s:
            s.connection().exec_driver_sql("CREATE TABLE t (x INTEGER)")
            fd = os.open(tmp_path / "write.lock", os.O_RDWR)
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(fd)
    finally:
        db.dispose()


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _wait_gone(pids: list[int], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(Path(f"/proc/{p}").exists() and not _is_zombie(p) for p in pids):
        assert time.monotonic() < deadline, "a worker process outlived its server"
        time.sleep(0.05)


@pytest.mark.parametrize("how", ["terminated", "killed"])
def test_worker_processes_end_with_their_server(tmp_path: Path, how: str) -> None:
    """``flowy serve`` with worker processes: a run goes through them over HTTP, and they
    end with the server, whether it stops (SIGTERM) or is killed (they read the end of
    their pipe)."""
    server = FlowyProcess(tmp_path, env={"FLOWY_WORKER__PROCESSES": "2"}).start()
    try:
        app = server.post(
            "/apps", json={"title": "Echo", "workflow": ECHO, "published": True}
        ).json()["data"]["id"]
        run = server.post(f"/apps/{app}/runs", json={"inputs": {"node_1": "http"}}).json()
        done = server.wait_run(run["data"]["runId"])
        assert done["outputs"][0]["value"] == "echo http from a worker"
        assert server.proc is not None
        workers = _children(server.proc.pid)  # and multiprocessing's resource tracker
        names = {Path(f"/proc/{pid}/comm").read_text().strip() for pid in workers}
        assert {"flowy-w0", "flowy-w1"} <= names  # what top and ps -e show
    finally:
        if how == "killed":
            server.kill()
        else:
            server.stop()
    _wait_gone(workers)
