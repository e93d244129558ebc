"""Page cursors for newest-first lists: an opaque token holding (created_at, id)."""

from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime

from flowy.errors import Issue, ValidationFailed


def encode_cursor(at: datetime, id_: str) -> str:
    raw = json.dumps([at.astimezone(UTC).isoformat(), id_]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """The position a cursor stands for; ValidationFailed (field ``cursor``) for any
    string this API did not give out."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, id_ = json.loads(raw)
        when = datetime.fromisoformat(at)
        if when.tzinfo is None:
            raise ValueError("cursor time has no zone")
        return when.astimezone(UTC), str(id_)
    except (ValueError, TypeError, OverflowError, binascii.Error):
        raise ValidationFailed(
            [Issue("invalid_value", "not a cursor this API gave out", field="cursor")]
        ) from None
