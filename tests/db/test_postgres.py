"""The same schema and run flow on a real PostgreSQL (scaled mode's database).

Runs against the server at ``FLOWY_TEST_POSTGRES`` (default: the machine's own,
``postgresql://postgres@127.0.0.1:5432/postgres``) in a scratch database of its own, and
is skipped, saying why, where no server answers (a laptop with nothing installed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from flowy.db.migrate import upgrade
from flowy.db.models import Base
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.services import bootstrap as bootstrap_module
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.bootstrap import Bootstrapped, bootstrap
from flowy.services.events import read_events
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.services.states import claim
from flowy.settings import Settings
from tests.backing import scratch_postgres
from tests.workflows import ECHO


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with scratch_postgres() as url:
        yield url


def test_migrations_build_the_models_schema_on_postgres(pg_url: str) -> None:
    upgrade(pg_url)
    upgrade(pg_url)  # a second time: nothing to do
    _assert_schema_is_the_models(pg_url)


def _assert_schema_is_the_models(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            assert compare_metadata(MigrationContext.configure(conn), Base.metadata) == []
    finally:
        engine.dispose()


def test_runs_complete_on_postgres(pg_url: str, tmp_path: Path) -> None:
    settings = Settings(
        _env_file=None, data_dir=tmp_path / "data", database_url=pg_url, worker={"concurrency": 2}
    )
    p = Platform.build(settings)
    p.start()
    try:
        ws = create_workspace(p.db, "pg")
        app = p.apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id
        # Written on the caller's thread, and through the group-commit writer.
        ids = [p.runs.create(ws, app, {"inputs": {"node_1": f"one {i}"}}).id for i in range(10)]
        futures = [p.runs.start(ws, app, {"inputs": {"node_1": f"many {i}"}}) for i in range(10)]
        ids += [f.result(timeout=30).id for f in futures]
        deadline = time.monotonic() + 60
        while any(p.runs.get(ws, r).status not in ("completed", "failed") for r in ids):
            assert time.monotonic() < deadline, "runs did not end on PostgreSQL"
            time.sleep(0.05)
        runs = [p.runs.get(ws, r) for r in ids]
        assert [r.status for r in runs] == ["completed"] * 20
        assert runs[0].outputs == [{"nodeId": "node_2", "kind": "text", "value": "one 0"}]
        assert runs[-1].outputs[0]["value"] == "many 9"
        # Numbered from the events' own index, the run row locked first.
        types = [e.type for e in read_events(p.db, ids[0])]
        assert types[:2] == ["run.queued", "run.started"]
        assert types[-2:] == ["run.outputs", "run.completed"]
        assert [e.seq for e in read_events(p.db, ids[0])] == list(range(1, len(types) + 1))
    finally:
        p.stop()


def test_servers_and_workers_that_start_together_migrate_once() -> None:
    # A fresh database of its own: every process of scaled mode migrates as it starts.
    with scratch_postgres() as url:
        errors: list[BaseException] = []

        def start() -> None:
            try:
                upgrade(url)
            except BaseException as exc:  # noqa: BLE001 - told to the test below
                errors.append(exc)

        threads = [threading.Thread(target=start) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert errors == []
        _assert_schema_is_the_models(url)


def test_of_the_servers_that_start_together_one_makes_the_workspace(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with scratch_postgres() as url:
        upgrade(url)
        # Each start reads "no workspace yet", then takes a while to make it: without the
        # start-up lock, both would make one.
        seen = bootstrap_module.first_workspace

        def slow(db: Database) -> str | None:
            found = seen(db)
            time.sleep(0.3)
            return found

        monkeypatch.setattr(bootstrap_module, "first_workspace", slow)
        made: list[Bootstrapped] = []

        def start() -> None:
            db = Database(url)
            try:
                made.append(bootstrap(db, AppService(db, WorkflowCache(default_registry()))))
            finally:
                db.dispose()

        threads = [threading.Thread(target=start) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(b.api_key is not None for b in made) == [False, True]
        assert made[0].workspace_id == made[1].workspace_id


def test_claims_of_one_workspace_made_at_once_keep_its_limit(pg_url: str, tmp_path: Path) -> None:
    # Two workers claim two queued runs of one workspace whose limit is one running run:
    # the second claim, made while the first's transaction is still open, must wait for
    # it and then count it.
    upgrade(pg_url)
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", database_url=pg_url)
    p = Platform.build(settings)  # not started: nothing else claims
    try:
        ws = create_workspace(p.db, "limited")
        app = p.apps.create(ws, title="Echo", workflow=ECHO, published=True).app.id
        first, second = (p.runs.create(ws, app, {"inputs": {"node_1": n}}).id for n in "ab")
        lease = timedelta(seconds=60)
        claimed: list[object] = []
        with p.db.write() as s:
            assert claim(s, first, "worker-1", lease, max_running=1) is not None

            def other() -> None:
                with p.db.write() as s2:
                    claimed.append(claim(s2, second, "worker-2", lease, max_running=1))

            t = threading.Thread(target=other)
            t.start()
            t.join(0.5)
            assert t.is_alive(), "the second claim did not wait for the first"
        t.join(10)
        assert claimed == [None]
        assert p.runs.get(ws, second).status == "queued"
    finally:
        p.runs.writer.close()
        p.db.dispose()
