"""What the API answers, as frozen dataclasses parsed from its camelCase JSON.

Every model keeps the JSON it was made from in ``raw`` (not part of equality or repr), so
nothing the server sends is lost, fields added later included.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, overload
from urllib.parse import unquote, urlsplit

from flowy.client import _http

__all__ = [
    "TERMINAL_EVENTS",
    "TERMINAL_STATUSES",
    "App",
    "AppInput",
    "AppOutput",
    "NodeState",
    "Outputs",
    "Run",
    "RunEvent",
    "RunOutput",
    "Upload",
]

#: Statuses a run never leaves.
TERMINAL_STATUSES = frozenset({"completed", "failed", "canceled"})
#: Event types that end a run's event stream.
TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.canceled"})

Json = Mapping[str, Any]


def parse_datetime(value: object) -> datetime | None:
    """An ISO-8601 time from the API (``...Z``) as an aware datetime; None stays None."""
    if not isinstance(value, str) or not value:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def _opt_str(value: object) -> str | None:
    return None if value is None else str(value)


def _opt_float(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _opt_int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


@dataclass(frozen=True, kw_only=True)
class AppInput:
    """One input of an app: what a run passes as ``inputs[node_id]``."""

    node_id: str
    label: str
    kind: str
    required: bool
    description: str | None = None
    default: Any = None
    options: tuple[str, ...] | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    integer: bool | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def is_media(self) -> bool:
        """True for inputs that take a URL to a file (image_url, file_url, ...)."""
        return self.kind.endswith("_url")

    @classmethod
    def from_json(cls, d: Json) -> AppInput:
        options = d.get("options")
        return cls(
            node_id=str(d["nodeId"]),
            label=str(d.get("label") or d["nodeId"]),
            kind=str(d.get("kind", "")),
            required=bool(d.get("required", False)),
            description=_opt_str(d.get("description")),
            default=d.get("default"),
            options=tuple(str(o) for o in options) if isinstance(options, list) else None,
            minimum=_opt_float(d.get("minimum")),
            maximum=_opt_float(d.get("maximum")),
            max_length=_opt_int(d.get("maxLength")),
            integer=d.get("integer") if isinstance(d.get("integer"), bool) else None,
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class AppOutput:
    """One output of an app (``output_type``: image, file, text, json)."""

    node_id: str
    label: str
    output_type: str
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> AppOutput:
        return cls(
            node_id=str(d["nodeId"]),
            label=str(d.get("label") or d["nodeId"]),
            output_type=str(d.get("outputType", "")),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class App:
    """An app.  ``apps.list()`` gives summaries: ``inputs``, ``outputs``, ``version`` and
    ``workflow`` are filled in by ``apps.get()``."""

    id: str
    title: str
    published: bool
    run_count: int = 0
    description: str = ""
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int | None = None
    version_id: str | None = None
    inputs: tuple[AppInput, ...] = ()
    outputs: tuple[AppOutput, ...] = ()
    workflow: Json | None = field(default=None, repr=False)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    def input(self, node_id: str) -> AppInput | None:
        """The input with that node id, if the app has it."""
        return next((i for i in self.inputs if i.node_id == node_id), None)

    @classmethod
    def from_json(cls, d: Json) -> App:
        return cls(
            id=str(d["id"]),
            title=str(d.get("title", "")),
            published=bool(d.get("published", False)),
            run_count=int(d.get("runCount") or 0),
            description=str(d.get("description") or ""),
            created_at=parse_datetime(d.get("createdAt")),
            updated_at=parse_datetime(d.get("updatedAt")),
            version=_opt_int(d.get("version")),
            version_id=_opt_str(d.get("versionId")),
            inputs=tuple(AppInput.from_json(i) for i in d.get("inputs") or ()),
            outputs=tuple(AppOutput.from_json(o) for o in d.get("outputs") or ()),
            workflow=d.get("workflow"),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class NodeState:
    """Where one node of a run stands."""

    node_id: str
    status: str
    type: str | None = None
    label: str | None = None
    progress: float | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_ms: float | None = None
    error: str | None = None
    cached: bool = False
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> NodeState:
        return cls(
            node_id=str(d["nodeId"]),
            status=str(d.get("status", "pending")),
            type=_opt_str(d.get("type")),
            label=_opt_str(d.get("label")),
            progress=_opt_float(d.get("progress")),
            started_at=parse_datetime(d.get("startedAt")),
            completed_at=parse_datetime(d.get("completedAt")),
            duration_ms=_opt_float(d.get("durationMs")),
            error=_opt_str(d.get("error")),
            cached=bool(d.get("cached", False)),
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class RunOutput:
    """One output of a run.  Files (``kind`` image or file) have a signed ``url`` that
    expires at ``expires_at``; text and JSON outputs carry their ``value``.

    ``read()`` downloads the content (a link that has expired is signed afresh by
    reading the run again); ``save(path)`` writes it into a directory or to a file.
    """

    node_id: str
    kind: str
    url: str | None = None
    expires_at: datetime | None = None
    content_type: str | None = None
    size: int | None = None
    value: Any = None
    skipped: bool = False
    run_id: str | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)
    _client: Any = field(default=None, repr=False, compare=False)

    @property
    def is_file(self) -> bool:
        return self.url is not None

    @property
    def filename(self) -> str:
        """The file's name from its link, or ``<node_id>.txt`` / ``.json`` for values."""
        if self.url:
            name = unquote(urlsplit(self.url).path.rstrip("/").rpartition("/")[2])
            name = name.replace("\\", "_").lstrip(".")
            if name:
                return name
            return f"{self.node_id}.bin"
        return f"{self.node_id}.json" if self.kind == "json" else f"{self.node_id}.txt"

    def _value_bytes(self) -> bytes:
        if self.kind == "json" or not isinstance(self.value, str):
            return json.dumps(self.value, ensure_ascii=False, indent=2).encode()
        return self.value.encode()

    def read(self) -> bytes:
        """The output's content: a file is downloaded, a value encoded (UTF-8 / JSON)."""
        if self.url is None:
            return self._value_bytes()
        download = getattr(self._client, "_download_output", None)
        if download is not None:
            return bytes(download(self))
        return _http.download(self.url)

    async def aread(self) -> bytes:
        """``read()`` for async code."""
        if self.url is None:
            return self._value_bytes()
        download = getattr(self._client, "_adownload_output", None)
        if download is not None:
            return bytes(await download(self))
        return await _http.adownload(self.url)

    def _target(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        if p.is_dir() or str(path).endswith(("/", os.sep)):
            p = p / self.filename
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def save(self, path: str | os.PathLike[str] = ".") -> Path:
        """Write the content to ``path``: into it (as :attr:`filename`) if it is a
        directory, else to that file.  Returns the file written."""
        target = self._target(path)
        target.write_bytes(self.read())
        return target

    async def asave(self, path: str | os.PathLike[str] = ".") -> Path:
        """``save()`` for async code."""
        target = self._target(path)
        target.write_bytes(await self.aread())
        return target

    @classmethod
    def from_json(cls, d: Json, *, run_id: str | None = None, client: Any = None) -> RunOutput:
        return cls(
            node_id=str(d["nodeId"]),
            kind=str(d.get("kind", "")),
            url=_opt_str(d.get("url")),
            expires_at=parse_datetime(d.get("expiresAt")),
            content_type=_opt_str(d.get("contentType")),
            size=_opt_int(d.get("size")),
            value=d.get("value"),
            skipped=bool(d.get("skipped", False)),
            run_id=run_id,
            raw=d,
            _client=client,
        )


@dataclass(frozen=True, kw_only=True)
class Run:
    """A run.  ``nodes`` is None in list answers (which leave node states out)."""

    id: str
    status: str
    app_id: str | None = None
    version_id: str | None = None
    outputs: tuple[RunOutput, ...] = ()
    error: str | None = None
    error_node: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    deadline_at: datetime | None = None
    attempt: int | None = None
    nodes: tuple[NodeState, ...] | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def run_id(self) -> str:
        return self.id

    @property
    def done(self) -> bool:
        """True once the run has ended (completed, failed or canceled)."""
        return self.status in TERMINAL_STATUSES

    def output(self, node_id: str) -> RunOutput | None:
        return next((o for o in self.outputs if o.node_id == node_id), None)

    @classmethod
    def from_json(cls, d: Json, *, client: Any = None) -> Run:
        run_id = str(d["runId"])
        nodes = d.get("nodes")
        return cls(
            id=run_id,
            status=str(d.get("status", "")),
            app_id=_opt_str(d.get("appId")),
            version_id=_opt_str(d.get("versionId")),
            outputs=tuple(
                RunOutput.from_json(o, run_id=run_id, client=client) for o in d.get("outputs") or ()
            ),
            error=_opt_str(d.get("error")),
            error_node=_opt_str(d.get("errorNode")),
            created_at=parse_datetime(d.get("createdAt")),
            started_at=parse_datetime(d.get("startedAt")),
            completed_at=parse_datetime(d.get("completedAt")),
            deadline_at=parse_datetime(d.get("deadlineAt")),
            attempt=_opt_int(d.get("attempt")),
            nodes=tuple(NodeState.from_json(n) for n in nodes) if isinstance(nodes, list) else None,
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class RunEvent:
    """One event of a run's stream: ``run.queued``, ``node.started``, ``node.progress``,
    ``run.outputs``, ``run.completed``...  ``seq`` counts from 1 without gaps."""

    seq: int
    type: str
    run_id: str
    created_at: datetime | None = None
    data: Json = field(default_factory=dict)
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        """True for the event that ends the run (and the stream)."""
        return self.type in TERMINAL_EVENTS

    @property
    def node_id(self) -> str | None:
        return _opt_str(self.data.get("nodeId"))

    @property
    def status(self) -> str | None:
        return _opt_str(self.data.get("status"))

    @classmethod
    def from_json(cls, d: Json) -> RunEvent:
        data = d.get("data")
        return cls(
            seq=int(d["seq"]),
            type=str(d["type"]),
            run_id=str(d.get("runId", "")),
            created_at=parse_datetime(d.get("createdAt")),
            data=data if isinstance(data, Mapping) else {},
            raw=d,
        )


@dataclass(frozen=True, kw_only=True)
class Upload:
    """A stored upload; ``url`` is accepted by any media input of a run."""

    id: str
    url: str
    expires_at: datetime | None = None
    content_type: str | None = None
    size: int | None = None
    filename: str | None = None
    created_at: datetime | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, d: Json) -> Upload:
        return cls(
            id=str(d["id"]),
            url=str(d["url"]),
            expires_at=parse_datetime(d.get("expiresAt")),
            content_type=_opt_str(d.get("contentType")),
            size=_opt_int(d.get("size")),
            filename=_opt_str(d.get("filename")),
            created_at=parse_datetime(d.get("createdAt")),
            raw=d,
        )


class Outputs(Sequence[RunOutput]):
    """The outputs of a finished run, what ``run()`` answers.  Index by position or by
    node id (``outputs["node_9"]``); ``run`` is the whole run."""

    def __init__(self, run: Run) -> None:
        self.run = run
        self._items = run.outputs

    @property
    def run_id(self) -> str:
        return self.run.id

    @overload
    def __getitem__(self, key: int) -> RunOutput: ...
    @overload
    def __getitem__(self, key: str) -> RunOutput: ...
    @overload
    def __getitem__(self, key: slice) -> Sequence[RunOutput]: ...
    def __getitem__(self, key: int | str | slice) -> RunOutput | Sequence[RunOutput]:
        if isinstance(key, str):
            found = self.run.output(key)
            if found is None:
                raise KeyError(key)
            return found
        return self._items[key]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[RunOutput]:
        return iter(self._items)

    def __repr__(self) -> str:
        return f"Outputs(run_id={self.run.id!r}, {list(self._items)!r})"

    def save(self, directory: str | os.PathLike[str] = ".") -> list[Path]:
        """Save every output into ``directory`` (made if missing); answers the paths."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        paths: list[Path] = []
        taken: set[str] = set()
        for out in self._items:
            name = out.filename
            if name in taken:
                name = f"{out.node_id}-{name}"
            taken.add(name)
            paths.append(out.save(root / name))
        return paths
