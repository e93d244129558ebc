"""Content keys and the result cache of deterministic nodes.

As in ComfyUI, a node's key is a hash of its type and version, its canonical params, the
caller's value for input nodes, and the keys of the upstream results it consumes.  The
outputs of a node that is not deterministic (a fetched file) are keyed by their content,
so a downstream node is reused exactly when what it would compute is the same.  A value
made from source bytes by a fixed, versioned function (an image decoded from its file) is
keyed by those bytes instead (:func:`source_key`), which costs a hash of the file rather
than the decoding and a hash of the pixels.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Protocol

from PIL import Image
from pydantic import BaseModel

from flowy.engine.lazy import Lazy
from flowy.engine.spec import SKIP, Artifact


class ResultCache(Protocol):
    """Stores node results by key.  ``get`` answers None on a miss; ``put`` may decline
    values it cannot store and never raises.

    ``min_seconds``: results that took less than this to compute are not offered to
    ``put`` (the executor times each node, by its thread's CPU time or, for work done
    elsewhere, ten times this in all: see ``executor.worth_keeping``): storing and
    finding them again would cost more than computing them again.
    """

    min_seconds: float

    def get(self, key: str) -> Mapping[str, object] | None: ...

    def put(self, key: str, values: Mapping[str, object]) -> None: ...


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little"))
        h.update(p)
    return h.hexdigest()


def cache_key(
    node_type: str,
    version: str,
    params: BaseModel | str,
    input_value: object,
    upstream: Iterable[tuple[str, str]],
) -> str:
    """The key of a deterministic node's result.  ``params``: the node's params, or their
    canonical JSON (``BoundNode.params_json``), which gives the same key."""
    if isinstance(params, BaseModel):
        params = json.dumps(params.model_dump(mode="json"), sort_keys=True, default=repr)
    # The text json.dumps(doc, sort_keys=True, default=repr) gives for the list
    # [node_type, version, params, input_value, sorted(upstream)], with the params'
    # part made once per node rather than once per run.
    doc = ", ".join(
        (
            json.dumps(node_type),
            json.dumps(version),
            params,
            json.dumps(input_value, sort_keys=True, default=repr),
            json.dumps(sorted(upstream)),
        )
    )
    return _digest(b"node", f"[{doc}]".encode())


def port_key(node_key: str, port: str) -> str:
    return _digest(b"port", node_key.encode(), port.encode())


def source_key(maker: str, data: bytes) -> str:
    """The key of the value that ``maker`` makes from ``data``.

    ``maker`` names the function and its version (``"image:<decoder version>"``): equal
    bytes through the same maker give equal values, so the key stands for the value
    before it is made.  Any change to the bytes, one pixel of a PNG, changes the key.
    """
    return _digest(b"source", maker.encode(), data)


def value_key(value: object) -> str:
    """A key for a value from its content (for outputs of non-deterministic nodes)."""
    if value is SKIP:
        return "skip"
    if isinstance(value, Lazy):
        return value.key
    if isinstance(value, Image.Image):
        return _digest(b"image", value.mode.encode(), repr(value.size).encode(), value.tobytes())
    if isinstance(value, Artifact):
        return _digest(
            b"artifact", value.content_type.encode(), value.filename.encode(), value.data
        )
    try:
        return _digest(b"json", json.dumps(value, sort_keys=True).encode())
    except (TypeError, ValueError):
        return uuid.uuid4().hex  # not comparable: never matches, so never reused


def content_key(values: Mapping[str, object]) -> dict[str, str]:
    return {port: value_key(v) for port, v in values.items()}


class MemoryResultCache:
    """A bounded in-memory LRU; used in tests and in front of the disk cache."""

    def __init__(self, max_entries: int = 128, min_seconds: float = 0.0) -> None:
        self.max_entries = max_entries
        self.min_seconds = min_seconds
        self._items: OrderedDict[str, Mapping[str, object]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> Mapping[str, object] | None:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: str, values: Mapping[str, object]) -> None:
        with self._lock:
            self._items[key] = dict(values)
            self._items.move_to_end(key)
            while len(self._items) > self.max_entries:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
