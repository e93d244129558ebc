"""Prepared statements: what they store and read back is what Core stores and reads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from sqlalchemy import Table, bindparam, insert, select, update

from flowy.db.models import Run, Workspace, utcnow
from flowy.db.prepared import Prepared, _driver
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.keys import create_workspace

RUNS = cast(Table, Run.__table__)
WORKSPACES = cast(Table, Workspace.__table__)
INSERT_WS = Prepared(insert(WORKSPACES), ["id", "name", "created_at"])
READ = Prepared(
    select(RUNS.c.id, RUNS.c.nodes, RUNS.c.created_at, RUNS.c.deadline_at).where(
        RUNS.c.id == bindparam("p_id")
    )
)
TOUCH = Prepared(
    update(RUNS)
    .where(RUNS.c.id == bindparam("p_id"), RUNS.c.status == "queued")
    .values(status="running", attempt=RUNS.c.attempt + 1, started_at=bindparam("p_now"))
    .returning(RUNS.c.id, RUNS.c.attempt, RUNS.c.started_at)
)


def _run_values(db: Database, run_id: str, **extra: Any) -> dict[str, Any]:
    """Every column of a queued run of a real app (the foreign keys hold)."""
    ws = create_workspace(db, "w")
    doc = {
        "nodes": [
            {"id": "node_1", "type": "input.text"},
            {
                "id": "node_2",
                "type": "output.text",
                "inputs": {"text": {"node": "node_1", "port": "text"}},
            },
        ]
    }
    app = AppService(db, WorkflowCache(default_registry(load_entry_points=False)))
    detail = app.create(ws, title="t", workflow=doc)
    values: dict[str, Any] = dict.fromkeys(c.key for c in RUNS.c)
    values.update(
        id=run_id,
        workspace_id=ws,
        app_id=detail.app.id,
        version_id=detail.version.id,
        status="queued",
        outputs=[],
        nodes={"node_1": "é ✓", "n": [1, 2.5, None]},
        attempt=0,
        event_seq=0,
        created_at=datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC),
    )
    values.update(extra)
    return values


def test_values_round_trip_as_through_core(db: Database) -> None:
    values = _run_values(db, "r" * 24, deadline_at=utcnow() + timedelta(hours=1))
    with db.write() as s:
        Prepared(insert(RUNS), [c.key for c in RUNS.c]).execute(s, values)
    with db.read() as s:
        core = s.execute(
            select(RUNS.c.id, RUNS.c.nodes, RUNS.c.created_at, RUNS.c.deadline_at).where(
                RUNS.c.id == "r" * 24
            )
        ).one()
    with db.read_engine.connect() as conn:
        mine = READ.execute(conn, {"p_id": "r" * 24}).first()
    assert tuple(mine) == tuple(core)
    assert mine.nodes == {"node_1": "é ✓", "n": [1, 2.5, None]}
    assert mine.created_at == datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    with db.read_engine.connect() as conn:
        assert READ.execute(conn, {"p_id": "x" * 24}).first() is None


def test_returning_rows_are_named_and_literals_are_bound(db: Database) -> None:
    values = _run_values(db, "r" * 24)
    with db.write() as s:
        Prepared(insert(RUNS), [c.key for c in RUNS.c]).execute(s, values)
    now = utcnow()
    with db.write() as s:
        row = TOUCH.execute(s, {"p_id": "r" * 24, "p_now": now}).first()
    assert row is not None
    assert row._asdict() == {"id": "r" * 24, "attempt": 1, "started_at": now}
    # The literal status == "queued" is part of the statement: a second run matches nothing.
    with db.write() as s:
        res = TOUCH.execute(s, {"p_id": "r" * 24, "p_now": now})
        assert res.first() is None


def test_an_insert_without_every_column_is_refused(db: Database) -> None:
    with db.write() as s, pytest.raises(KeyError, match="created_at"):
        INSERT_WS.execute(s, {"id": "w" * 24, "name": "w"})


def test_writes_commit_and_roll_back_with_the_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.write() as s:
        INSERT_WS.execute(s, {"id": "a" * 24, "name": "gone", "created_at": utcnow()})
        raise RuntimeError("abort")
    with db.write() as s:
        INSERT_WS.execute(s, {"id": "b" * 24, "name": "kept", "created_at": utcnow()})
    with db.read() as s:
        assert list(s.scalars(select(Workspace.name))) == ["kept"]


def test_a_session_is_asked_again_for_its_connection_in_each_transaction(db: Database) -> None:
    with db.read() as s:
        first, _ = _driver(s)
        assert _driver(s)[0] is first  # kept for the rest of the transaction
        s.rollback()  # the connection goes back to the pool ...
        held = db.read_engine.raw_connection()  # ... and is taken from it here
        try:
            assert held.driver_connection is first
            current, _ = _driver(s)  # a new transaction, on another connection
            assert current is not first
            assert current is s.connection().connection.driver_connection
        finally:
            held.close()
