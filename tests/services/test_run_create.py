"""Creating runs through the group-commit writer: many runs in one transaction count on
their app once each and number their events from 1."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from flowy.db.models import App, AppVersion, Run, RunEvent, RunInputs, utcnow
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.errors import Conflict, NotFound
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.files import FileService
from flowy.services.keys import create_workspace
from flowy.services.runs import Accepted, RunService
from flowy.storage.local import LocalBlobStore
from flowy.storage.signing import UrlSigner
from tests.workflows import ECHO


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


def _service(db: Database, tmp_path: Path) -> tuple[RunService, AppService]:
    files = FileService(
        db, LocalBlobStore(tmp_path / "files"), UrlSigner(b"k" * 32), "http://flowy.test", 600
    )
    apps = AppService(db, WorkflowCache(default_registry()))
    return RunService(db, apps, files, enqueue=lambda _run_id: None), apps


def _behind_its_back(db: Database, app_id: str, **values: object) -> None:
    """Change the app as another process would: its AppService is not told."""
    with db.write() as s:
        s.execute(update(App).where(App.id == app_id).values(**values))


@pytest.mark.parametrize("path", ["create", "start"])
def test_a_run_is_checked_against_the_app_as_its_write_finds_it(
    db: Database, tmp_path: Path, path: str
) -> None:
    """The app's head is kept between runs, and the run's write reads it again: a change
    made elsewhere (another version, unpublished, deleted) is never missed."""
    runs, apps = _service(db, tmp_path)
    ws = create_workspace(db, "w")
    app = apps.create(ws, title="Echo", workflow=ECHO, published=True)
    app_id, v1 = app.app.id, app.version.id

    def run() -> str:
        body = {"inputs": {"node_1": "x"}}
        if path == "create":
            return runs.create(ws, app_id, body).id
        return runs.start(ws, app_id, body).result(timeout=30).id

    def version_of(run_id: str) -> str:
        with db.read() as s:
            return str(s.scalar(select(Run.version_id).where(Run.id == run_id)))

    assert version_of(run()) == v1  # the head is now kept
    # A new version made here: the kept head is dropped at once.
    v2 = apps.update(ws, app_id, workflow=ECHO).version.id
    assert version_of(run()) == v2
    # A new version made elsewhere: the write finds it, and the run is checked again.
    with db.write() as s:
        v3 = AppVersion(app_id=app_id, number=3, workflow=ECHO)
        s.add(v3)
    _behind_its_back(db, app_id, current_version_id=v3.id)
    assert version_of(run()) == v3.id
    _behind_its_back(db, app_id, published=False)
    with pytest.raises(Conflict, match="not published"):
        run()
    _behind_its_back(db, app_id, published=True)
    assert version_of(run()) == v3.id
    _behind_its_back(db, app_id, deleted_at=utcnow())
    with pytest.raises(NotFound):
        run()
    with db.read() as s:
        assert s.scalar(select(App.run_count).where(App.id == app_id)) == 4


def test_answers_reach_the_event_loop_together_and_a_canceled_wait_keeps_its_run(
    db: Database, tmp_path: Path
) -> None:
    runs, apps = _service(db, tmp_path)
    ws = create_workspace(db, "w")
    app_id = apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id

    async def main() -> tuple[list[Accepted], int]:
        loop = asyncio.get_running_loop()
        wakeups = 0
        call_soon_threadsafe = loop.call_soon_threadsafe

        def counted(*args: Any, **kw: Any) -> Any:
            nonlocal wakeups
            wakeups += 1
            return call_soon_threadsafe(*args, **kw)

        loop.call_soon_threadsafe = counted  # type: ignore[method-assign]
        with db._write_lock:  # type: ignore[attr-defined]
            tasks = [
                asyncio.create_task(runs.start_async(ws, app_id, {"inputs": {"node_1": f"r{i}"}}))
                for i in range(20)
            ]
            gone = asyncio.create_task(runs.start_async(ws, app_id, {"inputs": {"node_1": "gone"}}))
            await asyncio.sleep(0)  # every request is checked and queued for the writer
            gone.cancel()
        answers = await asyncio.gather(*tasks)
        with pytest.raises(asyncio.CancelledError):
            await gone
        return answers, wakeups

    answers, wakeups = asyncio.run(main())
    runs.writer.close()
    assert len({a.id for a in answers}) == 20 and all(a.status == "queued" for a in answers)
    assert wakeups < 10  # 21 answers; one wake-up per group commit at most
    with db.read() as s:
        stored = {r.id: r for r in s.scalars(select(Run).where(Run.app_id == app_id))}
        inputs = s.scalars(select(RunInputs.inputs)).all()
    assert set(stored) >= {a.id for a in answers} and len(stored) == 21
    assert {"node_1": "gone"} in inputs  # the canceled wait's run was made
