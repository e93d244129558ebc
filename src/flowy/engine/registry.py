"""The node catalog: built-in node types and those that packages add via entry points."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from importlib.metadata import entry_points

from flowy.engine.spec import NodeType

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "flowy.nodes"


class NodeRegistry:
    """A set of node types by name."""

    def __init__(self, types: Iterable[NodeType] = ()) -> None:
        self._types: dict[str, NodeType] = {}
        for t in types:
            self.register(t)

    def register(self, node_type: NodeType) -> None:
        """Add a node type; raises ValueError when the name is taken."""
        if node_type.type in self._types:
            raise ValueError(f"node type {node_type.type!r} is registered twice")
        self._types[node_type.type] = node_type

    def get(self, name: str) -> NodeType | None:
        return self._types.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._types

    def __iter__(self) -> Iterator[NodeType]:
        return iter(sorted(self._types.values(), key=lambda t: t.type))

    def __len__(self) -> int:
        return len(self._types)


def _collect(obj: object) -> list[NodeType]:
    if isinstance(obj, NodeType):
        return [obj]
    if isinstance(obj, Iterable):
        return [t for t in obj if isinstance(t, NodeType)]
    raise TypeError(f"entry point gave {type(obj).__name__}, not node types")


def default_registry(*, load_entry_points: bool = True) -> NodeRegistry:
    """The built-in catalog plus every node type installed under ``flowy.nodes``.

    An entry point names a NodeType, or a module-level list of them.  A broken
    third-party package is logged and skipped rather than taking the server down.
    """
    from flowy.nodes import BUILTIN_NODES

    registry = NodeRegistry(BUILTIN_NODES)
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                for t in _collect(ep.load()):
                    registry.register(t)
            except Exception:
                logger.exception("could not load node entry point %s", ep.name)
    return registry
