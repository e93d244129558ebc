"""A worker with a backlog of fast runs claims several at the end of one, and writes
their ends together: fewer write transactions, the same runs, events and outputs."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from sqlalchemy import event, select, update

from flowy.db.models import Run
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.engine.spec import NodeContext, Port, node
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.settings import Settings
from flowy.worker import pool as pool_mod
from flowy.worker.runner import RunEnd
from tests.worker.runs import events, wait_status

HOLD = threading.Event()  # lets "hold" runs go
HELD = threading.Event()  # a "hold" run is waiting
SLOW = threading.Event()  # lets the "slow" run go
SLOW_IN = threading.Event()  # the "slow" run is waiting
DB: list[Database] = []


@node(
    "test.pass",
    title="Pass",
    category="test",
    inputs={"text": Port("text")},
    outputs={"text": Port("text")},
)
def pass_text(ctx: NodeContext, params: BaseModel, text: str) -> dict[str, object]:
    """Gives its text back.  "hold..." waits for HOLD, "slow" for SLOW; "steal" hands its
    own run to another worker first (as the sweeper would after a lost lease)."""
    if text.startswith("hold"):
        HELD.set()
        HOLD.wait(10)
    if text == "slow":
        SLOW_IN.set()
        SLOW.wait(10)
    if text == "steal":
        with DB[0].write() as s:
            s.execute(update(Run).where(Run.id == ctx.run_id).values(lease_owner="another"))
    return {"text": text}


WORKFLOW = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "test.pass",
            "inputs": {"text": {"node": "node_1", "port": "text"}},
        },
        {
            "id": "node_3",
            "type": "output.text",
            "inputs": {"text": {"node": "node_2", "port": "text"}},
        },
    ]
}


@pytest.fixture
def platform(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Platform]:
    # Every run here counts as fast, however slow the machine running the tests.
    monkeypatch.setattr(pool_mod, "FAST_RUN_SECONDS", 60.0)
    for e in (HOLD, HELD, SLOW, SLOW_IN):
        e.clear()
    registry = default_registry(load_entry_points=False)
    registry.register(pass_text)
    # No lease renewals or sweeps during a test: they would write transactions too.
    worker = {"concurrency": 1, "heartbeat_seconds": 3600, "sweep_seconds": 3600}
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker=worker)
    p = Platform.build(settings, registry)
    p.start()
    DB[:] = [p.db]
    yield p
    HOLD.set()
    SLOW.set()
    p.stop()


def _backlog(p: Platform, texts: list[str]) -> tuple[str, list[str]]:
    """A "hold" run that keeps the only worker busy, and runs of ``texts`` queued behind
    it.  Answers the workspace and the queued runs' ids."""
    ws = create_workspace(p.db, "test")
    app = p.apps.create(ws, title="Pass", workflow=WORKFLOW, published=True).app.id
    p.runs.create(ws, app, {"inputs": {"node_1": "hold-first"}})
    assert HELD.wait(10)
    HELD.clear()
    return ws, [p.runs.create(ws, app, {"inputs": {"node_1": t}}).id for t in texts]


def _commits(p: Platform) -> list[int]:
    count = [0]
    event.listen(p.db._write, "after_commit", lambda _s: count.__setitem__(0, count[0] + 1))
    return count


RUN_EVENTS = [
    "run.queued",
    "run.started",
    *["node.started", "node.finished"] * 3,
    "run.outputs",
    "run.completed",
]


def test_a_backlog_of_fast_runs_ends_in_few_transactions(platform: Platform) -> None:
    texts = [f"run {i}" for i in range(20)]
    ws, runs = _backlog(platform, texts)
    commits = _commits(platform)
    HOLD.set()
    for run_id in runs:
        wait_status(platform, ws, run_id, "completed")
    # 21 runs ended: claimed eight at a time, ended eight at a time.
    assert commits[0] <= 6
    for run_id, text in zip(runs, texts, strict=True):
        run = platform.runs.get(ws, run_id)
        assert [o["value"] for o in run.outputs] == [text]
        assert [n["status"] for n in run.nodes.values()] == ["completed"] * 3
        assert events(platform, run_id) == RUN_EVENTS


def test_a_lost_lease_drops_only_that_runs_end(platform: Platform) -> None:
    ws, runs = _backlog(platform, ["a", "b", "steal", "c", "d"])
    HOLD.set()
    for run_id in runs[:2] + runs[3:]:
        wait_status(platform, ws, run_id, "completed")
    stolen = platform.runs.get(ws, runs[2])
    assert stolen.status == "running" and stolen.outputs == []  # the other worker's now
    seen = events(platform, runs[2])
    assert "node.finished" not in seen and "run.completed" not in seen
    with platform.db.read() as s:
        assert s.scalar(select(Run.lease_owner).where(Run.id == runs[2])) == "another"


def test_a_slow_run_does_not_hold_back_the_ends_kept_before_it(platform: Platform) -> None:
    ws, (fast, slow) = _backlog(platform, ["fast", "slow"])
    HOLD.set()  # the first run ends and claims both; "fast" ends, kept; "slow" starts
    assert SLOW_IN.wait(10)
    # "slow" still runs: its watchdog's tick wrote the end kept before it meanwhile.
    wait_status(platform, ws, fast, "completed")
    assert platform.runs.get(ws, slow).status == "running"
    assert events(platform, fast) == RUN_EVENTS
    SLOW.set()
    wait_status(platform, ws, slow, "completed")


def test_an_end_that_cannot_be_written_fails_only_its_run(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, runs = _backlog(platform, ["a", "poison", "b", "c"])
    write = RunEnd.write

    def poisoned(self: RunEnd, s: object) -> bool:
        if self.run.id == runs[1]:
            raise RuntimeError("a write that fails")
        return write(self, s)  # type: ignore[arg-type]

    monkeypatch.setattr(RunEnd, "write", poisoned)
    HOLD.set()
    for run_id in (runs[0], runs[2], runs[3]):
        wait_status(platform, ws, run_id, "completed")
        assert events(platform, run_id) == RUN_EVENTS
    wait_status(platform, ws, runs[1], "failed")
    assert "internal error" in (platform.runs.get(ws, runs[1]).error or "")
