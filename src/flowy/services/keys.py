"""Workspaces and API keys.

A key is ``flowy_sk_`` + 32 random bytes (base64url).  The prefix lets secret scanners
find leaked keys.  Only its SHA-256 is stored: the key has 256 bits of entropy, so a fast
hash is as safe as a slow one here and keeps authentication to one indexed lookup.

A server authenticates through a :class:`KeyCache`, which trusts a key it has just
checked for a few seconds (:data:`KEY_CACHE_SECONDS`) rather than reading its row on
every request.  A revocation made in the same process (:func:`revoke_key` on the same
``Database``) empties the cache when it commits; one made by another process on the same
database (``flowy keys revoke``) takes effect within those seconds.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, select, update

from flowy.db.models import ApiKey, Workspace, utcnow
from flowy.db.session import Database, mark
from flowy.errors import AuthError, NotFound

logger = logging.getLogger(__name__)

KEY_PREFIX = "flowy_sk_"
#: last_used_at is refreshed at most this often, so reads do not turn into writes.
LAST_USED_GRANULARITY = timedelta(minutes=5)
#: How long a :class:`KeyCache` trusts a key it checked, in seconds: the longest a key
#: revoked by *another* process still authenticates here.
KEY_CACHE_SECONDS = 5.0
#: The commit flag (:func:`flowy.db.session.mark`) of a transaction that revoked a key.
KEYS_REVOKED = "flowy_keys_revoked"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class KeyInfo:
    id: str
    workspace_id: str
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


def _info(k: ApiKey) -> KeyInfo:
    return KeyInfo(
        k.id, k.workspace_id, k.name, k.prefix, k.created_at, k.last_used_at, k.revoked_at
    )


def create_workspace(db: Database, name: str) -> str:
    with db.write() as s:
        ws = Workspace(name=name)
        s.add(ws)
        s.flush()
        return ws.id


def first_workspace(db: Database) -> str | None:
    with db.read() as s:
        return s.scalar(select(Workspace.id).order_by(Workspace.created_at).limit(1))


def create_key(db: Database, workspace_id: str, name: str = "default") -> tuple[KeyInfo, str]:
    """Make a key; return its info and the key itself, which is never shown again."""
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    with db.write() as s:
        if s.get(Workspace, workspace_id) is None:
            raise NotFound(f"workspace {workspace_id} not found")
        row = ApiKey(
            workspace_id=workspace_id,
            name=name,
            prefix=key[: len(KEY_PREFIX) + 4],
            key_hash=hash_key(key),
        )
        s.add(row)
        s.flush()
        return _info(row), key


def list_keys(db: Database, workspace_id: str | None = None) -> list[KeyInfo]:
    with db.read() as s:
        q = select(ApiKey).order_by(ApiKey.created_at)
        if workspace_id:
            q = q.where(ApiKey.workspace_id == workspace_id)
        return [_info(k) for k in s.scalars(q)]


def revoke_key(db: Database, key_id: str) -> KeyInfo:
    """Revoke a key at once; raises NotFound for an unknown id."""
    with db.write() as s:
        row = s.get(ApiKey, key_id)
        if row is None:
            raise NotFound(f"API key {key_id} not found")
        if row.revoked_at is None:
            row.revoked_at = utcnow()
            mark(s, KEYS_REVOKED)  # empties this process's key caches once it commits
        return _info(row)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key and the workspace it belongs to."""

    workspace_id: str
    key_id: str
    #: Its last_used_at is older than LAST_USED_GRANULARITY: call :func:`touch_key`.
    stale: bool = False


# Built once: a fresh select() per request costs more than the query itself.
_BY_HASH = select(ApiKey.id, ApiKey.workspace_id, ApiKey.revoked_at, ApiKey.last_used_at).where(
    ApiKey.key_hash == bindparam("digest")
)


def _token(authorization: str | None) -> str:
    """The key of a ``Bearer`` Authorization header; AuthError if there is none."""
    if not authorization:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
    return token


def _lookup(db: Database, digest: str) -> tuple[Principal, datetime | None]:
    """The caller of the key with this hash and the key's last use; AuthError if the key
    is unknown or revoked."""
    # A Core connection, not an ORM session: a server runs this every few seconds per key.
    with db.read_engine.connect() as conn:
        row = conn.execute(_BY_HASH, {"digest": digest}).first()
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked API key")
    last_used: datetime | None = row.last_used_at
    stale = last_used is None or utcnow() - last_used > LAST_USED_GRANULARITY
    return Principal(str(row.workspace_id), str(row.id), stale), last_used


def authenticate(db: Database, authorization: str | None) -> Principal:
    """Return the caller of a ``Bearer`` key, read from the database; raise AuthError
    otherwise.  A server uses :meth:`KeyCache.authenticate` instead."""
    return _lookup(db, hash_key(_token(authorization)))[0]


@dataclass
class _Trusted:
    """A key the cache vouches for."""

    principal: Principal
    #: Until when (cache clock) the key is trusted without reading its row again.
    until: float
    #: When (cache clock) its last_used_at is next due for a refresh.
    touch_at: float


class KeyCache:
    """Authenticates keys, reading a key's row at most once every ``ttl`` seconds.

    Only keys that authenticated are kept (by hash), at most ``max_entries`` of them; a
    bad key is looked up every time.  :func:`revoke_key` on the same ``Database`` empties
    the cache as it commits, so a revocation made in this process holds at once; one made
    by another process holds within ``ttl`` seconds.  ``clock`` is monotonic seconds;
    tests inject a fake one.
    """

    def __init__(
        self,
        db: Database,
        ttl: float = KEY_CACHE_SECONDS,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.ttl = ttl
        self.max_entries = max(1, max_entries)
        self._clock = clock
        self._entries: dict[str, _Trusted] = {}
        # Bumped by clear(): a lookup that began before a revocation committed must not
        # put back what it read (a row that was not revoked yet).
        self._generation = 0
        self._lock = threading.Lock()
        db.flag_hooks.setdefault(KEYS_REVOKED, []).append(self.clear)

    def clear(self) -> None:
        """Forget every key: the next request of each reads its row again."""
        with self._lock:
            self._generation += 1
            self._entries.clear()

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller of a ``Bearer`` key; raise AuthError for a missing, malformed,
        unknown or revoked one.  ``stale`` is set at most once per LAST_USED_GRANULARITY
        per key: the caller then records the use (:func:`touch_key`)."""
        digest = hash_key(_token(authorization))
        now = self._clock()
        hit = self._entries.get(digest)
        if hit is not None and now < hit.until:
            if now < hit.touch_at:
                return hit.principal
            with self._lock:
                if now < hit.touch_at:  # another thread took this touch
                    return hit.principal
                hit.touch_at = now + LAST_USED_GRANULARITY.total_seconds()
            return Principal(hit.principal.workspace_id, hit.principal.key_id, stale=True)
        generation = self._generation
        try:
            principal, last_used = _lookup(self.db, digest)
        except AuthError:
            self._entries.pop(digest, None)
            raise
        granularity = LAST_USED_GRANULARITY.total_seconds()
        if principal.stale:  # the caller touches it now
            touch_at = now + granularity
        else:
            assert last_used is not None  # a fresh key has been used
            touch_at = now + granularity - (utcnow() - last_used).total_seconds()
        trusted = _Trusted(
            Principal(principal.workspace_id, principal.key_id), now + self.ttl, touch_at
        )
        with self._lock:
            if generation == self._generation:
                self._entries.pop(digest, None)  # re-inserted last: newest
                if len(self._entries) >= self.max_entries:
                    del self._entries[next(iter(self._entries))]  # the oldest entry
                self._entries[digest] = trusted
        return principal


def touch_key(db: Database, key_id: str) -> None:
    """Record that a key was used (at most every LAST_USED_GRANULARITY; never raises)."""
    try:
        with db.write() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
    except Exception:
        logger.warning("could not record the use of key %s", key_id, exc_info=True)
