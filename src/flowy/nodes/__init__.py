"""The built-in node catalog."""

from __future__ import annotations

from flowy.engine.spec import NodeType
from flowy.nodes import basic, io, portrait

BUILTIN_NODES: list[NodeType] = [*io.NODES, *portrait.NODES, *basic.NODES]
