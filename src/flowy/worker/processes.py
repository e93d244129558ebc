"""Worker processes for embedded mode (``worker.processes`` > 0).

The server keeps the API, the event bus, the sweeper and retention, and sends the runs
to worker processes that it starts.  Each worker process runs a
:class:`~flowy.worker.pool.LocalWorkerPool` of ``worker.concurrency`` threads on the same
SQLite database and data directory, under a lease owner of its own.  Why: a run's own
Python (the engine, its bookkeeping, its writes) holds the GIL, so threads of one process
take turns at it, and small runs gain little from a second core; processes do not share
a GIL.  The server and its workers write through one lock file (``WriteLock``), which
hands the database over at once where SQLite's busy handler would sleep.

One pipe per worker process carries, as tuples:

- server to worker: ``("run", run_id)``, ``("cancel", run_id, reason)``, ``("stop",)``;
- worker to server: ``("ready",)``; ``("commit", run_ids, flags)`` after each of its
  commits, for the server's event bus and webhook dispatcher (``Database.announce``);
  ``("ended", run_id, outcome)`` when it is done with a run it was sent.

The server sends each process at most ``concurrency`` + ``PREFETCH`` runs at once, so a
worker with a backlog can claim several in one transaction as the threads do, while the
rest of the queue waits for whichever process frees first.  When a worker process dies,
the server ends the leases of the runs it held (the sweeper requeues them, an attempt
spent), queues again the runs it had been sent, and starts another in its place.  When
the server dies, its workers read the end of their pipe and stop, handing their runs back.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from flowy.db.session import Database
from flowy.engine.registry import NodeRegistry
from flowy.errors import FlowyError
from flowy.services.files import FileService
from flowy.settings import Settings
from flowy.worker.pool import PREFETCH, Housekeeper, new_owner

logger = logging.getLogger(__name__)

#: How long the server waits for a new worker process to say it is ready.
START_TIMEOUT_SECONDS = 120.0
#: A worker process that dies sooner than this after its start is started again only
#: after this long (a crash at start-up would otherwise loop).
RESTART_DELAY_SECONDS = 1.0


@dataclass(eq=False)
class _Worker:
    """The server's side of one worker process."""

    slot: int
    owner: str
    process: BaseProcess
    conn: Connection
    started: float = field(default_factory=time.monotonic)
    #: Runs sent to it that it has not answered for yet.
    sent: set[str] = field(default_factory=set)
    ready: threading.Event = field(default_factory=threading.Event)
    send_lock: threading.Lock = field(default_factory=threading.Lock)

    def send(self, message: tuple[Any, ...]) -> bool:
        with self.send_lock:
            try:
                self.conn.send(message)
            except OSError:  # it died: its reader tells the pool
                return False
        return True


class ProcessWorkerPool(Housekeeper):
    """Runs queued runs in ``worker.processes`` worker processes of this server."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        files: FileService,
        registry_factory: Callable[[], NodeRegistry],
    ) -> None:
        super().__init__(settings, db, files)
        self.registry_factory = registry_factory
        self.owner = new_owner()  # the prefix of its workers' owners
        self._context = multiprocessing.get_context("spawn")
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._workers: list[_Worker | None] = [None] * settings.worker.processes
        self._room = settings.worker.concurrency + PREFETCH
        self._started = 0  # worker processes started so far

    # ------------------------------------------------------------------ the queue

    def enqueue(self, run_id: str) -> None:
        with self._lock:
            self._queue.append(run_id)
            self._dispatch()

    def _dispatch(self) -> None:
        """Send queued runs to the workers with room, the least busy first (lock held)."""
        while self._queue:
            live = [w for w in self._workers if w is not None and w.ready.is_set()]
            if not live:
                return
            worker = min(live, key=lambda w: len(w.sent))
            if len(worker.sent) >= self._room:
                return
            run_id = self._queue.popleft()
            worker.sent.add(run_id)
            if not worker.send(("run", run_id)):
                worker.sent.discard(run_id)
                self._queue.appendleft(run_id)
                return

    def cancel(self, run_id: str, reason: str) -> None:
        """Stop a run in flight, in whichever worker process has it."""
        for worker in list(self._workers):
            if worker is not None:
                worker.send(("cancel", run_id, reason))

    # ------------------------------------------------------------------ processes

    def start(self) -> None:
        """Start the worker processes (waiting until each is ready), then recover what a
        previous server left (its queued runs go to them) and start housekeeping."""
        for slot in range(len(self._workers)):
            self._start_worker(slot)
        for worker in self._workers:
            assert worker is not None
            self._wait_ready(worker)
        self.recover()
        self._start_housekeeping()

    def _start_worker(self, slot: int) -> _Worker:
        ours, theirs = self._context.Pipe()
        # Its own lease owner, unlike the process it replaces: fencing tells them apart.
        self._started += 1
        owner = f"{self.owner}/w{slot}.{self._started}"
        process = self._context.Process(
            target=worker_main,
            args=(
                self.settings,
                self.registry_factory,
                owner,
                f"flowy-w{slot}",
                theirs,
                logging.root.level,
            ),
            name=f"flowy-worker-process-{slot}",
            daemon=True,
        )
        process.start()
        theirs.close()
        worker = _Worker(slot, owner, process, ours)
        self._workers[slot] = worker
        self._spawn(lambda: self._read(worker), f"flowy-worker-pipe-{slot}")
        logger.info("worker process %d started (pid %s)", slot, process.pid)
        return worker

    def _wait_ready(self, worker: _Worker) -> None:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not worker.ready.wait(0.05):
            if not worker.process.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise FlowyError(
                    f"worker process {worker.slot} did not start "
                    f"(exit code {worker.process.exitcode}); see the log above"
                )

    def _read(self, worker: _Worker) -> None:
        """The worker's messages, until its pipe closes."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            kind = message[0]
            if kind == "commit":
                self.db.announce(message[1], message[2])
            elif kind == "ended":
                with self._lock:
                    worker.sent.discard(message[1])
                    self._dispatch()
                self.settle(message[1], message[2])
            elif kind == "ready":
                worker.ready.set()
                with self._lock:
                    self._dispatch()
        self._lost(worker)

    def _lost(self, worker: _Worker) -> None:
        """A worker process's pipe closed: when not stopping, it died.  Its runs are
        recovered and another process takes its place."""
        with self._lock:
            if self._workers[worker.slot] is worker:
                self._workers[worker.slot] = None
            sent, worker.sent = worker.sent, set()
        worker.conn.close()
        if self._stop.is_set():
            return  # stop() joins it (two threads must not wait for one process)
        worker.process.join(timeout=5)
        if worker.process.is_alive():  # its pipe broke, yet it lives: make sure
            worker.process.kill()
            worker.process.join(timeout=5)
        logger.error(
            "worker process %d (pid %s) died, exit code %s: its runs are recovered",
            worker.slot,
            worker.process.pid,
            worker.process.exitcode,
        )
        if time.monotonic() - worker.started < RESTART_DELAY_SECONDS:
            self._stop.wait(RESTART_DELAY_SECONDS)
        if self._stop.is_set():
            return
        try:
            self.expire_leases(worker.owner)
            self.sweep()  # its running runs: requeued (an attempt spent) or failed
        except Exception:
            logger.exception("could not recover the runs of worker process %d", worker.slot)
        self._start_worker(worker.slot)
        for run_id in sorted(sent):  # sent, never claimed: queued still (a claimed one
            self.enqueue(run_id)  # is no longer queued, and its claim simply fails)

    def stop(self) -> None:
        """Stop the worker processes: each gives its runs in flight the shutdown grace
        period, then hands them back to the queue, as the threads do."""
        self._stop.set()
        workers = [w for w in self._workers if w is not None]
        for worker in workers:
            worker.send(("stop",))
        deadline = time.monotonic() + self.settings.worker.shutdown_grace_seconds + 10
        for worker in workers:
            worker.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                logger.warning("worker process %d did not stop: killed", worker.slot)
                worker.process.kill()
                worker.process.join(timeout=5)
            self.hand_back(worker.owner)  # what it could not hand back itself
        for t in self._threads:
            t.join(timeout=1)


def worker_main(
    settings: Settings,
    registry_factory: Callable[[], NodeRegistry],
    owner: str,
    name: str,
    conn: Connection,
    log_level: int,
) -> None:
    """A worker process: a LocalWorkerPool of its own that runs what the server sends.
    ``owner`` names its leases; ``name`` is what ``top`` and ``ps -e`` show for it."""
    # Imported here: the platform module imports this one.
    from flowy.services.apps import WorkflowCache
    from flowy.services.platform import result_cache, worker_services, write_lock_path
    from flowy.worker.pool import LocalWorkerPool

    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Ctrl-C reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):  # Linux; 15 characters at most
        Path("/proc/self/comm").write_text(name[:15])
    # The whole process yields to the server's API, as the threads would within it.
    nice = settings.worker.nice
    if nice:
        with contextlib.suppress(OSError):
            os.nice(nice)
        settings = settings.model_copy(
            update={"worker": settings.worker.model_copy(update={"nice": 0})}
        )
    # Checkpoints are the server's (its Checkpointer); this process never starts one.
    db = Database(
        settings.sqlalchemy_url,
        background_checkpoints=True,
        process_lock=write_lock_path(settings),
    )
    files, secrets = worker_services(settings, db)
    cache = result_cache(settings)  # shared on disk with the other workers: not exclusive
    pool = LocalWorkerPool(
        settings, db, WorkflowCache(registry_factory()), files, secrets, cache, owner=owner
    )
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        # OSError: the server is gone, and the loop below ends too.
        with send_lock, contextlib.suppress(OSError):
            conn.send(message)

    db.relay = lambda runs, flags: send(("commit", runs, flags))
    pool.on_outcome = lambda run_id, outcome: send(("ended", run_id, outcome))
    pool.start_workers()
    send(("ready",))
    try:
        while True:
            try:
                message = conn.recv()
            except (EOFError, OSError):
                logger.warning("worker process %s: the server is gone; stopping", owner)
                break
            if message[0] == "run":
                pool.enqueue(message[1])
            elif message[0] == "cancel":
                pool.cancel(message[1], message[2])
            elif message[0] == "stop":
                break
    finally:
        pool.stop()
        if cache is not None:
            cache.close()
        db.dispose()
