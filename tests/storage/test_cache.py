"""The disk result cache: a faithful round trip, a bound, survival across restarts,
writes in the background, and damaged entries read as misses."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from flowy.engine.spec import SKIP, Artifact
from flowy.storage.cache import (
    WRITER_LINGER_SECONDS,
    DiskResultCache,
    decode_values,
    encode_values,
)


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def _image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


def _pixels(value: object) -> bytes:
    assert isinstance(value, Image.Image)
    return value.tobytes()


def test_round_trip_keeps_every_kind_of_value() -> None:
    img = _image(1)
    rgba = _image(2).convert("RGBA")
    values = {
        "image": img,
        "rgba": rgba,
        "file": Artifact(b"\x00\x01", "image/png", "a.png"),
        "text": "héllo",
        "n": 3.5,
        "flag": True,
        "list": [1, {"a": None}],
        "skip": SKIP,
    }
    data = encode_values(values)
    assert data is not None
    back = decode_values(data)
    assert _pixels(back["image"]) == img.tobytes()
    assert isinstance(back["rgba"], Image.Image) and back["rgba"].mode == "RGBA"
    assert back["file"] == Artifact(b"\x00\x01", "image/png", "a.png")
    assert back["skip"] is SKIP
    assert {k: back[k] for k in ("text", "n", "flag", "list")} == {
        "text": "héllo",
        "n": 3.5,
        "flag": True,
        "list": [1, {"a": None}],
    }


def test_values_without_a_stable_form_are_not_cached(tmp_path: Path) -> None:
    assert encode_values({"x": object()}) is None
    cache = DiskResultCache(tmp_path, max_bytes=1 << 20)
    cache.put(_key(1), {"x": object()})
    assert cache.get(_key(1)) is None
    cache.put("not-a-key", {"x": 1})
    assert cache.get("not-a-key") is None


def test_entries_survive_a_restart_and_damage_is_dropped(tmp_path: Path) -> None:
    cache = DiskResultCache(tmp_path, max_bytes=1 << 20)
    cache.put(_key(1), {"image": _image(3)})
    cache.put(_key(2), {"text": "kept"})
    assert cache.flush(timeout=10)
    again = DiskResultCache(tmp_path, max_bytes=1 << 20)  # a new process: memory is empty
    assert again.get(_key(2)) == {"text": "kept"}
    hit = again.get(_key(1))
    assert hit is not None and _pixels(hit["image"]) == _image(3).tobytes()
    (tmp_path / _key(2)[:2] / _key(2)).write_bytes(b"garbage")
    third = DiskResultCache(tmp_path, max_bytes=1 << 20)
    assert third.get(_key(2)) is None
    assert not (tmp_path / _key(2)[:2] / _key(2)).exists()


def test_an_exclusive_cache_answers_misses_from_what_it_knows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = DiskResultCache(tmp_path, max_bytes=1 << 20, memory_entries=1)
    cache.exclusive = True
    cache.put(_key(1), {"text": "one"})
    cache.put(_key(2), {"text": "two"})  # pushes key 1 out of memory
    assert cache.flush(timeout=10)
    # Another process's entry (a shared directory) is found only by a shared cache.
    other = DiskResultCache(tmp_path, max_bytes=1 << 20)
    other.put(_key(3), {"text": "three"})
    assert other.flush(timeout=10)
    reads: list[str] = []
    real = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        reads.append(path.name)
        return real(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    assert cache.get(_key(9)) is None and cache.get(_key(3)) is None
    assert reads == []  # misses: no look at the disk
    assert cache.get(_key(1)) == {"text": "one"}  # known: read from its file
    assert reads == [_key(1)]
    cache.exclusive = False
    assert cache.get(_key(3)) == {"text": "three"}


def test_the_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    one = len(encode_values({"image": _image(0)}) or b"")
    cache = DiskResultCache(tmp_path, max_bytes=one * 5, memory_entries=1)
    for i in range(5):
        cache.put(_key(i), {"image": _image(i)})
    assert cache.flush(timeout=10)
    assert cache.get(_key(0)) is not None  # touch 0: now 1 is the oldest
    for i in range(5, 8):
        cache.put(_key(i), {"image": _image(i)})
    assert cache.flush(timeout=10)
    assert cache.total_bytes <= one * 5
    files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert _key(0) in files and _key(1) not in files and _key(7) in files
    assert len(files) == 5


class GatedCache(DiskResultCache):
    """A disk cache whose writes wait for ``gate``: an entry stays "being written"."""

    def __init__(self, root: Path, **kw: Any) -> None:
        self.gate = threading.Event()
        self.writing: list[str] = []
        super().__init__(root, **kw)

    def _write(self, key: str, values: Mapping[str, object]) -> None:
        self.writing.append(key)
        if threading.current_thread().name == "flowy-cache-writer":
            self.gate.wait(10)
        super()._write(key, values)


def _file(root: Path, key: str) -> Path:
    return root / key[:2] / key


def test_put_returns_before_the_write_and_get_still_hits(tmp_path: Path) -> None:
    cache = GatedCache(tmp_path, max_bytes=1 << 24, memory_entries=1)
    cache.put(_key(1), {"image": _image(1)})
    cache.put(_key(2), {"text": "pushes 1 out of memory"})
    deadline = time.monotonic() + 10
    while not cache.writing and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not _file(tmp_path, _key(1)).exists()  # put returned; the writer is held
    hit = cache.get(_key(1))  # from the entries waiting to be written
    assert hit is not None and _pixels(hit["image"]) == _image(1).tobytes()
    assert not cache.flush(timeout=0.05)
    cache.gate.set()
    assert cache.flush(timeout=10)
    assert _file(tmp_path, _key(1)).exists() and _file(tmp_path, _key(2)).exists()
    fresh = DiskResultCache(tmp_path, max_bytes=1 << 24)  # another process sees them
    again = fresh.get(_key(1))
    assert again is not None and _pixels(again["image"]) == _image(1).tobytes()
    assert fresh.get(_key(2)) == {"text": "pushes 1 out of memory"}


def test_a_writer_far_behind_makes_put_write_itself(tmp_path: Path) -> None:
    one = len(encode_values({"image": _image(0)}) or b"")
    cache = GatedCache(tmp_path, max_bytes=1 << 24, max_pending_bytes=one + one // 2)
    cache.put(_key(1), {"image": _image(1)})  # the writer takes it, and is held
    cache.put(_key(2), {"image": _image(2)})  # past the bound: written by this call
    assert _file(tmp_path, _key(2)).exists() and not _file(tmp_path, _key(1)).exists()
    cache.gate.set()
    assert cache.flush(timeout=10)
    assert _file(tmp_path, _key(1)).exists()
    assert cache.total_bytes == 2 * one


def test_one_writer_thread_serves_a_stream_of_puts_then_ends(tmp_path: Path) -> None:
    """The writer waits a moment for more entries instead of ending after each burst (a
    thread per burst cost more than its writes); idle past the linger, it ends."""
    cache = DiskResultCache(tmp_path, max_bytes=1 << 24)
    cache.put(_key(1), {"text": "one"})
    assert cache.flush(timeout=10)
    writer = cache._writer
    assert writer is not None and writer.is_alive()
    cache.put(_key(2), {"text": "two"})
    assert cache.flush(timeout=10)
    assert cache._writer is writer and _file(tmp_path, _key(2)).exists()
    writer.join(timeout=WRITER_LINGER_SECONDS + 10)
    assert not writer.is_alive() and cache._writer is None
    cache.linger = 3600.0  # from now on only close() can end the writer
    cache.put(_key(3), {"text": "three"})  # a new writer for a new burst
    assert cache.flush(timeout=10) and _file(tmp_path, _key(3)).exists()
    lingering = cache._writer
    assert lingering is not None and lingering is not writer
    assert cache.close(timeout=10)
    lingering.join(timeout=30)
    assert not lingering.is_alive()  # close() woke it


def _damaged_forms(good: bytes) -> dict[str, bytes]:
    head_at = len(b"FLOWYC2\n") + 12
    flipped = bytearray(good)
    flipped[-10] ^= 0x01  # one bit of one pixel
    list_header = json.dumps(["not", "a", "dict"]).encode()
    unknown_kind = json.dumps({"x": {"t": "pickle", "v": 1}}).encode()
    bad_mode = json.dumps({"x": {"t": "image", "mode": "??", "size": [2, 2], "off": 0, "len": 4}})

    def framed(head: bytes, body: bytes = b"") -> bytes:
        crc = zlib.crc32(body, zlib.crc32(head))
        return b"FLOWYC2\n" + struct.pack("<QI", len(head), crc) + head + body

    return {
        "garbage": b"garbage",
        "empty": b"",
        "only the magic": b"FLOWYC2\n",
        "cut short": good[: len(good) // 2],
        "a flipped pixel bit": bytes(flipped),
        "the previous format": b"FLOWYC1\n" + good[head_at:],
        "a header that is a list": framed(list_header),
        "an unknown kind": framed(unknown_kind),
        "an impossible image": framed(bad_mode.encode(), b"\x00" * 4),
        "a header longer than the file": b"FLOWYC2\n" + struct.pack("<QI", 1 << 40, 0),
    }


def test_every_kind_of_damage_is_a_miss_and_is_removed(tmp_path: Path) -> None:
    good = encode_values({"image": _image(5), "text": "t"})
    assert good is not None
    for name, data in _damaged_forms(good).items():
        with pytest.raises(ValueError):
            decode_values(data)
        root = tmp_path / name.replace(" ", "-")
        _file(root, _key(1)).parent.mkdir(parents=True)
        _file(root, _key(1)).write_bytes(data)
        cache = DiskResultCache(root, max_bytes=1 << 24)
        assert cache.get(_key(1)) is None, name
        assert not _file(root, _key(1)).exists(), name
        assert cache.total_bytes == 0, name
        cache.put(_key(1), {"text": "rewritten"})  # and the key can be stored again
        assert cache.flush(timeout=10)
        assert DiskResultCache(root, max_bytes=1 << 24).get(_key(1)) == {"text": "rewritten"}


def test_left_over_temporary_files_are_removed_at_start(tmp_path: Path) -> None:
    (tmp_path / "ab").mkdir()
    old, new = tmp_path / "ab" / ".tmp-dead", tmp_path / "ab" / ".tmp-being-written"
    old.write_bytes(b"x" * 100)
    new.write_bytes(b"y" * 100)
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    cache = DiskResultCache(tmp_path, max_bytes=1 << 20)
    assert not old.exists() and new.exists()  # another process may still be writing it
    assert cache.total_bytes == 0


def test_close_writes_what_is_queued_and_then_nothing(tmp_path: Path) -> None:
    cache = GatedCache(tmp_path, max_bytes=1 << 24)
    cache.put(_key(1), {"image": _image(1)})
    threading.Timer(0.05, cache.gate.set).start()
    assert cache.close(timeout=10)
    assert _file(tmp_path, _key(1)).exists()
    cache.put(_key(2), {"text": "after close"})
    assert cache.get(_key(2)) == {"text": "after close"}  # still served from memory
    assert cache.flush(timeout=10) and not _file(tmp_path, _key(2)).exists()
