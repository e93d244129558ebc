"""The run as the API shows it: the poll's direct read answers what the ORM read does."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from flowy.db.models import App, AppVersion, Run, Workspace, utcnow
from flowy.db.session import Database
from flowy.engine.registry import default_registry
from flowy.errors import NotFound
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.files import FileService
from flowy.services.runs import RunService
from flowy.storage.local import LocalBlobStore
from flowy.storage.signing import UrlSigner

NOW = 1_800_000_000.0


@pytest.fixture
def runs(db: Database, tmp_path: Path) -> RunService:
    signer = UrlSigner(b"k" * 32, clock=lambda: NOW)
    files = FileService(db, LocalBlobStore(tmp_path / "files"), signer, "http://flowy.test", 600)
    apps = AppService(db, WorkflowCache(default_registry()))
    return RunService(db, apps, files, enqueue=lambda _run_id: None)


def new_run(db: Database, **fields: Any) -> tuple[str, str]:
    """A run of a new workspace; answers (workspace id, run id)."""
    with db.write() as s:
        ws = Workspace(name="acme")
        s.add(ws)
        s.flush()
        app = App(workspace_id=ws.id, title="Photos")
        s.add(app)
        s.flush()
        version = AppVersion(app_id=app.id, number=1, workflow={"nodes": []})
        s.add(version)
        s.flush()
        run = Run(
            workspace_id=ws.id,
            app_id=app.id,
            version_id=version.id,
            **fields,
        )
        s.add(run)
        s.flush()
        return ws.id, run.id


def test_a_finished_run_reads_as_the_orm_view(db: Database, runs: RunService) -> None:
    started = utcnow().replace(microsecond=0)  # isoformat then has no fraction
    gone = (utcnow() - timedelta(hours=1)).isoformat()
    ws, run_id = new_run(
        db,
        status="completed",
        attempt=2,
        created_at=started - timedelta(seconds=1),
        started_at=started,
        completed_at=started + timedelta(seconds=2, microseconds=345),
        deadline_at=started + timedelta(minutes=5),
        error=None,
        outputs=[
            {
                "nodeId": "node_9",
                "kind": "image",
                "assetId": "a" * 24,
                "filename": "head shot é.png",
                "contentType": "image/png",
                "size": 1234,
            },
            {
                "nodeId": "node_8",
                "kind": "image",
                "assetId": "b" * 24,
                "filename": "old.png",
                "fileExpiresAt": gone,
                "contentType": "image/png",
                "size": 9,
            },
            {"nodeId": "node_7", "kind": "text", "value": "héllo"},
            {"nodeId": "node_6", "kind": "text", "value": None, "skipped": True},
        ],
        nodes={
            "node_1": {"status": "completed", "durationMs": 1.5},
            "node_9": {"status": "completed", "progress": 1.0},
        },
    )
    view = runs.read_view(ws, run_id)
    assert view == runs.public(runs.get(ws, run_id))
    assert view["createdAt"] == (started - timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    assert view["completedAt"].endswith(".000345Z")
    link = view["outputs"][0]
    assert link["url"].startswith(
        f"http://flowy.test/v1/files/{'a' * 24}/head%20shot%20%C3%A9.png?"
    )
    assert link["expiresAt"] == "2027-01-15T08:10:00Z"  # NOW + 600 s
    assert view["outputs"][1] == {
        "nodeId": "node_8",
        "kind": "image",
        "url": None,
        "deleted": True,
        "deletedAt": gone,
        "contentType": "image/png",
        "size": 9,
    }
    assert view["nodes"] == [
        {"nodeId": "node_1", "status": "completed", "durationMs": 1.5},
        {"nodeId": "node_9", "status": "completed", "progress": 1.0},
    ]


def test_a_queued_run_has_no_times_yet(db: Database, runs: RunService) -> None:
    ws, run_id = new_run(db, status="queued", nodes={"node_1": {"status": "pending"}})
    view = runs.read_view(ws, run_id)
    assert view == runs.public(runs.get(ws, run_id))
    assert (view["startedAt"], view["completedAt"], view["deadlineAt"]) == (None, None, None)
    assert view["outputs"] == [] and view["attempt"] == 0


def test_another_workspaces_or_an_unknown_run_is_not_found(db: Database, runs: RunService) -> None:
    ws, run_id = new_run(db, status="queued")
    other, _ = new_run(db, status="queued")
    for workspace, rid in ((other, run_id), (ws, "0" * 24), (ws, "not-an-id"), (ws, "")):
        with pytest.raises(NotFound, match="not found"):
            runs.read_view(workspace, rid)
