"""What a node type is: typed ports, JSON-Schema params, and a function that does the work.

A node type is plain Python.  Built-in nodes and third-party packages declare them the same
way, with :func:`node`, and a :class:`~flowy.engine.registry.NodeRegistry` collects them.

    @node("image.grayscale", title="Grayscale", category="image",
          inputs={"image": Port("image")}, outputs={"image": Port("image")})
    def grayscale(ctx: NodeContext, params: NoParams, image: Image.Image) -> dict[str, object]:
        return {"image": image.convert("L").convert("RGB")}
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from flowy.media.fetch import FetchPolicy

#: Port types and the Python values that travel on them.
PORT_TYPES: dict[str, str] = {
    "image": "PIL.Image.Image",
    "text": "str",
    "number": "int | float",
    "boolean": "bool",
    "json": "any JSON value",
    "file": "flowy.engine.spec.Artifact",
    "any": "anything",
}


@dataclass(frozen=True)
class Port:
    """A typed input or output of a node."""

    type: str
    description: str = ""
    optional: bool = False

    def __post_init__(self) -> None:
        if self.type not in PORT_TYPES:
            raise ValueError(f"unknown port type {self.type!r}")

    def accepts(self, other: Port) -> bool:
        """Whether a wire from an output of type ``other`` may feed this input."""
        return "any" in (self.type, other.type) or self.type == other.type


class NoParams(BaseModel):
    """Params of a node that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(frozen=True)
class Artifact:
    """A file an output node produces; the worker stores it and hands out a signed URL."""

    data: bytes
    content_type: str
    filename: str


class _Skip:
    """The value on an output a logic node did not take.  A node any of whose required
    inputs is SKIP is skipped (reported ``skipped``, not failed); an optional input that
    receives SKIP gets None."""

    _instance: _Skip | None = None

    def __new__(cls) -> _Skip:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "SKIP"

    def __bool__(self) -> bool:
        return False


SKIP = _Skip()


class SecretSource(Protocol):
    """The workspace's secrets (provider API keys and the like), decrypted on demand."""

    def get(self, name: str) -> str | None: ...


class MediaSource(Protocol):
    """Reads the bytes behind a media input value (URL, data: URI, uploaded file)."""

    def read(self, value: str) -> bytes:
        """Return the bytes; raise :class:`~flowy.errors.MediaError` naming the cause."""
        ...


class NodeContext(Protocol):
    """What a running node may use besides its inputs and params."""

    run_id: str
    node_id: str
    #: The caller's value for an input node (or its default); None for other nodes.
    input_value: object
    media: MediaSource
    max_pixels: int
    #: The outbound-address guard for nodes that call the network (HTTP, providers).
    fetch_policy: FetchPolicy

    def check_canceled(self) -> None:
        """Raise :class:`~flowy.errors.RunCanceled` if the run was canceled."""
        ...

    def secret(self, name: str) -> str:
        """A secret of the workspace; NodeError naming it when it is not set."""
        ...

    @property
    def canceled(self) -> bool:
        """Whether the run was canceled (for nodes that poll rather than raise)."""
        ...

    def progress(self, fraction: float) -> None:
        """Report progress in [0, 1] of this node."""
        ...

    def log(self, message: str) -> None:
        """A line for the run's event stream (``node.log``); never put secrets in it."""
        ...


NodeFunction = Callable[..., Mapping[str, object]]


@dataclass(frozen=True)
class NodeType:
    """A node type of the catalog.

    ``input_kind`` marks the nodes that become an app's inputs (``text``, ``image_url``,
    ...); ``output_kind`` the nodes that become its outputs (``image``, ``text``, ``json``).

    ``inline`` promises that the node is cheap and never blocks (no I/O, no sleeping, no
    heavy computation): the executor then runs it on the thread that made it ready,
    skipping the thread-pool hop.  Its ``timeout_seconds`` is not enforced while it runs
    (nothing can stop a call in progress), so never mark a node inline that might block.
    """

    type: str
    title: str
    category: str
    description: str
    run: NodeFunction
    params: builtins.type[BaseModel] = NoParams
    inputs: Mapping[str, Port] = field(default_factory=dict)
    outputs: Mapping[str, Port] = field(default_factory=dict)
    version: str = "1"
    deterministic: bool = True
    input_kind: str | None = None
    output_kind: str | None = None
    timeout_seconds: float | None = None
    inline: bool = False

    def describe(self) -> dict[str, Any]:
        """The catalog entry served by ``GET /v1/nodes``: ports and params as JSON Schema."""
        return {
            "type": self.type,
            "title": self.title,
            "category": self.category,
            "description": self.description,
            "version": self.version,
            "deterministic": self.deterministic,
            "inputKind": self.input_kind,
            "outputKind": self.output_kind,
            "inputs": {
                name: {"type": p.type, "description": p.description, "optional": p.optional}
                for name, p in self.inputs.items()
            },
            "outputs": {
                name: {"type": p.type, "description": p.description}
                for name, p in self.outputs.items()
            },
            "params": self.params.model_json_schema(),
        }


def node(
    type: str,
    *,
    title: str,
    category: str,
    inputs: Mapping[str, Port] | None = None,
    outputs: Mapping[str, Port] | None = None,
    params: type[BaseModel] = NoParams,
    version: str = "1",
    deterministic: bool = True,
    input_kind: str | None = None,
    output_kind: str | None = None,
    timeout_seconds: float | None = None,
    inline: bool = False,
) -> Callable[[NodeFunction], NodeType]:
    """Declare a node type from a function ``fn(ctx, params, **inputs) -> {output: value}``.

    The function's docstring becomes the catalog description.
    """

    def wrap(fn: NodeFunction) -> NodeType:
        return NodeType(
            type=type,
            title=title,
            category=category,
            description=(fn.__doc__ or "").strip(),
            run=fn,
            params=params,
            inputs=dict(inputs or {}),
            outputs=dict(outputs or {}),
            version=version,
            deterministic=deterministic,
            input_kind=input_kind,
            output_kind=output_kind,
            timeout_seconds=timeout_seconds,
            inline=inline,
        )

    return wrap
