"""Workflows several test modules run."""

from __future__ import annotations

from typing import Any

#: input.text -> output.text: the least a run can do.
ECHO: dict[str, Any] = {
    "nodes": [
        {"id": "node_1", "type": "input.text", "params": {"required": True}},
        {
            "id": "node_2",
            "type": "output.text",
            "inputs": {"text": {"node": "node_1", "port": "text"}},
        },
    ]
}
