"""``Idempotency-Key``: the same key and request within 24 h replay the first answer.

The key is reserved (a ``pending`` row, committed) before the request does its work, so a
concurrent duplicate finds it and is told so (409) instead of doing the work twice; the
answer is stored when the work is done.  A request that fails releases its key: nothing
was created, so a retry may try again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from flowy.db.models import IdempotencyKey, utcnow
from flowy.db.prepared import Prepared
from flowy.db.session import Database
from flowy.errors import Conflict, Issue, ValidationFailed

TTL = timedelta(hours=24)
MAX_KEY = 255

# Every request with a key makes three short write transactions (reserve, then store or
# release); as prepared statements they cost a fraction of the ORM's get/add/flush.
_KEYS = cast(Table, IdempotencyKey.__table__)
_THIS_KEY = (_KEYS.c.workspace_id == bindparam("p_workspace_id")) & (
    _KEYS.c.key == bindparam("p_key")
)
_READ = Prepared(
    select(
        _KEYS.c.request_hash,
        _KEYS.c.state,
        _KEYS.c.status_code,
        _KEYS.c.response,
        _KEYS.c.expires_at,
    ).where(_THIS_KEY)
)
_RESERVE = Prepared(
    insert(_KEYS),
    ["workspace_id", "key", "request_hash", "state", "created_at", "expires_at"],
)
_STORE = Prepared(
    update(_KEYS)
    .where(_THIS_KEY)
    .values(
        state="done",
        status_code=bindparam("p_status_code"),
        response=bindparam("p_response", type_=_KEYS.c.response.type),
    )
)
_RELEASE = Prepared(delete(_KEYS).where(_THIS_KEY))


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def request_hash(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def check_key(key: str) -> None:
    if not 1 <= len(key) <= MAX_KEY or not key.isprintable():
        raise ValidationFailed(
            [
                Issue(
                    "invalid_value",
                    f"must be 1 to {MAX_KEY} printable characters",
                    field="header.idempotency-key",
                )
            ]
        )


class IdempotencyStore:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Prepared statements run on the driver's cursor: a duplicate key raises the
        # driver's own IntegrityError, not SQLAlchemy's wrapper of it.
        driver = db.write_engine.dialect.dbapi
        self._duplicate: tuple[type[Exception], ...] = (
            IntegrityError,
            getattr(driver, "IntegrityError", IntegrityError),
        )

    def run_once(
        self, workspace_id: str, key: str, fingerprint: str, work: Callable[[], Answer]
    ) -> Answer:
        """Do ``work`` once per (workspace, key); replay its answer afterwards.

        Raises ValidationFailed (422) when the key was used with another request and
        Conflict (409) while the first request with the key is still running.
        """
        check_key(key)
        this = {"p_workspace_id": workspace_id, "p_key": key}
        replay = self._reserve(workspace_id, key, fingerprint)
        if replay is not None:
            return replay
        try:
            answer = work()
        except BaseException:
            with self.db.write() as s:
                _RELEASE.execute(s, this)
            raise
        with self.db.write() as s:
            _STORE.execute(s, {**this, "p_status_code": answer.status, "p_response": answer.body})
        return answer

    def _reserve(self, workspace_id: str, key: str, fingerprint: str) -> Answer | None:
        now = utcnow()
        this = {"p_workspace_id": workspace_id, "p_key": key}
        try:
            with self.db.write() as s:
                row = _READ.execute(s, this).first()
                if row is not None and row.expires_at <= now:
                    _RELEASE.execute(s, this)
                    row = None
                if row is None:
                    _RESERVE.execute(
                        s,
                        {
                            "workspace_id": workspace_id,
                            "key": key,
                            "request_hash": fingerprint,
                            "state": "pending",
                            "created_at": now,
                            "expires_at": now + TTL,
                        },
                    )
                    return None
                if row.request_hash != fingerprint:
                    raise ValidationFailed(
                        [
                            Issue(
                                "idempotency_key_reused",
                                "this Idempotency-Key was used with a "
                                "different request in the last 24 hours; use a new key",
                                field="header.idempotency-key",
                            )
                        ]
                    )
                if row.state != "done" or row.response is None or row.status_code is None:
                    raise Conflict(
                        "a request with this Idempotency-Key is still in progress; retry shortly"
                    )
                return Answer(row.status_code, row.response, replayed=True)
        except self._duplicate:
            # Another request reserved the key between our read and our insert.
            raise Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly"
            ) from None

    def purge(self) -> int:
        """Forget keys older than 24 hours."""
        with self.db.write() as s:
            res = s.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
            return int(res.rowcount)  # type: ignore[attr-defined]
