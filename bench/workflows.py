"""Workflows the rows run, and the bench's own node types (no-ops and a start probe)."""

from __future__ import annotations

import json
import threading
import time
from importlib import resources
from typing import Any

from pydantic import BaseModel

from flowy.engine.registry import NodeRegistry, default_registry
from flowy.engine.spec import NodeContext, NodeType, Port, node

Doc = dict[str, Any]


def _wire(node_id: str, port: str) -> dict[str, str]:
    return {"node": node_id, "port": port}


def echo() -> Doc:
    """input.text -> output.text: the least a run can do."""
    return {
        "nodes": [
            {"id": "node_1", "type": "input.text", "params": {"required": True}},
            {"id": "node_2", "type": "output.text", "inputs": {"text": _wire("node_1", "text")}},
        ]
    }


def resize(width: int, height: int) -> Doc:
    """ComfyUI's image pipeline: load image -> Lanczos resize -> PNG."""
    return {
        "nodes": [
            {"id": "node_1", "type": "input.image_url", "params": {"required": True}},
            {
                "id": "node_2",
                "type": "image.resize",
                "params": {"width": width, "height": height, "method": "lanczos"},
                "inputs": {"image": _wire("node_1", "image")},
            },
            {
                "id": "node_3",
                "type": "output.image",
                "params": {"format": "png"},
                "inputs": {"image": _wire("node_2", "image")},
            },
        ]
    }


def delays(*seconds: float) -> Doc:
    """input.text -> util.delay ... -> output.text (events over time, for the SSE row)."""
    nodes: list[Doc] = [{"id": "node_1", "type": "input.text", "params": {"required": True}}]
    prev = ("node_1", "text")
    for i, s in enumerate(seconds, start=2):
        nodes.append(
            {
                "id": f"node_{i}",
                "type": "util.delay",
                "params": {"seconds": s},
                "inputs": {"value": _wire(*prev)},
            }
        )
        prev = (f"node_{i}", "value")
    nodes.append({"id": "node_99", "type": "output.text", "inputs": {"text": _wire(*prev)}})
    return {"nodes": nodes}


def headshot() -> Doc:
    """The shipped example app (its whole document: title, workflow, ...)."""
    text = (resources.files("flowy") / "examples" / "headshot.json").read_text()
    doc: Doc = json.loads(text)
    return doc


# --------------------------------------------------------------------------- bench nodes

#: perf_counter() at which the probe node of each run started, by run id.
PROBE_STARTS: dict[str, float] = {}
_probe_lock = threading.Lock()


@node(
    "bench.probe",
    title="Start probe",
    category="bench",
    outputs={"value": Port("json")},
    deterministic=False,  # never served from the cache: it must run to be timed
)
def probe(ctx: NodeContext, params: BaseModel) -> dict[str, object]:
    """Records when it starts."""
    now = time.perf_counter()
    with _probe_lock:
        PROBE_STARTS[ctx.run_id] = now
    return {"value": 0}


@node("bench.source", title="Source", category="bench", outputs={"value": Port("any")})
def source(ctx: NodeContext, params: BaseModel) -> dict[str, object]:
    """A constant."""
    return {"value": 0}


@node(
    "bench.noop",
    title="No-op",
    category="bench",
    inputs={"value": Port("any")},
    outputs={"value": Port("any")},
)
def noop(ctx: NodeContext, params: BaseModel, value: object) -> dict[str, object]:
    """Passes its input through."""
    return {"value": value}


@node(
    "bench.sink",
    title="Sink",
    category="bench",
    output_kind="json",
    inputs={"value": Port("any")},
)
def sink(ctx: NodeContext, params: BaseModel, value: object) -> dict[str, object]:
    """An output node that keeps nothing."""
    return {"value": None}


BENCH_NODES: tuple[NodeType, ...] = (probe, source, noop, sink)


def registry() -> NodeRegistry:
    """The built-in catalog plus the bench's node types."""
    reg = default_registry(load_entry_points=False)
    for t in BENCH_NODES:
        reg.register(t)
    return reg


def probe_app() -> Doc:
    return {
        "nodes": [
            {"id": "node_1", "type": "bench.probe"},
            {"id": "node_2", "type": "output.json", "inputs": {"value": _wire("node_1", "value")}},
        ]
    }


def chain(n: int) -> Doc:
    """source -> noop x (n-2) -> sink: every node waits for the one before it."""
    nodes: list[Doc] = [{"id": "n0", "type": "bench.source"}]
    for i in range(1, n - 1):
        nodes.append(
            {"id": f"n{i}", "type": "bench.noop", "inputs": {"value": _wire(f"n{i - 1}", "value")}}
        )
    nodes.append(
        {"id": f"n{n - 1}", "type": "bench.sink", "inputs": {"value": _wire(f"n{n - 2}", "value")}}
    )
    return {"nodes": nodes}


def fanout(n: int) -> Doc:
    """source -> (n-2) independent noops, plus a sink: all ready at once."""
    nodes: list[Doc] = [{"id": "n0", "type": "bench.source"}]
    for i in range(1, n - 1):
        nodes.append(
            {"id": f"n{i}", "type": "bench.noop", "inputs": {"value": _wire("n0", "value")}}
        )
    nodes.append(
        {"id": f"n{n - 1}", "type": "bench.sink", "inputs": {"value": _wire("n0", "value")}}
    )
    return {"nodes": nodes}
