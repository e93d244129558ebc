"""The node result cache on local disk, with a small in-memory LRU in front.

Entries are content-addressed by the engine's cache key, so they survive restarts and
can be shared by workers on one disk.  The store is bounded: past ``max_bytes`` the least
recently used entries are deleted.  Values are written in a plain format (a JSON header
and raw bytes), never pickled: a cache file is data, not code.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from flowy.engine.cache import MemoryResultCache
from flowy.engine.spec import SKIP, Artifact

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[0-9a-f]{64}$")
_MAGIC = b"FLOWYC1\n"


def encode_values(values: Mapping[str, object]) -> bytes | None:
    """Serialize node outputs; None when a value has no stable form (never cached)."""
    header: dict[str, dict[str, object]] = {}
    blobs: list[bytes] = []
    offset = 0
    for port, value in values.items():
        if value is SKIP:
            header[port] = {"t": "skip"}
            continue
        if isinstance(value, Image.Image):
            raw = value.tobytes()
            header[port] = {
                "t": "image",
                "mode": value.mode,
                "size": list(value.size),
                "off": offset,
                "len": len(raw),
            }
        elif isinstance(value, Artifact):
            raw = value.data
            header[port] = {
                "t": "artifact",
                "ct": value.content_type,
                "fn": value.filename,
                "off": offset,
                "len": len(raw),
            }
        else:
            try:
                header[port] = {"t": "json", "v": json.loads(json.dumps(value))}
            except (TypeError, ValueError):
                return None
            continue
        blobs.append(raw)
        offset += len(raw)
    head = json.dumps(header).encode()
    return _MAGIC + struct.pack("<Q", len(head)) + head + b"".join(blobs)


def decode_values(data: bytes) -> dict[str, object]:
    """Inverse of :func:`encode_values`; ValueError for a damaged entry."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a cache entry")
    (n,) = struct.unpack_from("<Q", data, len(_MAGIC))
    start = len(_MAGIC) + 8
    header = json.loads(data[start : start + n])
    body = memoryview(data)[start + n :]
    out: dict[str, object] = {}
    for port, h in header.items():
        kind = h["t"]
        if kind == "skip":
            out[port] = SKIP
        elif kind == "json":
            out[port] = h["v"]
        else:
            raw = bytes(body[h["off"] : h["off"] + h["len"]])
            if len(raw) != h["len"]:
                raise ValueError("truncated cache entry")
            if kind == "image":
                out[port] = Image.frombytes(h["mode"], tuple(h["size"]), raw)
            else:
                out[port] = Artifact(raw, h["ct"], h["fn"])
    return out


class DiskResultCache:
    """A bounded :class:`~flowy.engine.cache.ResultCache` in a directory."""

    def __init__(self, root: Path, max_bytes: int, memory_entries: int = 32) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.memory = MemoryResultCache(memory_entries)
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        root.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        entries = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if _KEY.match(name):
                    st = os.stat(os.path.join(dirpath, name))
                    entries.append((st.st_mtime, name, st.st_size))
        for _mtime, name, size in sorted(entries):
            self._sizes[name] = size
            self._total += size

    def _path(self, key: str) -> Path:
        return self.root / key[:2] / key

    def get(self, key: str) -> Mapping[str, object] | None:
        hit = self.memory.get(key)
        if hit is not None:
            self._touch(key)
            return hit
        if not _KEY.match(key):
            return None
        try:
            data = self._path(key).read_bytes()
            values = decode_values(data)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, OSError):
            logger.warning("dropping damaged cache entry %s", key)
            self._forget(key)
            return None
        self._touch(key)
        self.memory.put(key, values)
        return values

    def put(self, key: str, values: Mapping[str, object]) -> None:
        if not _KEY.match(key):
            return
        data = encode_values(values)
        if data is None or len(data) > self.max_bytes // 4:
            return  # no stable form, or too big to be worth a quarter of the cache
        self.memory.put(key, values)
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError:
            logger.warning("could not write cache entry %s", key, exc_info=True)
            return
        with self._lock:
            self._total += len(data) - self._sizes.pop(key, 0)
            self._sizes[key] = len(data)
            victims = []
            while self._total > self.max_bytes and self._sizes:
                victim, size = self._sizes.popitem(last=False)
                self._total -= size
                victims.append(victim)
        for victim in victims:
            self._path(victim).unlink(missing_ok=True)

    def _touch(self, key: str) -> None:
        with self._lock:
            if key in self._sizes:
                self._sizes.move_to_end(key)

    def _forget(self, key: str) -> None:
        with self._lock:
            self._total -= self._sizes.pop(key, 0)
        self._path(key).unlink(missing_ok=True)

    @property
    def total_bytes(self) -> int:
        return self._total
