"""runs: index (workspace_id, status)

The claim counts the workspace's running runs (the concurrent-run limit); without this
index SQLite answered that count by walking every run the workspace ever had, so each
claim grew slower with the history (0.8 ms at 3,000 runs).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index("ix_runs_workspace_status", ["workspace_id", "status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index("ix_runs_workspace_status")
