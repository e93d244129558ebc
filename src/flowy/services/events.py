"""Run events: stored in order with a per-run sequence number, and announced live.

:func:`emit` writes an event in the caller's transaction (so a status and its event
commit together) and marks the run as changed; once the transaction commits, the
database tells the :class:`EventBus`, which wakes every stream waiting on that run.
Embedded mode uses :class:`LocalEventBus`; scaled mode will put Redis pub/sub behind the
same two methods.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterable
from typing import Any, Protocol

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from flowy.db.models import Run, RunEvent, utcnow
from flowy.db.session import RUNS_CHANGED, Database

TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.canceled"})


def emit(s: Session, run_id: str, type: str, data: dict[str, Any] | None = None) -> int:
    """Append an event to a run in this transaction; return its sequence number."""
    seq = s.execute(
        update(Run)
        .where(Run.id == run_id)
        .values(event_seq=Run.event_seq + 1)
        .returning(Run.event_seq)
        .execution_options(synchronize_session=False)
    ).scalar_one()
    s.add(RunEvent(run_id=run_id, seq=seq, type=type, data=data or {}, created_at=utcnow()))
    s.info.setdefault(RUNS_CHANGED, set()).add(run_id)
    return int(seq)


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
        self._waiter: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    def _wake(self) -> None:
        self._flag.set()
        waiter = self._waiter
        if waiter is not None:
            loop, ev = waiter
            loop.call_soon_threadsafe(ev.set)

    async def wait(self, timeout: float) -> bool:
        if not self._flag.is_set():
            ev = asyncio.Event()
            self._waiter = (asyncio.get_running_loop(), ev)
            if not self._flag.is_set():  # news between the check and the registration
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), timeout)
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
