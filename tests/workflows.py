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


def delay(seconds: float) -> dict[str, object]:
    """text in -> util.delay(seconds) -> text out: a run that stays running a while."""
    return {
        "nodes": [
            {"id": "node_1", "type": "input.text", "params": {"required": True}},
            {
                "id": "node_2",
                "type": "util.delay",
                "params": {"seconds": seconds},
                "inputs": {"value": {"node": "node_1", "port": "text"}},
            },
            {
                "id": "node_3",
                "type": "output.text",
                "inputs": {"text": {"node": "node_2", "port": "value"}},
            },
        ]
    }
