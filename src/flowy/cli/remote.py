"""The ``flowy`` commands that talk to a Flowy API (FLOWY_API with FLOWY_KEY).

``flowy apps list|show|create``, ``flowy run``, ``flowy runs list|show|cancel|watch``.
They use the SDK (:mod:`flowy.client`) and nothing of the server, so they work against
any Flowy.  ``--json`` prints machine-readable JSON only (the API's objects).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn, TextIO

import typer

from flowy.client import (
    APIConnectionError,
    APIError,
    App,
    Flowy,
    FlowyError,
    NotFoundError,
    Run,
    RunEvent,
    RunOutput,
    RunTimeout,
)

#: Exit codes of the remote commands (``flowy --help`` and the README list them).
EXIT_COMPLETED = 0
EXIT_FAILED = 1
EXIT_USAGE = 2  # Typer's own, for bad arguments
EXIT_CANCELED = 3
EXIT_TIMEOUT = 4
EXIT_API = 5

EXIT_CODES_HELP = (
    "Exit codes: 0 completed (or success), 1 the run failed, 2 usage error, "
    "3 the run was canceled, 4 timed out waiting (--timeout), "
    "5 API, authentication or connection error."
)

apps_app = typer.Typer(
    help="Create, list and show apps (talks to FLOWY_API with FLOWY_KEY).", no_args_is_help=True
)
runs_app = typer.Typer(
    help="List, show, cancel and watch runs (talks to FLOWY_API with FLOWY_KEY).",
    no_args_is_help=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON only.")]


def register(app: typer.Typer) -> None:
    """Add the remote commands to the ``flowy`` app."""
    app.add_typer(apps_app, name="apps")
    app.add_typer(runs_app, name="runs")
    app.command("run", epilog=EXIT_CODES_HELP)(run_app)


# -- plumbing ---------------------------------------------------------------------------


def _err(message: str) -> None:
    typer.secho(message, fg=typer.colors.RED, err=True)


def _exit(message: str | None, code: int) -> NoReturn:
    if message:
        _err(message)
    raise typer.Exit(code)


def _api_message(exc: FlowyError) -> str:
    if isinstance(exc, APIError):
        lines = [f"error: {exc.status} {exc.code}: {exc.message}"]
        lines += [
            f"  {d.get('field') or d.get('node') or ''}: {d.get('message', '')}"
            for d in exc.details
            if len(exc.details) > 1
        ]
        return "\n".join(lines)
    if isinstance(exc, APIConnectionError):
        return f"error: cannot reach the Flowy API: {exc}"
    return f"error: {exc}"


@contextmanager
def _client() -> Iterator[Flowy]:
    """A client from FLOWY_API / FLOWY_KEY; any API, auth or connection error exits 5."""
    try:
        with Flowy() as client:
            yield client
    except (RunTimeout, typer.Exit):
        raise
    except FlowyError as exc:
        _exit(_api_message(exc), EXIT_API)


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _ts(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


# -- apps -------------------------------------------------------------------------------


def _print_app_io(app: App) -> None:
    for i in app.inputs:
        typer.echo(
            f"  input  {i.node_id:<10} {i.kind:<10} {i.label}{' (required)' if i.required else ''}"
        )
    for o in app.outputs:
        typer.echo(f"  output {o.node_id:<10} {o.output_type:<10} {o.label}")


@apps_app.command("create")
def apps_create(
    file: Annotated[
        Path,
        typer.Argument(
            help="App JSON: {title, workflow, ...} or a bare workflow {nodes: [...]}", exists=True
        ),
    ],
    title: Annotated[str | None, typer.Option(help="Title (overrides the file's).")] = None,
    publish: Annotated[bool, typer.Option(help="Publish it so it can be run.")] = True,
    as_json: JsonOpt = False,
) -> None:
    """Create an app from a workflow JSON file."""
    try:
        doc = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        _exit(f"error: {file} is not valid JSON: {exc}", EXIT_USAGE)
    if isinstance(doc, dict) and "nodes" in doc:
        doc = {"workflow": doc}
    if not isinstance(doc, dict):
        _exit(f"error: {file} must hold a JSON object", EXIT_USAGE)
    unknown = sorted(set(doc) - {"title", "workflow", "description", "published"})
    if unknown or not isinstance(doc.get("workflow"), dict):
        problem = f"unknown field {unknown[0]!r}" if unknown else "'workflow' is required"
        _exit(f"error: {file}: {problem}", EXIT_USAGE)
    with _client() as client:
        app = client.apps.create(
            doc["workflow"],
            title=title or doc.get("title") or file.stem,
            description=doc.get("description"),
            published=publish,
        )
    if as_json:
        _print_json(app.raw)
        return
    typer.echo(
        f'created app {app.id} "{app.title}" (version {app.version}, '
        f"{'published' if app.published else 'draft'})"
    )
    _print_app_io(app)


@apps_app.command("list")
def apps_list(as_json: JsonOpt = False) -> None:
    """List the apps of the key's workspace."""
    with _client() as client:
        apps = client.apps.list()
    if as_json:
        _print_json([a.raw for a in apps])
        return
    for a in apps:
        state = "published" if a.published else "draft"
        typer.echo(f"{a.id}  {a.title:<32} {state:<9} {a.run_count} runs")


def _find_app(client: Flowy, ref: str) -> App:
    """An app by id, or by its exact title (case-insensitive) when that is unique."""
    try:
        return client.apps.get(ref)
    except NotFoundError:
        matches = [a for a in client.apps.list() if a.title.casefold() == ref.casefold()]
        if len(matches) == 1:
            return client.apps.get(matches[0].id)
        if matches:
            ids = ", ".join(a.id for a in matches)
            _exit(f"error: {len(matches)} apps are titled {ref!r}: {ids}", EXIT_API)
        raise


@apps_app.command("show")
def apps_show(
    app_id: Annotated[str, typer.Argument(metavar="APP", help="App id (or exact title).")],
    as_json: JsonOpt = False,
) -> None:
    """Show an app: its inputs (what `flowy run -i` takes) and outputs."""
    with _client() as client:
        app = _find_app(client, app_id)
    if as_json:
        _print_json(app.raw)
        return
    state = "published" if app.published else "draft"
    typer.echo(f'app {app.id} "{app.title}" (version {app.version}, {state})')
    if app.description:
        typer.echo(f"  {app.description}")
    _print_app_io(app)


# -- run --------------------------------------------------------------------------------


def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "yes", "y", "1", "on"):
        return True
    if lowered in ("false", "no", "n", "0", "off"):
        return False
    raise ValueError(f"{text!r} is not true or false")


def _parse_inputs(app: App, items: list[str]) -> dict[str, Any]:
    """``-i name=value``: text (or a number / boolean for such inputs); ``name=@path``: a
    local file, uploaded; ``name:=JSON``: any JSON value."""
    inputs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise typer.BadParameter(f"{item!r}: expected NODE=VALUE", param_hint="'-i'")
        if name.endswith(":"):
            name = name[:-1]
            try:
                inputs[name] = json.loads(value)
            except json.JSONDecodeError as exc:
                raise typer.BadParameter(
                    f"{item!r}: not JSON after ':=' ({exc})", param_hint="'-i'"
                ) from None
            continue
        if value.startswith("@"):
            path = Path(value[1:]).expanduser()
            if not path.is_file():
                raise typer.BadParameter(f"{item!r}: no file {path}", param_hint="'-i'")
            inputs[name] = path
            continue
        spec = app.input(name)
        kind = spec.kind if spec else "text"
        try:
            if kind == "number":
                inputs[name] = (
                    float(value) if not value.strip().lstrip("-").isdigit() else int(value)
                )
            elif kind == "boolean":
                inputs[name] = _parse_bool(value)
            else:
                inputs[name] = value
        except ValueError as exc:
            raise typer.BadParameter(f"{item!r}: {exc}", param_hint="'-i'") from None
    return inputs


@dataclass
class _NodeRow:
    node_id: str
    label: str
    status: str = "pending"
    progress: float | None = None
    duration_ms: float | None = None
    error: str | None = None


@dataclass
class Progress:
    """Shows a run's nodes as its events arrive: a live table on a terminal (Rich), one
    line per change otherwise (never a line per progress tick)."""

    app: App
    stream: TextIO = field(default_factory=lambda: sys.stderr)
    rows: dict[str, _NodeRow] = field(default_factory=dict)
    status: str = "queued"
    t0: float = field(default_factory=time.monotonic)
    _live: Any = None

    def __post_init__(self) -> None:
        for node in (self.app.workflow or {}).get("nodes", []):
            if isinstance(node, dict) and "id" in node:
                nid = str(node["id"])
                self.rows[nid] = _NodeRow(nid, str(node.get("label") or node.get("type") or nid))

    def __enter__(self) -> Progress:
        if self.stream.isatty():
            try:
                from rich.console import Console
                from rich.live import Live
            except ImportError:  # pragma: no cover - Rich comes with Typer
                return self
            console = Console(file=self.stream)
            self._live = Live(self._table(), console=console, refresh_per_second=8, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(None, None, None)
            self._live = None

    def _line(self, text: str) -> None:
        if self._live is None:
            elapsed = time.monotonic() - self.t0
            print(f"[{elapsed:6.1f}s] {text}", file=self.stream, flush=True)

    def _table(self) -> Any:
        from rich.table import Table

        colours = {
            "completed": "green",
            "failed": "red",
            "canceled": "yellow",
            "running": "cyan",
            "skipped": "dim",
        }
        table = Table(
            title=f"{self.app.title} — {self.status}", title_justify="left", box=None, expand=False
        )
        for name in ("node", "label", "status", "progress", "time"):
            table.add_column(name)
        for row in self.rows.values():
            pct = row.progress if row.progress is not None else 0.0
            bar = "█" * int(pct * 20) + "░" * (20 - int(pct * 20))
            colour = colours.get(row.status, "white")
            took = f"{row.duration_ms / 1000:.2f}s" if row.duration_ms is not None else ""
            status = f"[{colour}]{row.status}[/{colour}]"
            if row.error:
                status += f" [red]{row.error[:60]}[/red]"
            table.add_row(row.node_id, row.label, status, f"{bar} {pct * 100:3.0f}%", took)
        return table

    def __call__(self, event: RunEvent) -> None:
        data = event.data
        if event.type.startswith("node."):
            nid = event.node_id or "?"
            row = self.rows.setdefault(nid, _NodeRow(nid, str(data.get("label") or nid)))
            before = row.status
            row.status = str(data.get("status") or row.status)
            progress = data.get("progress")
            row.progress = float(progress) if isinstance(progress, int | float) else row.progress
            duration = data.get("durationMs")
            row.duration_ms = float(duration) if isinstance(duration, int | float) else None
            row.error = str(data["error"]) if data.get("error") else None
            if row.status != before:
                took = f" ({row.duration_ms:.0f} ms)" if row.duration_ms is not None else ""
                err = f": {row.error}" if row.error else ""
                self._line(f"{nid:<10} {row.label:<24} {row.status}{took}{err}")
        elif event.type.startswith("run.") and event.type != "run.outputs":
            self.status = str(data.get("status") or event.type.removeprefix("run."))
            if event.type == "run.cancel_requested":
                self.status = "canceling"
            self._line(f"run {event.run_id} {self.status}")
        if self._live is not None:
            self._live.update(self._table())


def _saved_name(out: RunOutput, taken: set[str]) -> str:
    name = out.filename
    if name in taken:
        name = f"{out.node_id}-{name}"
    taken.add(name)
    return name


def _report_outputs(run: Run, out_dir: Path | None, as_json: bool) -> dict[str, str]:
    saved: dict[str, str] = {}
    taken: set[str] = set()
    for out in run.outputs:
        if out_dir is not None and not out.skipped:
            path = out.save(out_dir / _saved_name(out, taken))
            saved[out.node_id] = str(path)
            if not as_json:
                typer.echo(f"{out.node_id:<10} {out.kind:<6} saved {path}")
        elif not as_json:
            shown = out.url if out.is_file else json.dumps(out.value, ensure_ascii=False)
            if out.kind == "text" and isinstance(out.value, str):
                shown = out.value
            typer.echo(f"{out.node_id:<10} {out.kind:<6} {shown}")
    return saved


def _end_of_run(run: Run, as_json: bool, extra: dict[str, Any] | None = None) -> NoReturn:
    """Print how a run ended and exit with its code."""
    if as_json:
        _print_json({**run.raw, **(extra or {})})
    if run.status == "completed":
        raise typer.Exit(EXIT_COMPLETED)
    if run.status == "canceled":
        _exit(f"run {run.id} was canceled: {run.error or 'canceled'}", EXIT_CANCELED)
    if run.status == "failed":
        # The error already names the node ("node_3 (Crop to face): ..."): say it once.
        _exit(f"error: run {run.id} failed: {run.error}", EXIT_FAILED)
    raise typer.Exit(EXIT_COMPLETED)


def run_app(
    app_ref: Annotated[str, typer.Argument(metavar="APP", help="App id (or exact title).")],
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input",
            "-i",
            metavar="NODE=VALUE",
            help="An input: node_2='studio lighting', node_1=@photo.jpg (a local file, "
            "uploaded), node_3:=42 (JSON). Repeat for each input.",
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option(help="Wait for the run to end (--no-wait: print the run id).")
    ] = True,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Save file outputs (and text ones) into this directory."),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option(help="Stop waiting after this many seconds (exit 4; the run goes on)."),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run an app, show its nodes' progress live, and print or save its outputs."""
    with _client() as client:
        app = _find_app(client, app_ref)
        values = _parse_inputs(app, inputs or [])
        prepared = client.prepare_inputs(app.id, values)
        run = client.runs.create(app.id, prepared)
        if not wait:
            if as_json:
                _print_json(run.raw)
            else:
                typer.echo(run.id)
            return
        if not as_json:
            _err_plain(f"run {run.id} of {app.title!r} ({app.id})")
        try:
            if as_json:
                final = client.runs.wait(run.id, timeout=timeout)
            else:
                with Progress(app) as progress:
                    final = client.runs.wait(run.id, timeout=timeout, on_event=progress)
        except RunTimeout as exc:
            hint = f"; it goes on: flowy runs watch {run.id} / flowy runs cancel {run.id}"
            if as_json:
                _print_json({"runId": run.id, "status": exc.status, "error": "timeout"})
            _exit(f"error: {exc}{hint}", EXIT_TIMEOUT)
        except KeyboardInterrupt:
            _exit(f"interrupted; run {run.id} goes on (flowy runs cancel {run.id})", 130)
        saved = _report_outputs(final, out, as_json)
    _end_of_run(final, as_json, {"savedFiles": saved} if out is not None else None)


def _err_plain(message: str) -> None:
    typer.echo(message, err=True)


# -- runs -------------------------------------------------------------------------------


@runs_app.command("list")
def runs_list(
    app: Annotated[str | None, typer.Option("--app", help="Only this app's runs.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="Only runs in this status: queued, running, completed, failed, canceled."
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="How many runs, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """List runs, newest first."""
    with _client() as client:
        runs = list(client.runs.list(app_id=app, status=status, limit=limit))
    if as_json:
        _print_json([r.raw for r in runs])
        return
    for r in runs:
        error = f"  {r.error}" if r.error else ""
        typer.echo(f"{r.id}  {r.status:<9}  app {r.app_id}  {_ts(r.created_at)}{error}")


@runs_app.command("show")
def runs_show(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID")], as_json: JsonOpt = False
) -> None:
    """Show a run: status, times, each node, outputs."""
    with _client() as client:
        run = client.runs.get(run_id)
    if as_json:
        _print_json(run.raw)
        return
    typer.echo(f"run {run.id}  {run.status}")
    typer.echo(f"  app       {run.app_id} (version {run.version_id})")
    typer.echo(
        f"  created   {_ts(run.created_at)}   started {_ts(run.started_at)}   "
        f"ended {_ts(run.completed_at)}"
    )
    if run.error:
        typer.echo(f"  error     {run.error}")
    for n in run.nodes or ():
        took = f"{n.duration_ms:.0f} ms" if n.duration_ms is not None else ""
        err = f"  {n.error}" if n.error else ""
        typer.echo(f"  node   {n.node_id:<10} {n.label or '':<24} {n.status:<10} {took}{err}")
    for o in run.outputs:
        shown = f"{o.url}  (expires {_ts(o.expires_at)})" if o.is_file else json.dumps(o.value)
        typer.echo(f"  output {o.node_id:<10} {o.kind:<6} {shown}")


@runs_app.command("cancel")
def runs_cancel(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID")], as_json: JsonOpt = False
) -> None:
    """Cancel a run: a queued one ends at once, a running one promptly.  Idempotent."""
    with _client() as client:
        run = client.runs.cancel(run_id)
    if as_json:
        _print_json(run.raw)
    elif run.status == "canceled":
        typer.echo(f"run {run.id} canceled")
    elif run.done:
        typer.echo(f"run {run.id} had already ended: {run.status}")
    else:
        typer.echo(f"run {run.id} is {run.status}: cancel requested")


def _event_line(event: RunEvent) -> str:
    data = event.data
    parts = [f"{event.seq:>4}", _ts(event.created_at)[11:], f"{event.type:<20}"]
    if event.node_id:
        parts.append(f"{event.node_id:<10} {str(data.get('label') or ''):<20}")
    if data.get("status"):
        parts.append(str(data["status"]))
    if isinstance(data.get("progress"), int | float) and event.type == "node.progress":
        parts.append(f"{float(data['progress']) * 100:.0f}%")
    if data.get("error"):
        parts.append(f"error: {data['error']}")
    if event.type == "run.outputs":
        parts.append(", ".join(str(o.get("nodeId")) for o in data.get("outputs") or ()))
    return "  ".join(parts).rstrip()


@runs_app.command("watch")
def runs_watch(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID")],
    after: Annotated[int, typer.Option(help="Start after this event number.")] = 0,
    as_json: JsonOpt = False,
) -> None:
    """Print a run's events as they happen, until it ends (exit code by how it ended).
    With --json, one JSON event per line."""
    emit: Callable[[RunEvent], None] = (
        (lambda e: typer.echo(json.dumps(e.raw, ensure_ascii=False)))
        if as_json
        else (lambda e: typer.echo(_event_line(e)))
    )
    status = None
    with _client() as client:
        for event in client.runs.events(run_id, after=after):
            emit(event)
            sys.stdout.flush()
            if event.terminal:
                status = event.status or event.type.removeprefix("run.")
        if status is None:
            status = client.runs.get(run_id).status
    raise typer.Exit(
        {"completed": EXIT_COMPLETED, "failed": EXIT_FAILED, "canceled": EXIT_CANCELED}.get(
            status, EXIT_COMPLETED
        )
    )
