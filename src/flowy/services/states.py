"""Run and node statuses, their allowed transitions, and the one place that writes them.

Every write after the claim is fenced by the lease owner and attempt number: a worker
that lost its lease (the sweeper gave the run to another) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from flowy.db.models import Run, utcnow


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"


class NodeStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    SKIPPED = "skipped"


TERMINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED})

ALLOWED: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.CANCELED}),
    # running -> queued: the sweeper gives a run whose lease ran out to another worker.
    RunStatus.RUNNING: frozenset({RunStatus.QUEUED, *TERMINAL}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELED: frozenset(),
}


def claim(s: Session, run_id: str, owner: str, lease: timedelta) -> bool:
    """queued -> running, compare-and-set: True only for the one worker that wins."""
    now = utcnow()
    res = s.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(
            status=RunStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempt=Run.attempt + 1,
            started_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def fenced_update(s: Session, run_id: str, owner: str, attempt: int, **values: Any) -> bool:
    """Write to a running run only while ``owner`` still holds this attempt's lease."""
    res = s.execute(
        update(Run)
        .where(
            Run.id == run_id,
            Run.status == RunStatus.RUNNING,
            Run.lease_owner == owner,
            Run.attempt == attempt,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return bool(res.rowcount == 1)  # type: ignore[attr-defined]


def finish(
    s: Session,
    run_id: str,
    owner: str,
    attempt: int,
    status: RunStatus,
    *,
    outputs: list[Any] | None = None,
    error: str | None = None,
    error_node: str | None = None,
    nodes: dict[str, Any] | None = None,
) -> bool:
    """running -> completed/failed/canceled, fenced.  False if the lease was lost."""
    assert status in TERMINAL and status in ALLOWED[RunStatus.RUNNING]
    values: dict[str, Any] = {
        "status": status,
        "completed_at": utcnow(),
        "lease_owner": None,
        "lease_expires_at": None,
        "error": error,
        "error_node": error_node,
    }
    if outputs is not None:
        values["outputs"] = outputs
    if nodes is not None:
        values["nodes"] = nodes
    return fenced_update(s, run_id, owner, attempt, **values)


def requeue_expired(s: Session, now: datetime, max_attempts: int) -> tuple[list[str], list[str]]:
    """running runs whose lease ran out: back to queued, or failed after max_attempts.

    Returns the ids requeued and the ids failed.
    """
    rows = s.execute(
        update(Run)
        .where(Run.status == RunStatus.RUNNING, Run.lease_expires_at < now)
        .values(status=RunStatus.QUEUED, lease_owner=None, lease_expires_at=None)
        .returning(Run.id, Run.attempt)
        .execution_options(synchronize_session=False)
    ).all()
    requeued = [r.id for r in rows if r.attempt < max_attempts]
    failed = [r.id for r in rows if r.attempt >= max_attempts]
    if failed:
        s.execute(
            update(Run)
            .where(Run.id.in_(failed), Run.status == RunStatus.QUEUED)
            .values(
                status=RunStatus.FAILED,
                completed_at=now,
                error=f"the run was interrupted {max_attempts} times (its worker "
                "stopped or lost its lease) and was given up",
            )
            .execution_options(synchronize_session=False)
        )
    return requeued, failed
