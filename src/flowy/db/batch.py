"""Group commit: write transactions that arrive together share one.

Each write costs a transaction (a session, ``BEGIN IMMEDIATE``, the write lock, a
commit) on top of its statements.  Under load, writes queue for the lock anyway, so a
single writer thread takes every write that is waiting and runs them all in one
transaction: the many small creates of a burst of requests pay for one.  A write that
fails must not fail its neighbours: when a batch's transaction fails, each of its writes
is retried in a transaction of its own, and only the failing one reports the error.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from flowy.db.session import Database

logger = logging.getLogger(__name__)

T = TypeVar("T")

#: Most writes one transaction takes: bounds how long the first of them waits.
MAX_BATCH = 64


@dataclass(eq=False)
class _Job(Generic[T]):
    write: Callable[[Session], T]
    after: Callable[[T], None] | None
    failed: Callable[[], None] | None
    future: Future[T] = field(default_factory=Future)


class GroupCommit:
    """A writer thread that commits the writes waiting for it together.

    ``write(session)`` must touch nothing but the database (it may run twice: once in
    a batch that fails, once alone).  ``after(result)`` runs on the writer thread just
    after the commit, before the caller's future resolves; ``failed()`` when the write
    did not commit.
    """

    def __init__(self, db: Database, *, name: str = "flowy-group-commit") -> None:
        self.db = db
        self.name = name
        self._jobs: deque[_Job[Any]] = deque()
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False  # close() asked the thread to finish
        #: Transactions committed and writes they held (tests and benchmarks read these).
        self.transactions = 0
        self.writes = 0

    def submit(
        self,
        write: Callable[[Session], T],
        *,
        after: Callable[[T], None] | None = None,
        failed: Callable[[], None] | None = None,
    ) -> Future[T]:
        """Queue ``write`` for the next transaction; its future answers its result."""
        job: _Job[T] = _Job(write, after, failed)
        with self._cv:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
                self._thread.start()
            self._jobs.append(job)
            self._cv.notify()
        return job.future

    def run(
        self,
        write: Callable[[Session], T],
        *,
        after: Callable[[T], None] | None = None,
        failed: Callable[[], None] | None = None,
    ) -> T:
        """Write now, in a transaction of this thread's own: for a caller that would
        only wait for the writer thread (a hand-off each way costs more than it saves
        when nothing else is waiting)."""
        job: _Job[T] = _Job(write, after, failed)
        job.future.set_running_or_notify_cancel()
        self._commit([job])
        return job.future.result()

    def close(self) -> None:
        """Commit what is queued, then stop the writer thread (a later write starts it
        again)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
            thread = self._thread
        if thread is not None:
            thread.join()
        with self._cv:
            self._closed = False

    def _loop(self) -> None:
        while True:
            with self._cv:
                while not self._jobs and not self._closed:
                    self._cv.wait()
                if not self._jobs:
                    self._thread = None  # the next submit starts another
                    return
                taken = [self._jobs.popleft() for _ in range(min(MAX_BATCH, len(self._jobs)))]
            # A write whose future was canceled while it waited is not made.
            batch = []
            for job in taken:
                if job.future.set_running_or_notify_cancel():
                    batch.append(job)
                elif job.failed is not None:
                    self._call(job.failed)
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Job[Any]]) -> None:
        try:
            with self.db.write() as s:
                results = [job.write(s) for job in batch]
        except Exception as exc:
            if len(batch) > 1:
                for job in batch:  # alone, so that only a failing write fails
                    self._commit([job])
                return
            job = batch[0]
            if job.failed is not None:
                self._call(job.failed)
            job.future.set_exception(exc)
            return
        self.transactions += 1
        self.writes += len(batch)
        for job, result in zip(batch, results, strict=True):
            if job.after is not None:
                self._call(job.after, result)
            job.future.set_result(result)

    def _call(self, fn: Callable[..., None], *args: object) -> None:
        try:
            fn(*args)
        except Exception:  # the write committed: its caller still gets its answer
            logger.exception("%s: a post-commit step failed", self.name)
