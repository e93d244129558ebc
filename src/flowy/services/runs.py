"""Starting runs and reading them back.

A run is committed before it is queued, so a queue that loses a message loses no run:
the sweeper and start-up recovery find it in the table.
"""

from __future__ import annotations

import asyncio
import builtins
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Row, Table, and_, bindparam, insert, or_, select, update
from sqlalchemy.orm import Session

from flowy.db.batch import GroupCommit
from flowy.db.models import App, Run, RunInputs, utcnow
from flowy.db.prepared import Prepared
from flowy.db.session import Database, at_commit
from flowy.engine.inputs import check_run_inputs
from flowy.errors import Conflict, Issue, NotFound, ValidationFailed
from flowy.ids import is_id, new_id
from flowy.services.apps import AppService, Runnable, StaleApp
from flowy.services.cursors import decode_cursor, encode_cursor
from flowy.services.events import created, emit
from flowy.services.files import FileService
from flowy.services.states import TERMINAL, NodeStatus, RunStatus, cancel_queued
from flowy.services.webhooks import check_run_webhook

RUN_BODY_FIELDS = frozenset({"inputs", "timeoutSeconds", "webhook", "webhookEventsFilter"})
MAX_TIMEOUT_SECONDS = 24 * 3600
MAX_PAGE = 100
CANCELED_BY_REQUEST = "canceled by request"


@dataclass(frozen=True)
class RunFilter:
    app_id: str | None = None
    status: str | None = None
    version_id: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None


_VIEW_COLUMNS = (
    Run.id,
    Run.workspace_id,
    Run.app_id,
    Run.version_id,
    Run.status,
    Run.outputs,
    Run.error,
    Run.error_node,
    Run.created_at,
    Run.started_at,
    Run.completed_at,
    Run.attempt,
    Run.deadline_at,
    Run.nodes,
)
#: The poll's one query, straight on the driver (no Session, no transaction).
_READ_VIEW = Prepared(select(*_VIEW_COLUMNS).where(Run.id == bindparam("run_id")))


_RUN_COLUMNS = [c.key for c in Run.__table__.c]
_INSERT_RUN = Prepared(insert(cast(Table, Run.__table__)), _RUN_COLUMNS)
_INSERT_INPUTS = Prepared(insert(cast(Table, RunInputs.__table__)), ["run_id", "inputs"])
#: A run's inputs, for the worker that claimed it (written once, at creation).
READ_INPUTS = Prepared(select(RunInputs.inputs).where(RunInputs.run_id == bindparam("p_run_id")))
_COUNT_RUNS = Prepared(
    update(cast(Table, App.__table__))
    .where(App.__table__.c.id == bindparam("p_app_id"))
    .values(run_count=App.__table__.c.run_count + bindparam("p_runs"))
)
#: Session.info key of the runs a transaction created, counted by app.
_NEW_RUNS_BY_APP = "flowy_new_runs_by_app"


def _count_new_runs(s: Session) -> None:
    """Add the runs this transaction created to their apps' counts: one UPDATE per app,
    however many runs a group commit holds."""
    for app_id, n in s.info.pop(_NEW_RUNS_BY_APP, {}).items():
        _COUNT_RUNS.execute(s, {"p_app_id": app_id, "p_runs": n})


#: How often a run is checked again when its app changed between its check and its write.
STALE_RETRIES = 2


def _keeps_changing(app_id: str) -> Conflict:
    return Conflict(f"app {app_id} keeps changing; try again")


class _Inbox:
    """Answers for one event loop's waiters, handed over in one wake-up."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.items: list[
            tuple[asyncio.Future[Accepted], Accepted | None, BaseException | None]
        ] = []

    def empty(self) -> None:
        """On the loop: answer every waiter delivered so far."""
        with self.lock:
            items, self.items = self.items, []
        for waiter, run, exc in items:
            if waiter.done():
                continue  # its request went away (canceled); the run stands
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(cast(Accepted, run))


@dataclass(frozen=True)
class Accepted:
    """A run as :meth:`RunService.start` answers it once stored: what ``RunCreated``
    shows, without building the ORM object."""

    id: str
    status: str
    app_id: str
    created_at: datetime


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


class DirectStart(Protocol):
    """Workers of this process that can take a new run the moment it is created: the
    run is claimed in the transaction that creates it and handed to a waiting worker,
    with no second transaction and no queue in between (embedded mode)."""

    def reserve(self) -> bool:
        """Hold a waiting worker for one run; False when none is waiting."""
        ...

    def claim(self, s: Session, run_id: str) -> Row[Any] | None:
        """Claim the run in the caller's transaction (None: the workspace is at its
        concurrent-run limit, or it is not queued)."""
        ...

    def hand(self, claimed: Row[Any], inputs: dict[str, object]) -> None:
        """Give the claimed run, with its inputs as stored, to the held worker (after
        the commit): the worker need not read them back."""
        ...

    def release(self) -> None:
        """Give back a held worker that got no run."""
        ...


class RunService:
    def __init__(
        self,
        db: Database,
        apps: AppService,
        files: FileService,
        enqueue: Callable[[str], None],
        cancel_local: Callable[[str, str], None] = lambda _run_id, _reason: None,
        max_inputs: int = 100,
        direct: DirectStart | None = None,
        writer: GroupCommit | None = None,
    ) -> None:
        self.direct = direct
        self.writer = writer or GroupCommit(db, name="flowy-run-writer")
        self._inboxes: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox] = (
            weakref.WeakKeyDictionary()
        )
        self.max_inputs = max_inputs
        self.db = db
        self.apps = apps
        self.files = files
        self.enqueue = enqueue
        self.cancel_local = cancel_local

    def create(self, workspace_id: str, app_id: str, body: object) -> Run:
        """Validate a run request, store the run as ``queued`` and queue it, or hand it
        at once to a waiting worker of this process.  Answers the run as it was accepted
        (``queued``, its first event), as the API's contract shows it.

        Raises NotFound for an unknown app, Conflict for an unpublished one, and
        ValidationFailed naming every bad field; nothing is stored then.
        """
        for attempt in range(1 + STALE_RETRIES):
            values, inputs, app = self._accept(workspace_id, app_id, body, fresh=attempt > 0)
            write, after, failed = self._write(values, inputs, app)
            try:
                self.writer.run(write, after=after, failed=failed)
            except StaleApp:
                continue  # the app changed meanwhile: check the run against it again
            return Run(**values)
        raise _keeps_changing(app_id)

    def start(self, workspace_id: str, app_id: str, body: object) -> Future[Accepted]:
        """:meth:`create` for callers that wait otherwise: the request is checked here and
        now, raising as :meth:`create` does; the future answers the run once the writer
        thread committed it, in one transaction with the other runs that arrived
        meanwhile (group commit).  A future canceled meanwhile leaves the run standing."""
        answer: Future[Accepted] = Future()

        def deliver(run: Accepted | None, exc: BaseException | None) -> None:
            if not answer.set_running_or_notify_cancel():
                return  # the caller went away; the run stands
            if exc is not None:
                answer.set_exception(exc)
            else:
                answer.set_result(cast(Accepted, run))

        self._start(workspace_id, app_id, body, deliver)
        return answer

    async def start_async(self, workspace_id: str, app_id: str, body: object) -> Accepted:
        """:meth:`start` for the API's event loop.  The answers of the runs a group commit
        wrote reach the loop together, in one wake-up: a wake-up per run (a write to the
        loop's pipe from the writer thread, each letting go of the GIL) cost more than
        the rest of the hand-back."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Accepted] = loop.create_future()
        inbox = self._inbox(loop)

        def deliver(run: Accepted | None, exc: BaseException | None) -> None:
            with inbox.lock:
                inbox.items.append((waiter, run, exc))
                if len(inbox.items) > 1:
                    return  # the wake-up is on its way
            loop.call_soon_threadsafe(inbox.empty)

        self._start(workspace_id, app_id, body, deliver)
        return await waiter

    def _inbox(self, loop: asyncio.AbstractEventLoop) -> _Inbox:
        inbox = self._inboxes.get(loop)
        if inbox is None:
            inbox = self._inboxes.setdefault(loop, _Inbox())
        return inbox

    def _start(
        self,
        workspace_id: str,
        app_id: str,
        body: object,
        deliver: Callable[[Accepted | None, BaseException | None], None],
    ) -> None:
        def submit(fresh: bool, tries: int) -> None:
            values, inputs, app = self._accept(workspace_id, app_id, body, fresh=fresh)
            write, after, failed = self._write(values, inputs, app)
            stored = self.writer.submit(write, after=after, failed=failed)

            def done(f: Future[Row[Any] | None]) -> None:
                exc = f.exception()
                if isinstance(exc, StaleApp) and tries > 0:
                    # The app changed since it was read: check the run again, now against
                    # the app as it is (on the writer's thread: a rare read).
                    try:
                        submit(True, tries - 1)
                    except Exception as again:
                        deliver(None, again)
                    return
                if isinstance(exc, StaleApp):
                    exc = _keeps_changing(app_id)
                if exc is not None:
                    deliver(None, exc)
                else:
                    v = values
                    deliver(Accepted(v["id"], v["status"], v["app_id"], v["created_at"]), None)

            stored.add_done_callback(done)

        submit(False, STALE_RETRIES)

    def _accept(
        self, workspace_id: str, app_id: str, body: object, *, fresh: bool = False
    ) -> tuple[dict[str, Any], dict[str, object], Runnable]:
        """Check a run request; the new run's column values, its inputs, and the app as
        it was checked against (its write checks that it is still so)."""
        app = self.apps.runnable(workspace_id, app_id, fresh=fresh)
        workflow = app.workflow
        if not app.published:
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
        timeout = body.get("timeoutSeconds")
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not 0 < timeout <= MAX_TIMEOUT_SECONDS
        ):
            issues.append(
                Issue(
                    "invalid_value",
                    f"must be a number of seconds in (0, {MAX_TIMEOUT_SECONDS}]",
                    field="timeoutSeconds",
                )
            )
        if "inputs" not in body:
            issues.append(
                Issue(
                    "required", "'inputs' is required: an object of nodeId -> value", field="inputs"
                )
            )
        inputs: dict[str, object] = {}
        if isinstance(body.get("inputs"), Mapping) and len(body["inputs"]) > self.max_inputs:
            raise ValidationFailed(
                [
                    Issue(
                        "too_many_inputs",
                        f"at most {self.max_inputs} inputs per run",
                        field="inputs",
                    )
                ]
            )
        if "inputs" in body:
            try:
                inputs = check_run_inputs(
                    workflow,
                    body["inputs"],
                    lambda url: self.files.check_link(url, workspace_id),
                )
            except ValidationFailed as exc:
                issues.extend(exc.issues)
        webhook_url, webhook_events, webhook_issues = check_run_webhook(body)
        issues.extend(webhook_issues)
        if issues:
            raise ValidationFailed(issues)
        now = utcnow()
        values: dict[str, Any] = dict.fromkeys(_RUN_COLUMNS)
        values |= {
            "id": new_id(),
            "workspace_id": workspace_id,
            "app_id": app.app_id,
            "version_id": app.version_id,
            "status": RunStatus.QUEUED,
            "outputs": [],
            "nodes": {nid: {"status": NodeStatus.PENDING} for nid in workflow.order},
            "attempt": 0,
            "event_seq": 0,
            "created_at": now,
            "webhook_url": webhook_url,
            "webhook_events": webhook_events,
        }
        timeout = body.get("timeoutSeconds")
        if timeout is not None:
            values["deadline_at"] = now + timedelta(seconds=float(timeout))
        return values, inputs, app

    def _write(
        self, values: dict[str, Any], inputs: dict[str, object], app: Runnable
    ) -> tuple[
        Callable[[Session], Row[Any] | None],
        Callable[[Row[Any] | None], None],
        Callable[[], None],
    ]:
        """The accepted run's write (the run, its inputs, its first event, the app's count,
        and a claim when a worker of this process waits for it), what follows its commit (the hand
        to that worker, or the queue) and what follows its failure."""
        run_id, app_id = values["id"], values["app_id"]
        direct = self.direct if self.direct is not None and self.direct.reserve() else None

        def write(s: Session) -> Row[Any] | None:
            self.apps.ensure_current(s, app)  # StaleApp: the app changed since _accept
            _INSERT_RUN.execute(s, values)
            _INSERT_INPUTS.execute(s, {"run_id": run_id, "inputs": inputs})
            created(s, run_id)
            emit(s, run_id, "run.queued", {"status": RunStatus.QUEUED})
            counts = s.info.setdefault(_NEW_RUNS_BY_APP, {})
            counts[app_id] = counts.get(app_id, 0) + 1
            at_commit(s, _count_new_runs)
            return direct.claim(s, run_id) if direct is not None else None

        def after(claimed: Row[Any] | None) -> None:
            if direct is not None and claimed is not None:
                direct.hand(claimed, inputs)
                return
            if direct is not None:
                direct.release()
            self.enqueue(run_id)

        def failed() -> None:
            if direct is not None:
                direct.release()

        return write, after, failed

    def cancel(self, workspace_id: str, run_id: str) -> Run:
        """Cancel a run: a queued one at once, a running one at its next check.

        Idempotent: a run that already ended is answered as it is.
        """
        run = self.get(workspace_id, run_id)
        if run.status in TERMINAL:
            return run
        with self.db.write() as s:
            if not cancel_queued(s, run_id, CANCELED_BY_REQUEST):
                res = s.execute(
                    update(Run)
                    .where(
                        Run.id == run_id,
                        Run.status == RunStatus.RUNNING,
                        Run.cancel_requested_at.is_(None),
                    )
                    .values(cancel_requested_at=utcnow())
                    .execution_options(synchronize_session=False)
                )
                if res.rowcount == 1:  # type: ignore[attr-defined]
                    emit(s, run_id, "run.cancel_requested", {})
        self.cancel_local(run_id, CANCELED_BY_REQUEST)
        return self.get(workspace_id, run_id)

    def list(
        self, workspace_id: str, f: RunFilter, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Run], str | None]:
        """Runs of the workspace, newest first; answers a page and the next cursor."""
        issues = []
        if not 1 <= limit <= MAX_PAGE:
            issues.append(
                Issue("invalid_value", f"must be between 1 and {MAX_PAGE}", field="limit")
            )
        if f.status is not None and f.status not in {s.value for s in RunStatus}:
            issues.append(
                Issue(
                    "invalid_value",
                    "must be one of " + ", ".join(s.value for s in RunStatus),
                    field="status",
                )
            )
        if issues:
            raise ValidationFailed(issues)
        q = select(Run).where(Run.workspace_id == workspace_id)
        if f.app_id is not None:
            q = q.where(Run.app_id == f.app_id)
        if f.status is not None:
            q = q.where(Run.status == f.status)
        if f.version_id is not None:
            q = q.where(Run.version_id == f.version_id)
        if f.created_after is not None:
            q = q.where(Run.created_at > f.created_after)
        if f.created_before is not None:
            q = q.where(Run.created_at < f.created_before)
        if cursor:
            at, last_id = decode_cursor(cursor)
            q = q.where(or_(Run.created_at < at, and_(Run.created_at == at, Run.id < last_id)))
        q = q.order_by(Run.created_at.desc(), Run.id.desc()).limit(limit + 1)
        with self.db.read() as s:
            runs = list(s.scalars(q))
        more = len(runs) > limit
        runs = runs[:limit]
        return runs, (encode_cursor(runs[-1].created_at, runs[-1].id) if more and runs else None)

    def get(self, workspace_id: str, run_id: str) -> Run:
        """A run of the workspace; NotFound for an unknown id or another workspace's run."""
        with self.db.read() as s:
            run = s.get(Run, run_id) if is_id(run_id) else None
        if run is None or run.workspace_id != workspace_id:
            raise NotFound(f"run {run_id} not found")
        return run

    def read_view(self, workspace_id: str, run_id: str) -> dict[str, Any]:
        """``public(get(...))`` for the poll, the hottest read: one query of just the
        columns the view shows, straight on the driver (see ``_READ_VIEW``)."""
        if not is_id(run_id):
            raise NotFound(f"run {run_id} not found")
        row = _READ_VIEW.execute(self.db.read_engine, {"run_id": run_id}).first()
        if row is None or row.workspace_id != workspace_id:
            raise NotFound(f"run {run_id} not found")
        # The row has every attribute public() reads, under the same names.
        return self.public(cast(Run, row))

    def output_views(self, stored: Sequence[dict[str, Any]]) -> builtins.list[dict[str, Any]]:
        """Outputs as callers see them: files get a freshly signed ``url``."""
        outputs: builtins.list[dict[str, Any]] = []
        now = utcnow()
        for out in stored:
            item: dict[str, Any] = {"nodeId": out["nodeId"], "kind": out["kind"]}
            gone_at = out.get("fileExpiresAt")
            if "assetId" in out and gone_at and datetime.fromisoformat(gone_at) <= now:
                # Say so rather than hand out a link that answers 410.
                item.update(
                    url=None,
                    deleted=True,
                    deletedAt=gone_at,
                    contentType=out.get("contentType"),
                    size=out.get("size"),
                )
            elif "assetId" in out:
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
        return outputs

    def public(self, run: Run, *, nodes: bool = True) -> dict[str, Any]:
        """The run as the API shows it, with output links signed afresh."""
        view: dict[str, Any] = {
            "runId": run.id,
            "appId": run.app_id,
            "versionId": run.version_id,
            "status": run.status,
            "outputs": self.output_views(run.outputs),
            "error": run.error,
            "errorNode": run.error_node,
            "createdAt": _iso(run.created_at),
            "startedAt": _iso(run.started_at),
            "completedAt": _iso(run.completed_at),
            "attempt": run.attempt,
            "deadlineAt": _iso(run.deadline_at),
        }
        if nodes:
            view["nodes"] = [{"nodeId": nid, **state} for nid, state in run.nodes.items()]
        return view
