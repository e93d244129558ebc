"""Starting runs and reading them back.

A run is committed before it is queued, so a queue that loses a message loses no run:
the sweeper and start-up recovery find it in the table.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import update

from flowy.db.models import App, Run
from flowy.db.session import Database
from flowy.engine.inputs import check_run_inputs
from flowy.errors import Conflict, Issue, NotFound, ValidationFailed
from flowy.ids import is_id
from flowy.services.apps import AppService
from flowy.services.files import FileService
from flowy.services.states import NodeStatus, RunStatus

RUN_BODY_FIELDS = frozenset({"inputs"})


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


class RunService:
    def __init__(
        self, db: Database, apps: AppService, files: FileService, enqueue: Callable[[str], None]
    ) -> None:
        self.db = db
        self.apps = apps
        self.files = files
        self.enqueue = enqueue

    def create(self, workspace_id: str, app_id: str, body: object) -> Run:
        """Validate a run request, store the run as ``queued`` and queue it.

        Raises NotFound for an unknown app, Conflict for an unpublished one, and
        ValidationFailed naming every bad field; nothing is stored then.
        """
        detail = self.apps.get(workspace_id, app_id)
        if not detail.app.published:
            raise Conflict(f"app {app_id} is not published; publish it before running it")
        if not isinstance(body, Mapping):
            raise ValidationFailed(
                [Issue("invalid_type", "the body must be a JSON object", field="body")]
            )
        issues = [
            Issue("unknown_field", f"unknown field {k!r}", field=str(k))
            for k in body
            if k not in RUN_BODY_FIELDS
        ]
        if "inputs" not in body:
            issues.append(
                Issue(
                    "required", "'inputs' is required: an object of nodeId -> value", field="inputs"
                )
            )
        inputs: dict[str, object] = {}
        if "inputs" in body:
            try:
                inputs = check_run_inputs(
                    detail.workflow,
                    body["inputs"],
                    lambda url: self.files.check_link(url, workspace_id),
                )
            except ValidationFailed as exc:
                issues.extend(exc.issues)
        if issues:
            raise ValidationFailed(issues)
        run = Run(
            workspace_id=workspace_id,
            app_id=detail.app.id,
            version_id=detail.version.id,
            status=RunStatus.QUEUED,
            inputs=inputs,
            outputs=[],
            nodes={nid: {"status": NodeStatus.PENDING} for nid in detail.workflow.order},
        )
        with self.db.write() as s:
            s.add(run)
            s.execute(
                update(App).where(App.id == detail.app.id).values(run_count=App.run_count + 1)
            )
        self.enqueue(run.id)
        return run

    def get(self, workspace_id: str, run_id: str) -> Run:
        """A run of the workspace; NotFound for an unknown id or another workspace's run."""
        with self.db.read() as s:
            run = s.get(Run, run_id) if is_id(run_id) else None
        if run is None or run.workspace_id != workspace_id:
            raise NotFound(f"run {run_id} not found")
        return run

    def public(self, run: Run) -> dict[str, Any]:
        """The run as the API shows it, with output links signed afresh."""
        outputs: list[dict[str, Any]] = []
        for out in run.outputs:
            item: dict[str, Any] = {"nodeId": out["nodeId"], "kind": out["kind"]}
            if "assetId" in out:
                link = self.files.link(out["assetId"], out["filename"])
                item["url"] = link.url
                item["expiresAt"] = _iso(link.expires_at)
                item["contentType"] = out.get("contentType")
                item["size"] = out.get("size")
            else:
                item["value"] = out.get("value")
                if out.get("skipped"):
                    item["skipped"] = True
            outputs.append(item)
        nodes = [{"nodeId": nid, **state} for nid, state in run.nodes.items()]
        return {
            "runId": run.id,
            "appId": run.app_id,
            "versionId": run.version_id,
            "status": run.status,
            "outputs": outputs,
            "error": run.error,
            "errorNode": run.error_node,
            "createdAt": _iso(run.created_at),
            "startedAt": _iso(run.started_at),
            "completedAt": _iso(run.completed_at),
            "attempt": run.attempt,
            "nodes": nodes,
        }
