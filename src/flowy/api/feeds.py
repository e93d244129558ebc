"""One reader and one writer per run for all of its event streams.

A thousand clients following one run must not cost a thousand database reads, a thousand
renderings and a thousand task wake-ups per event.  Each run with streams open in this
process has one :class:`RunFeed` with two tasks.  Its reader is the run's only
subscriber on the event bus: on news it reads what was stored since its last read and
renders each event to SSE bytes once.  Its writer then goes over the streams and writes
to each, in one chunk, all that it lacks.  Writing from one task rather than waking a
task per stream keeps a fan-out near the cost of its socket writes (a wake-up per stream
doubled it); and as the writer lets the event loop turn every :data:`PASS_SLICE`
streams, events read during a pass reach the rest of that pass at once instead of
waiting for the next one.

A client too slow to take its chunk must not hold up the others, so every write is
started by hand (:func:`_send_now`); in the rare case the server has to wait for that
client's buffer to drain, the rest of the write and the stream's catching up go to a
task of that stream's own.  A feed lives while a stream uses it.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Message, Receive, Scope, Send

from flowy.db.models import RunEvent
from flowy.db.session import Database
from flowy.services.events import TERMINAL_EVENTS, EventBus, read_events

logger = logging.getLogger(__name__)

#: Events read per query; a longer backlog is read in several.
READ_BATCH = 500
#: Streams written to between two turns of the event loop.
PASS_SLICE = 50
RETRY = b"retry: 1000\n\n"
KEEPALIVE = b": keep-alive\n\n"


@dataclass(frozen=True)
class Rendered:
    seq: int
    type: str
    body: bytes


@dataclass(frozen=True)
class FeedSource:
    """Where a run's feed reads its events, how it renders them, and how long it lets its
    streams go quiet before a keep-alive."""

    db: Database
    bus: EventBus
    render: Callable[[RunEvent], bytes]
    keepalive: float


class RunFeed:
    """A run's events read so far, shared by its streams, and the task that reads more
    and writes them out."""

    def __init__(self, run_id: str, source: FeedSource) -> None:
        self.run_id = run_id
        self.source = source
        self.events: list[Rendered] = []
        #: The reader stopped on an error: the streams end, their clients reconnect.
        self.failed = False
        self.streams: set[EventStream] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._news = asyncio.Event()
        self._keepalive = False

    @property
    def last_seq(self) -> int:
        return self.events[-1].seq if self.events else 0

    @property
    def ended(self) -> bool:
        """The terminal event is in: nothing more will come."""
        return bool(self.events) and self.events[-1].type in TERMINAL_EVENTS

    @property
    def closed(self) -> bool:
        return self.ended or self.failed

    def since(self, after: int) -> list[Rendered]:
        # Sequence numbers run 1, 2, 3, ... with no gaps: index arithmetic is enough.
        return self.events[max(0, after) :]

    def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._follow(), name=f"read events {self.run_id}"),
            asyncio.create_task(self._write(), name=f"write events {self.run_id}"),
        ]

    def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    async def _follow(self) -> None:
        src = self.source
        try:
            # Subscribed first, then read: news that lands in between is not missed.
            with src.bus.subscribe(self.run_id) as sub:
                while not self.ended:
                    stored = await run_in_threadpool(
                        read_events, src.db, self.run_id, self.last_seq, READ_BATCH
                    )
                    if stored:
                        self.events.extend(Rendered(e.seq, e.type, src.render(e)) for e in stored)
                        self._news.set()
                        if len(stored) == READ_BATCH:
                            continue  # more is stored: read on before waiting
                    elif not await sub.wait(src.keepalive):
                        self._keepalive = True
                        self._news.set()
        except Exception:
            logger.exception("reading the events of run %s failed", self.run_id)
            self.failed = True
            self._news.set()

    async def _write(self) -> None:
        """Write to every stream what it has not had yet (a keep-alive if nothing), in
        passes over all of them, until the feed has closed."""
        while True:
            await self._news.wait()
            self._news.clear()
            keepalive, self._keepalive = self._keepalive, False
            chunks: dict[int, bytes] = {}  # by cursor: streams in step share one chunk
            known = len(self.events)
            for n, stream in enumerate(tuple(self.streams), 1):
                if len(self.events) != known:  # read during the pass: the rest get it too
                    chunks.clear()
                    known = len(self.events)
                stream.push(chunks, keepalive)
                if n % PASS_SLICE == 0:
                    # A pass over a thousand streams takes milliseconds: let the reader
                    # (and the engine's threads, which commit the next events) run.
                    await asyncio.sleep(0)
            if self.closed and not self._news.is_set():
                # Every stream has had the end (or catches up to it itself).  Only now
                # do they close: closing a connection costs as much as a write, and
                # the last streams of the pass must not wait for the first to close.
                for stream in tuple(self.streams):
                    stream.close()
                return

    def chunk(self, after: int, prefix: bytes = b"") -> tuple[bytes, int]:
        """The events after ``after`` as one chunk, and the cursor that follows it."""
        news = self.since(after)
        if not news:
            return prefix, after
        return prefix + b"".join(ev.body for ev in news), news[-1].seq


class RunFeeds:
    """The feeds of the runs that have streams open in this process."""

    def __init__(self) -> None:
        self._feeds: dict[str, RunFeed] = {}

    def join(self, run_id: str, source: FeedSource, stream: EventStream) -> RunFeed:
        """The run's feed, started if it is new, with ``stream`` among its streams."""
        feed = self._feeds.get(run_id)
        if feed is None or feed.failed:
            feed = self._feeds[run_id] = RunFeed(run_id, source)
            feed.start()
        feed.streams.add(stream)
        return feed

    def leave(self, feed: RunFeed, stream: EventStream) -> None:
        feed.streams.discard(stream)
        if not feed.streams:
            feed.stop()
            if self._feeds.get(feed.run_id) is feed:
                del self._feeds[feed.run_id]

    def __len__(self) -> int:
        return len(self._feeds)


class EventStream(Response):
    """A run's events as Server-Sent Events, from after ``after`` to the terminal event.

    A bare ASGI response rather than a ``StreamingResponse``: its feed writes to it (see
    the module's docstring); its own task only opens it, catches it up, and then waits
    for its end: the terminal event sent, the client gone, or an error.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        feeds: RunFeeds,
        run_id: str,
        source: FeedSource,
        after: int,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.status_code = 200
        self.background = None
        self.init_headers(headers)
        self._feeds = feeds
        self._run_id = run_id
        self._source = source
        self._after = after  # the last event id sent (or to resume after)
        self._send: Send | None = None
        self._feed: RunFeed | None = None
        #: Its own task is writing (opening, or catching up): the feed leaves it alone.
        self._busy = True
        self._end: asyncio.Future[None] | None = None
        self._catching_up: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        loop = asyncio.get_running_loop()
        self._send = send
        self._end = end = loop.create_future()
        self._feed = feed = self._feeds.join(self._run_id, self._source, self)
        watcher = loop.create_task(_disconnect(receive))
        watcher.add_done_callback(lambda _: self._finish())
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await self._catch_up(feed, RETRY)
            await end
            # The closing chunk only now: a terminal event reaches every stream of the
            # run before any of them spends time on closing its connection.
            if not watcher.done():
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # servers of ASGI spec 2.4 raise on a send to a closed connection
        finally:
            end.cancel()  # no-op if it ended; else the feed stops writing to it now
            watcher.cancel()
            if self._catching_up is not None:
                self._catching_up.cancel()
            self._feeds.leave(feed, self)

    def push(self, chunks: dict[int, bytes], keepalive: bool) -> None:
        """Called by the feed with news: start writing what this stream lacks (or a
        keep-alive)."""
        feed, end, send = self._feed, self._end, self._send
        if self._busy or feed is None or end is None or end.done() or send is None:
            return
        body = chunks.get(self._after)
        if body is None:
            body = chunks[self._after] = feed.chunk(self._after)[0]
        rest = None
        if body or keepalive:
            if body:
                self._after = feed.last_seq
            try:
                rest = _send_now(send, _body(body or KEEPALIVE))
            except Exception as exc:
                self._finish(exc)
                return
        if rest is not None:  # the client is slow: finish in a task of its own
            self._busy = True
            self._catching_up = asyncio.get_running_loop().create_task(
                self._resume(feed, rest), name=f"catch up {self._run_id}"
            )

    def close(self) -> None:
        """Called by the feed once it has closed and written its last pass: end the
        stream, unless its own task is still catching up (which ends it then)."""
        if not self._busy:
            self._finish()

    async def _resume(self, feed: RunFeed, rest: Awaitable[None]) -> None:
        try:
            await rest
            await self._catch_up(feed)
        except Exception as exc:
            self._finish(exc)

    async def _catch_up(self, feed: RunFeed, prefix: bytes = b"") -> None:
        """Send what came since the cursor until there is nothing left; then (with no
        await in between) hand the stream back to the feed."""
        send = self._send
        assert send is not None
        while True:
            body, self._after = feed.chunk(self._after, prefix)
            prefix = b""
            if not body:
                break
            await send(_body(body))
        self._busy = False
        if feed.closed:
            self._finish()

    def _finish(self, exc: Exception | None = None) -> None:
        end = self._end
        if end is not None and not end.done():
            if exc is None:
                end.set_result(None)
            else:
                end.set_exception(exc)


def _body(chunk: bytes) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": True}


def _send_now(send: Send, message: Message) -> Awaitable[None] | None:
    """Start ``send(message)`` here and now.

    None when it finished at once, as it does unless the server must first wait for
    the client to drain its buffer; then the rest of the send, to await elsewhere.
    """
    step = send(message)
    if not isinstance(step, types.CoroutineType):
        return step  # an awaitable that cannot be stepped by hand: await all of it
    try:
        first = step.send(None)
    except StopIteration:
        return None
    return _rest(step, first)


@types.coroutine
def _rest(step: Coroutine[Any, Any, None], first: Any) -> Generator[Any, Any, None]:
    """The rest of a coroutine stepped once by hand, which yielded ``first`` (the future
    it waits on): awaited, it runs on as if it had been awaited from the start."""
    try:
        yield first  # the awaiting task waits for the future, as the coroutine asked
    except BaseException:
        step.close()
        raise
    yield from step.__await__()  # resumes it where it stopped


async def _disconnect(receive: Receive) -> None:
    """Return when the client has gone (or the response is complete)."""
    while (await receive())["type"] != "http.disconnect":
        pass
