"""The terminal transaction of a run: all of it, or (lease lost) none of it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from pydantic import BaseModel
from sqlalchemy import select, update

from flowy.db.models import Asset, Run, RunEvent
from flowy.engine.registry import default_registry
from flowy.engine.spec import NodeContext, Port, node
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.services.states import claim
from flowy.settings import Settings
from tests.worker.runs import events, wait_status
from tests.workflows import ECHO

ENTERED = threading.Event()
RELEASE = threading.Event()


@node("test.gate", title="Gate", category="test", outputs={"image": Port("image")})
def gate(ctx: NodeContext, params: BaseModel) -> dict[str, object]:
    """Waits for the test to let it go, then makes a small image."""
    ENTERED.set()
    RELEASE.wait(10)
    return {"image": Image.new("RGB", (8, 8), (200, 10, 10))}


WORKFLOW = {
    "nodes": [
        {"id": "node_1", "type": "test.gate"},
        {
            "id": "node_2",
            "type": "output.image",
            "inputs": {"image": {"node": "node_1", "port": "image"}},
        },
    ]
}


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    ENTERED.clear()
    RELEASE.clear()
    registry = default_registry(load_entry_points=False)
    registry.register(gate)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", worker={"concurrency": 1})
    p = Platform.build(settings, registry)
    p.start()
    yield p
    RELEASE.set()
    p.stop()


def _start(p: Platform) -> tuple[str, str]:
    ws = create_workspace(p.db, "test")
    app = p.apps.create(ws, title="Gate", workflow=WORKFLOW, published=True).app.id
    run = p.runs.create(ws, app, {"inputs": {}})
    assert ENTERED.wait(10)
    return ws, run.id


def _wait_idle(p: Platform) -> None:
    deadline = time.monotonic() + 10
    while p.workers.processor.active:
        assert time.monotonic() < deadline, "the worker did not finish the run"
        time.sleep(0.01)


def test_a_completed_run_keeps_its_file_status_andevents(platform: Platform) -> None:
    ws, run_id = _start(platform)
    RELEASE.set()
    _wait_idle(platform)
    run = platform.runs.get(ws, run_id)
    assert run.status == "completed"
    [output] = run.outputs
    with platform.db.read() as s:
        assets = list(s.scalars(select(Asset).where(Asset.run_id == run_id)))
        events = list(s.scalars(select(RunEvent.type).where(RunEvent.run_id == run_id)))
    assert [a.id for a in assets] == [output["assetId"]]
    assert assets[0].kind == "output" and assets[0].content_type == "image/png"
    assert events[-3:] == ["node.finished", "run.outputs", "run.completed"]


def test_a_worker_that_lost_the_lease_leaves_no_end_but_its_file_for_retention(
    platform: Platform,
) -> None:
    ws, run_id = _start(platform)
    with platform.db.write() as s:  # the sweeper gave the run to another worker meanwhile
        s.execute(
            update(Run)
            .where(Run.id == run_id)
            .values(lease_owner="another-worker", attempt=Run.attempt + 1)
        )
    RELEASE.set()
    _wait_idle(platform)
    run = platform.runs.get(ws, run_id)
    assert run.status == "running" and run.outputs == []
    with platform.db.read() as s:
        events = list(s.scalars(select(RunEvent.type).where(RunEvent.run_id == run_id)))
        orphans = list(s.scalars(select(Asset).where(Asset.run_id == run_id)))
    assert "run.completed" not in events and "node.finished" not in events
    # Its file is already on disk: recorded, so that retention deletes it in time.
    assert [a.expires_at is not None for a in orphans] == [True]


def _queue(p: Platform, ws: str, app_id: str, n: int) -> list[str]:
    return [p.runs.create(ws, app_id, {"inputs": {}}).id for _ in range(n)]


def _app_of(p: Platform, ws: str, run_id: str) -> str:
    return p.runs.get(ws, run_id).app_id


def test_a_backlog_is_claimed_in_the_transactions_that_end_runs(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws, first = _start(platform)
    queued = _queue(platform, ws, _app_of(platform, ws, first), 3)
    assert [platform.runs.get(ws, r).status for r in queued] == ["queued"] * 3
    claims: list[str] = []
    process = platform.workers.processor.process
    monkeypatch.setattr(
        platform.workers.processor,
        "process",
        lambda run_id, *a: claims.append(run_id) or process(run_id, *a),
    )
    RELEASE.set()
    for run_id in queued:
        wait_status(platform, ws, run_id, "completed")
    # The one worker claimed each queued run as it finished the one before: none of
    # them needed a claim transaction of its own.
    assert claims == []
    assert events(platform, queued[0])[:2] == ["run.queued", "run.started"]


def test_a_run_canceled_while_queued_is_not_started_by_the_one_before(
    platform: Platform,
) -> None:
    ws, first = _start(platform)
    doomed, kept = _queue(platform, ws, _app_of(platform, ws, first), 2)
    platform.runs.cancel(ws, doomed)
    RELEASE.set()
    wait_status(platform, ws, kept, "completed")
    assert platform.runs.get(ws, doomed).status == "canceled"
    assert "run.started" not in events(platform, doomed)


def test_the_next_run_survives_a_lost_lease_of_the_one_before(platform: Platform) -> None:
    ws, first = _start(platform)
    [after] = _queue(platform, ws, _app_of(platform, ws, first), 1)
    with platform.db.write() as s:
        s.execute(update(Run).where(Run.id == first).values(lease_owner="another-worker"))
    RELEASE.set()
    wait_status(platform, ws, after, "completed")
    assert platform.runs.get(ws, first).status == "running"  # the other worker's now


@pytest.fixture
def played(tmp_path: Path) -> Iterator[tuple[Platform, str, Any]]:
    """A platform whose workers are stopped, with an echo run that this test claimed as
    its worker would: (platform, workspace, the claim's row)."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    p = Platform.build(settings)
    p.start()
    try:
        p.workers.stop()  # the test plays the worker
        ws = create_workspace(p.db, "test")
        app = p.apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id
        run = p.runs.create(ws, app, {"inputs": {"node_1": "hi"}})
        with p.db.write() as s:
            claimed = claim(s, run.id, p.workers.owner, timedelta(seconds=90))
        yield p, ws, claimed
    finally:
        p.stop()


def test_a_run_past_its_deadline_when_its_worker_gets_it_fails_unstarted(
    played: tuple[Platform, str, Any],
) -> None:
    p, ws, claimed = played
    late = claimed._replace(deadline_at=datetime.now(UTC) - timedelta(seconds=1))
    p.workers.processor.run_claimed(late)
    ended = p.runs.get(ws, claimed.id)
    assert ended.status == "failed"
    assert ended.error == "the run passed its time limit before it started"
    assert events(p, claimed.id)[-1] == "run.failed"
    assert "node.started" not in events(p, claimed.id)


def test_a_cancel_that_comes_between_the_claim_and_the_run_is_not_lost(
    played: tuple[Platform, str, Any],
) -> None:
    """The claim committed (the API sees the run running, and asks to cancel it) before
    this worker made the run's cancel token: the run still ends canceled at once, not at
    the next heartbeat."""
    p, ws, claimed = played
    p.workers.processor.cancel(claimed.id, "canceled by request")
    p.workers.processor.run_claimed(claimed)
    ended = p.runs.get(ws, claimed.id)
    assert ended.status == "canceled"
    assert ended.error == "canceled by request"
    assert not p.workers.processor.active
