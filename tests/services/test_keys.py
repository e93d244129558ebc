"""API keys: authentication through the key cache, revocation, last-used bookkeeping."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from flowy.db.migrate import upgrade
from flowy.db.models import ApiKey, utcnow
from flowy.db.session import Database
from flowy.errors import AuthError
from flowy.services import keys
from flowy.services.keys import (
    KEY_CACHE_SECONDS,
    LAST_USED_GRANULARITY,
    KeyCache,
    authenticate,
    create_key,
    create_workspace,
    revoke_key,
    touch_key,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'flowy.db'}"
    upgrade(url)
    return url


@pytest.fixture
def db(url: str) -> Iterator[Database]:
    d = Database(url)
    yield d
    d.dispose()


@pytest.fixture
def other_process(url: str) -> Iterator[Database]:
    """The same SQLite file opened a second time, as ``flowy keys revoke`` opens it: its
    commits run none of ``db``'s hooks."""
    d = Database(url)
    yield d
    d.dispose()


@pytest.fixture
def workspace(db: Database) -> str:
    return create_workspace(db, "acme")


def bearer(key: str) -> str:
    return f"Bearer {key}"


def test_a_key_authenticates_as_its_workspace(db: Database, workspace: str) -> None:
    info, key = create_key(db, workspace)
    cache = KeyCache(db)
    who = cache.authenticate(bearer(key))
    assert (who.workspace_id, who.key_id) == (workspace, info.id)
    again = cache.authenticate(f"bearer   {key}  ")  # scheme is case-insensitive
    assert (again.workspace_id, again.key_id) == (workspace, info.id)


@pytest.mark.parametrize(
    ("header", "needle"),
    [
        (None, "missing API key"),
        ("", "missing API key"),
        ("Basic abc", "malformed Authorization header"),
        ("Bearer", "malformed Authorization header"),
        ("Bearer   ", "malformed Authorization header"),
        ("Bearer flowy_sk_nope", "invalid or revoked"),
    ],
)
def test_a_missing_malformed_or_unknown_key_is_refused(
    db: Database, workspace: str, header: str | None, needle: str
) -> None:
    create_key(db, workspace)
    with pytest.raises(AuthError, match=needle):
        KeyCache(db).authenticate(header)
    with pytest.raises(AuthError, match=needle):
        authenticate(db, header)


def test_a_key_revoked_through_the_service_is_refused_at_once(db: Database, workspace: str) -> None:
    info, key = create_key(db, workspace)
    _, other = create_key(db, workspace, "other")
    cache = KeyCache(db, ttl=3600)  # long enough that only the revocation can evict it
    cache.authenticate(bearer(key))
    cache.authenticate(bearer(other))
    revoke_key(db, info.id)
    with pytest.raises(AuthError, match="invalid or revoked API key"):
        cache.authenticate(bearer(key))
    # The other key of the workspace still works (read again from the database).
    assert cache.authenticate(bearer(other)).workspace_id == workspace


def test_a_key_revoked_by_another_process_is_refused_once_its_entry_expires(
    db: Database, other_process: Database, workspace: str
) -> None:
    clock = FakeClock()
    info, key = create_key(db, workspace)
    cache = KeyCache(db, ttl=KEY_CACHE_SECONDS, clock=clock)
    cache.authenticate(bearer(key))
    revoke_key(other_process, info.id)
    # Within the TTL the key is trusted without a read: the documented bound.
    clock.now += KEY_CACHE_SECONDS - 0.01
    assert cache.authenticate(bearer(key)).key_id == info.id
    # Past it, the row is read again and the revocation holds.
    clock.now += 0.02
    with pytest.raises(AuthError, match="invalid or revoked API key"):
        cache.authenticate(bearer(key))
    # A refused key is not remembered as good: it stays refused.
    with pytest.raises(AuthError):
        cache.authenticate(bearer(key))


def test_a_lookup_that_races_a_revocation_is_not_cached(
    db: Database, workspace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    info, key = create_key(db, workspace)
    cache = KeyCache(db, ttl=3600)
    real_lookup = keys._lookup

    def lookup_then_revoke(d: Database, digest: str) -> tuple[keys.Principal, datetime | None]:
        # The row is read while the key is still good; the revocation commits before the
        # lookup's answer is stored.
        found = real_lookup(d, digest)
        revoke_key(db, info.id)
        return found

    monkeypatch.setattr(keys, "_lookup", lookup_then_revoke)
    assert cache.authenticate(bearer(key)).key_id == info.id  # it was valid when read
    monkeypatch.setattr(keys, "_lookup", real_lookup)
    with pytest.raises(AuthError, match="invalid or revoked API key"):
        cache.authenticate(bearer(key))


def test_last_use_is_due_once_per_granularity(db: Database, workspace: str) -> None:
    clock = FakeClock()
    info, key = create_key(db, workspace)
    cache = KeyCache(db, ttl=KEY_CACHE_SECONDS, clock=clock)
    assert cache.authenticate(bearer(key)).stale  # never used
    touch_key(db, info.id)
    assert not cache.authenticate(bearer(key)).stale
    clock.now += KEY_CACHE_SECONDS + 1  # re-read: the row says it was just used
    assert not cache.authenticate(bearer(key)).stale
    # Later, the row read again says the last use is older than the granularity.
    clock.now += LAST_USED_GRANULARITY.total_seconds()
    with db.write() as s:
        s.execute(
            update(ApiKey)
            .where(ApiKey.id == info.id)
            .values(last_used_at=utcnow() - LAST_USED_GRANULARITY - timedelta(seconds=1))
        )
    assert cache.authenticate(bearer(key)).stale
    assert not cache.authenticate(bearer(key)).stale  # one caller touches it, not each


def test_a_cached_key_asks_for_a_touch_when_its_refresh_falls_due(
    db: Database, workspace: str
) -> None:
    clock = FakeClock()
    info, key = create_key(db, workspace)
    cache = KeyCache(db, ttl=10 * LAST_USED_GRANULARITY.total_seconds(), clock=clock)
    touch_key(db, info.id)
    assert not cache.authenticate(bearer(key)).stale
    clock.now += LAST_USED_GRANULARITY.total_seconds() + 1  # still cached
    assert cache.authenticate(bearer(key)).stale
    assert not cache.authenticate(bearer(key)).stale


def test_the_cache_is_bounded_and_drops_its_oldest_key(
    db: Database, other_process: Database, workspace: str
) -> None:
    made = [create_key(db, workspace, f"k{i}") for i in range(3)]
    cache = KeyCache(db, ttl=3600, max_entries=2)
    for _, key in made:
        cache.authenticate(bearer(key))
    for info, _ in made:
        revoke_key(other_process, info.id)  # unseen by the cache
    # The oldest entry was dropped to make room, so its revocation is seen at once ...
    with pytest.raises(AuthError):
        cache.authenticate(bearer(made[0][1]))
    # ... while the newest is still trusted from the cache.
    assert cache.authenticate(bearer(made[2][1])).key_id == made[2][0].id
