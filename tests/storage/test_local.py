"""The local blob store: content-addressed files written whole, by their SHA-256."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from flowy.storage.local import LocalBlobStore, write_new


def test_a_blob_is_kept_under_its_hash_once(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = os.urandom(100_000)
    key = store.put(data)
    assert key == hashlib.sha256(data).hexdigest()
    assert store.get(key) == data
    assert store.put(data) == key  # already there: not written again
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert files == [tmp_path / key[:2] / key[2:4] / key]  # no temporary file is left
    assert store.local_path(key) == files[0]


def test_a_blob_whose_folder_was_removed_is_still_written(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    first = store.put(b"one")
    shutil.rmtree(tmp_path / first[:2])  # e.g. by an operator cleaning up
    assert store.put(b"one") == first
    assert store.get(first) == b"one"


def test_a_failed_write_leaves_neither_the_file_nor_its_temporary(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(_fd: int, _data: object) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space"):
        write_new(str(tmp_path / "blob"), [b"abc"])
    assert list(tmp_path.iterdir()) == []


def test_a_short_write_is_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.write

    def one_byte(fd: int, data: bytes) -> int:
        return real(fd, bytes(data[:1]))

    monkeypatch.setattr(os, "write", one_byte)
    write_new(str(tmp_path / "blob"), [b"hello, ", b"world"])
    assert (tmp_path / "blob").read_bytes() == b"hello, world"
