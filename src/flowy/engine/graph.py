"""Workflow graphs: their JSON form, validation, and the app interface they imply.

A workflow is ``{"nodes": [...]}``; each node is

    {"id": "node_3", "type": "image.face_crop", "label": "Crop",
     "params": {...}, "inputs": {"image": {"node": "node_1", "port": "image"}}}

Validation collects every issue (unknown types, bad params, missing or dangling wires,
port type mismatches, cycles) and raises them together as :class:`GraphInvalid`, so an
app builder sees all that is wrong at once.
"""

from __future__ import annotations

import graphlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from flowy.engine.registry import NodeRegistry
from flowy.engine.spec import NodeType
from flowy.errors import GraphInvalid, Issue

NODE_ID = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]{0,63}$")


class Wire(BaseModel):
    """An input fed by another node's output."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    node: str
    port: str


class NodeDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str
    type: str
    label: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Wire] = Field(default_factory=dict)


class WorkflowDef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    nodes: list[NodeDef]


@dataclass(frozen=True)
class BoundNode:
    """A node of a validated workflow: its definition, type and parsed params."""

    id: str
    type: NodeType
    label: str
    params: BaseModel
    wires: Mapping[str, Wire]

    @cached_property
    def params_json(self) -> str:
        """The params as canonical JSON (sorted keys), for cache keys: made once, as the
        node of a loaded workflow serves every run of its version."""
        return json.dumps(self.params.model_dump(mode="json"), sort_keys=True, default=repr)


@dataclass(frozen=True)
class AppInput:
    node_id: str
    label: str
    kind: str
    required: bool
    params: BaseModel


@dataclass(frozen=True)
class AppOutput:
    node_id: str
    label: str
    output_type: str


@dataclass(frozen=True)
class Workflow:
    """A validated workflow, ready to execute."""

    nodes: Mapping[str, BoundNode]
    order: tuple[str, ...]
    inputs: tuple[AppInput, ...] = field(default=())
    outputs: tuple[AppOutput, ...] = field(default=())

    def predecessors(self, node_id: str) -> set[str]:
        return set(self.sources[node_id])

    @cached_property
    def sources(self) -> Mapping[str, tuple[str, ...]]:
        """Each node's distinct predecessors, in wire order (computed once per workflow)."""
        return {
            nid: tuple(dict.fromkeys(w.node for w in b.wires.values()))
            for nid, b in self.nodes.items()
        }

    @cached_property
    def consumer_counts(self) -> Mapping[str, int]:
        """How many distinct nodes read each node's outputs (computed once per workflow)."""
        counts = dict.fromkeys(self.nodes, 0)
        for srcs in self.sources.values():
            for src in srcs:
                counts[src] += 1
        return counts


def _loc(err: Mapping[str, Any]) -> str:
    return ".".join(str(p) for p in err.get("loc", ()))


def parse_workflow(data: object, registry: NodeRegistry) -> Workflow:
    """Validate a workflow JSON document against the catalog.

    Raises :class:`GraphInvalid` with every issue found.
    """
    try:
        wf = WorkflowDef.model_validate(data)
    except ValidationError as exc:
        raise GraphInvalid(
            [
                Issue(
                    "invalid_workflow",
                    e["msg"],
                    field=f"workflow.{_loc(e)}" if e["loc"] else "workflow",
                )
                for e in exc.errors()
            ]
        ) from None

    issues: list[Issue] = []
    seen: dict[str, NodeDef] = {}
    for nd in wf.nodes:
        if not NODE_ID.fullmatch(nd.id):
            issues.append(Issue("invalid_node_id", f"invalid node id {nd.id!r}", node=nd.id))
        if nd.id in seen:
            issues.append(Issue("duplicate_node", f"node id {nd.id!r} is used twice", node=nd.id))
        seen[nd.id] = nd
    if not wf.nodes:
        issues.append(Issue("empty_workflow", "a workflow needs at least one node"))

    bound: dict[str, BoundNode] = {}
    for nd in seen.values():
        nt = registry.get(nd.type)
        if nt is None:
            issues.append(Issue("unknown_node_type", f"unknown node type {nd.type!r}", node=nd.id))
            continue
        try:
            params = nt.params.model_validate(nd.params)
        except ValidationError as exc:
            for e in exc.errors():
                issues.append(
                    Issue(
                        "invalid_param",
                        f"param {_loc(e)}: {e['msg']}" if e["loc"] else f"params: {e['msg']}",
                        node=nd.id,
                    )
                )
            continue
        bound[nd.id] = BoundNode(
            nd.id, nt, nd.label or _default_label(nt, params), params, dict(nd.inputs)
        )

    for b in bound.values():
        issues.extend(_check_wires(b, seen, bound))

    order: tuple[str, ...] = ()
    if not issues:
        sorter = graphlib.TopologicalSorter(
            {nid: {w.node for w in b.wires.values()} for nid, b in bound.items()}
        )
        try:
            order = tuple(sorter.static_order())
        except graphlib.CycleError as exc:
            cycle = list(dict.fromkeys(exc.args[1]))
            issues.append(
                Issue("cycle", "nodes form a cycle: " + " -> ".join(cycle), node=cycle[0])
            )
    if issues:
        raise GraphInvalid(issues)

    inputs = tuple(
        AppInput(
            b.id, b.label, b.type.input_kind, bool(getattr(b.params, "required", False)), b.params
        )
        for b in (bound[n] for n in order)
        if b.type.input_kind
    )
    outputs = tuple(
        AppOutput(b.id, b.label, b.type.output_kind)
        for b in (bound[n] for n in order)
        if b.type.output_kind
    )
    if not outputs:
        raise GraphInvalid([Issue("no_outputs", "a workflow needs at least one output node")])
    workflow = Workflow(
        bound, order, tuple(sorted(inputs, key=_by_id)), tuple(sorted(outputs, key=_by_id))
    )
    workflow.consumer_counts  # noqa: B018 - precompute the executor's maps once, here
    return workflow


def _by_id(x: AppInput | AppOutput) -> tuple[int, str]:
    # node_2 before node_10: order by the number in the id where there is one.
    m = re.search(r"(\d+)$", x.node_id)
    return (int(m.group(1)) if m else 1 << 30, x.node_id)


def _default_label(nt: NodeType, params: BaseModel) -> str:
    label = getattr(params, "label", None)
    return str(label) if label else nt.title


def _check_wires(
    b: BoundNode, defs: Mapping[str, NodeDef], bound: Mapping[str, BoundNode]
) -> list[Issue]:
    issues: list[Issue] = []
    for name, port in b.type.inputs.items():
        if name not in b.wires and not port.optional:
            issues.append(Issue("missing_input", f"input {name!r} is not connected", node=b.id))
    for name, wire in b.wires.items():
        wired = b.type.inputs.get(name)
        if wired is None:
            issues.append(Issue("unknown_port", f"{b.type.type} has no input {name!r}", node=b.id))
            continue
        if wire.node not in defs:
            issues.append(
                Issue(
                    "dangling_wire",
                    f"input {name!r} is wired to unknown node {wire.node!r}",
                    node=b.id,
                )
            )
            continue
        src = bound.get(wire.node)
        if src is None:
            continue  # the source's own issue is already reported
        out = src.type.outputs.get(wire.port)
        if out is None:
            issues.append(
                Issue(
                    "unknown_port",
                    f"input {name!r} is wired to {wire.node}.{wire.port}, "
                    f"but {src.type.type} has no output {wire.port!r}",
                    node=b.id,
                )
            )
        elif not wired.accepts(out):
            issues.append(
                Issue(
                    "type_mismatch",
                    f"input {name!r} takes {wired.type} but "
                    f"{wire.node}.{wire.port} gives {out.type}",
                    node=b.id,
                )
            )
    return issues
