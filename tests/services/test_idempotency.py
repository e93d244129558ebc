"""Idempotency keys on a real SQLite file: replay, refusal, release, expiry and races."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, update

from flowy.db.models import IdempotencyKey, utcnow
from flowy.db.session import Database
from flowy.errors import Conflict, ValidationFailed
from flowy.services import idempotency
from flowy.services.idempotency import Answer, IdempotencyStore, request_hash
from flowy.services.keys import create_workspace


@pytest.fixture
def ws(db: Database) -> str:
    return create_workspace(db, "test")


class Work:
    """A request's work: counts its calls and answers a new body each time."""

    def __init__(self, fail: bool = False) -> None:
        self.calls = 0
        self.fail = fail

    def __call__(self) -> Answer:
        self.calls += 1
        if self.fail:
            raise ValidationFailed([])
        return Answer(201, {"data": {"n": self.calls, "text": "é ✓", "list": [1, None]}})


def _rows(db: Database) -> list[Any]:
    with db.read() as s:
        return list(s.execute(select(IdempotencyKey.key, IdempotencyKey.state)).all())


def test_the_first_answer_is_stored_and_replayed(db: Database, ws: str) -> None:
    store, work = IdempotencyStore(db), Work()
    first = store.run_once(ws, "k1", request_hash("a", {"x": 1}), work)
    again = store.run_once(ws, "k1", request_hash("a", {"x": 1}), work)
    assert work.calls == 1
    assert not first.replayed and again.replayed
    assert (again.status, again.body) == (201, first.body)  # JSON round trip, unicode too
    assert _rows(db) == [("k1", "done")]
    # Another workspace has its own keys.
    other = create_workspace(db, "other")
    assert not store.run_once(other, "k1", request_hash("a", {"x": 1}), work).replayed
    assert work.calls == 2


def test_a_key_used_with_another_request_is_refused(db: Database, ws: str) -> None:
    store, work = IdempotencyStore(db), Work()
    store.run_once(ws, "k1", request_hash("a", 1), work)
    with pytest.raises(ValidationFailed) as exc:
        store.run_once(ws, "k1", request_hash("a", 2), work)
    assert exc.value.issues[0].code == "idempotency_key_reused"
    assert exc.value.issues[0].field == "header.idempotency-key"
    assert work.calls == 1


def test_a_failed_request_releases_its_key(db: Database, ws: str) -> None:
    store = IdempotencyStore(db)
    with pytest.raises(ValidationFailed):
        store.run_once(ws, "k1", request_hash(1), Work(fail=True))
    assert _rows(db) == []
    work = Work()
    assert not store.run_once(ws, "k1", request_hash(2), work).replayed
    assert work.calls == 1


def test_a_key_in_progress_answers_conflict(db: Database, ws: str) -> None:
    store = IdempotencyStore(db)
    inside = threading.Event()
    release = threading.Event()
    results: list[Answer] = []

    def slow() -> Answer:
        inside.set()
        release.wait(10)
        return Answer(201, {"data": "first"})

    t = threading.Thread(target=lambda: results.append(store.run_once(ws, "k", "h", slow)))
    t.start()
    try:
        assert inside.wait(10)
        work = Work()
        with pytest.raises(Conflict, match="still in progress"):
            store.run_once(ws, "k", "h", work)
        assert work.calls == 0
    finally:
        release.set()
        t.join(10)
    assert results == [Answer(201, {"data": "first"})]
    assert store.run_once(ws, "k", "h", Work()).body == {"data": "first"}


def test_an_expired_key_starts_afresh(db: Database, ws: str) -> None:
    store, work = IdempotencyStore(db), Work()
    store.run_once(ws, "k1", request_hash(1), work)
    with db.write() as s:
        s.execute(update(IdempotencyKey).values(expires_at=utcnow() - timedelta(seconds=1)))
    # Even with another request: after 24 h the key is free again.
    fresh = store.run_once(ws, "k1", request_hash(2), work)
    assert not fresh.replayed and fresh.body["data"]["n"] == 2
    assert store.run_once(ws, "k1", request_hash(2), work).body == fresh.body
    with db.read() as s:
        row = s.get(IdempotencyKey, (ws, "k1"))
        assert row is not None and row.expires_at > utcnow() + timedelta(hours=23)


def test_a_key_reserved_between_read_and_insert_answers_conflict(
    db: Database, ws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race PostgreSQL allows (SQLite's write lock rules it out): the insert meets the
    other request's row and the driver's IntegrityError becomes 409, with no work done."""
    store = IdempotencyStore(db)
    store.run_once(ws, "k1", "h", Work())

    class Miss:
        def execute(self, *_args: object) -> Miss:
            return self

        def first(self) -> None:
            return None

    monkeypatch.setattr(idempotency, "_READ", Miss())
    work = Work()
    with pytest.raises(Conflict, match="still in progress"):
        store.run_once(ws, "k1", "h", work)
    assert work.calls == 0
    assert _rows(db) == [("k1", "done")]
