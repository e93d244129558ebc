"""Cache keys and lazily decoded image inputs, seen from runs of real nodes."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from pydantic import BaseModel

import flowy.nodes.io as io_nodes
from flowy.engine.cache import (
    MemoryResultCache,
    ResultCache,
    cache_key,
    source_key,
    value_key,
)
from flowy.engine.executor import RunFailed, RunRequest, WorkflowExecutor, worth_keeping
from flowy.engine.graph import Workflow, parse_workflow
from flowy.engine.lazy import Lazy
from flowy.engine.registry import default_registry
from flowy.engine.spec import Artifact, NodeContext, Port, node
from flowy.errors import MediaError
from flowy.media.decode import encode_image, load_image
from flowy.storage.cache import DiskResultCache


def _png(seed: int = 0, size: int = 48) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _one_pixel_off(png: bytes) -> bytes:
    img = Image.open(io.BytesIO(png)).convert("RGB")
    r, g, b = img.getpixel((3, 4))  # type: ignore[misc]
    img.putpixel((3, 4), ((r + 1) % 256, g, b))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


class Media:
    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def read(self, value: str) -> bytes:
        if value not in self.files:
            raise MediaError(f"no such file {value}")
        return self.files[value]


class Sink:
    def __init__(self) -> None:
        self.cached: set[str] = set()
        self.finished: set[str] = set()

    def node_started(self, node_id: str) -> None:
        pass

    def node_progress(self, node_id: str, fraction: float) -> None:
        pass

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None:
        self.finished.add(node_id)
        if cached:
            self.cached.add(node_id)

    def node_skipped(self, node_id: str) -> None:
        pass

    def node_log(self, node_id: str, message: str) -> None:
        pass

    def tick(self) -> None:
        pass


def _wire(node: str, port: str = "image") -> dict[str, str]:
    return {"node": node, "port": port}


#: One photo read by two nodes, each feeding an image output.
WORKFLOW = {
    "nodes": [
        {"id": "photo", "type": "input.image_url", "params": {"required": True}},
        {"id": "grey", "type": "image.grayscale", "inputs": {"image": _wire("photo")}},
        {
            "id": "flip",
            "type": "image.flip",
            "params": {"direction": "vertical"},
            "inputs": {"image": _wire("photo")},
        },
        {"id": "out_grey", "type": "output.image", "inputs": {"image": _wire("grey")}},
        {"id": "out_flip", "type": "output.image", "inputs": {"image": _wire("flip")}},
    ]
}
DOWNSTREAM = {"grey", "flip", "out_grey", "out_flip"}


@pytest.fixture(scope="module")
def workflow() -> Workflow:
    return parse_workflow(WORKFLOW, default_registry(load_entry_points=False))


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    p = ThreadPoolExecutor(max_workers=4, thread_name_prefix="test-node")
    yield p
    p.shutdown(wait=True)


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """How often the image input's decoder and the image output's encoder ran."""
    counts = {"decode": 0, "encode": 0}

    def counting(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return fn(*args, **kwargs)

        return wrapper

    monkeypatch.setattr(io_nodes, "_decode", counting("decode", load_image))
    monkeypatch.setattr(io_nodes, "encode_image", counting("encode", encode_image))
    return counts


def _run(
    pool: ThreadPoolExecutor,
    workflow: Workflow,
    files: dict[str, bytes],
    url: str,
    cache: ResultCache | None,
    max_pixels: int = 64_000_000,
) -> tuple[dict[str, object], Sink]:
    sink = Sink()
    request = RunRequest("run_1", {"photo": url}, Media(files), max_pixels=max_pixels, cache=cache)
    return WorkflowExecutor(pool).execute(workflow, request, sink), sink


def _pixels(out: object) -> bytes:
    assert isinstance(out, Artifact)
    return Image.open(io.BytesIO(out.data)).tobytes()


# --------------------------------------------------------------------------- repeat runs


def test_a_repeat_run_neither_decodes_nor_encodes(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int]
) -> None:
    files = {"a": _png(1)}
    cache = MemoryResultCache()
    first, sink = _run(pool, workflow, files, "a", cache)
    assert calls == {"decode": 1, "encode": 2}  # two readers, one decode
    assert not sink.cached
    second, sink = _run(pool, workflow, files, "a", cache)
    assert sink.cached == DOWNSTREAM
    assert calls == {"decode": 1, "encode": 2}  # nothing decoded or encoded again
    assert second == first


def test_results_faster_than_the_cache_threshold_are_not_kept(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int]
) -> None:
    files = {"a": _png(1)}
    # Every node of this small workflow takes well under a minute: nothing is kept, so
    # the repeat run computes everything again.
    cache = MemoryResultCache(min_seconds=60.0)
    first, _ = _run(pool, workflow, files, "a", cache)
    second, sink = _run(pool, workflow, files, "a", cache)
    assert not sink.cached
    assert calls == {"decode": 2, "encode": 4}
    assert second == first
    assert cache.get("any") is None and not cache._items


def test_one_pixel_different_upload_misses(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int]
) -> None:
    png = _png(2)
    files = {"a": png, "b": _one_pixel_off(png)}
    cache = MemoryResultCache()
    first, _ = _run(pool, workflow, files, "a", cache)
    second, sink = _run(pool, workflow, files, "b", cache)
    assert not sink.cached
    assert calls["decode"] == 2
    for out in ("out_grey", "out_flip"):
        assert _pixels(second[out]) != _pixels(first[out])


def test_the_same_bytes_under_another_url_hit(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int]
) -> None:
    png = _png(3)
    files = {"https://a.test/me.png": png, "data:image/png;base64,x": png}
    cache = MemoryResultCache()
    first, _ = _run(pool, workflow, files, "https://a.test/me.png", cache)
    second, sink = _run(pool, workflow, files, "data:image/png;base64,x", cache)
    assert sink.cached == DOWNSTREAM and calls["decode"] == 1
    assert second == first


def test_a_repeat_run_hits_the_disk_after_a_restart(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int], tmp_path: Path
) -> None:
    files = {"a": _png(4)}
    cache = DiskResultCache(tmp_path, max_bytes=1 << 26)
    first, _ = _run(pool, workflow, files, "a", cache)
    assert cache.flush(timeout=10)
    restarted = DiskResultCache(tmp_path, max_bytes=1 << 26)  # nothing in memory
    second, sink = _run(pool, workflow, files, "a", restarted)
    assert sink.cached == DOWNSTREAM and calls == {"decode": 1, "encode": 2}
    assert second == first


def test_without_a_cache_the_image_is_decoded_for_its_readers(
    pool: ThreadPoolExecutor, workflow: Workflow, calls: dict[str, int]
) -> None:
    png = _png(5)
    out, _ = _run(pool, workflow, {"a": png}, "a", None)
    src = Image.open(io.BytesIO(png)).convert("RGB")
    assert _pixels(out["out_flip"]) == src.transpose(Image.Transpose.FLIP_TOP_BOTTOM).tobytes()
    assert calls["decode"] == 1


# --------------------------------------------------------------------------- bad images


def test_what_is_not_an_image_fails_at_the_input_node(
    pool: ThreadPoolExecutor, workflow: Workflow
) -> None:
    with pytest.raises(RunFailed) as caught:
        _run(pool, workflow, {"a": b"just some text"}, "a", MemoryResultCache())
    assert caught.value.node_id == "photo"
    assert "not a decodable image" in caught.value.error


def test_a_too_large_image_fails_at_the_input_node_even_when_cached(
    pool: ThreadPoolExecutor, workflow: Workflow
) -> None:
    files = {"a": _png(6, size=48)}
    cache = MemoryResultCache()
    _run(pool, workflow, files, "a", cache)
    with pytest.raises(RunFailed) as caught:
        _run(pool, workflow, files, "a", cache, max_pixels=48 * 47)
    assert caught.value.node_id == "photo" and "image is too large" in caught.value.error


def test_damaged_pixel_data_fails_in_the_reader_naming_the_input(
    pool: ThreadPoolExecutor, workflow: Workflow
) -> None:
    png = _png(7, size=200)
    cut = png[: len(png) // 2]  # the header is whole, the pixel data is not
    with pytest.raises(RunFailed) as caught:
        _run(pool, workflow, {"a": cut}, "a", MemoryResultCache())
    assert caught.value.node_id in ("grey", "flip")
    assert "not a decodable image" in caught.value.error
    assert "(the image of input photo)" in caught.value.error


# --------------------------------------------------------------------------- keys


def test_source_keys_follow_every_byte_and_the_maker() -> None:
    png = _png(8)
    assert source_key("image:1", png) == source_key("image:1", bytes(png))
    assert source_key("image:1", png) != source_key("image:1", _one_pixel_off(png))
    assert source_key("image:1", png) != source_key("image:2", png)


def test_a_lazy_value_is_keyed_without_being_made_and_made_once() -> None:
    made: list[int] = []
    gate = threading.Event()

    def make() -> str:
        gate.wait(5)
        made.append(1)
        return "value"

    lazy = Lazy("k" * 64, make)
    assert value_key(lazy) == "k" * 64 and not lazy.made
    got: list[str] = []
    readers = [threading.Thread(target=lambda: got.append(lazy.get())) for _ in range(4)]
    for t in readers:
        t.start()
    gate.set()
    for t in readers:
        t.join(5)
    assert got == ["value"] * 4 and made == [1] and lazy.made


def test_a_lazy_value_that_fails_raises_for_each_reader() -> None:
    def make() -> str:
        raise MediaError("broken")

    lazy = Lazy("k" * 64, make)
    for _ in range(2):
        with pytest.raises(MediaError, match="broken"):
            lazy.get()
    assert not lazy.made


def test_a_nodes_params_json_gives_the_key_its_params_give(workflow: Workflow) -> None:
    """The executor keys nodes by their params' JSON, made once per loaded workflow; the
    key is the one the params themselves give, and it follows every part of the key."""
    for b in workflow.nodes.values():
        upstream = [("image", "k1"), ("a", "k0")]
        for value in (None, "data:x", {"b": [1, {"d": 2, "c": 1}]}, 2.5):
            key = cache_key(b.type.type, b.type.version, b.params_json, value, upstream)
            assert key == cache_key(b.type.type, b.type.version, b.params, value, upstream)
        base = cache_key(b.type.type, b.type.version, b.params_json, None, upstream)
        assert base != cache_key(b.type.type, b.type.version, b.params_json, 1, upstream)
        assert base != cache_key(b.type.type, "other", b.params_json, None, upstream)
        assert base != cache_key(b.type.type, b.type.version, b.params_json, None, upstream[:1])


def test_a_result_is_kept_for_its_cpu_or_its_long_wait_not_for_a_short_wait() -> None:
    """A node is worth caching when its own thread worked on it for the threshold, or
    when it took ten times the threshold in all (a subprocess, native threads); a short
    wait, such as for the GIL on a busy server, does not make a cheap node worth it."""
    assert worth_keeping(wall=0.0031, cpu=0.003, min_seconds=0.002)  # its own work
    assert worth_keeping(wall=0.5, cpu=0.0001, min_seconds=0.002)  # work done elsewhere
    assert not worth_keeping(wall=0.008, cpu=0.0004, min_seconds=0.002)  # waited, cheap
    assert worth_keeping(wall=0.0, cpu=0.0, min_seconds=0.0)  # no threshold: all kept


@pytest.mark.parametrize(("nap", "kept"), [(0.005, False), (0.2, True)])
def test_the_executor_keeps_by_cpu_time_or_a_long_wait(
    pool: ThreadPoolExecutor, nap: float, kept: bool
) -> None:
    registry = default_registry(load_entry_points=False)
    registry.register(_napper)
    flow = parse_workflow(
        {
            "nodes": [
                {"id": "t", "type": "input.text", "params": {"required": True}},
                {
                    "id": "nap",
                    "type": "test.nap",
                    "params": {"seconds": nap},
                    "inputs": {"text": {"node": "t", "port": "text"}},
                },
                {
                    "id": "out",
                    "type": "output.text",
                    "inputs": {"text": {"node": "nap", "port": "text"}},
                },
            ]
        },
        registry,
    )
    cache = MemoryResultCache(min_seconds=0.005)
    request = RunRequest("run_1", {"t": "hi"}, Media({}), max_pixels=1, cache=cache)
    WorkflowExecutor(pool).execute(flow, request, Sink())
    # The nap costs no CPU: 5 ms of it is a wait like any other; 200 ms, over ten times
    # the threshold, is work done elsewhere, and kept.
    assert (len(cache) > 0) is kept


class NapParams(BaseModel):
    seconds: float


@node(
    "test.nap",
    title="Nap",
    category="test",
    params=NapParams,
    inputs={"text": Port("text")},
    outputs={"text": Port("text")},
)
def _napper(ctx: NodeContext, params: NapParams, text: str) -> dict[str, object]:
    """Sleeps (no CPU), then gives its text back."""
    time.sleep(params.seconds)
    return {"text": text}
