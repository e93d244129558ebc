"""Apps and their immutable versions."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from threading import Lock
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, select
from sqlalchemy.orm import Session

from flowy.db.models import App, AppVersion, utcnow
from flowy.db.prepared import Prepared
from flowy.db.session import Database
from flowy.engine.graph import Workflow, parse_workflow
from flowy.engine.registry import NodeRegistry
from flowy.errors import Issue, NotFound, ValidationFailed
from flowy.ids import is_id


class WorkflowCache:
    """Parsed workflows by version id.  Versions never change, so entries never go stale."""

    def __init__(self, registry: NodeRegistry, size: int = 256) -> None:
        self.registry = registry
        self._size = size
        self._items: OrderedDict[str, Workflow] = OrderedDict()
        self._lock = Lock()

    def load(self, version_id: str, read: Callable[[], dict[str, Any]]) -> Workflow:
        """The parsed workflow of a version; ``read`` fetches its document only on a miss
        (the JSON of a big graph is not worth reading and parsing per run)."""
        with self._lock:
            wf = self._items.get(version_id)
            if wf is not None:
                self._items.move_to_end(version_id)
                return wf
        return self.get(version_id, read())

    def get(self, version_id: str, document: dict[str, Any]) -> Workflow:
        with self._lock:
            wf = self._items.get(version_id)
            if wf is not None:
                self._items.move_to_end(version_id)
                return wf
        wf = parse_workflow(document, self.registry)
        with self._lock:
            self._items[version_id] = wf
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return wf


@dataclass(frozen=True)
class AppDetail:
    app: App
    version: AppVersion
    workflow: Workflow


@dataclass(frozen=True)
class Runnable:
    app_id: str
    published: bool
    version_id: str
    workflow: Workflow


class StaleApp(Exception):
    """The app changed since a run was checked against it (another version, or it is no
    longer published): check the run again with a fresh read."""


@dataclass(frozen=True)
class _Head:
    """What starting a run needs of an app row."""

    workspace_id: str
    published: bool
    version_id: str
    deleted: bool


_APPS = cast(Table, App.__table__)
_RUNNABLE = Prepared(
    select(
        _APPS.c.id,
        _APPS.c.workspace_id,
        _APPS.c.published,
        _APPS.c.current_version_id,
        _APPS.c.deleted_at,
    ).where(_APPS.c.id == bindparam("p_app_id"))
)
_WORKFLOW = Prepared(
    select(AppVersion.__table__.c.workflow).where(
        AppVersion.__table__.c.id == bindparam("p_version_id")
    )
)


def _check_title(title: object, issues: list[Issue]) -> None:
    if not isinstance(title, str) or not title.strip() or len(title) > 200:
        issues.append(
            Issue(
                "invalid_value",
                "must be a non-empty string of at most 200 characters",
                field="title",
            )
        )


def _load(s: Session, workspace_id: str, app_id: str) -> App:
    app = s.get(App, app_id) if is_id(app_id) else None
    if app is None or app.workspace_id != workspace_id or app.deleted_at is not None:
        raise NotFound(f"app {app_id} not found")
    return app


#: Session.info key of the app heads a write transaction has read (see ensure_current).
_CHECKED = "flowy_apps_checked"


class AppService:
    #: App heads kept for :meth:`runnable` (least recently read dropped first).
    HEADS = 1024

    def __init__(self, db: Database, workflows: WorkflowCache) -> None:
        self.db = db
        self.workflows = workflows
        # Apps that were runnable when last read: a new run is checked against this copy
        # and its write transaction reads the row again (ensure_current).  Changes made
        # here drop the copy at once; changes made elsewhere show as StaleApp there.
        self._heads: OrderedDict[str, _Head] = OrderedDict()
        self._heads_lock = Lock()

    def list(self, workspace_id: str) -> list[App]:
        with self.db.read() as s:
            q = (
                select(App)
                .where(App.workspace_id == workspace_id, App.deleted_at.is_(None))
                .order_by(App.created_at, App.id)
            )
            return list(s.scalars(q))

    def get(self, workspace_id: str, app_id: str) -> AppDetail:
        """The app with its current version; NotFound for another workspace's app."""
        with self.db.read() as s:
            app = _load(s, workspace_id, app_id)
            version = s.get(AppVersion, app.current_version_id)
            assert version is not None
        return AppDetail(app, version, self.workflows.get(version.id, version.workflow))

    def runnable(self, workspace_id: str, app_id: str, *, fresh: bool = False) -> Runnable:
        """What starting a run needs: the app's publication, its current version id and
        its workflow.  A published app's head is kept from its last read (``fresh``
        reads it anyway), so a new run costs no read before its write, which checks the
        head again (:meth:`ensure_current`); anything else is read afresh before it is
        refused.  NotFound as :meth:`get`."""
        head = None if fresh else self._cached(app_id)
        if head is None or head.workspace_id != workspace_id:
            head = self._read_head(app_id)
        if head is None or head.workspace_id != workspace_id or head.deleted:
            raise NotFound(f"app {app_id} not found")
        version_id = head.version_id
        engine = self.db.read_engine

        def read() -> dict[str, Any]:
            doc = _WORKFLOW.execute(engine, {"p_version_id": version_id}).scalar()
            assert doc is not None
            return dict(doc)

        return Runnable(app_id, head.published, version_id, self.workflows.load(version_id, read))

    def ensure_current(self, s: Session, runnable: Runnable) -> None:
        """In a write transaction: raise StaleApp unless ``runnable`` still describes the
        app (published, not deleted, the same current version).  One read per app and
        transaction, however many runs a group commit writes."""
        checked: dict[str, Any] = s.info.setdefault(_CHECKED, {})
        if runnable.app_id not in checked:
            checked[runnable.app_id] = _RUNNABLE.execute(s, {"p_app_id": runnable.app_id}).first()
        row = checked[runnable.app_id]
        if (
            row is None
            or row.deleted_at is not None
            or not row.published
            or row.current_version_id != runnable.version_id
        ):
            self.forget(runnable.app_id)
            raise StaleApp(runnable.app_id)

    def forget(self, app_id: str) -> None:
        """Drop the kept head of an app (it changed)."""
        with self._heads_lock:
            self._heads.pop(app_id, None)

    def _cached(self, app_id: str) -> _Head | None:
        with self._heads_lock:
            head = self._heads.get(app_id)
            if head is not None:
                self._heads.move_to_end(app_id)
            return head

    def _read_head(self, app_id: str) -> _Head | None:
        if not is_id(app_id):
            return None
        row = _RUNNABLE.execute(self.db.read_engine, {"p_app_id": app_id}).first()
        if row is None:
            return None
        head = _Head(
            row.workspace_id,
            bool(row.published),
            row.current_version_id,
            row.deleted_at is not None,
        )
        with self._heads_lock:
            if head.published and not head.deleted:
                self._heads[app_id] = head
                self._heads.move_to_end(app_id)
                while len(self._heads) > self.HEADS:
                    self._heads.popitem(last=False)
            else:
                self._heads.pop(app_id, None)
        return head

    def create(
        self,
        workspace_id: str,
        *,
        title: object,
        workflow: object,
        description: str = "",
        published: bool = False,
    ) -> AppDetail:
        """Validate the workflow and store the app with version 1."""
        issues: list[Issue] = []
        _check_title(title, issues)
        if issues:
            raise ValidationFailed(issues)
        wf = parse_workflow(workflow, self.workflows.registry)
        assert isinstance(workflow, dict) and isinstance(title, str)
        with self.db.write() as s:
            app = App(
                workspace_id=workspace_id,
                title=title.strip(),
                description=description,
                published=published,
            )
            s.add(app)
            s.flush()
            version = AppVersion(app_id=app.id, number=1, workflow=workflow)
            s.add(version)
            s.flush()
            app.current_version_id = version.id
        return AppDetail(app, version, wf)

    def update(
        self,
        workspace_id: str,
        app_id: str,
        *,
        title: object = None,
        description: str | None = None,
        workflow: object = None,
        published: bool | None = None,
    ) -> AppDetail:
        """Change an app; a new workflow becomes a new version (runs in flight keep theirs)."""
        issues: list[Issue] = []
        if title is not None:
            _check_title(title, issues)
        if issues:
            raise ValidationFailed(issues)
        wf = parse_workflow(workflow, self.workflows.registry) if workflow is not None else None
        with self.db.write() as s:
            app = _load(s, workspace_id, app_id)
            if isinstance(title, str):
                app.title = title.strip()
            if description is not None:
                app.description = description
            if published is not None:
                app.published = published
            if wf is not None:
                assert isinstance(workflow, dict)
                number = (
                    s.scalar(select(func.max(AppVersion.number)).where(AppVersion.app_id == app.id))
                    or 0
                )
                version = AppVersion(app_id=app.id, number=number + 1, workflow=workflow)
                s.add(version)
                s.flush()
                app.current_version_id = version.id
            app.updated_at = utcnow()
        self.forget(app_id)
        return self.get(workspace_id, app_id)

    def delete(self, workspace_id: str, app_id: str) -> None:
        """Delete an app.  Its past runs stay readable; new runs are refused."""
        with self.db.write() as s:
            app = _load(s, workspace_id, app_id)
            app.deleted_at = utcnow()
            app.published = False
        self.forget(app_id)
