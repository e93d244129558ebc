"""The disk result cache: a faithful round trip, a bound, and survival across restarts."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image

from flowy.engine.spec import SKIP, Artifact
from flowy.storage.cache import DiskResultCache, decode_values, encode_values


def _key(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def _image(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


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
    assert back["image"].tobytes() == img.tobytes()  # type: ignore[union-attr]
    assert back["rgba"].mode == "RGBA"  # type: ignore[union-attr]
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
    again = DiskResultCache(tmp_path, max_bytes=1 << 20)  # a new process: memory is empty
    assert again.get(_key(2)) == {"text": "kept"}
    hit = again.get(_key(1))
    assert hit is not None and hit["image"].tobytes() == _image(3).tobytes()  # type: ignore[union-attr]
    (tmp_path / _key(2)[:2] / _key(2)).write_bytes(b"garbage")
    third = DiskResultCache(tmp_path, max_bytes=1 << 20)
    assert third.get(_key(2)) is None
    assert not (tmp_path / _key(2)[:2] / _key(2)).exists()


def test_the_cache_is_bounded_least_recently_used_first(tmp_path: Path) -> None:
    one = len(encode_values({"image": _image(0)}) or b"")
    cache = DiskResultCache(tmp_path, max_bytes=one * 5, memory_entries=1)
    for i in range(5):
        cache.put(_key(i), {"image": _image(i)})
    assert cache.get(_key(0)) is not None  # touch 0: now 1 is the oldest
    for i in range(5, 8):
        cache.put(_key(i), {"image": _image(i)})
    assert cache.total_bytes <= one * 5
    files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert _key(0) in files and _key(1) not in files and _key(7) in files
    assert len(files) == 5
