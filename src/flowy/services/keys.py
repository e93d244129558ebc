"""Workspaces and API keys.

A key is ``flowy_sk_`` + 32 random bytes (base64url).  The prefix lets secret scanners
find leaked keys.  Only its SHA-256 is stored: the key has 256 bits of entropy, so a fast
hash is as safe as a slow one here and keeps authentication to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update

from flowy.db.models import ApiKey, Workspace, utcnow
from flowy.db.session import Database
from flowy.errors import AuthError, NotFound

logger = logging.getLogger(__name__)

KEY_PREFIX = "flowy_sk_"
#: last_used_at is refreshed at most this often, so reads do not turn into writes.
LAST_USED_GRANULARITY = timedelta(minutes=5)


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
        return _info(row)


@dataclass(frozen=True)
class Principal:
    """Who is calling: the key and the workspace it belongs to."""

    workspace_id: str
    key_id: str
    #: Its last_used_at is older than LAST_USED_GRANULARITY: call :func:`touch_key`.
    stale: bool = False


def authenticate(db: Database, authorization: str | None) -> Principal:
    """Return the caller of a ``Bearer`` key; raise AuthError otherwise."""
    if not authorization:
        raise AuthError("missing API key: send 'Authorization: Bearer <key>'")
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise AuthError("malformed Authorization header: expected 'Bearer <key>'")
    digest = hash_key(token)
    # A Core connection, not an ORM session: this runs on every request.
    with db.read_engine.connect() as s:
        row = s.execute(
            select(ApiKey.id, ApiKey.workspace_id, ApiKey.revoked_at, ApiKey.last_used_at).where(
                ApiKey.key_hash == digest
            )
        ).first()
    if row is None or row.revoked_at is not None:
        raise AuthError("invalid or revoked API key")
    now = utcnow()
    stale = row.last_used_at is None or now - row.last_used_at > LAST_USED_GRANULARITY
    return Principal(str(row.workspace_id), str(row.id), stale)


def touch_key(db: Database, key_id: str) -> None:
    """Record that a key was used (at most every LAST_USED_GRANULARITY; never raises)."""
    try:
        with db.write() as s:
            s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
    except Exception:
        logger.warning("could not record the use of key %s", key_id, exc_info=True)
