"""The migrations build exactly the models' schema, and the hot statements use it."""

from __future__ import annotations

from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine

from flowy.db.migrate import upgrade
from flowy.db.models import Base
from flowy.db.session import Database
from flowy.services.states import _CLAIM


def test_migrations_leave_nothing_for_autogenerate(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flowy.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_the_limited_claim_counts_running_runs_through_an_index(db: Database) -> None:
    # Not by walking every run the workspace ever had: that grew with its history.
    engine = db.write_engine
    compiled = _CLAIM[True]._compile(engine.dialect)
    raw = engine.raw_connection()
    try:
        plan = (
            raw.cursor()
            .execute("EXPLAIN QUERY PLAN " + compiled.sql, (None,) * len(compiled.names))
            .fetchall()
        )
    finally:
        raw.close()
    steps = [row[-1] for row in plan]
    assert any("ix_runs_workspace_status (workspace_id=? AND status=?)" in s for s in steps), steps
