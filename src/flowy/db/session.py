"""Database engines and sessions.

SQLite (embedded mode) runs in WAL mode with a busy timeout, and every *write*
transaction starts with ``BEGIN IMMEDIATE``: it takes the write lock up front, so two
writers queue on the busy timeout instead of one failing with "database is locked" when
it upgrades a read lock mid-transaction.  Writers of this process also queue on a Python
lock first: SQLite's busy handler waits for a held lock by sleeping 1, 2, 5, 10 ... 100 ms
at a time, so two threads contending on it would each lose milliseconds per transaction,
while a mutex hands over at once.  Processes that write all the time (the server and its
worker processes) share a lock file the same way (``process_lock``).  (The busy timeout
still covers another process, such as the CLI.)  Reads use plain deferred transactions
on a second engine and never wait for writers.  On PostgreSQL both are one engine.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, event, make_url
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

BUSY_TIMEOUT_MS = 30_000
#: Session.info key under which a transaction collects the runs whose events it wrote.
RUNS_CHANGED = "flowy_runs_changed"
#: Session.info key of the named things a transaction wrote (see :func:`mark`).
COMMIT_FLAGS = "flowy_commit_flags"
#: Session.info key of the writes deferred to the end of a transaction (:func:`at_commit`).
BEFORE_COMMIT = "flowy_before_commit"


def at_commit(session: Session, write: Callable[[Session], None]) -> None:
    """Run ``write`` in this write transaction just before it commits (once, however
    often it is asked): many small writes of one kind become one batched statement."""
    pending = session.info.setdefault(BEFORE_COMMIT, [])
    if write not in pending:
        pending.append(write)


def mark(session: Session, flag: str) -> None:
    """Note that this transaction wrote something ``flag`` names; once it commits, the
    database calls the hooks registered under ``flag`` (``Database.flag_hooks``)."""
    session.info.setdefault(COMMIT_FLAGS, set()).add(flag)


def json_dumps(value: Any) -> str:
    """The text of a JSON column.  orjson writes it 5-10 times as fast as the json module
    (a run's inputs, node states, outputs and every event pass through here).  Non-finite
    floats, which the json module would write as the non-JSON ``NaN``, become ``null``.
    What orjson refuses, integers beyond 64 bits, the json module writes, after a space
    that tells :func:`json_loads` to read it back with the json module too (orjson would
    read such an integer as an inexact float)."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return " " + json.dumps(value)


def json_loads(text: str | bytes) -> Any:
    """A JSON column's value (see :func:`json_dumps`)."""
    if text[:1] in (" ", b" "):
        return json.loads(text)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:  # NaN, as the json module wrote it before
        return json.loads(text)


def _sqlite_engine(url: str, *, immediate: bool, autocheckpoint: bool = True) -> Engine:
    engine = create_engine(
        url,
        json_serializer=json_dumps,
        json_deserializer=json_loads,
        connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        pool_size=8,
        max_overflow=16,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Autocommit at the driver level: we issue BEGIN ourselves below.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint=0")  # a Checkpointer thread does it
        cur.close()

    begin = "BEGIN IMMEDIATE" if immediate else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # On the driver itself: through exec_driver_sql it cost 0.1 ms, more than the
        # small transactions it opens.
        conn.connection.driver_connection.execute(begin)

    return engine


class Checkpointer:
    """Copies SQLite's write-ahead log into the database file on a thread of its own.

    By default SQLite does it in whichever commit finds the log past 1,000 pages, and in
    WAL mode a checkpoint syncs the log and the database file: that commit, often a
    request creating a run, then takes milliseconds longer (measured: the p99 of submit
    to first node went from 1.4-1.6 ms to 1.7-5.0 ms with it).  Here the checks run
    every ``interval`` seconds instead, and a PASSIVE checkpoint never waits for, nor
    blocks, the readers and writers.
    """

    def __init__(self, path: str, *, interval: float = 0.25, min_bytes: int = 1 << 20) -> None:
        self.path = path
        self.interval = interval
        self.min_bytes = min_bytes
        #: Checkpoints run so far (tests read it).
        self.runs = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._loop, name="flowy-checkpointer", daemon=True
            )
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def checkpoint(self) -> None:
        """One PASSIVE checkpoint, if the log has grown past ``min_bytes``."""
        try:
            if os.path.getsize(self.path + "-wal") < self.min_bytes:
                return
        except FileNotFoundError:
            return
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            conn.close()
        self.runs += 1

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.checkpoint()
            except Exception:  # a busy or vanished file: try again at the next tick
                logger.exception("WAL checkpoint failed")


class WriteLock:
    """The write lock of one process's writers (re-entrant), and, with a ``path``, of
    every process that opens the same file: an ``flock`` held from the first entry of
    the holding thread to its last exit.  The kernel wakes a waiting process as soon as
    the lock is free, where SQLite's busy handler would sleep."""

    def __init__(self, path: Path | None = None) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600) if path is not None else None

    def __enter__(self) -> None:
        self._lock.acquire()
        if self._depth == 0 and self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except BaseException:
                self._lock.release()
                raise
        self._depth += 1

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Database:
    """Sessions for reading and for writing, on SQLite or PostgreSQL alike.

    With ``background_checkpoints`` (a long-running server), SQLite's log is copied into
    the database by a :class:`Checkpointer` started with :meth:`start_checkpointer`
    rather than by the commit that fills it (by another process's, if this one never
    starts it).  ``process_lock``: the lock file that this process's writers share with
    other processes writing to the same SQLite file (see :class:`WriteLock`).
    """

    def __init__(
        self,
        url: str,
        *,
        background_checkpoints: bool = False,
        process_lock: Path | None = None,
    ) -> None:
        self.url = url
        self.checkpointer: Checkpointer | None = None
        path = make_url(url).database if url.startswith("sqlite") else None
        if background_checkpoints and path and path != ":memory:":
            self.checkpointer = Checkpointer(path)
        if url.startswith("sqlite"):
            auto = self.checkpointer is None
            self.write_engine = _sqlite_engine(url, immediate=True, autocheckpoint=auto)
            self.read_engine = _sqlite_engine(url, immediate=False, autocheckpoint=auto)
        else:
            self.write_engine = self.read_engine = create_engine(
                url,
                pool_pre_ping=True,
                json_serializer=json_dumps,
                json_deserializer=json_loads,
            )
        # Re-entrant, so a nested write fails on SQLite's busy timeout as before rather
        # than hanging here.
        self._write_lock: WriteLock | nullcontext[None] = (
            WriteLock(process_lock) if url.startswith("sqlite") else nullcontext()
        )
        self._write = sessionmaker(self.write_engine, expire_on_commit=False)
        self._read = sessionmaker(self.read_engine, expire_on_commit=False)
        #: Called after each commit with the ids of the runs it changed (events).
        self.commit_hooks: list[Callable[[set[str]], None]] = []
        #: Called after a commit that :func:`mark` ed their flag.
        self.flag_hooks: dict[str, list[Callable[[], None]]] = {}
        #: When set, told of each commit (the runs it changed, its flags) instead of the
        #: hooks: a worker process relays them to the server's (:meth:`announce`).
        self.relay: Callable[[set[str], set[str]], None] | None = None
        event.listen(self._write, "after_commit", self._after_commit)
        event.listen(self._write, "after_rollback", self._after_rollback)

    def _after_commit(self, session: Session) -> None:
        changed: set[str] = session.info.pop(RUNS_CHANGED, set())
        flags: set[str] = session.info.pop(COMMIT_FLAGS, set())
        if not changed and not flags:
            return
        if self.relay is not None:
            self.relay(changed, flags)
        else:
            self.announce(changed, flags)

    def announce(self, changed: set[str], flags: set[str]) -> None:
        """Call the hooks of a commit that changed the runs ``changed`` and wrote
        ``flags``: one of this process's, or one relayed from a worker process."""
        if changed:
            for hook in self.commit_hooks:
                hook(changed)
        for flag in flags:
            for flag_hook in self.flag_hooks.get(flag, ()):
                flag_hook()

    @staticmethod
    def _after_rollback(session: Session) -> None:
        session.info.pop(RUNS_CHANGED, None)
        session.info.pop(COMMIT_FLAGS, None)
        session.info.pop(BEFORE_COMMIT, None)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reads; rolled back at the end."""
        with self._read() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session whose transaction holds the write lock; committed at the end."""
        with self._write_lock, self._write() as session, session.begin():
            yield session
            for write in session.info.pop(BEFORE_COMMIT, ()):
                write(session)

    def start_checkpointer(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.start()

    def dispose(self) -> None:
        if self.checkpointer is not None:
            self.checkpointer.stop()
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()
        if isinstance(self._write_lock, WriteLock):
            self._write_lock.close()
