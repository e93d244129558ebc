"""The migrations build exactly the models' schema, and the hot statements use it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from flowy.db.migrate import alembic_config, upgrade
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


def test_run_inputs_move_out_of_the_run_row_with_their_data(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flowy.db'}"
    command.upgrade(alembic_config(url), "0006")  # inputs still a column of runs
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text("INSERT INTO workspaces (id, name, created_at) VALUES ('w', 'w', '')")
            )
            conn.execute(
                text(
                    "INSERT INTO apps (id, workspace_id, title, description, published, "
                    "run_count, created_at, updated_at) "
                    "VALUES ('a', 'w', 't', '', 1, 0, '', '')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO app_versions (id, app_id, number, workflow, created_at) "
                    "VALUES ('v', 'a', 1, '{}', '')"
                )
            )
            conn.execute(
                text(
                    "INSERT INTO runs (id, workspace_id, app_id, version_id, status, inputs, "
                    "outputs, nodes, attempt, event_seq, created_at) VALUES "
                    "('r', 'w', 'a', 'v', 'queued', :inputs, '[]', '{}', 0, 0, '')"
                ),
                {"inputs": '{"node_1": "data:,big"}'},
            )
        upgrade(url)
        with engine.connect() as conn:
            moved = conn.execute(text("SELECT run_id, inputs FROM run_inputs")).all()
            columns = {c["name"] for c in inspect(conn).get_columns("runs")}
    finally:
        engine.dispose()
    assert [(r.run_id, r.inputs) for r in moved] == [("r", '{"node_1": "data:,big"}')]
    assert "inputs" not in columns
