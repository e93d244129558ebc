"""The in-process worker pool: a new run goes straight to a waiting worker, claimed in
the transaction that creates it; with no worker waiting it is queued and claimed later."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from flowy.db.models import Run, RunEvent
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.services.states import TERMINAL
from flowy.settings import Settings
from flowy.storage.cache import DiskResultCache
from flowy.worker import runner
from flowy.worker.pool import LocalWorkerPool
from tests.workflows import delay


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker={"concurrency": 1})
    p = Platform.build(settings)
    p.start()
    try:
        yield p
    finally:
        p.stop()


def _wait_for_waiting_worker(p: Platform) -> None:
    deadline = time.monotonic() + 10
    while p.workers._waiting < 1:
        assert time.monotonic() < deadline, "the worker never waited for a run"
        time.sleep(0.005)


def _record_enqueues(p: Platform) -> list[str]:
    """The run ids that go through the queue from now on (they are still queued)."""
    seen: list[str] = []
    enqueue = p.runs.enqueue

    def record(run_id: str) -> None:
        seen.append(run_id)
        enqueue(run_id)

    p.runs.enqueue = record
    return seen


def _record_input_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The run ids whose inputs a worker reads from the database from now on."""
    seen: list[str] = []
    read = runner.READ_INPUTS.execute

    def record(bind: Any, values: Any) -> Any:
        seen.append(values["p_run_id"])
        return read(bind, values)

    monkeypatch.setattr(runner.READ_INPUTS, "execute", record)
    return seen


def _status(p: Platform, run_id: str) -> str:
    with p.db.read() as s:
        return str(s.scalar(select(Run.status).where(Run.id == run_id)))


def _events(p: Platform, run_id: str) -> list[str]:
    with p.db.read() as s:
        q = select(RunEvent.type).where(RunEvent.run_id == run_id).order_by(RunEvent.seq)
        return list(s.scalars(q))


def _wait_ended(p: Platform, run_id: str) -> str:
    deadline = time.monotonic() + 20
    while (status := _status(p, run_id)) not in TERMINAL:
        assert time.monotonic() < deadline, f"run {run_id} is still {status}"
        time.sleep(0.01)
    return status


def test_a_new_run_is_claimed_in_the_transaction_that_creates_it(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = create_workspace(platform.db, "direct")
    app = platform.apps.create(ws, title="Wait", workflow=delay(0.3), published=True).app.id
    _wait_for_waiting_worker(platform)
    queued = _record_enqueues(platform)
    reads = _record_input_reads(monkeypatch)

    run = platform.runs.create(ws, app, {"inputs": {"node_1": "hi"}})

    # Nothing went through the queue, and the worker got the inputs with the run.  The
    # answer is the run as accepted; the row is already running, with both events
    # committed together by the create.
    assert queued == []
    assert run.status == "queued"
    assert _status(platform, run.id) == "running"
    assert reads == []
    assert _events(platform, run.id)[:2] == ["run.queued", "run.started"]
    assert _wait_ended(platform, run.id) == "completed"
    with platform.db.read() as s:
        row = s.get(Run, run.id)
        assert row is not None and row.attempt == 1
        assert [o["value"] for o in row.outputs] == ["hi"]


def test_with_no_worker_waiting_a_run_is_queued_then_claimed(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = create_workspace(platform.db, "queued")
    app = platform.apps.create(ws, title="Wait", workflow=delay(0.5), published=True).app.id
    _wait_for_waiting_worker(platform)
    queued = _record_enqueues(platform)
    reads = _record_input_reads(monkeypatch)
    first = platform.runs.create(ws, app, {"inputs": {"node_1": "one"}})
    # The only worker is busy with the first run: the second waits in the queue.
    second = platform.runs.create(ws, app, {"inputs": {"node_1": "two"}})
    assert queued == [second.id]
    assert _status(platform, first.id) == "running"
    assert _status(platform, second.id) == "queued"
    assert _events(platform, second.id) == ["run.queued"]
    assert _wait_ended(platform, first.id) == "completed"
    assert _wait_ended(platform, second.id) == "completed"
    assert _events(platform, second.id)[:2] == ["run.queued", "run.started"]
    assert reads == [second.id]  # a queued run's worker reads its inputs back
    with platform.db.read() as s:
        row = s.get(Run, second.id)
        assert row is not None and [o["value"] for o in row.outputs] == ["two"]


def test_a_worker_handed_a_run_is_busy_before_it_wakes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the hand of a run and the moment its worker wakes to take it, that worker
    still counts as waiting; a second new run must not be claimed for it too."""
    woken, go = threading.Event(), threading.Event()

    def late_take(self: LocalWorkerPool) -> Any:
        # The real _take, with the interval a woken thread may wait for the GIL made long.
        with self._ready:
            self._waiting += 1
            while not self._queue:
                self._ready.wait()
        woken.set()
        go.wait(10)
        with self._ready:
            self._waiting -= 1
            return self._queue.popleft()

    monkeypatch.setattr(LocalWorkerPool, "_take", late_take)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker={"concurrency": 1})
    p = Platform.build(settings)
    p.start()
    try:
        ws = create_workspace(p.db, "late")
        app = p.apps.create(ws, title="Wait", workflow=delay(0.05), published=True).app.id
        _wait_for_waiting_worker(p)
        queued = _record_enqueues(p)
        first = p.runs.create(ws, app, {"inputs": {"node_1": "one"}})
        assert woken.wait(10)
        second = p.runs.create(ws, app, {"inputs": {"node_1": "two"}})
        go.set()
        assert queued == [second.id]
        assert _wait_ended(p, first.id) == "completed"
        assert _wait_ended(p, second.id) == "completed"
    finally:
        go.set()
        p.stop()


def test_a_run_handed_to_a_worker_can_be_canceled(platform: Platform) -> None:
    ws = create_workspace(platform.db, "cancel")
    app = platform.apps.create(ws, title="Wait", workflow=delay(5.0), published=True).app.id
    _wait_for_waiting_worker(platform)
    run = platform.runs.create(ws, app, {"inputs": {"node_1": "hi"}})
    platform.runs.cancel(ws, run.id)
    assert _wait_ended(platform, run.id) == "canceled"
    assert _events(platform, run.id)[-1] == "run.canceled"


def _thread_nice(native_id: int) -> int:
    stat = Path(f"/proc/self/task/{native_id}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])  # field 19, "nice"


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux's /proc")
def test_threads_that_execute_runs_yield_the_cpu_to_the_api(tmp_path: Path) -> None:
    """Workers and node threads run at a lower OS priority (``worker.nice``) than the
    process's other threads, which answer requests and renew leases."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker={"nice": 3})
    p = Platform.build(settings)
    p.start()
    try:
        ws = create_workspace(p.db, "nice")
        app = p.apps.create(ws, title="d", workflow=delay(0.01), published=True).app
        assert _wait_ended(p, p.runs.create(ws, app.id, {"inputs": {"node_1": "x"}}).id)
        base = _thread_nice(threading.get_native_id())
        nice = {
            t.name: _thread_nice(t.native_id)
            for t in threading.enumerate()
            if t.native_id is not None and t.is_alive()
        }
    finally:
        p.stop()
    workers = [n for name, n in nice.items() if name.startswith("flowy-worker-")]
    nodes = [n for name, n in nice.items() if name.startswith("flowy-node")]
    assert workers and nodes
    assert set(workers) == set(nodes) == {min(19, base + 3)}
    assert nice["flowy-heartbeat"] == nice["flowy-sweeper"] == base


def test_the_result_cache_is_exclusive_once_the_data_directory_is_taken(tmp_path: Path) -> None:
    """A started server holds its data directory, and so its cache directory, alone: the
    cache then answers misses without a look at the disk."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    p = Platform.build(settings)
    cache = p.workers.processor.cache
    assert isinstance(cache, DiskResultCache) and not cache.exclusive
    p.start()
    try:
        assert cache.exclusive
    finally:
        p.stop()
