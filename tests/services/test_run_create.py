"""Creating runs through the group-commit writer: many runs in one transaction count on
their app once each and number their events from 1."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from flowy.db.models import App, RunEvent
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.files import FileService
from flowy.services.keys import create_workspace
from flowy.services.runs import Accepted, RunService
from flowy.storage.local import LocalBlobStore
from flowy.storage.signing import UrlSigner

ECHO = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "output.text",
            "inputs": {"text": {"node": "node_1", "port": "text"}},
        },
    ]
}


def test_runs_written_together_count_once_each_and_number_events_from_one(
    db: Database, tmp_path: Path
) -> None:
    files = FileService(
        db, LocalBlobStore(tmp_path / "files"), UrlSigner(b"k" * 32), "http://flowy.test", 600
    )
    apps = AppService(db, WorkflowCache(default_registry()))
    queued: list[str] = []
    runs = RunService(db, apps, files, enqueue=queued.append)
    ws = create_workspace(db, "w")
    one = apps.create(ws, title="One", workflow=ECHO, published=True).app.id
    two = apps.create(ws, title="Two", workflow=ECHO, published=True).app.id
    # Hold the write lock: the writer's first transaction waits, the rest queue behind it
    # and share the next one.
    with db._write_lock:  # type: ignore[attr-defined]
        futures = [
            runs.start(ws, app, {"inputs": {"node_1": f"r{i}"}})
            for i, app in enumerate([one, two, one, one, two, one, one])
        ]
    answers = [f.result(timeout=30) for f in futures]
    runs.writer.close()
    assert runs.writer.writes == 7 and runs.writer.transactions < 7  # they were batched
    assert all(isinstance(a, Accepted) and a.status == "queued" for a in answers)
    assert queued == [a.id for a in answers]
    with db.read() as s:
        counts = {a: n for a, n in s.execute(select(App.id, App.run_count))}
        events = s.execute(select(RunEvent.run_id, RunEvent.seq, RunEvent.type)).all()
    assert counts == {one: 5, two: 2}
    assert sorted((r, q, t) for r, q, t in events) == sorted(
        (a.id, 1, "run.queued") for a in answers
    )
    # A run made alone afterwards adds to the same count.
    runs.create(ws, two, {"inputs": {"node_1": "later"}})
    with db.read() as s:
        assert s.scalar(select(App.run_count).where(App.id == two)) == 3
