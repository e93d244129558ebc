"""Where stored files live.  Embedded mode keeps them on local disk; scaled mode will put
them in an S3-compatible bucket behind the same small interface."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol


class BlobStore(Protocol):
    """Content-addressed bytes: the key of a blob is the SHA-256 of its content."""

    def put(self, data: bytes) -> str:
        """Store ``data`` (once, however often it is put) and return its key."""
        ...

    def get(self, key: str) -> bytes:
        """Return the bytes under ``key``; raise FileNotFoundError if there are none."""
        ...

    def local_path(self, key: str) -> Path | None:
        """A file path to serve the blob from, when the store is a local disk."""
        ...

    def delete(self, key: str) -> None: ...
