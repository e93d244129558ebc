"""Database: WAL SQLite, write transactions that queue instead of failing, non-blocking reads."""

from __future__ import annotations

import json
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text

from flowy.db.migrate import alembic_config, upgrade
from flowy.db.models import IdempotencyKey, Workspace
from flowy.db.session import BUSY_TIMEOUT_MS, Database

#: Generous bound for "did not wait on the busy timeout" (which is 30 s).
PROMPT = 5.0


@pytest.fixture
def url(tmp_path: Path) -> str:
    u = f"sqlite:///{tmp_path / 'flowy.db'}"
    upgrade(u)
    return u


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    d = Database(url)
    yield d
    d.dispose()


def count(session: object) -> int:
    return int(session.scalar(select(func.count()).select_from(Workspace)))  # type: ignore[attr-defined]


def test_connections_use_wal_busy_timeout_and_foreign_keys(db: Database, url: str) -> None:
    for ctx in (db.read, db.write):
        with ctx() as s:
            assert s.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert s.execute(text("PRAGMA busy_timeout")).scalar() == BUSY_TIMEOUT_MS
            assert s.execute(text("PRAGMA foreign_keys")).scalar() == 1
    # WAL is a property of the file: a plain sqlite3 connection sees it too.
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_write_commits_and_read_sees_it(db: Database) -> None:
    with db.write() as s:
        ws = Workspace(name="acme")
        s.add(ws)
    with db.read() as s:
        got = s.get(Workspace, ws.id)
        assert got is not None and got.name == "acme"
        assert got.created_at.tzinfo is not None


def test_write_rolls_back_on_error(db: Database) -> None:
    with pytest.raises(RuntimeError, match="boom"), db.write() as s:
        s.add(Workspace(name="doomed"))
        s.flush()
        raise RuntimeError("boom")
    with db.read() as s:
        assert count(s) == 0


def test_many_concurrent_write_transactions_never_hit_database_locked(db: Database) -> None:
    threads_n, per_thread = 8, 50
    errors: list[BaseException] = []
    seen: list[tuple[int, int]] = []
    seen_lock = threading.Lock()
    gate = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        try:
            gate.wait(timeout=10)
            for i in range(per_thread):
                with db.write() as s:
                    # Read first, then write, then read: with a deferred BEGIN this is the
                    # pattern that fails with "database is locked" under contention.
                    before = count(s)
                    s.add(Workspace(name=f"t{t}-{i}"))
                    s.flush()
                    after = count(s)
                with seen_lock:
                    seen.append((before, after))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=120)
    assert not any(th.is_alive() for th in threads), "writers hung"
    assert errors == [], errors[:3]

    total = threads_n * per_thread
    with db.read() as s:
        assert count(s) == total
        names = set(s.scalars(select(Workspace.name)))
    assert names == {f"t{t}-{i}" for t in range(threads_n) for i in range(per_thread)}
    # Each transaction saw exactly its own insert on top of a stable snapshot, and the
    # transactions were serialized: the counts they saw are 0..399, each once.
    assert all(after == before + 1 for before, after in seen)
    assert sorted(before for before, _ in seen) == list(range(total))


def test_readers_not_blocked_by_long_writer_and_see_only_committed(db: Database) -> None:
    with db.write() as s:
        s.add(Workspace(name="committed"))

    holding = threading.Event()
    go = threading.Event()
    writer_error: list[BaseException] = []

    def long_writer() -> None:
        try:
            with db.write() as s:
                s.add(Workspace(name="pending"))
                s.flush()
                holding.set()
                if not go.wait(timeout=30):
                    raise AssertionError("test never released the writer")
        except BaseException as exc:  # noqa: BLE001
            writer_error.append(exc)

    writer = threading.Thread(target=long_writer)
    writer.start()
    try:
        assert holding.wait(timeout=10)

        read_results: list[tuple[int, list[str], float]] = []
        read_errors: list[BaseException] = []

        def reader() -> None:
            try:
                for _ in range(20):
                    start = time.monotonic()
                    with db.read() as s:
                        n = count(s)
                        names = sorted(s.scalars(select(Workspace.name)))
                    read_results.append((n, names, time.monotonic() - start))
            except BaseException as exc:  # noqa: BLE001
                read_errors.append(exc)

        readers = [threading.Thread(target=reader) for _ in range(4)]
        for r in readers:
            r.start()
        for r in readers:
            r.join(timeout=60)
        assert read_errors == []
        assert len(read_results) == 80
        for n, names, took in read_results:
            assert n == 1
            assert names == ["committed"]
            assert took < PROMPT
        assert writer.is_alive(), "the writer should still hold its transaction"
    finally:
        go.set()
        writer.join(timeout=30)
    assert writer_error == []
    with db.read() as s:
        assert sorted(s.scalars(select(Workspace.name))) == ["committed", "pending"]


def test_read_transaction_keeps_its_snapshot(db: Database) -> None:
    with db.write() as s:
        s.add(Workspace(name="first"))
    with db.read() as reader:
        assert count(reader) == 1
        with db.write() as w:  # commits while the read transaction is open
            w.add(Workspace(name="second"))
        assert count(reader) == 1  # still the snapshot it started with
    with db.read() as fresh:
        assert count(fresh) == 2


def test_second_writer_waits_for_the_first_instead_of_failing(db: Database) -> None:
    holding = threading.Event()
    go = threading.Event()
    second_done = threading.Event()
    errors: list[BaseException] = []
    order: list[str] = []

    def first() -> None:
        try:
            with db.write() as s:
                s.add(Workspace(name="first"))
                s.flush()
                holding.set()
                go.wait(timeout=30)
                order.append("first commits")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    def second() -> None:
        try:
            with db.write() as s:
                before = count(s)  # the first statement takes the write lock
                order.append("second reads")
                s.add(Workspace(name=f"second saw {before}"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            second_done.set()

    t1 = threading.Thread(target=first)
    t1.start()
    assert holding.wait(timeout=10)
    t2 = threading.Thread(target=second)
    t2.start()
    try:
        # While the first holds the write lock the second cannot even read.
        assert not second_done.wait(timeout=0.5)
        assert order == []
    finally:
        go.set()
        t1.join(timeout=30)
        t2.join(timeout=30)
    assert errors == []
    assert order == ["first commits", "second reads"]
    with db.read() as s:
        assert sorted(s.scalars(select(Workspace.name))) == ["first", "second saw 1"]


def test_migration_is_idempotent(url: str) -> None:
    db = Database(url)
    try:
        with db.write() as s:
            s.add(Workspace(name="keep me"))
        upgrade(url)  # second time: nothing to do, nothing lost
        upgrade(url)
        with db.read() as s:
            assert [w.name for w in s.scalars(select(Workspace))] == ["keep me"]
            head = ScriptDirectory.from_config(alembic_config(url)).get_current_head()
            assert s.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
                head
            ]
        tables = set(inspect(db.read_engine).get_table_names())
        assert {
            "workspaces",
            "api_keys",
            "apps",
            "app_versions",
            "runs",
            "assets",
            "alembic_version",
        } <= tables
    finally:
        db.dispose()


def test_fresh_upgrade_creates_every_model_table(tmp_path: Path) -> None:
    from flowy.db.models import Base

    u = f"sqlite:///{tmp_path / 'fresh.db'}"
    upgrade(u)
    db = Database(u)
    try:
        insp = inspect(db.read_engine)
        for table in Base.metadata.sorted_tables:
            cols = {c["name"] for c in insp.get_columns(table.name)}
            assert cols == {c.name for c in table.columns}, table.name
    finally:
        db.dispose()


# --------------------------------------------------------------------------- checkpoints


def _fill(db: Database, n: int = 400) -> None:
    """About 2 MB of log: n workspaces with 4 KB names, in a few transactions."""
    for batch in range(4):
        with db.write() as s:
            s.add_all(Workspace(name=f"{batch}-{i}-" + "x" * 4000) for i in range(n // 4))


def _autocheckpoint(db: Database) -> int:
    with db.read() as s:
        return int(s.execute(text("PRAGMA wal_autocheckpoint")).scalar_one())


def test_only_a_server_database_leaves_checkpoints_to_its_thread(url: str) -> None:
    plain, server = Database(url), Database(url, background_checkpoints=True)
    try:
        assert plain.checkpointer is None and _autocheckpoint(plain) == 1000
        assert server.checkpointer is not None and _autocheckpoint(server) == 0
    finally:
        plain.dispose()
        server.dispose()


def test_the_checkpointer_copies_the_log_into_the_database(url: str, tmp_path: Path) -> None:
    db = Database(url, background_checkpoints=True)
    try:
        assert db.checkpointer is not None
        _fill(db)
        before = (tmp_path / "flowy.db").stat().st_size
        db.checkpointer.checkpoint()
        after = (tmp_path / "flowy.db").stat().st_size
        assert db.checkpointer.runs == 1
        assert after - before > 1_000_000  # the pages moved from the log to the file
        db.checkpointer.checkpoint()  # the log is copied already: nothing to do
        with db.read() as s:
            assert count(s) == 400
    finally:
        db.dispose()


def test_the_checkpointer_thread_runs_when_the_log_grows(url: str) -> None:
    db = Database(url, background_checkpoints=True)
    try:
        assert db.checkpointer is not None
        db.checkpointer.interval = 0.02
        db.start_checkpointer()
        _fill(db)
        deadline = time.monotonic() + PROMPT
        while db.checkpointer.runs == 0:
            assert time.monotonic() < deadline, "no checkpoint ran"
            time.sleep(0.02)
    finally:
        db.dispose()


def _keep_json(s: Any, workspace_id: str, key: str, value: Any) -> None:
    s.add(
        IdempotencyKey(
            workspace_id=workspace_id,
            key=key,
            request_hash="h",
            state="done",
            response=value,
            expires_at=datetime(2030, 1, 1, tzinfo=UTC),
        )
    )


def _read_json(db: Database, key: str) -> Any:
    with db.read() as s:
        return s.scalar(select(IdempotencyKey.response).where(IdempotencyKey.key == key))


def test_json_columns_keep_every_value_exactly(db: Database) -> None:
    """JSON columns go through orjson, and through the json module for what orjson would
    refuse or read back inexactly: integers beyond 64 bits come back as the same int."""
    values: list[Any] = [
        {"text": "é ✓ \u2028", "n": [1, 2.5, None, True], "nested": {"k": [{}]}},
        {"big": 2**70 + 1, "negative": -(2**64), "plain": 7},
        {"edges": [2**63 - 1, -(2**63)]},
    ]
    with db.write() as s:
        ws = Workspace(name="w")
        s.add(ws)
        s.flush()
        for i, v in enumerate(values):
            _keep_json(s, ws.id, f"k{i}", v)
    # The premise: orjson alone would not give the big integer back.
    assert orjson.loads(str(2**70 + 1)) != 2**70 + 1
    for i, v in enumerate(values):
        got = _read_json(db, f"k{i}")
        assert got == v
        assert all(type(got[k]) is type(v[k]) for k in v)


def test_json_columns_read_rows_the_json_module_wrote(url: str, db: Database) -> None:
    """Rows written before orjson, by the json module (``NaN`` and ASCII escapes
    included), read back as they were written."""
    with db.write() as s:
        ws = Workspace(name="old")
        s.add(ws)
    old = json.dumps({"x": float("nan"), "s": "é"})
    with sqlite3.connect(url.removeprefix("sqlite:///")) as raw:
        raw.execute(
            "INSERT INTO idempotency_keys (workspace_id, key, request_hash, state, response,"
            " created_at, expires_at) VALUES (?, 'old', 'h', 'done', ?, '2026-01-01 00:00:00',"
            " '2030-01-01 00:00:00')",
            (ws.id, old),
        )
    got = _read_json(db, "old")
    assert math.isnan(got.pop("x")) and got == {"s": "é"}
