"""Event streams without a server: a real SQLite file and event bus, in-memory ASGI clients.

What a client of ``GET /v1/runs/{id}/events`` would notice: every event once, in order,
the stream ending after the terminal one, resumption, keep-alives, a slow reader not
holding up the others, and nothing left behind when clients go.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from flowy.api.feeds import READ_BATCH, EventStream, FeedSource, RunFeeds
from flowy.db.models import App, AppVersion, Run, RunEvent, Workspace
from flowy.db.session import Database
from flowy.services.events import LocalEventBus, emit
from flowy.services.states import RunStatus

_EVENT = re.compile(rb"id: (\d+)\nevent: ([a-z._]+)\ndata: (\{.*?\})\n\n")


@pytest.fixture
def bus(db: Database) -> LocalEventBus:
    b = LocalEventBus()
    db.commit_hooks.append(b.notify)
    return b


@pytest.fixture
def run_id(db: Database) -> str:
    with db.write() as s:
        ws = Workspace(name="acme")
        s.add(ws)
        s.flush()
        app = App(workspace_id=ws.id, title="Echo")
        s.add(app)
        s.flush()
        version = AppVersion(app_id=app.id, number=1, workflow={"nodes": []})
        s.add(version)
        s.flush()
        run = Run(
            workspace_id=ws.id,
            app_id=app.id,
            version_id=version.id,
            status=RunStatus.QUEUED,
        )
        s.add(run)
    return run.id


def render(ev: RunEvent) -> bytes:
    body = json.dumps({"seq": ev.seq, "type": ev.type, "data": ev.data})
    return f"id: {ev.seq}\nevent: {ev.type}\ndata: {body}\n\n".encode()


class Client:
    """One in-memory ASGI client of an event stream: what it was sent, a switch to
    stop reading (the server's send then waits, as for a full socket), and a hang-up."""

    def __init__(self) -> None:
        self.status: int | None = None
        self.chunks: list[bytes] = []
        self.complete = False
        self.reading = asyncio.Event()
        self.reading.set()
        self._requested = False
        self._closed = asyncio.Event()  # the response completed or the client hung up

    async def receive(self) -> dict[str, Any]:
        if not self._requested:
            self._requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await self._closed.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict[str, Any]) -> None:
        await self.reading.wait()
        if message["type"] == "http.response.start":
            self.status = message["status"]
            return
        self.chunks.append(message["body"])
        if not message.get("more_body", False):
            self.complete = True
            self._closed.set()

    def hang_up(self) -> None:
        self._closed.set()

    @property
    def text(self) -> bytes:
        return b"".join(self.chunks)

    def events(self) -> list[tuple[int, str]]:
        return [(int(m[1]), m[2].decode()) for m in _EVENT.finditer(self.text)]


class Harness:
    def __init__(self, db: Database, bus: LocalEventBus, run_id: str, keepalive: float) -> None:
        self.db, self.bus, self.run_id = db, bus, run_id
        self.feeds = RunFeeds()
        self.source = FeedSource(db=db, bus=bus, render=render, keepalive=keepalive)

    def open(self, after: int = 0) -> tuple[Client, asyncio.Task[None]]:
        client = Client()
        stream = EventStream(self.feeds, self.run_id, self.source, after)
        scope = {"type": "http", "method": "GET", "path": f"/v1/runs/{self.run_id}/events"}
        task = asyncio.create_task(stream(scope, client.receive, client.send))  # type: ignore[arg-type]
        return client, task

    async def emit(self, *types: str) -> None:
        """Commit events in one transaction, from a worker thread (as the engine does)."""

        def write() -> None:
            with self.db.write() as s:
                for t in types:
                    emit(s, self.run_id, t, {"t": t})

        await asyncio.to_thread(write)


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.005)


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


LIVE = ["run.started", "node.started", "node.progress", "node.finished", "run.outputs"]


def test_many_streams_share_one_reader_and_all_get_every_event_in_order(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=30)
        await h.emit("run.queued")
        clients = [h.open() for _ in range(300)]
        await until(lambda: all(c.chunks for c, _ in clients))
        assert bus.subscribers() == 1  # one reader for the run, not one per stream
        for t in LIVE:
            await h.emit(t)
            await asyncio.sleep(0.01)
        late = [h.open() for _ in range(20)]  # join mid-run: replay, then live
        await h.emit("node.log", "node.progress")  # one commit, two events
        await h.emit("run.completed")
        await asyncio.gather(*(task for _, task in clients + late))
        expected = list(enumerate(["run.queued", *LIVE, "node.log", "node.progress"], 1))
        expected.append((len(expected) + 1, "run.completed"))
        for client, _ in clients + late:
            assert client.status == 200
            assert client.text.startswith(b"retry: 1000\n\n")
            assert client.events() == expected
            assert client.complete  # ended by the server, after the terminal event
        assert bus.subscribers() == 0 and len(h.feeds) == 0

    run(scenario)


def test_resume_after_an_event_and_after_the_end(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=30)
        await h.emit("run.queued", "run.started", "node.started")
        resumed, task = h.open(after=2)
        await until(lambda: resumed.events() == [(3, "node.started")])
        await h.emit("node.finished", "run.completed")
        await task
        assert resumed.events() == [(3, "node.started"), (4, "node.finished"), (5, "run.completed")]
        # Reconnecting at or past the terminal event: nothing more, and the stream ends.
        for after in (5, 2**63 - 1):
            client, task = h.open(after=after)
            await task
            assert client.complete and client.text == b"retry: 1000\n\n"

    run(scenario)


def test_a_long_backlog_is_read_in_batches_and_sent_whole(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=30)
        n = 2 * READ_BATCH + 7
        await h.emit(*["node.progress"] * (n - 1), "run.completed")
        client, task = h.open(after=3)
        await task
        assert [seq for seq, _ in client.events()] == list(range(4, n + 1))
        assert client.complete

    run(scenario)


def test_quiet_streams_get_keepalives(db: Database, bus: LocalEventBus, run_id: str) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=0.05)
        await h.emit("run.queued")
        client, task = h.open()
        await until(lambda: client.text.count(b": keep-alive\n\n") >= 2)
        await h.emit("run.canceled")
        await task
        assert client.events() == [(1, "run.queued"), (2, "run.canceled")]
        assert client.complete

    run(scenario)


def test_a_slow_reader_holds_up_no_one_and_loses_nothing(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=30)
        await h.emit("run.queued")
        slow, slow_task = h.open()
        fast = [h.open() for _ in range(5)]
        await until(lambda: all(c.events() for c, _ in [(slow, slow_task), *fast]))
        slow.reading.clear()  # its buffer is full: every send to it now waits
        for t in LIVE:
            await h.emit(t)
        await until(lambda: all(len(c.events()) == 1 + len(LIVE) for c, _ in fast))
        assert slow.events() == [(1, "run.queued")]
        slow.reading.set()
        await h.emit("run.completed")
        await asyncio.gather(slow_task, *(t for _, t in fast))
        expected = list(enumerate(["run.queued", *LIVE, "run.completed"], 1))
        for client, _ in [(slow, slow_task), *fast]:
            assert client.events() == expected
            assert client.complete

    run(scenario)


def test_clients_that_hang_up_leave_nothing_behind(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        h = Harness(db, bus, run_id, keepalive=30)
        await h.emit("run.queued")
        clients = [h.open() for _ in range(3)]
        await until(lambda: all(c.events() for c, _ in clients))
        clients[0][0].hang_up()
        await clients[0][1]  # returns at once, long before the run ends
        assert bus.subscribers() == 1
        await h.emit("run.started")
        await until(lambda: all(len(c.events()) == 2 for c, _ in clients[1:]))
        assert len(clients[0][0].events()) == 1
        for client, task in clients[1:]:
            client.hang_up()
            await task
        assert bus.subscribers() == 0 and len(h.feeds) == 0
        assert not any(c.complete for c, _ in clients)

    run(scenario)


def test_a_feed_that_fails_ends_its_streams_and_the_next_one_reads_afresh(
    db: Database, bus: LocalEventBus, run_id: str
) -> None:
    async def scenario() -> None:
        broken = True

        def flaky(ev: RunEvent) -> bytes:
            if broken and ev.type == "node.log":
                raise RuntimeError("cannot render")
            return render(ev)

        h = Harness(db, bus, run_id, keepalive=30)
        h.source = FeedSource(db=db, bus=bus, render=flaky, keepalive=30)
        await h.emit("run.queued")
        client, task = h.open()
        await until(lambda: bool(client.events()))
        await h.emit("node.log")
        await task  # ended (cleanly: the client reconnects with its Last-Event-ID)
        assert client.complete and client.events() == [(1, "run.queued")]
        broken = False
        again, task = h.open(after=1)
        await h.emit("run.completed")
        await task
        assert again.events() == [(2, "node.log"), (3, "run.completed")]

    run(scenario)
