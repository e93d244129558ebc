"""Values made on first use, keyed by what they are made from.

Decoding an image input is most of what a repeat run would pay, and when every node that
reads the pixels is served from the result cache nobody needs them.  So the image input
hands out a :class:`Lazy` image instead: its cache key is a hash of the source bytes
(cheap), and the executor makes the value only for a node that actually runs.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Lazy(Generic[T]):
    """A value made by ``make`` the first time :meth:`get` is called, then kept.

    ``key`` identifies the value before it exists: equal keys promise equal values (see
    :func:`flowy.engine.cache.source_key`).  Safe to share between threads; ``make`` runs
    at most once unless it raises, and each caller then sees the error.
    """

    __slots__ = ("_lock", "_make", "_value", "key")

    _value: T

    def __init__(self, key: str, make: Callable[[], T]) -> None:
        self.key = key
        self._make: Callable[[], T] | None = make
        self._lock = threading.Lock()

    def get(self) -> T:
        """The value, made now if it was not yet; raises what ``make`` raises."""
        with self._lock:
            make = self._make
            if make is not None:
                self._value = make()
                self._make = None  # lets go of the source (the image's file bytes)
        return self._value

    @property
    def made(self) -> bool:
        """Whether the value exists yet."""
        return self._make is None

    def __repr__(self) -> str:
        return f"Lazy({self.key[:12]}…, made={self.made})"


def resolve(value: object) -> object:
    """``value``, or what it stands for when it is :class:`Lazy`."""
    return value.get() if isinstance(value, Lazy) else value
