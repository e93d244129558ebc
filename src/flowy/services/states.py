"""Run and node statuses, their allowed transitions, and the one place that writes them.

Every write after the claim is fenced by the lease owner and attempt number: a worker
that lost its lease (the sweeper gave the run to another) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, aliased

from flowy.db.models import Run, utcnow
from flowy.services.events import emit
from flowy.services.webhooks import enqueue_for_run


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


def claim(s: Session, run_id: str, owner: str, lease: timedelta, max_running: int = 0) -> bool:
    """queued -> running, compare-and-set: True only for the one worker that wins.

    With ``max_running`` > 0 the claim also fails while the run's workspace already has
    that many runs running (the run stays queued; see the worker pool's deferral).
    """
    now = utcnow()
    conditions = [Run.id == run_id, Run.status == RunStatus.QUEUED]
    if max_running > 0:
        other = aliased(Run)
        running = (
            select(func.count())
            .select_from(other)
            .where(other.workspace_id == Run.workspace_id, other.status == RunStatus.RUNNING)
            .scalar_subquery()
        )
        conditions.append(running < max_running)
    res = s.execute(
        update(Run)
        .where(*conditions)
        .values(
            status=RunStatus.RUNNING,
            lease_owner=owner,
            lease_expires_at=now + lease,
            attempt=Run.attempt + 1,
            started_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    won = bool(res.rowcount == 1)  # type: ignore[attr-defined]
    if won:
        emit(s, run_id, "run.started", {"status": RunStatus.RUNNING})
        enqueue_for_run(s, run_id, "run.started")
    return won


def cancel_queued(s: Session, run_id: str, reason: str) -> bool:
    """queued -> canceled at once (nothing is running it).  False if not queued."""
    res = s.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(
            status=RunStatus.CANCELED,
            completed_at=utcnow(),
            error=reason,
            cancel_requested_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    emit(s, run_id, "run.canceled", {"status": RunStatus.CANCELED, "error": reason})
    enqueue_for_run(s, run_id, "run.canceled")
    return True


def fail_queued(s: Session, run_id: str, error: str) -> bool:
    """queued -> failed (a run that passed its deadline before it started)."""
    res = s.execute(
        update(Run)
        .where(Run.id == run_id, Run.status == RunStatus.QUEUED)
        .values(status=RunStatus.FAILED, completed_at=utcnow(), error=error)
        .execution_options(synchronize_session=False)
    )
    if res.rowcount != 1:  # type: ignore[attr-defined]
        return False
    emit(s, run_id, "run.failed", {"status": RunStatus.FAILED, "error": error})
    enqueue_for_run(s, run_id, "run.failed")
    return True


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
    if not fenced_update(s, run_id, owner, attempt, **values):
        return False
    if outputs:
        emit(s, run_id, "run.outputs", {"outputs": outputs})
    emit(s, run_id, f"run.{status}", {"status": status, "error": error, "errorNode": error_node})
    enqueue_for_run(s, run_id, f"run.{status}")
    return True


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
    for run_id in requeued:
        emit(
            s,
            run_id,
            "run.requeued",
            {"status": RunStatus.QUEUED, "reason": "its worker stopped or lost its lease"},
        )
    error = (
        f"the run was interrupted {max_attempts} times (its worker stopped or lost "
        "its lease) and was given up"
    )
    for run_id in failed:
        emit(s, run_id, "run.failed", {"status": RunStatus.FAILED, "error": error})
    if failed:
        s.execute(
            update(Run)
            .where(Run.id.in_(failed), Run.status == RunStatus.QUEUED)
            .values(
                status=RunStatus.FAILED,
                completed_at=now,
                error=error,
            )
            .execution_options(synchronize_session=False)
        )
    for run_id in failed:
        enqueue_for_run(s, run_id, "run.failed")
    return requeued, failed
