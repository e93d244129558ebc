"""The ``flowy`` command: run the server, manage keys and workspaces; the commands that
talk to the API (apps, run, runs) are in :mod:`flowy.cli.remote`."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from flowy.cli import remote
from flowy.errors import FlowyError
from flowy.settings import Settings, load_settings

app = typer.Typer(
    help="Flowy: node-graph workflows as apps behind an async REST API.\n\n"
    "serve, migrate, keys and workspaces work on the local data directory; apps, run and "
    "runs talk to FLOWY_API with FLOWY_KEY.",
    epilog=remote.EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
)
keys_app = typer.Typer(
    help="Manage API keys (works on the local data directory).", no_args_is_help=True
)
workspaces_app = typer.Typer(
    help="Manage workspaces (works on the local data directory).", no_args_is_help=True
)
app.add_typer(keys_app, name="keys")
app.add_typer(workspaces_app, name="workspaces")

DataDir = Annotated[Path | None, typer.Option(help="Data directory (FLOWY_DATA_DIR).")]


def _settings(data_dir: Path | None = None, **server: Any) -> Settings:
    overrides: dict[str, Any] = {}
    if data_dir is not None:
        overrides["data_dir"] = data_dir
    settings = load_settings(**overrides)
    for key, value in server.items():
        if value is not None:
            setattr(settings.server, key, value)
    return settings


def _logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Their start-up chatter (migrations, where AWS credentials were found) is not news.
    for name in ("alembic", "botocore"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _fail(message: str, code: int = 1) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    data_dir: DataDir = None,
) -> None:
    """Start Flowy: in embedded mode the API, SQLite, local files and in-process workers;
    with FLOWY_BROKER_URL set (scaled out), the API alone."""
    import uvicorn

    from flowy.api.app import create_app
    from flowy.db.migrate import upgrade
    from flowy.services.bootstrap import bootstrap
    from flowy.services.platform import Platform

    settings = _settings(data_dir, host=host, port=port)
    _logging(settings)
    try:
        platform = Platform.build(settings)
    except FlowyError as exc:
        _fail(exc.message)
    upgrade(settings.sqlalchemy_url)
    api = f"{settings.base_url}/v1"
    if settings.scaled:
        files = settings.storage_url or settings.data_dir.resolve()
        typer.echo(
            f"Flowy (scaled out: the API; `flowy worker` runs the runs) on {settings.base_url}, "
            f"queue {settings.worker.queue!r}, files in {files}"
        )
    else:
        typer.echo(
            f"Flowy (embedded) on {settings.base_url}, data in {settings.data_dir.resolve()}"
        )
    if settings.bootstrap:
        boot = bootstrap(platform.db, platform.apps)
        if boot.api_key:
            typer.echo(
                "Created the default workspace, its example apps and an API key.\n"
                "The key is shown only this once; paste these lines in your shell:\n"
            )
            typer.echo(f"export FLOWY_API={api}")
            typer.echo(f"export FLOWY_KEY={boot.api_key}\n")
        else:
            typer.echo(f"export FLOWY_API={api}   # make a key with: flowy keys create")
    sys.stdout.flush()
    uvicorn.run(
        create_app(settings, platform),
        host=settings.server.host,
        port=settings.server.port,
        log_level=settings.log_level.lower(),
        access_log=False,
    )


@app.command()
def worker(
    concurrency: Annotated[
        int | None, typer.Option(help="Runs at once (FLOWY_WORKER__CONCURRENCY).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Scaled mode: run the runs that the servers queue on FLOWY_BROKER_URL, in the
    database FLOWY_DATABASE_URL.  Start as many as the work needs; Ctrl-C or SIGTERM
    stops one after its runs in flight (or the shutdown grace period)."""
    from flowy.engine.registry import default_registry
    from flowy.worker.broker import run_worker

    settings = _settings(data_dir)
    if concurrency is not None:
        settings.worker.concurrency = concurrency
    _logging(settings)
    if not settings.scaled:
        _fail(
            "flowy worker is for scaled mode: set FLOWY_BROKER_URL (and FLOWY_DATABASE_URL); "
            "in embedded mode `flowy serve` runs the runs itself"
        )
    try:
        code = run_worker(settings, default_registry())
    except FlowyError as exc:
        _fail(exc.message)
    raise typer.Exit(code)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Bring the database schema up to date."""
    from flowy.db.migrate import upgrade

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    typer.echo("database is up to date")


def _db(data_dir: Path | None) -> Any:
    from flowy.db.migrate import upgrade
    from flowy.db.session import Database

    settings = _settings(data_dir)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    return Database(settings.sqlalchemy_url)


@keys_app.command("create")
def keys_create(
    name: Annotated[str, typer.Option(help="A name to tell the key apart.")] = "cli",
    workspace: Annotated[str | None, typer.Option(help="Workspace id (default: first).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Make an API key; it is printed once and stored only as a hash."""
    from flowy.services.keys import create_key, create_workspace, first_workspace

    db = _db(data_dir)
    ws = workspace or first_workspace(db) or create_workspace(db, "Default workspace")
    info, key = create_key(db, ws, name)
    typer.echo(f"created key {info.id} ({info.name}) for workspace {ws}; it is shown once:")
    typer.echo(f"export FLOWY_KEY={key}")


@keys_app.command("list")
def keys_list(data_dir: DataDir = None) -> None:
    """List keys (prefixes only; keys themselves are never stored)."""
    from flowy.services.keys import list_keys

    for k in list_keys(_db(data_dir)):
        state = f"revoked {k.revoked_at:%Y-%m-%d}" if k.revoked_at else "active"
        used = f"{k.last_used_at:%Y-%m-%d %H:%M}" if k.last_used_at else "never"
        typer.echo(
            f"{k.id}  {k.prefix}…  {k.name:<16} {state:<18} last used {used}  "
            f"workspace {k.workspace_id}"
        )


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None) -> None:
    """Revoke a key at once."""
    from flowy.errors import NotFound
    from flowy.services.keys import revoke_key

    settings = _settings(data_dir)
    db = _db(data_dir)
    relay = None
    if settings.scaled:  # every server forgets the key at once, not after its cache's TTL
        from flowy.services.relay import RedisRelay

        relay = RedisRelay(settings.events_url, settings.worker.queue, db)
        relay.attach()
        relay.start()
    try:
        info = revoke_key(db, key_id)
    except NotFound as exc:
        _fail(exc.message)
    finally:
        if relay is not None:
            relay.stop()  # after the news is sent
    typer.echo(f"revoked key {info.id} ({info.name})")


@workspaces_app.command("create")
def workspaces_create(name: str, data_dir: DataDir = None) -> None:
    """Make a workspace with its own API key; nothing is shared between workspaces."""
    from flowy.services.keys import create_key, create_workspace

    db = _db(data_dir)
    ws = create_workspace(db, name)
    info, key = create_key(db, ws, "default")
    typer.echo(f"created workspace {ws} ({name}) and key {info.id}; the key is shown once:")
    typer.echo(f"export FLOWY_KEY={key}")


@workspaces_app.command("list")
def workspaces_list(data_dir: DataDir = None) -> None:
    """List workspaces."""
    from sqlalchemy import select

    from flowy.db.models import Workspace

    with _db(data_dir).read() as s:
        for w in s.scalars(select(Workspace).order_by(Workspace.created_at)):
            typer.echo(f"{w.id}  {w.name}")


remote.register(app)  # apps, run, runs: the commands that talk to FLOWY_API


def main() -> None:
    app()


if __name__ == "__main__":
    main()
