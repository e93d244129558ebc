"""Workspace secrets: provider keys and the like, encrypted at rest, never shown again.

Values are sealed with Fernet (AES-128-CBC + HMAC-SHA256) under a key derived with HKDF
from the server's secret, so a copy of the database alone reveals nothing.  The API
lists names only; nodes read values through :class:`WorkspaceSecrets` during a run.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import datetime

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import delete, select

from flowy.db.models import Secret, utcnow
from flowy.db.session import Database
from flowy.errors import Issue, NotFound, ValidationFailed

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")
MAX_VALUE = 16_384


@dataclass(frozen=True)
class SecretInfo:
    name: str
    created_at: datetime
    updated_at: datetime


def _fernet(server_secret: bytes) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"flowy workspace secrets"
    ).derive(server_secret)
    return Fernet(base64.urlsafe_b64encode(key))


class SecretService:
    def __init__(self, db: Database, server_secret: bytes) -> None:
        self.db = db
        self._fernet = _fernet(server_secret)

    def put(self, workspace_id: str, name: str, value: object) -> SecretInfo:
        """Create or replace a secret; ValidationFailed for a bad name or value."""
        issues = []
        if not NAME.fullmatch(name):
            issues.append(
                Issue(
                    "invalid_value",
                    "a secret name is letters, digits and _ "
                    "(at most 100), not starting with a digit",
                    field="name",
                )
            )
        if not isinstance(value, str) or not value or len(value) > MAX_VALUE:
            issues.append(
                Issue(
                    "invalid_value",
                    f"must be a non-empty string of at most {MAX_VALUE} characters",
                    field="value",
                )
            )
        if issues:
            raise ValidationFailed(issues)
        assert isinstance(value, str)
        sealed = self._fernet.encrypt(value.encode()).decode()
        now = utcnow()
        with self.db.write() as s:
            row = s.scalar(
                select(Secret).where(Secret.workspace_id == workspace_id, Secret.name == name)
            )
            if row is None:
                row = Secret(
                    workspace_id=workspace_id,
                    name=name,
                    ciphertext=sealed,
                    created_at=now,
                    updated_at=now,
                )
                s.add(row)
            else:
                row.ciphertext = sealed
                row.updated_at = now
            return SecretInfo(row.name, row.created_at, row.updated_at)

    def list(self, workspace_id: str) -> list[SecretInfo]:
        with self.db.read() as s:
            rows = s.scalars(
                select(Secret).where(Secret.workspace_id == workspace_id).order_by(Secret.name)
            )
            return [SecretInfo(r.name, r.created_at, r.updated_at) for r in rows]

    def delete(self, workspace_id: str, name: str) -> None:
        with self.db.write() as s:
            res = s.execute(
                delete(Secret).where(Secret.workspace_id == workspace_id, Secret.name == name)
            )
            if res.rowcount == 0:  # type: ignore[attr-defined]
                raise NotFound(f"secret {name} not found")

    def reveal(self, workspace_id: str, name: str) -> str | None:
        """The plain value, for nodes only; None when not set or not decryptable."""
        with self.db.read() as s:
            sealed = s.scalar(
                select(Secret.ciphertext).where(
                    Secret.workspace_id == workspace_id, Secret.name == name
                )
            )
        if sealed is None:
            return None
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            return None  # sealed under another server secret


class WorkspaceSecrets:
    """A :class:`~flowy.engine.spec.SecretSource` for one run, memoised per name."""

    def __init__(self, service: SecretService, workspace_id: str) -> None:
        self.service = service
        self.workspace_id = workspace_id
        self._seen: dict[str, str | None] = {}

    def get(self, name: str) -> str | None:
        if name not in self._seen:
            self._seen[name] = self.service.reveal(self.workspace_id, name)
        return self._seen[name]

    def __repr__(self) -> str:  # never print values
        return f"WorkspaceSecrets({self.workspace_id})"
