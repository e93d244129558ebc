"""Workers for embedded mode: threads that take run ids from a local queue, a heartbeat
that renews their leases, and a sweeper that recovers runs whose lease ran out.

The threads run in the server process (:class:`LocalWorkerPool`), or in worker processes
that the server starts (``worker.processes``, :mod:`flowy.worker.processes`), each with a
LocalWorkerPool of its own.  Scaled mode replaces the local queue by Celery;
:class:`RunProcessor` stays the same.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from sqlalchemy import Row, select, update
from sqlalchemy.orm import Session

from flowy.db.models import Run, utcnow
from flowy.db.session import Database
from flowy.engine.cache import ResultCache
from flowy.engine.executor import WorkflowExecutor
from flowy.ids import new_id
from flowy.services.apps import WorkflowCache
from flowy.services.files import FileService
from flowy.services.idempotency import IdempotencyStore
from flowy.services.secrets import SecretService
from flowy.services.states import RunStatus, claim, requeue_expired
from flowy.settings import Settings
from flowy.worker.runner import NextRun, RunEnd, RunProcessor

logger = logging.getLogger(__name__)


def lower_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps below the process's main thread (Linux gives
    threads priorities of their own, and a new thread inherits its creator's).  Run
    execution shares the machine, and in embedded mode the process, with the API: the
    kernel then gives the API's threads the CPU first and the nodes what is left.  Where
    there is no per-thread priority, nothing happens."""
    if nice <= 0 or sys.platform != "linux":
        return
    tid = threading.get_native_id()
    try:
        base = os.getpriority(os.PRIO_PROCESS, os.getpid())  # the main thread's
        os.setpriority(os.PRIO_PROCESS, tid, min(19, base + nice))
    except OSError:  # a sandbox that forbids it: run at the process's priority
        logger.debug("could not lower the priority of thread %d", tid, exc_info=True)


#: A worker whose run took less than this claims up to PREFETCH queued runs at its end
#: and writes the ends of those runs together: for runs this short the terminal
#: transaction costs as much as the run, and one for several costs little more than one.
FAST_RUN_SECONDS = 0.02
PREFETCH = 8
#: The longest a kept end waits for the transaction that writes it (a run that turned
#: out slow does not hold back the ends of the fast ones before it).
MAX_KEEP_SECONDS = 0.05


class _Successor(NextRun):
    """A worker's :class:`NextRun`: in the transaction that ends its run, it claims the
    runs at the head of the queue, which the worker then runs without claims of their
    own.  After a fast run it claims up to :data:`PREFETCH` of them and keeps their ends
    to write in one transaction, with the claim of the next ones.  A run it could not
    claim (canceled meanwhile, or its workspace at its limit) goes back to the queue,
    for the usual path to settle."""

    def __init__(self, pool: LocalWorkerPool) -> None:
        self.pool = pool
        self._taken: list[str] = []
        self._claimed: dict[str, Row[Any]] = {}
        self._next: deque[Row[Any]] = deque()
        self._kept: list[RunEnd] = []
        self._writing: list[RunEnd] = []
        self._kept_since = 0.0
        self._run_started = time.monotonic()

    def started(self) -> None:
        """The worker starts its next run now."""
        self._run_started = time.monotonic()

    def defer(self, end: RunEnd) -> bool:
        if (
            not self._next
            or len(self._kept) >= PREFETCH
            or time.monotonic() - self._run_started >= FAST_RUN_SECONDS
        ):
            # Its end goes out now, with those kept (and, the last of a batch, claims
            # the next): a slow run's end is not kept waiting either.
            return False
        if not self._kept:
            self._kept_since = time.monotonic()
        self._kept.append(end)
        return True

    def write_kept(self, s: Session) -> None:
        self._writing, self._kept = self._kept, []
        for end in self._writing:
            end.write(s)

    def claim(self, s: Session) -> None:
        if self._next:
            return  # runs claimed before still wait for this worker: leave the rest to others
        fast = time.monotonic() - self._run_started < FAST_RUN_SECONDS
        self._taken = self.pool._take_queued(PREFETCH if fast else 1)
        for run_id in self._taken:
            row = self.pool.claim(s, run_id)
            if row is not None:
                self._claimed[run_id] = row

    def committed(self) -> None:
        for end in self._writing:
            end.written()
        self._writing = []
        taken, claimed = self._taken, self._claimed
        self._taken, self._claimed = [], {}
        for run_id in reversed(taken):  # back to the head of the queue, in their order
            if run_id not in claimed:
                self.pool._requeue(run_id)
        for row in claimed.values():
            self.pool.processor.adopt(row)
            self._next.append(row)

    def rolled_back(self) -> None:
        for run_id in reversed(self._taken):
            self.pool._requeue(run_id)
        self._taken, self._claimed = [], {}
        ends, self._writing = self._writing, []
        # Each kept end on its own: one that cannot be written must not take the others
        # with it.  One that fails alone fails its run, as any error of Flowy's would.
        for end in ends:
            try:
                with self.pool.db.write() as s:
                    end.write(s)
            except Exception:
                logger.exception("run %s: internal error while writing its end", end.run.id)
                try:
                    self.pool.processor.fail(end.run)
                except Exception:  # left to its lease: the sweeper requeues it
                    logger.exception("run %s: could not fail it either", end.run.id)
            end.written()

    def tick(self) -> None:
        if self._kept and time.monotonic() - self._kept_since >= MAX_KEEP_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Write the ends kept so far, in a transaction of their own (each alone if that
        fails: see :meth:`rolled_back`).  Never raises: it runs inside another run's
        watchdog, and as the worker ends."""
        if not self._kept:
            return
        try:
            with self.pool.db.write() as s:
                self.write_kept(s)
        except Exception:
            logger.exception("could not write %d run ends together", len(self._writing))
            self.rolled_back()
            return
        self.committed()

    def pop(self) -> Row[Any] | None:
        """The next run claimed for this worker, once."""
        return self._next.popleft() if self._next else None


class Housekeeper:
    """What a pool does beside running runs: recovery at start-up, the sweeper, retention,
    and runs parked while their workspace is at its concurrent-run limit.  Subclasses
    queue the runs (:meth:`enqueue`)."""

    def __init__(self, settings: Settings, db: Database, files: FileService) -> None:
        self.settings = settings
        self.db = db
        self.files = files
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._deferred: dict[str, list[str]] = {}
        self._deferred_lock = threading.Lock()

    def enqueue(self, run_id: str) -> None:
        raise NotImplementedError

    def _start_housekeeping(self) -> None:
        self._spawn(self._every(self.settings.worker.sweep_seconds, self.sweep), "flowy-sweeper")
        self._spawn(
            self._every(self.settings.retention.sweep_seconds, self.purge), "flowy-retention"
        )

    def _spawn(self, target: object, name: str) -> None:
        t = threading.Thread(target=target, name=name, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)

    def recover(self) -> None:
        """Embedded mode owns its data directory alone (a lock file ensures it), so a run
        still ``running`` at start-up belongs to a process that died: expire its lease now
        rather than waiting it out, then sweep and queue every queued run."""
        self.expire_leases()
        self.sweep(enqueue=False)
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(Run.id)
                    .where(Run.status == RunStatus.QUEUED)
                    .order_by(Run.created_at, Run.id)
                )
            )
        if ids:
            logger.info("recovered %d queued run(s)", len(ids))
        for run_id in ids:
            self.enqueue(run_id)

    def expire_leases(self, owner: str | None = None) -> None:
        """End now the leases of the running runs of ``owner`` (of all, by default): their
        worker is gone, and the next sweep requeues them."""
        cond = [Run.status == RunStatus.RUNNING]
        if owner is not None:
            cond.append(Run.lease_owner == owner)
        with self.db.write() as s:
            s.execute(
                update(Run)
                .where(*cond)
                .values(lease_expires_at=utcnow() - timedelta(seconds=1))
                .execution_options(synchronize_session=False)
            )

    def sweep(self, enqueue: bool = True) -> None:
        """Requeue runs whose lease ran out; fail those out of attempts; look again at
        runs parked by the concurrent-run limit."""
        if enqueue:
            self._release()
        with self.db.write() as s:
            requeued, failed = requeue_expired(s, utcnow(), self.settings.worker.max_attempts)
        for run_id in failed:
            logger.warning("run %s failed: out of attempts", run_id)
        for run_id in requeued:
            logger.warning("run %s: lease expired, requeued", run_id)
            if enqueue:
                self.enqueue(run_id)

    def purge(self) -> None:
        """Retention: delete files past their period and idempotency keys past 24 h."""
        while self.files.purge_expired():
            pass
        IdempotencyStore(self.db).purge()

    def hand_back(self, owner: str) -> None:
        """Give the runs ``owner`` still holds back to the queue (status ``queued``), for
        the next start: a hand-back on shutdown is not a failed attempt."""
        with self.db.write() as s:
            s.execute(
                update(Run)
                .where(Run.status == RunStatus.RUNNING, Run.lease_owner == owner)
                .values(
                    status=RunStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    attempt=Run.attempt - 1,
                )
                .execution_options(synchronize_session=False)
            )

    def settle(self, run_id: str, outcome: str | None) -> None:
        """A worker is done with ``run_id`` (``RunProcessor.process``'s answer)."""
        if outcome is None:
            return
        if outcome.startswith("deferred:"):
            # The workspace is at its concurrent-run limit: park the run until one of
            # its runs ends (or the sweeper looks again).
            with self._deferred_lock:
                self._deferred.setdefault(outcome[9:], []).append(run_id)
        else:
            self._release(outcome)

    def _release(self, workspace_id: str | None = None) -> None:
        """Queue again the runs parked for a workspace (or for all of them)."""
        with self._deferred_lock:
            if workspace_id is None:
                parked = [r for runs in self._deferred.values() for r in runs]
                self._deferred.clear()
            else:
                parked = self._deferred.pop(workspace_id, [])
        for run_id in parked:
            self.enqueue(run_id)

    def _every(self, seconds: float, fn: object) -> object:
        def loop() -> None:
            while not self._stop.wait(seconds):
                try:
                    fn()  # type: ignore[operator]
                except Exception:
                    logger.exception("background task %s failed", getattr(fn, "__name__", fn))

        return loop


def new_owner() -> str:
    """A worker identity, unique to this process and call: what leases name."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"


def make_processor(
    settings: Settings,
    db: Database,
    workflows: WorkflowCache,
    files: FileService,
    secrets: SecretService,
    cache: ResultCache | None,
    owner: str,
) -> tuple[ThreadPoolExecutor, RunProcessor]:
    """The run processor of ``worker.concurrency`` workers named ``owner``, and the
    threads that run their nodes."""
    w = settings.worker
    node_pool = ThreadPoolExecutor(
        max_workers=w.concurrency * w.node_concurrency,
        thread_name_prefix="flowy-node",
        initializer=lower_priority,
        initargs=(w.nice,),
    )
    executor = WorkflowExecutor(node_pool, concurrency=w.node_concurrency)
    return node_pool, RunProcessor(settings, db, workflows, files, executor, owner, secrets, cache)


class LocalWorkerPool(Housekeeper):
    """Runs queued runs on threads of this process.  ``owner`` names its leases (one of
    its own by default)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        workflows: WorkflowCache,
        files: FileService,
        secrets: SecretService,
        cache: ResultCache | None,
        owner: str | None = None,
    ) -> None:
        super().__init__(settings, db, files)
        self.owner = owner or new_owner()
        self._node_pool, self.processor = make_processor(
            settings, db, workflows, files, secrets, cache, self.owner
        )
        # Run ids to claim, and runs claimed at creation (:meth:`hand`, served first);
        # None tells a worker to stop.
        self._queue: deque[str | Row[Any] | None] = deque()
        self._ready = threading.Condition()
        self._waiting = 0  # workers blocked in _take
        self._held = 0  # of those, held by reserve() for a run being created
        #: Told of each run a worker is done with, instead of :meth:`settle` (a worker
        #: process tells the server, which queues the runs).
        self.on_outcome: Callable[[str, str | None], None] | None = None

    def enqueue(self, run_id: str) -> None:
        with self._ready:
            self._queue.append(run_id)
            self._ready.notify()

    # DirectStart (see RunService.create): a new run goes straight to a waiting worker.

    def reserve(self) -> bool:
        with self._ready:
            # A waiting worker is free unless held for a run being created, or already
            # handed a run it has not woken to take yet (each queued item is one's).
            if self._stop.is_set() or self._waiting - self._held - len(self._queue) <= 0:
                return False
            self._held += 1
            return True

    def claim(self, s: Session, run_id: str) -> Any:
        lease = timedelta(seconds=self.settings.worker.lease_seconds)
        return claim(s, run_id, self.owner, lease, self.settings.limits.concurrent_runs)

    def hand(self, claimed: Row[Any], inputs: dict[str, object]) -> None:
        self.processor.adopt(claimed, inputs)
        with self._ready:
            self._held -= 1
            self._queue.appendleft(claimed)
            self._ready.notify()
        # Let the woken worker take the GIL now: the run starts before the caller goes
        # on to answer its request, rather than when the caller next blocks.
        time.sleep(0)

    def release(self) -> None:
        with self._ready:
            self._held -= 1

    def _take(self) -> str | Row[Any] | None:
        with self._ready:
            self._waiting += 1
            try:
                while not self._queue:
                    self._ready.wait()
                return self._queue.popleft()
            finally:
                self._waiting -= 1

    def start(self) -> None:
        """Recover what a previous process left, then start workers and housekeeping."""
        self.recover()
        self.start_workers()
        self._start_housekeeping()

    def start_workers(self) -> None:
        """Start the workers and the heartbeat that renews their leases."""
        for i in range(self.settings.worker.concurrency):
            self._spawn(self._work, f"flowy-worker-{i}")
        self._spawn(
            self._every(self.settings.worker.heartbeat_seconds, self.processor.renew_leases),
            "flowy-heartbeat",
        )

    def cancel(self, run_id: str, reason: str) -> None:
        self.processor.cancel(run_id, reason)

    def _take_queued(self, most: int) -> list[str]:
        """Up to ``most`` queued run ids from the head of the queue (without waiting)."""
        taken: list[str] = []
        with self._ready:
            while (
                len(taken) < most
                and self._queue
                and isinstance(self._queue[0], str)
                and not self._stop.is_set()
            ):
                taken.append(self._queue.popleft())  # type: ignore[arg-type]
        return taken

    def _requeue(self, run_id: str) -> None:
        with self._ready:
            self._queue.appendleft(run_id)
            self._ready.notify()

    def _work(self) -> None:
        lower_priority(self.settings.worker.nice)
        successor = _Successor(self)
        try:
            self._work_with(successor)
        finally:
            successor.flush()  # the ends it kept are written before the worker ends

    def _work_with(self, successor: _Successor) -> None:
        while not self._stop.is_set():
            item: str | Row[Any] | None = successor.pop()
            if item is None:
                successor.flush()  # before this worker waits for a run, if it must
                item = self._take()
            if item is None:
                break
            run_id = item if isinstance(item, str) else item.id
            successor.started()
            try:
                if isinstance(item, str):
                    outcome = self.processor.process(item, successor)
                else:
                    outcome = self.processor.run_claimed(item, successor)
            except Exception:
                logger.exception("worker failed on run %s", run_id)
                outcome = None
            if self.on_outcome is not None:
                self.on_outcome(run_id, outcome)
            else:
                self.settle(run_id, outcome)

    def stop(self) -> None:
        """Stop taking runs; give runs in flight the shutdown grace period, then hand them
        back to the queue (status ``queued``) for the next start."""
        self._stop.set()
        with self._ready:
            self._queue.extend([None] * self.settings.worker.concurrency)
            self._ready.notify_all()
        deadline = time.monotonic() + self.settings.worker.shutdown_grace_seconds
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        self.hand_back(self.owner)
        self._node_pool.shutdown(wait=False, cancel_futures=True)
