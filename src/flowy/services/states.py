"""Run and node statuses, their allowed transitions, and the one place that writes them.

Every write after the claim is fenced by the lease owner and attempt number: a worker
that lost its lease (the sweeper gave the run to another) changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningUpdate

from flowy.db.models import Run, utcnow
from flowy.db.prepared import Prepared
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


#: The runs table, for the statements below: the hottest writes are built once, as Core
#: statements on the table with bound parameters, rather than per call through the ORM.
RUNS = cast(Table, Run.__table__)

#: What the worker that claims a run needs of it, read by the claim itself.
CLAIMED_COLUMNS = tuple(
    RUNS.c[name]
    for name in (
        "id",
        "workspace_id",
        "app_id",
        "version_id",
        "attempt",
        "cancel_requested_at",
        "deadline_at",
        "webhook_url",
        "webhook_events",
    )
)


def _claim_statement(limited: bool) -> ReturningUpdate[Any]:
    c = RUNS.c
    conditions = [c.id == bindparam("p_run_id"), c.status == RunStatus.QUEUED]
    if limited:
        other = RUNS.alias("other")
        running = (
            select(func.count())
            .select_from(other)
            .where(other.c.workspace_id == c.workspace_id, other.c.status == RunStatus.RUNNING)
            .scalar_subquery()
        )
        conditions.append(running < bindparam("p_max_running"))
    return (
        update(RUNS)
        .where(*conditions)
        .values(
            status=RunStatus.RUNNING,
            lease_owner=bindparam("p_owner"),
            lease_expires_at=bindparam("p_expires"),
            attempt=c.attempt + 1,
            started_at=bindparam("p_now"),
        )
        .returning(*CLAIMED_COLUMNS)
    )


_CLAIM = {False: Prepared(_claim_statement(False)), True: Prepared(_claim_statement(True))}
#: PostgreSQL: the transaction-level lock of a run's workspace, taken before a limited
#: claim.  Under READ COMMITTED two claims of one workspace made at once would each count
#: its running runs without the other's, and both pass the limit; with the lock they take
#: turns, and the second counts the first.  (Key class 1: apart from the start-up lock.)
_LOCK_WORKSPACE = Prepared(
    select(func.pg_advisory_xact_lock(1, func.hashtext(RUNS.c.workspace_id))).where(
        RUNS.c.id == bindparam("p_run_id")
    )
)


def claim(s: Session, run_id: str, owner: str, lease: timedelta, max_running: int = 0) -> Any:
    """queued -> running, compare-and-set: the run (a named tuple of
    :data:`CLAIMED_COLUMNS`, as it is after the claim) only for the one worker that
    wins, None for the others.

    With ``max_running`` > 0 the claim also fails while the run's workspace already has
    that many runs running (the run stays queued; see the worker pool's deferral).
    """
    now = utcnow()
    params = {"p_run_id": run_id, "p_owner": owner, "p_expires": now + lease, "p_now": now}
    if max_running > 0:
        params["p_max_running"] = max_running
        if s.get_bind().dialect.name == "postgresql":  # SQLite's writers take turns already
            _LOCK_WORKSPACE.execute(s, {"p_run_id": run_id})
    row = _CLAIM[max_running > 0].execute(s, params).first()
    if row is not None:
        emit(s, run_id, "run.started", {"status": RunStatus.RUNNING})
        enqueue_for_run(
            s, run_id, "run.started", head=(row.workspace_id, row.webhook_url, row.webhook_events)
        )
    return row


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


_FENCED: dict[tuple[str, ...], Prepared] = {}


def _fenced_statement(columns: tuple[str, ...]) -> Prepared:
    stmt = _FENCED.get(columns)
    if stmt is None:
        c = RUNS.c
        stmt = _FENCED[columns] = Prepared(
            update(RUNS)
            .where(
                c.id == bindparam("p_run_id"),
                c.status == RunStatus.RUNNING,
                c.lease_owner == bindparam("p_owner"),
                c.attempt == bindparam("p_attempt"),
            )
            .values({name: bindparam(f"v_{name}") for name in columns})
        )
    return stmt


def fenced_update(s: Session, run_id: str, owner: str, attempt: int, **values: Any) -> bool:
    """Write to a running run only while ``owner`` still holds this attempt's lease."""
    params = {f"v_{k}": v for k, v in values.items()}
    params.update(p_run_id=run_id, p_owner=owner, p_attempt=attempt)
    return _fenced_statement(tuple(sorted(values))).execute(s, params).rowcount == 1


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
    head: tuple[str, str | None, list[str] | None] | None = None,
) -> bool:
    """running -> completed/failed/canceled, fenced.  False if the lease was lost.
    ``head``: the run's workspace id, webhook URL and events if the caller has them (its
    claim returned them)."""
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
    enqueue_for_run(s, run_id, f"run.{status}", head=head)
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
