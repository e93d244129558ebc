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
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError

from flowy.db.models import IdempotencyKey, utcnow
from flowy.db.session import Database
from flowy.errors import Conflict, Issue, ValidationFailed

TTL = timedelta(hours=24)
MAX_KEY = 255


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

    def run_once(
        self, workspace_id: str, key: str, fingerprint: str, work: Callable[[], Answer]
    ) -> Answer:
        """Do ``work`` once per (workspace, key); replay its answer afterwards.

        Raises ValidationFailed (422) when the key was used with another request and
        Conflict (409) while the first request with the key is still running.
        """
        check_key(key)
        replay = self._reserve(workspace_id, key, fingerprint)
        if replay is not None:
            return replay
        try:
            answer = work()
        except BaseException:
            with self.db.write() as s:
                s.execute(
                    delete(IdempotencyKey).where(
                        IdempotencyKey.workspace_id == workspace_id, IdempotencyKey.key == key
                    )
                )
            raise
        with self.db.write() as s:
            row = s.get(IdempotencyKey, (workspace_id, key))
            if row is not None:
                row.state = "done"
                row.status_code = answer.status
                row.response = answer.body
        return answer

    def _reserve(self, workspace_id: str, key: str, fingerprint: str) -> Answer | None:
        now = utcnow()
        try:
            with self.db.write() as s:
                row = s.get(IdempotencyKey, (workspace_id, key))
                if row is not None and row.expires_at <= now:
                    s.delete(row)
                    s.flush()
                    row = None
                if row is None:
                    s.add(
                        IdempotencyKey(
                            workspace_id=workspace_id,
                            key=key,
                            request_hash=fingerprint,
                            state="pending",
                            created_at=now,
                            expires_at=now + TTL,
                        )
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
        except IntegrityError:
            # Another request reserved the key between our read and our insert.
            raise Conflict(
                "a request with this Idempotency-Key is still in progress; retry shortly"
            ) from None

    def purge(self) -> int:
        """Forget keys older than 24 hours."""
        with self.db.write() as s:
            res = s.execute(delete(IdempotencyKey).where(IdempotencyKey.expires_at <= utcnow()))
            return int(res.rowcount)  # type: ignore[attr-defined]
