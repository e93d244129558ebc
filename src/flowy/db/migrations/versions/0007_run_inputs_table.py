"""run inputs in a table of their own

A run's inputs (data: URIs can be megabytes) were a column of its row, and SQLite
rewrites the whole row on every UPDATE: the claim, each node-state flush, each lease
renewal and the end rewrote them all.  They move to ``run_inputs``, written once.

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_inputs",
        sa.Column("run_id", sa.String(length=24), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"]),
        sa.PrimaryKeyConstraint("run_id"),
    )
    op.execute("INSERT INTO run_inputs (run_id, inputs) SELECT id, inputs FROM runs")
    # SQLite 3.35+ and PostgreSQL drop a plain column in place (no table rebuild).
    op.drop_column("runs", "inputs")


def downgrade() -> None:
    op.add_column("runs", sa.Column("inputs", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE runs SET inputs = (SELECT inputs FROM run_inputs WHERE run_inputs.run_id = runs.id)"
    )
    op.drop_table("run_inputs")
