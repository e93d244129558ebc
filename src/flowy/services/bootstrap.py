"""First start: a default workspace, an API key and the example apps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources

from flowy.db.migrate import startup_lock
from flowy.db.session import Database
from flowy.services.apps import AppService
from flowy.services.keys import create_key, create_workspace, first_workspace


@dataclass(frozen=True)
class Bootstrapped:
    workspace_id: str
    api_key: str | None  # only on the start that made the workspace


def example_apps() -> list[dict[str, object]]:
    """The example app documents shipped in ``flowy/examples``."""
    folder = resources.files("flowy") / "examples"
    docs = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".json"):
            docs.append(json.loads(entry.read_text()))
    return docs


def bootstrap(db: Database, apps: AppService) -> Bootstrapped:
    """Create the default workspace with a key and the example apps, once: of the
    servers that start together on one database, one makes them (the others answer
    what it made, without a key)."""
    with startup_lock(db.url):
        return _bootstrap(db, apps)


def _bootstrap(db: Database, apps: AppService) -> Bootstrapped:
    existing = first_workspace(db)
    if existing is not None:
        return Bootstrapped(existing, None)
    workspace_id = create_workspace(db, "Default workspace")
    for doc in example_apps():
        apps.create(
            workspace_id,
            title=doc["title"],
            workflow=doc["workflow"],
            description=str(doc.get("description", "")),
            published=bool(doc.get("published", True)),
        )
    _info, key = create_key(db, workspace_id, "default")
    return Bootstrapped(workspace_id, key)
