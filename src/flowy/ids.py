"""Object ids: 24 lowercase hex characters, as in the public API documentation.

Like a MongoDB ObjectId, the first four bytes are the creation second, so ids sort
roughly by creation time (useful for cursors); the other eight are random.

The random bytes come from the operating system's CSPRNG (``os.urandom``) 4 KiB at a
time, per thread: one system call per 512 ids instead of one per id.  The call lets go
of the GIL, and on a busy API thread each let-go was a chance for another thread to take
the interpreter for a while.  A forked child starts with no bytes of its parent's.
"""

from __future__ import annotations

import os
import re
import threading
import time

ID_PATTERN = re.compile(r"^[0-9a-f]{24}$")

_CHUNK = 4096


class _Entropy(threading.local):
    data = b""
    at = 0


_entropy = _Entropy()


def _forget_after_fork() -> None:
    global _entropy
    _entropy = _Entropy()


os.register_at_fork(after_in_child=_forget_after_fork)


def _random8() -> bytes:
    e = _entropy
    at = e.at
    if at + 8 > len(e.data):
        e.data, at = os.urandom(_CHUNK), 0
    e.at = at + 8
    return e.data[at : at + 8]


def new_id() -> str:
    return f"{int(time.time()) & 0xFFFFFFFF:08x}{_random8().hex()}"


def is_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
