"""Object ids: 24 lowercase hex characters, as in the public API documentation.

Like a MongoDB ObjectId, the first four bytes are the creation second, so ids sort
roughly by creation time (useful for cursors); the other eight are random.
"""

from __future__ import annotations

import re
import secrets
import time

ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")


def new_id() -> str:
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{secrets.token_hex(8)}"


def is_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
