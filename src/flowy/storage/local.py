"""Content-addressed blobs in a directory tree: ``ab/cd/abcd…`` by SHA-256."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Iterable
from pathlib import Path

_KEY = re.compile(r"^[0-9a-f]{64}$")
#: The prefix of files being written; a name no key has.
TMP_PREFIX = ".tmp-"


def write_new(path: str, parts: Iterable[bytes]) -> None:
    """Write ``parts`` to ``path`` whole or not at all: into a temporary file beside it,
    then renamed into place (a reader never sees half a file).  Plain ``os`` calls: a
    blob is written per run output, and ``tempfile`` and file objects cost several
    times the write of a small one."""
    tmp = f"{os.path.dirname(path)}/{TMP_PREFIX}{secrets.token_hex(8)}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            for part in parts:
                view = memoryview(part)
                while view:
                    view = view[os.write(fd, view) :]
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


class LocalBlobStore:
    """A :class:`~flowy.storage.base.BlobStore` on local disk.

    Writes go to a temporary file in the same directory and are renamed into place, so a
    reader never sees half a file and a crash never leaves one under a real key.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._base = str(root)
        self._dirs: set[str] = set()  # directories known to exist

    def _path(self, key: str) -> Path:
        if not _KEY.match(key):
            raise FileNotFoundError(key)
        return self.root / key[:2] / key[2:4] / key

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        folder = f"{self._base}/{key[:2]}/{key[2:4]}"
        path = f"{folder}/{key}"
        if os.path.exists(path):
            return key
        if folder not in self._dirs:
            os.makedirs(folder, exist_ok=True)
            self._dirs.add(folder)
        try:
            write_new(path, (data,))
        except FileNotFoundError:  # its directory was removed meanwhile
            os.makedirs(folder, exist_ok=True)
            write_new(path, (data,))
        return key

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def local_path(self, key: str) -> Path | None:
        path = self._path(key)
        return path if path.exists() else None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)
