"""One reader per run for all of its event streams.

A thousand clients following one run must not mean a thousand database reads per event:
the first stream that needs news reads it once, renders each event to SSE bytes once,
and every stream of that run shares the result.  A feed lives while a stream uses it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.concurrency import run_in_threadpool

from flowy.db.models import RunEvent
from flowy.db.session import Database
from flowy.services.events import TERMINAL_EVENTS, read_events


@dataclass(frozen=True)
class Rendered:
    seq: int
    type: str
    body: bytes


@dataclass
class RunFeed:
    run_id: str
    users: int = 0
    events: list[Rendered] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def ended(self) -> bool:
        return bool(self.events) and self.events[-1].type in TERMINAL_EVENTS

    def since(self, after: int) -> list[Rendered]:
        # Sequence numbers run 1, 2, 3, ... with no gaps: index arithmetic is enough.
        return self.events[max(0, after) :]

    async def refresh(self, db: Database, render: Callable[[RunEvent], bytes]) -> None:
        """Read what was stored since the last read (once, whoever asks first)."""
        seen = self.last_seq
        async with self.lock:
            if self.ended or self.last_seq > seen:
                return  # another stream read while we waited for the lock
            stored = await run_in_threadpool(read_events, db, self.run_id, self.last_seq)
            self.events.extend(Rendered(ev.seq, ev.type, render(ev)) for ev in stored)


class RunFeeds:
    """The feeds of the runs that have streams open in this process."""

    def __init__(self) -> None:
        self._feeds: dict[str, RunFeed] = {}

    def acquire(self, run_id: str) -> RunFeed:
        feed = self._feeds.get(run_id)
        if feed is None:
            feed = self._feeds[run_id] = RunFeed(run_id)
        feed.users += 1
        return feed

    def release(self, feed: RunFeed) -> None:
        feed.users -= 1
        if feed.users <= 0:
            self._feeds.pop(feed.run_id, None)
