"""The node result cache on local disk, with a small in-memory LRU in front.

Entries are content-addressed by the engine's cache key, so they survive restarts and
can be shared by workers on one disk.  The store is bounded: past ``max_bytes`` the least
recently used entries are deleted.  Values are written in a plain format (a JSON header
and raw bytes, under a CRC-32), never pickled: a cache file is data, not code, and a
damaged one reads as a miss.

Writing an entry (megabytes of pixels) costs a run more than computing many nodes, so
:meth:`DiskResultCache.put` only hands the values to a background writer.  Until the file
is in place a ``get`` answers from the values waiting to be written; when the writer
falls behind by more than ``max_pending_bytes`` the caller writes its entry itself, so
memory stays bounded and no entry is dropped.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path

from PIL import Image

from flowy.engine.cache import MemoryResultCache
from flowy.engine.spec import SKIP, Artifact
from flowy.storage.local import TMP_PREFIX, write_new

logger = logging.getLogger(__name__)

_KEY = re.compile(r"^[0-9a-f]{64}$")
_MAGIC = b"FLOWYC2\n"
# After the magic: the header's length and the CRC-32 of everything that follows.
_PREFIX = struct.Struct("<QI")
#: A temporary file older than this is left over from a writer that died.
_STALE_TMP_SECONDS = 600.0
#: How long the writer thread waits for more entries before it ends (an idle process
#: keeps no thread; a process exiting waits at most this long for it).
WRITER_LINGER_SECONDS = 0.5


def _parts(values: Mapping[str, object]) -> list[bytes] | None:
    """The pieces of an entry's file, in order; None when a value has no stable form."""
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
    crc = zlib.crc32(head)
    for blob in blobs:
        crc = zlib.crc32(blob, crc)
    return [_MAGIC + _PREFIX.pack(len(head), crc), head, *blobs]


def encode_values(values: Mapping[str, object]) -> bytes | None:
    """Serialize node outputs; None when a value has no stable form (never cached)."""
    parts = _parts(values)
    return None if parts is None else b"".join(parts)


def decode_values(data: bytes) -> dict[str, object]:
    """Inverse of :func:`encode_values`; ValueError for a damaged entry."""
    if not data.startswith(_MAGIC):
        raise ValueError("not a cache entry")
    start = len(_MAGIC) + _PREFIX.size
    if len(data) < start:
        raise ValueError("truncated cache entry")
    n, crc = _PREFIX.unpack_from(data, len(_MAGIC))
    rest = memoryview(data)[start:]
    if zlib.crc32(rest) != crc:
        raise ValueError("cache entry fails its checksum")
    try:
        return _decode_checked(rest, n)
    except ValueError:
        raise
    except Exception as exc:
        # The checksum passed, so this is a file from another version of this format:
        # whatever it trips (KeyError, TypeError, ...) still just means "not usable".
        raise ValueError(f"unreadable cache entry: {type(exc).__name__}: {exc}") from exc


def _decode_checked(rest: memoryview, n: int) -> dict[str, object]:
    header = json.loads(bytes(rest[:n]))
    if not isinstance(header, dict):
        raise ValueError("unreadable cache entry header")
    body = rest[n:]
    out: dict[str, object] = {}
    for port, h in header.items():
        kind = h["t"]
        if kind == "skip":
            out[port] = SKIP
        elif kind == "json":
            out[port] = h["v"]
        elif kind in ("image", "artifact"):
            raw = bytes(body[h["off"] : h["off"] + h["len"]])
            if len(raw) != h["len"]:
                raise ValueError("truncated cache entry")
            if kind == "image":
                out[port] = Image.frombytes(h["mode"], tuple(h["size"]), raw)
            else:
                out[port] = Artifact(raw, h["ct"], h["fn"])
        else:
            raise ValueError(f"unknown value kind {kind!r} in cache entry")
    return out


def _size_hint(values: Mapping[str, object]) -> int | None:
    """About how many bytes the entry of ``values`` takes, without encoding any pixels;
    None when a value has no stable form."""
    total = 0
    for value in values.values():
        if value is SKIP:
            continue
        if isinstance(value, Image.Image):
            total += value.width * value.height * len(value.getbands())
        elif isinstance(value, Artifact):
            total += len(value.data)
        else:
            try:
                total += len(json.dumps(value))
            except (TypeError, ValueError):
                return None
    return total


class DiskResultCache:
    """A bounded :class:`~flowy.engine.cache.ResultCache` in a directory.

    ``put`` returns at once and a background thread writes the entry (see the module's
    docstring); :meth:`flush` waits until every entry handed over is on disk.

    ``exclusive``: no other process writes to ``root`` (embedded mode, whose process
    holds its data directory's lock).  Then the entries this object knows are all there
    are, and a key it does not know is a miss without a look at the disk.
    """

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        memory_entries: int = 32,
        max_pending_bytes: int | None = None,
        min_seconds: float = 0.0,
    ) -> None:
        self.min_seconds = min_seconds
        self.exclusive = False
        #: Seconds the writer thread waits for more entries before it ends.
        self.linger = WRITER_LINGER_SECONDS
        self.root = root
        self.max_bytes = max_bytes
        self.memory = MemoryResultCache(memory_entries)
        #: How many bytes of entries may wait for the writer before ``put`` writes itself.
        self.max_pending_bytes = max_bytes // 4 if max_pending_bytes is None else max_pending_bytes
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()
        self._total = 0
        # Entries handed to the writer and not yet on disk: key -> (values, size hint).
        self._pending: OrderedDict[str, tuple[Mapping[str, object], int]] = OrderedDict()
        self._pending_bytes = 0
        self._writer: threading.Thread | None = None
        self._idle = threading.Condition(self._lock)  # nothing pending any more
        self._work = threading.Condition(self._lock)  # something to write, or closed
        self._closed = False
        root.mkdir(parents=True, exist_ok=True)
        self._scan()

    def _scan(self) -> None:
        entries = []
        stale = time.time() - _STALE_TMP_SECONDS
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                    if _KEY.match(name):
                        entries.append((st.st_mtime, name, st.st_size))
                    elif name.startswith(TMP_PREFIX) and st.st_mtime < stale:
                        os.unlink(path)  # a writer died mid-entry (the process was killed)
                except FileNotFoundError:
                    continue  # another process sharing the directory removed it
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
        with self._lock:
            queued = self._pending.get(key)
            unknown = queued is None and self.exclusive and key not in self._sizes
        if queued is not None:  # handed to the writer, not yet on disk
            self.memory.put(key, queued[0])
            return queued[0]
        if unknown:
            return None
        try:
            data = self._path(key).read_bytes()
            values = decode_values(data)
        except FileNotFoundError:
            return None
        except (ValueError, OSError):
            logger.warning("dropping damaged cache entry %s", key)
            self._forget(key)
            return None
        self._touch(key)
        self.memory.put(key, values)
        return values

    def put(self, key: str, values: Mapping[str, object]) -> None:
        if not _KEY.match(key):
            return
        size = _size_hint(values)
        if size is None or size > self.max_bytes // 4:
            return  # no stable form, or too big to be worth a quarter of the cache
        self.memory.put(key, values)
        with self._lock:
            if self._closed or key in self._pending:
                return  # shut down; or the same key, so the same content, is queued already
            if self._pending and self._pending_bytes + size > self.max_pending_bytes:
                behind = True
            else:
                behind = False
                self._pending[key] = (values, size)
                self._pending_bytes += size
                if self._writer is None:
                    # Not a daemon: at exit the interpreter waits for what is queued
                    # (at most max_pending_bytes), and the thread ends once it has been
                    # idle for ``linger`` seconds.
                    self._writer = threading.Thread(target=self._drain, name="flowy-cache-writer")
                    self._writer.start()
                else:
                    self._work.notify()
        if behind:
            # The writer is this far behind: write here rather than hold more in memory.
            self._write(key, values)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry handed to ``put`` is written; False on timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._pending, timeout)

    def close(self, timeout: float | None = 30.0) -> bool:
        """Write what is queued, then write no more (later puts stay in memory): call it
        when shutting down, before the data directory may go.  False on timeout."""
        with self._lock:
            self._closed = True
            self._work.notify()  # a writer waiting for more work ends now
        return self.flush(timeout)

    def _drain(self) -> None:
        """The writer thread: write pending entries oldest first; end once none came for
        ``linger`` seconds (a thread per burst of puts cost more than its writes)."""
        while True:
            with self._lock:
                if not self._pending and not self._closed:
                    self._work.wait(self.linger)
                if not self._pending:
                    self._writer = None
                    return
                key, (values, _size) = next(iter(self._pending.items()))
            try:
                self._write(key, values)
            except Exception:  # never let one entry stop the writer (and hang flush)
                logger.exception("could not write cache entry %s", key)
            finally:
                # Only now: until the file is in place, get() answers from _pending.
                with self._lock:
                    _values, size = self._pending.pop(key)
                    self._pending_bytes -= size
                    if not self._pending:
                        self._idle.notify_all()

    def _write(self, key: str, values: Mapping[str, object]) -> None:
        parts = _parts(values)
        if parts is None:
            return
        length = sum(len(p) for p in parts)
        if length > self.max_bytes // 4:
            return
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_new(str(path), parts)
        except OSError:
            logger.warning("could not write cache entry %s", key, exc_info=True)
            return
        with self._lock:
            self._total += length - self._sizes.pop(key, 0)
            self._sizes[key] = length
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
