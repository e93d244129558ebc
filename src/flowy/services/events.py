"""Run events: stored in order with a per-run sequence number, and announced live.

:func:`emit` writes an event in the caller's transaction (so a status and its event
commit together) and marks the run as changed; once the transaction commits, the
database tells the :class:`EventBus`, which wakes every stream waiting on that run.
Embedded mode uses :class:`LocalEventBus`; scaled mode will put Redis pub/sub behind the
same two methods.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable
from datetime import datetime
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, func, insert, select
from sqlalchemy.orm import Session

from flowy.db.models import Run, RunEvent, utcnow
from flowy.db.prepared import Prepared
from flowy.db.session import RUNS_CHANGED, Database, at_commit

#: Session.info key of the events emitted in a transaction, not yet written.
_PENDING = "flowy_pending_events"
#: Session.info key of the runs this transaction created (they have no events yet).
_NEW_RUNS = "flowy_new_runs"

TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.canceled"})


_EVENTS = cast(Table, RunEvent.__table__)
_LAST_SEQ = Prepared(
    select(func.coalesce(func.max(_EVENTS.c.seq), 0)).where(
        _EVENTS.c.run_id == bindparam("p_run_id")
    )
)
_LOCK_RUN = Prepared(
    select(Run.__table__.c.id).where(Run.__table__.c.id == bindparam("p_run_id")).with_for_update()
)
_INSERT = Prepared(insert(_EVENTS), ["run_id", "seq", "type", "data", "created_at"])


def emit(s: Session, run_id: str, type: str, data: dict[str, Any] | None = None) -> None:
    """Append an event to a run in this write transaction.

    Events are numbered and inserted when the transaction commits (:func:`at_commit`):
    one lookup of the last number per run and one multi-row insert, however many.
    """
    pending: list[tuple[str, str, dict[str, Any], datetime]] | None = s.info.get(_PENDING)
    if pending is None:
        pending = s.info[_PENDING] = []
        at_commit(s, _write_pending)
    pending.append((run_id, type, data or {}, utcnow()))
    s.info.setdefault(RUNS_CHANGED, set()).add(run_id)


def discard(s: Session, run_id: str) -> None:
    """Take back the events emitted for ``run_id`` in this transaction, not yet written
    (a terminal write that found the run's lease lost, in a transaction that writes other
    runs' ends too)."""
    pending: list[tuple[str, str, dict[str, Any], datetime]] | None = s.info.get(_PENDING)
    if pending:
        pending[:] = [p for p in pending if p[0] != run_id]


def created(s: Session, run_id: str) -> None:
    """Note that this write transaction inserted ``run_id``: its events are numbered
    from 1 without looking for earlier ones."""
    s.info.setdefault(_NEW_RUNS, set()).add(run_id)


def _write_pending(s: Session) -> None:
    pending: list[tuple[str, str, dict[str, Any], datetime]] = s.info.pop(_PENDING, [])
    if not pending:
        return
    # The last number is read from the events' own (run_id, seq) index rather than kept
    # on the run row: an UPDATE rewrites the whole row, whose inputs may be large.  It is
    # stable because SQLite serialises write transactions (BEGIN IMMEDIATE); elsewhere
    # the run's row is locked first.
    lock = s.get_bind().dialect.name != "sqlite"
    new: set[str] = s.info.pop(_NEW_RUNS, set())
    seq: dict[str, int] = {}
    for run_id in dict.fromkeys(p[0] for p in pending):
        if run_id in new:
            seq[run_id] = 0  # nothing else can have written to a run not yet committed
            continue
        if lock:
            _LOCK_RUN.execute(s, {"p_run_id": run_id})
        seq[run_id] = int(_LAST_SEQ.execute(s, {"p_run_id": run_id}).scalar())
    rows = []
    for run_id, type, data, at in pending:
        seq[run_id] += 1
        rows.append(
            {"run_id": run_id, "seq": seq[run_id], "type": type, "data": data, "created_at": at}
        )
    _INSERT.execute_many(s, rows)


def read_events(db: Database, run_id: str, after: int = 0, limit: int = 500) -> list[RunEvent]:
    with db.read() as s:
        q = (
            select(RunEvent)
            .where(RunEvent.run_id == run_id, RunEvent.seq > after)
            .order_by(RunEvent.seq)
            .limit(limit)
        )
        return list(s.scalars(q))


class Subscription(Protocol):
    """News of one run.  Subscribe *before* reading events, then wait: news that lands
    in between is kept, so nothing is missed."""

    async def wait(self, timeout: float) -> bool:
        """True when there was news since the last wait, False after ``timeout``."""
        ...

    def wait_sync(self, timeout: float) -> bool: ...

    def close(self) -> None: ...

    def __enter__(self) -> Subscription: ...

    def __exit__(self, *_exc: object) -> None: ...


class EventBus(Protocol):
    def notify(self, run_ids: Iterable[str]) -> None:
        """Runs that have new events (called after the commit, from any thread)."""
        ...

    def subscribe(self, run_id: str) -> Subscription: ...


class _LocalSubscription:
    def __init__(self, bus: LocalEventBus, run_id: str) -> None:
        self.bus = bus
        self.run_id = run_id
        self._flag = threading.Event()
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Future[None]] | None = None

    def _wake(self) -> None:
        self._flag.set()
        waiter = self._waiter
        if waiter is not None:
            loop, fut = waiter
            loop.call_soon_threadsafe(_resolve, fut)

    async def wait(self, timeout: float) -> bool:
        if not self._flag.is_set():
            # A bare future resolved from the notifying thread: the waiting task runs on
            # the loop's next turn (no helper task, no extra hop through an Event).
            loop = asyncio.get_running_loop()
            fut: asyncio.Future[None] = loop.create_future()
            self._waiter = (loop, fut)
            if not self._flag.is_set():  # news between the check and the registration
                timer = loop.call_later(timeout, _resolve, fut)
                try:
                    await fut
                finally:
                    timer.cancel()
            self._waiter = None
        news = self._flag.is_set()
        self._flag.clear()
        return news

    def wait_sync(self, timeout: float) -> bool:
        news = self._flag.wait(timeout)
        self._flag.clear()
        return news

    def close(self) -> None:
        self.bus._remove(self)

    def __enter__(self) -> _LocalSubscription:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():  # already resolved by the timer, or its waiter was canceled
        fut.set_result(None)


class LocalEventBus:
    """In-process wake-ups for event streams and waiting requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subs: dict[str, set[_LocalSubscription]] = {}

    def notify(self, run_ids: Iterable[str]) -> None:
        with self._lock:
            subs = [sub for r in run_ids for sub in self._subs.get(r, ())]
        for sub in subs:
            sub._wake()

    def subscribe(self, run_id: str) -> _LocalSubscription:
        sub = _LocalSubscription(self, run_id)
        with self._lock:
            self._subs.setdefault(run_id, set()).add(sub)
        return sub

    def _remove(self, sub: _LocalSubscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.run_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.run_id]

    def subscribers(self) -> int:
        with self._lock:
            return sum(len(v) for v in self._subs.values())
