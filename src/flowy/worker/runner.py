"""Process one run: claim it, execute its pinned workflow, store outputs, finish it.

Every write after the claim is fenced by (lease owner, attempt), so a worker that lost its
lease to the sweeper cannot complete a run that another worker now owns.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Row, select
from sqlalchemy.orm import Session

from flowy.db.models import AppVersion, Asset, Run, utcnow
from flowy.db.session import Database
from flowy.engine.cache import ResultCache
from flowy.engine.executor import CancelToken, RunFailed, RunRequest, WorkflowExecutor
from flowy.engine.graph import Workflow
from flowy.engine.spec import Artifact
from flowy.media.fetch import FetchPolicy
from flowy.services.apps import WorkflowCache
from flowy.services.events import discard, emit
from flowy.services.files import FileService
from flowy.services.media import RunMedia
from flowy.services.runs import CANCELED_BY_REQUEST, READ_INPUTS
from flowy.services.secrets import SecretService, WorkspaceSecrets
from flowy.services.states import NodeStatus, RunStatus, claim, fenced_update, finish
from flowy.settings import Settings

logger = logging.getLogger(__name__)

#: Progress is written at most this often per node, so a chatty node cannot flood the DB.
PROGRESS_INTERVAL = 0.5
#: Log lines kept per run.
MAX_LOGS = 1000
#: Node changes closer together than this are written in one transaction.
FLUSH_INTERVAL = 0.05
#: Cancels remembered for runs this worker does not hold (yet): see RunProcessor.cancel.
MAX_EARLY_CANCELS = 1024
#: The error of a run that failed by an error of Flowy's own.
INTERNAL_ERROR = "internal error while running; see the server log"


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat().replace("+00:00", "Z") if dt else None


def _iso_now() -> str:
    return utcnow().isoformat().replace("+00:00", "Z")


class RunSink:
    """Keeps per-node state of one run and writes it, with its events, to the run row.

    Writes are coalesced: a burst of node changes within ``FLUSH_INTERVAL`` becomes one
    fenced transaction (:meth:`drain`), written by the executor's :meth:`tick` or by the
    run's end (:class:`RunEnd` takes what is left, :meth:`take_events`).  A fast run thus costs its
    end (and its claim, unless the run before it claimed it), not a write per node
    change, while a slow node's start still shows within a tick.
    """

    def __init__(self, db: Database, run: ClaimedRun, owner: str, workflow: Workflow) -> None:
        self.db = db
        self.run_id = run.id
        self.owner = owner
        self.attempt = run.attempt
        self.lost = False
        # Re-entrant: _flush holds it and calls drain, which takes it again.
        self._lock = threading.RLock()
        self._t0: dict[str, float] = {}
        self._last_progress: dict[str, float] = {}
        self._pending: list[tuple[str, dict[str, Any]]] = []
        self._logs = 0
        self._last_flush = time.monotonic()  # the claim was just written
        #: Called on every tick too (on the thread running the executor).
        self.on_tick: Callable[[], None] | None = None
        self.states: dict[str, dict[str, Any]] = {
            nid: {
                "type": workflow.nodes[nid].type.type,
                "label": workflow.nodes[nid].label,
                "status": NodeStatus.PENDING,
            }
            for nid in workflow.order
        }

    def _record(self, node_id: str, event: str, data: dict[str, Any] | None = None) -> None:
        """Queue the node's event (lock held); write now if the last write is old."""
        self._pending.append((event, data or {"nodeId": node_id, **self.states[node_id]}))
        if time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
            self._flush()

    def node_log(self, node_id: str, message: str) -> None:
        with self._lock:
            if self._logs >= MAX_LOGS:
                return  # a node that logs in a loop must not fill the event table
            self._logs += 1
            self._record(node_id, "node.log", {"nodeId": node_id, "message": message})

    def _flush(self) -> None:
        """Write the node states and the queued events, fenced, in one transaction."""
        if not self._pending or self.lost:
            return
        with self.db.write() as s:
            ok = self.drain(s)
        self._last_flush = time.monotonic()
        if not ok:
            self.lost = True

    def take_events(self) -> list[tuple[str, dict[str, Any]]]:
        """The queued events, taken out of the sink (the run has ended: no more come)."""
        with self._lock:
            events, self._pending = self._pending, []
            return events

    def drain(self, s: Session) -> bool:
        """Write the node states and queued events in the caller's transaction (fenced);
        False if this worker no longer holds the run."""
        with self._lock:
            ok = fenced_update(
                s,
                self.run_id,
                self.owner,
                self.attempt,
                nodes={k: dict(v) for k, v in self.states.items()},
            )
            if ok:
                for event, data in self._pending:
                    emit(s, self.run_id, event, data)
            self._pending.clear()
            return ok

    def tick(self) -> None:
        with self._lock:
            if self._pending and time.monotonic() - self._last_flush >= FLUSH_INTERVAL:
                self._flush()
        if self.on_tick is not None:
            self.on_tick()

    def node_started(self, node_id: str) -> None:
        with self._lock:
            self._t0[node_id] = time.perf_counter()
            self.states[node_id].update(
                status=NodeStatus.RUNNING, startedAt=_iso_now(), progress=0.0
            )
            self._record(node_id, "node.started")

    def node_progress(self, node_id: str, fraction: float) -> None:
        now = time.monotonic()
        with self._lock:
            self.states[node_id]["progress"] = round(fraction, 3)
            # A chatty node must not turn into a write per call.
            if now - self._last_progress.get(node_id, 0.0) < PROGRESS_INTERVAL:
                return
            self._last_progress[node_id] = now
            self._record(node_id, "node.progress")

    def node_skipped(self, node_id: str) -> None:
        with self._lock:
            self.states[node_id].update(status=NodeStatus.SKIPPED)
            self._record(node_id, "node.skipped")

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None:
        with self._lock:
            state = self.states[node_id]
            t0 = self._t0.get(node_id)
            state["completedAt"] = _iso_now()
            if t0 is not None:
                state["durationMs"] = round((time.perf_counter() - t0) * 1000, 2)
            if error is None:
                state.update(status=NodeStatus.COMPLETED, progress=1.0)
                if cached:
                    state["cached"] = True
            else:
                state.update(status=NodeStatus.FAILED, error=error)
            self._record(node_id, "node.finished" if error is None else "node.failed")

    def close_pending(self, status: NodeStatus) -> None:
        with self._lock:
            for state in self.states.values():
                if state["status"] in (NodeStatus.PENDING, NodeStatus.RUNNING):
                    state["status"] = status


class ClaimedRun(Protocol):
    """A run as its worker needs it: what a claim answers (``states.CLAIMED_COLUMNS``),
    used as it comes (no ORM object is built for it)."""

    @property
    def id(self) -> str: ...
    @property
    def workspace_id(self) -> str: ...
    @property
    def version_id(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def cancel_requested_at(self) -> datetime | None: ...
    @property
    def deadline_at(self) -> datetime | None: ...
    @property
    def webhook_url(self) -> str | None: ...
    @property
    def webhook_events(self) -> list[str] | None: ...


class NextRun(Protocol):
    """Claims a worker's next runs in the transaction that ends its current one, so a
    backlog costs one write transaction a run instead of two (embedded mode's pool); and
    may keep the ends of fast runs to write several in one transaction."""

    def defer(self, end: RunEnd) -> bool:
        """Keep ``end`` to write with a later terminal transaction of this worker (True),
        or not (False: the caller writes it now, with the ends kept before)."""
        ...

    def write_kept(self, s: Session) -> None:
        """Write the ends kept so far in ``s``."""
        ...

    def claim(self, s: Session) -> None:
        """Take queued runs and claim them in ``s`` (or nothing, if none is queued)."""
        ...

    def committed(self) -> None:
        """``s`` committed: the claimed runs are this worker's next."""
        ...

    def rolled_back(self) -> None:
        """``s`` rolled back: give the runs back to the queue, and write the kept ends
        each in a transaction of its own."""
        ...

    def tick(self) -> None:
        """Called while a run executes: write kept ends that have waited long enough."""
        ...


@dataclass(eq=False)
class RunEnd:
    """A run's terminal write: its last node events, its output files, its status,
    outputs and node states in one fenced update.  None of it but the files' rows is
    kept (:meth:`write` answers False) when this worker no longer holds the run."""

    processor: RunProcessor
    run: ClaimedRun
    sink: RunSink
    assets: list[Asset]
    status: RunStatus
    outputs: list[dict[str, Any]]
    error: str | None = None
    error_node: str | None = None
    #: Whether the write took (set by :meth:`write`; None before).
    ok: bool | None = field(default=None, init=False)
    # The sink's last events, taken at the first write (a retry writes them again).
    _events: list[tuple[str, dict[str, Any]]] | None = field(default=None, init=False)

    def write(self, s: Session) -> bool:
        run = self.run
        self.ok = None  # until this write's own answer (a retry writes it again)
        if self._events is None:
            self._events = self.sink.take_events()
        for event, data in self._events:
            emit(s, run.id, event, data)
        # The files are on disk already: their rows let retention remove them, in any case.
        self.processor.files.record(s, self.assets)
        ok = self.ok = finish(
            s,
            run.id,
            self.processor.owner,
            run.attempt,
            self.status,
            outputs=self.outputs,
            error=self.error,
            error_node=self.error_node,
            nodes=self.sink.states,
            head=(run.workspace_id, run.webhook_url, run.webhook_events),
        )
        if not ok:
            discard(s, run.id)  # its node events too: another worker owns the run now
        return ok

    def written(self) -> None:
        """The transaction that wrote it committed: the run is no longer this worker's."""
        self.processor.release(self.run.id)
        if self.ok is False:
            logger.warning("run %s: lease lost before finishing; result dropped", self.run.id)


class RunProcessor:
    """Executes runs for one worker identity (``owner``)."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        workflows: WorkflowCache,
        files: FileService,
        executor: WorkflowExecutor,
        owner: str,
        secrets: SecretService,
        cache: ResultCache | None = None,
    ) -> None:
        self.secrets = secrets
        self.cache = cache
        self.settings = settings
        self.db = db
        self.workflows = workflows
        self.files = files
        self.executor = executor
        self.owner = owner
        self.active: dict[str, CancelToken] = {}
        # Cancels of runs not (yet) in ``active``, newest last: one that arrives between a
        # claim's commit and the token's making must not wait for the next heartbeat.
        # Bounded: a worker process hears the cancels of every run, most of them not its.
        self._early_cancels: OrderedDict[str, str] = OrderedDict()
        # Inputs of runs adopted with them (handed over at creation), by run id.
        self._inputs: dict[str, dict[str, object]] = {}
        self._lock = threading.Lock()
        m = settings.media
        self.policy = FetchPolicy(
            allow_private=settings.private_urls_allowed(),
            max_bytes=m.max_bytes,
            timeout=m.fetch_timeout_seconds,
            max_redirects=m.max_redirects,
        )

    def process(self, run_id: str, next_run: NextRun | None = None) -> str | None:
        """Run ``run_id`` if this worker wins the claim.

        Returns the run's workspace id when it ran (its slot is free again), "deferred:"
        + workspace id when the workspace is at its concurrent-run limit (the run stays
        queued), and None when another worker has it or it is no longer queued.
        """
        lease = timedelta(seconds=self.settings.worker.lease_seconds)
        limit = self.settings.limits.concurrent_runs
        with self.db.write() as s:
            claimed = claim(s, run_id, self.owner, lease, limit)
            if claimed is None:
                row = s.execute(
                    select(Run.status, Run.workspace_id).where(Run.id == run_id)
                ).first()
                if limit and row is not None and row.status == RunStatus.QUEUED:
                    return "deferred:" + str(row.workspace_id)
                return None
        return self.run_claimed(claimed, next_run)

    def adopt(self, claimed: Row[Any], inputs: dict[str, object] | None = None) -> None:
        """Take charge of a run claimed for this worker elsewhere (in the transaction
        that created it) before a thread runs it: its lease is renewed and a cancel
        reaches it meanwhile.  ``inputs``: the run's inputs as stored, if the caller has
        them (then they are not read back)."""
        with self._lock:
            self._token(claimed.id)
            if inputs is not None:
                self._inputs[claimed.id] = inputs

    def run_claimed(self, claimed: Row[Any], next_run: NextRun | None = None) -> str:
        """Execute a run this worker has claimed (``claim``'s row); answer its workspace.
        ``next_run`` may claim this worker's next run in the transaction that ends it."""
        run: ClaimedRun = claimed  # what the claim returned: nothing is read again

        def read() -> dict[str, Any]:
            with self.db.read() as s:
                doc = s.scalar(select(AppVersion.workflow).where(AppVersion.id == run.version_id))
            assert doc is not None
            return dict(doc)

        with self._lock:
            token = self._token(run.id)
        if run.cancel_requested_at is not None:
            token.cancel(CANCELED_BY_REQUEST)
        kept = False
        try:
            workflow = self.workflows.load(run.version_id, read)
            kept = self._execute(run, workflow, token, next_run)
        except Exception:
            logger.exception("run %s: internal error", run.id)
            self.fail(run)
        finally:
            if not kept:  # a kept end stays in charge until it is written
                self.release(run.id)
        return run.workspace_id

    def fail(self, run: ClaimedRun, error: str = INTERNAL_ERROR) -> None:
        """End ``run`` as failed, by default by an error of Flowy's own (which the caller
        logged)."""
        with self.db.write() as s:
            finish(s, run.id, self.owner, run.attempt, RunStatus.FAILED, error=error)

    def release(self, run_id: str) -> None:
        """This worker is done with ``run_id``: its lease is no longer renewed."""
        with self._lock:
            self.active.pop(run_id, None)
            self._inputs.pop(run_id, None)

    def _execute(
        self, run: ClaimedRun, workflow: Workflow, token: CancelToken, next_run: NextRun | None
    ) -> bool:
        """Run it and end it; True when its end was kept to be written later."""
        sink = RunSink(self.db, run, self.owner, workflow)
        if next_run is not None:
            sink.on_tick = next_run.tick  # ends kept from earlier runs go out meanwhile
        w = self.settings.worker
        deadline = None
        if run.deadline_at is not None:
            left = (run.deadline_at - utcnow()).total_seconds()
            if left <= 0:
                self.fail(run, "the run passed its time limit before it started")
                return False
            deadline = time.monotonic() + left
        with self._lock:
            inputs = self._inputs.pop(run.id, None)
        if inputs is None:
            # Written once with the run, in a table of their own: read outside any
            # transaction.
            inputs = READ_INPUTS.execute(self.db.read_engine, {"p_run_id": run.id}).scalar()
        request = RunRequest(
            run.id,
            inputs or {},
            RunMedia(self.files, run.workspace_id, self.policy),
            max_pixels=self.settings.media.max_pixels,
            node_timeout=w.node_timeout_seconds,
            token=token,
            fetch_policy=self.policy,
            secrets=WorkspaceSecrets(self.secrets, run.workspace_id),
            cache=self.cache,
            deadline=deadline,
        )
        try:
            values = self.executor.execute(workflow, request, sink)
        except RunFailed as failed:
            status = RunStatus.CANCELED if failed.canceled else RunStatus.FAILED
            sink.close_pending(NodeStatus.CANCELED)
            # A canceled or failed run keeps the outputs it had already made.
            partial, assets = self._store_outputs(run, workflow, failed.outputs, partial=True)
            end = RunEnd(self, run, sink, assets, status, partial, failed.error, failed.node_id)
            logger.info("run %s %s: %s", run.id, status, failed.error)
        else:
            outputs, assets = self._store_outputs(run, workflow, values)
            end = RunEnd(self, run, sink, assets, RunStatus.COMPLETED, outputs)
            logger.debug("run %s completed", run.id)  # one a run: too chatty for INFO
        return self._finish(end, next_run)

    def _finish(self, end: RunEnd, next_run: NextRun | None) -> bool:
        """The terminal transaction: the ends ``next_run`` kept, this run's end and the
        claim of the worker's next runs.  Answers True when ``next_run`` keeps this end
        for a later one instead (the run is then still this worker's)."""
        if next_run is not None and next_run.defer(end):
            return True
        try:
            with self.db.write() as s:
                if next_run is not None:
                    next_run.write_kept(s)
                end.write(s)
                if next_run is not None:
                    next_run.claim(s)
        except Exception:
            if next_run is None:
                raise
            # The kept ends each alone, the claimed runs back to the queue; then this
            # run's end alone (what it raises now fails this run, as for any run).
            next_run.rolled_back()
            with self.db.write() as s:
                end.write(s)
        else:
            if next_run is not None:
                next_run.committed()
        if end.ok is False:
            logger.warning("run %s: lease lost before finishing; result dropped", end.run.id)
        return False

    def _store_outputs(
        self,
        run: ClaimedRun,
        workflow: Workflow,
        values: dict[str, object],
        *,
        partial: bool = False,
    ) -> tuple[list[dict[str, Any]], list[Asset]]:
        """The run's outputs as stored on the run, and the assets of its files (their
        blobs already kept) for the terminal transaction to record with the status."""
        outputs: list[dict[str, Any]] = []
        assets: list[Asset] = []
        for out in workflow.outputs:
            if out.node_id not in values and partial:
                continue
            if out.node_id not in values:  # its branch was not taken
                outputs.append(
                    {"nodeId": out.node_id, "kind": out.output_type, "value": None, "skipped": True}
                )
                continue
            value = values[out.node_id]
            if isinstance(value, Artifact):
                asset = self.files.keep(
                    run.workspace_id,
                    value.data,
                    filename=value.filename,
                    kind="output",
                    content_type=value.content_type,
                    run_id=run.id,
                )
                assets.append(asset)
                outputs.append(
                    {
                        "nodeId": out.node_id,
                        "kind": out.output_type,
                        "assetId": asset.id,
                        "filename": asset.filename,
                        "contentType": asset.content_type,
                        "size": asset.size,
                        "fileExpiresAt": _iso(asset.expires_at),
                    }
                )
            else:
                outputs.append({"nodeId": out.node_id, "kind": out.output_type, "value": value})
        return outputs, assets

    def _token(self, run_id: str) -> CancelToken:
        """The run's cancel token, made on first use (lock held), canceled already if a
        cancel came first."""
        token = self.active.get(run_id)
        if token is None:
            token = self.active[run_id] = CancelToken()
            reason = self._early_cancels.pop(run_id, None)
            if reason is not None:
                token.cancel(reason)
        return token

    def cancel(self, run_id: str, reason: str) -> None:
        """Stop a run in flight on this worker, if it is here (or, if it is about to be,
        as soon as it is)."""
        with self._lock:
            token = self.active.get(run_id)
            if token is None:
                self._early_cancels[run_id] = reason
                while len(self._early_cancels) > MAX_EARLY_CANCELS:
                    self._early_cancels.popitem(last=False)
        if token is not None:
            token.cancel(reason)

    def renew_leases(self) -> None:
        """Extend the lease of every run in flight; cancel those whose lease was lost."""
        with self._lock:
            active = dict(self.active)
        if not active:
            return
        expires = utcnow() + timedelta(seconds=self.settings.worker.lease_seconds)
        for run_id, token in active.items():
            with self.db.write() as s:
                run = s.get(Run, run_id)
                attempt = run.attempt if run else -1
                if not fenced_update(s, run_id, self.owner, attempt, lease_expires_at=expires):
                    token.cancel("this worker lost the run's lease")
                elif run is not None and run.cancel_requested_at is not None:
                    # Asked from another process: no in-process hook reached us.
                    token.cancel(CANCELED_BY_REQUEST)
