"""Nodes that call AI providers: OpenAI-compatible chat and images, Replicate, ComfyUI.

All are non-deterministic (never cached), read their keys from workspace secrets, and
call out through the outbound guard with retries (see :mod:`._http`).
"""

from __future__ import annotations

from flowy.engine.spec import NodeType
from flowy.nodes.providers import comfyui, openai, replicate

NODES: list[NodeType] = [*openai.NODES, *replicate.NODES, *comfyui.NODES]
