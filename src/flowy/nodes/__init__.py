"""The built-in node catalog."""

from __future__ import annotations

from flowy.engine.spec import NodeType
from flowy.nodes import (
    av,
    basic,
    http,
    image,
    image_compose,
    image_ops,
    image_text,
    io,
    logic,
    portrait,
    providers,
    text,
)

BUILTIN_NODES: list[NodeType] = [*io.NODES, *portrait.NODES, *basic.NODES]
BUILTIN_NODES += [*text.NODES, *logic.NODES, *http.NODES, *providers.NODES]
BUILTIN_NODES += [*image.NODES, *image_ops.NODES, *image_compose.NODES, *image_text.NODES]
BUILTIN_NODES += av.NODES
