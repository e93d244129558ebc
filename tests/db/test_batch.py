"""Group commit: writes that wait together share a transaction; one failing write fails
only itself."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from flowy.db.batch import GroupCommit
from flowy.db.models import Workspace
from flowy.db.session import Database
from flowy.ids import new_id


@pytest.fixture
def writer(db: Database) -> Iterator[GroupCommit]:
    w = GroupCommit(db, name="test-writer")
    yield w
    w.close()


def _add(name: str) -> Callable[[Session], str]:
    def write(s: Session) -> str:
        ws = Workspace(id=new_id(), name=name)
        s.add(ws)
        s.flush()
        return ws.id

    return write


def _names(db: Database) -> list[str]:
    with db.read() as s:
        return sorted(s.scalars(select(Workspace.name)))


def test_writes_queued_behind_a_transaction_share_the_next(
    db: Database, writer: GroupCommit
) -> None:
    # Hold the write lock, as a long transaction would, while ten writes arrive.
    with db.write():
        futures = [writer.submit(_add(f"w{i}")) for i in range(10)]
        assert not any(f.done() for f in futures)
    ids = [f.result(timeout=10) for f in futures]
    assert len(set(ids)) == 10
    assert _names(db) == sorted(f"w{i}" for i in range(10))
    # The first may have been taken alone before the others queued; the rest share one.
    assert writer.writes == 10
    assert writer.transactions <= 2


def test_a_failing_write_fails_alone(db: Database, writer: GroupCommit) -> None:
    calls: list[str] = []

    def boom(s: Session) -> str:
        _add("doomed")(s)  # rolled back with its transaction
        raise ValueError("bad write")

    with db.write():
        good = [
            writer.submit(
                _add(f"ok{i}"),
                after=lambda _id, i=i: calls.append(f"after ok{i}"),
                failed=lambda i=i: calls.append(f"failed ok{i}"),
            )
            for i in range(3)
        ]
        bad = writer.submit(boom, failed=lambda: calls.append("failed boom"))
    with pytest.raises(ValueError, match="bad write"):
        bad.result(timeout=10)
    assert all(f.result(timeout=10) for f in good)
    assert _names(db) == ["ok0", "ok1", "ok2"]
    assert sorted(calls) == ["after ok0", "after ok1", "after ok2", "failed boom"]


def test_after_runs_once_committed_and_before_the_answer(db: Database, writer: GroupCommit) -> None:
    seen: list[int] = []

    def after(_id: str) -> None:
        with db.read() as s:  # another connection: only committed rows show
            seen.append(int(s.scalar(select(func.count()).select_from(Workspace)) or 0))

    fut = writer.submit(_add("a"), after=after)
    fut.result(timeout=10)
    assert seen == [1]


def test_close_commits_what_is_queued_and_a_later_write_starts_again(
    db: Database, writer: GroupCommit
) -> None:
    gate = threading.Event()

    def slow(s: Session) -> str:
        gate.wait(10)
        return _add("first")(s)

    first = writer.submit(slow)
    second = writer.submit(_add("second"))
    closer = threading.Thread(target=writer.close)
    closer.start()
    gate.set()
    closer.join(10)
    assert first.done() and second.done()
    assert writer.submit(_add("third")).result(timeout=10)
    assert _names(db) == ["first", "second", "third"]


def test_run_writes_on_the_calling_thread(db: Database, writer: GroupCommit) -> None:
    threads: list[str] = []

    def write(s: Session) -> str:
        threads.append(threading.current_thread().name)
        return _add("inline")(s)

    assert writer.run(write)
    assert threads == [threading.current_thread().name]
    assert _names(db) == ["inline"]
    with pytest.raises(ZeroDivisionError):
        writer.run(lambda s: 1 // 0)


def test_a_write_canceled_while_it_waits_is_not_made(db: Database, writer: GroupCommit) -> None:
    busy, release = threading.Event(), threading.Event()

    def first(s: Session) -> str:
        busy.set()
        release.wait(10)
        return _add("kept")(s)

    kept = writer.submit(first)
    assert busy.wait(10)  # the writer is inside the first transaction
    gave_up: list[str] = []
    dropped = writer.submit(_add("dropped"), failed=lambda: gave_up.append("dropped"))
    assert dropped.cancel()
    release.set()
    assert kept.result(timeout=10)
    writer.close()  # everything queued is settled
    assert _names(db) == ["kept"]
    assert dropped.cancelled() and gave_up == ["dropped"]
