"""Run state transitions: the claim compare-and-set, fenced writes, the lease sweeper."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from flowy.db.models import App, AppVersion, Run, Workspace, utcnow
from flowy.db.session import Database
from flowy.services.states import (
    ALLOWED,
    TERMINAL,
    RunStatus,
    claim,
    fenced_update,
    finish,
    requeue_expired,
)

LEASE = timedelta(minutes=5)


@pytest.fixture
def version(db: Database) -> AppVersion:
    with db.write() as s:
        ws = Workspace(name="acme")
        s.add(ws)
        s.flush()
        app = App(workspace_id=ws.id, title="Headshots")
        s.add(app)
        s.flush()
        v = AppVersion(app_id=app.id, number=1, workflow={"nodes": []})
        s.add(v)
        s.flush()
        app.current_version_id = v.id
    return v


def new_run(db: Database, version: AppVersion, status: RunStatus = RunStatus.QUEUED) -> str:
    with db.write() as s:
        app = s.get(App, version.app_id)
        assert app is not None
        run = Run(
            workspace_id=app.workspace_id,
            app_id=app.id,
            version_id=version.id,
            status=status,
        )
        s.add(run)
    return run.id


def get(db: Database, run_id: str) -> Run:
    with db.read() as s:
        run = s.get(Run, run_id)
        assert run is not None
        return run


def do_claim(db: Database, run_id: str, owner: str) -> bool:
    with db.write() as s:
        return claim(s, run_id, owner, LEASE) is not None


# --------------------------------------------------------------------------- claim


def test_new_run_defaults(db: Database, version: AppVersion) -> None:
    run = get(db, new_run(db, version))
    assert run.status == RunStatus.QUEUED
    assert run.attempt == 0
    assert run.lease_owner is None and run.lease_expires_at is None
    assert run.outputs == [] and run.nodes == {}


def test_claim_takes_a_queued_run(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    before = utcnow()
    with db.write() as s:
        claimed = claim(s, run_id, "worker-a", LEASE)
    run = get(db, run_id)
    # The claim answers the run as it now is: what the worker needs, with no re-read.
    assert claimed is not None
    assert (claimed.id, claimed.attempt, claimed.version_id) == (run_id, 1, run.version_id)
    assert "inputs" not in claimed._fields  # a table of their own, read by the worker
    assert run.status == RunStatus.RUNNING
    assert run.attempt == 1
    assert run.lease_owner == "worker-a"
    assert run.started_at is not None and run.started_at >= before - timedelta(seconds=1)
    assert run.lease_expires_at is not None
    assert (run.lease_expires_at - run.started_at) == LEASE
    # A second claim of the same run, by anyone, loses.
    assert do_claim(db, run_id, "worker-b") is False
    assert do_claim(db, run_id, "worker-a") is False
    run = get(db, run_id)
    assert (run.lease_owner, run.attempt) == ("worker-a", 1)


@pytest.mark.parametrize(
    "status", [RunStatus.RUNNING, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED]
)
def test_claim_refuses_runs_that_are_not_queued(
    db: Database, version: AppVersion, status: RunStatus
) -> None:
    run_id = new_run(db, version, status)
    assert do_claim(db, run_id, "worker-a") is False
    run = get(db, run_id)
    assert run.status == status
    assert run.attempt == 0
    assert run.lease_owner is None


def test_claim_of_unknown_run_is_false(db: Database) -> None:
    assert do_claim(db, "0" * 24, "worker-a") is False


@pytest.mark.parametrize("n_threads", [2, 4, 8])
def test_claim_race_has_exactly_one_winner(
    db: Database, version: AppVersion, n_threads: int
) -> None:
    run_id = new_run(db, version)
    gate = threading.Barrier(n_threads)
    results: dict[str, bool] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()

    def contender(i: int) -> None:
        owner = f"worker-{i}"
        try:
            gate.wait(timeout=10)
            won = do_claim(db, run_id, owner)
            with lock:
                results[owner] = won
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=contender, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert len(results) == n_threads
    winners = [owner for owner, won in results.items() if won]
    assert len(winners) == 1, results
    run = get(db, run_id)
    assert run.status == RunStatus.RUNNING
    assert run.attempt == 1
    assert run.lease_owner == winners[0]


# --------------------------------------------------------------------------- fenced writes


def test_fenced_update_only_for_the_lease_holder(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")

    with db.write() as s:
        assert fenced_update(s, run_id, "worker-b", 1, nodes={"node_1": "running"}) is False
        assert fenced_update(s, run_id, "worker-a", 0, nodes={"node_1": "running"}) is False
        assert fenced_update(s, run_id, "worker-a", 2, nodes={"node_1": "running"}) is False
    assert get(db, run_id).nodes == {}

    with db.write() as s:
        assert fenced_update(s, run_id, "worker-a", 1, nodes={"node_1": "running"}) is True
    assert get(db, run_id).nodes == {"node_1": "running"}


def test_fenced_update_refuses_a_queued_run(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    with db.write() as s:
        assert fenced_update(s, run_id, "worker-a", 0, error="x") is False
    assert get(db, run_id).error is None


def test_finish_with_wrong_owner_or_attempt_changes_nothing(
    db: Database, version: AppVersion
) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")
    before = get(db, run_id)

    with db.write() as s:
        assert finish(s, run_id, "worker-b", 1, RunStatus.COMPLETED, outputs=[1]) is False
        assert finish(s, run_id, "worker-a", 0, RunStatus.FAILED, error="stale") is False
    after = get(db, run_id)
    assert after.status == RunStatus.RUNNING
    assert after.lease_owner == "worker-a"
    assert after.lease_expires_at == before.lease_expires_at
    assert after.outputs == [] and after.error is None and after.completed_at is None


def test_finish_by_the_lease_holder(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")
    with db.write() as s:
        assert (
            finish(
                s,
                run_id,
                "worker-a",
                1,
                RunStatus.COMPLETED,
                outputs=[{"nodeId": "node_3", "value": "hi"}],
                nodes={"node_3": "completed"},
            )
            is True
        )
    run = get(db, run_id)
    assert run.status == RunStatus.COMPLETED
    assert run.outputs == [{"nodeId": "node_3", "value": "hi"}]
    assert run.nodes == {"node_3": "completed"}
    assert run.lease_owner is None and run.lease_expires_at is None
    assert run.completed_at is not None and run.started_at is not None
    assert run.completed_at >= run.started_at
    assert run.error is None and run.error_node is None

    # A finished run is final: finishing again, even by its old owner, does nothing.
    with db.write() as s:
        assert finish(s, run_id, "worker-a", 1, RunStatus.FAILED, error="late") is False
    assert get(db, run_id).status == RunStatus.COMPLETED


def test_finish_failed_keeps_error_and_node(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")
    with db.write() as s:
        assert finish(
            s,
            run_id,
            "worker-a",
            1,
            RunStatus.FAILED,
            error="node_2 (Crop): no face found",
            error_node="node_2",
        )
    run = get(db, run_id)
    assert (run.status, run.error, run.error_node) == (
        RunStatus.FAILED,
        "node_2 (Crop): no face found",
        "node_2",
    )
    assert run.outputs == []  # untouched when not given


# --------------------------------------------------------------------------- sweeper


def test_requeue_expired(db: Database, version: AppVersion) -> None:
    expired = new_run(db, version)
    exhausted = new_run(db, version)
    healthy = new_run(db, version)
    queued = new_run(db, version)
    done = new_run(db, version)

    # exhausted: claimed and lost its lease twice already, now on its third attempt
    for i in range(3):
        assert do_claim(db, exhausted, f"worker-{i}")
        if i < 2:
            with db.write() as s:
                requeued, failed = requeue_expired(s, utcnow() + LEASE * 2, max_attempts=3)
            assert (requeued, failed) == ([exhausted], [])
    assert get(db, exhausted).attempt == 3
    assert do_claim(db, expired, "worker-a")  # attempt 1
    assert do_claim(db, done, "worker-a")
    with db.write() as s:
        assert finish(s, done, "worker-a", 1, RunStatus.COMPLETED)
    # Time passes: expired and exhausted leases run out; healthy is claimed just now
    # with a lease that outlives the sweep.
    sweep_at = utcnow() + LEASE + timedelta(seconds=1)
    with db.write() as s:
        assert claim(s, healthy, "worker-h", LEASE * 10)

    with db.write() as s:
        requeued, failed = requeue_expired(s, sweep_at, max_attempts=3)
    assert requeued == [expired]
    assert failed == [exhausted]

    r = get(db, expired)
    assert r.status == RunStatus.QUEUED
    assert r.lease_owner is None and r.lease_expires_at is None
    assert r.attempt == 1

    r = get(db, exhausted)
    assert r.status == RunStatus.FAILED
    assert r.error is not None
    assert "interrupted 3 times" in r.error
    assert "given up" in r.error
    assert r.completed_at == sweep_at
    assert r.lease_owner is None

    r = get(db, healthy)
    assert (r.status, r.lease_owner, r.attempt) == (RunStatus.RUNNING, "worker-h", 1)
    assert get(db, queued).status == RunStatus.QUEUED
    assert get(db, queued).attempt == 0
    assert get(db, done).status == RunStatus.COMPLETED

    # The requeued run can be claimed again, as attempt 2.
    assert do_claim(db, expired, "worker-b")
    r = get(db, expired)
    assert (r.status, r.lease_owner, r.attempt) == (RunStatus.RUNNING, "worker-b", 2)


def test_requeue_expired_leaves_unexpired_leases(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")
    with db.write() as s:
        assert requeue_expired(s, utcnow(), max_attempts=3) == ([], [])
    assert get(db, run_id).status == RunStatus.RUNNING


def test_worker_that_lost_its_lease_cannot_finish(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")  # attempt 1, then worker-a stalls
    with db.write() as s:
        requeued, _ = requeue_expired(s, utcnow() + LEASE * 2, max_attempts=3)
    assert requeued == [run_id]
    assert do_claim(db, run_id, "worker-b")  # attempt 2

    # worker-a wakes up and tries to report its result.
    with db.write() as s:
        assert finish(s, run_id, "worker-a", 1, RunStatus.COMPLETED, outputs=["stale"]) is False
        assert fenced_update(s, run_id, "worker-a", 1, nodes={"x": "stale"}) is False
    r = get(db, run_id)
    assert r.status == RunStatus.RUNNING
    assert (r.lease_owner, r.attempt) == ("worker-b", 2)
    assert r.outputs == [] and r.nodes == {}

    # Same owner name but an old attempt is fenced off as well.
    with db.write() as s:
        assert finish(s, run_id, "worker-b", 1, RunStatus.COMPLETED) is False
    assert get(db, run_id).status == RunStatus.RUNNING

    with db.write() as s:
        assert finish(s, run_id, "worker-b", 2, RunStatus.COMPLETED, outputs=["fresh"]) is True
    r = get(db, run_id)
    assert (r.status, r.outputs) == (RunStatus.COMPLETED, ["fresh"])


def test_worker_that_lost_its_lease_before_anyone_reclaimed(
    db: Database, version: AppVersion
) -> None:
    run_id = new_run(db, version)
    assert do_claim(db, run_id, "worker-a")
    with db.write() as s:
        requeue_expired(s, utcnow() + LEASE * 2, max_attempts=3)
    with db.write() as s:
        assert finish(s, run_id, "worker-a", 1, RunStatus.FAILED, error="late") is False
    r = get(db, run_id)
    assert r.status == RunStatus.QUEUED
    assert r.error is None


def test_transition_table() -> None:
    assert {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELED} == TERMINAL
    for t in TERMINAL:
        assert ALLOWED[t] == frozenset()
    assert RunStatus.QUEUED in ALLOWED[RunStatus.RUNNING]
    assert RunStatus.RUNNING in ALLOWED[RunStatus.QUEUED]
    assert RunStatus.COMPLETED not in ALLOWED[RunStatus.QUEUED]
