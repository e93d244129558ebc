"""Execute a validated workflow: a ready set, bounded concurrency, a watchdog.

The executor imports no web framework, database or queue.  It reports through an
:class:`EventSink` and stops when its :class:`CancelToken` is set.  Scheduling follows
the graph's ready set, as ``graphlib.TopologicalSorter`` would, so a slow branch never
holds back a fast one.  The thread that finishes a node starts the nodes it made ready
(running the next one itself, so a chain never changes threads), while the calling
thread keeps watch: it wakes every WATCH_INTERVAL to enforce node deadlines, the run
deadline and cancellation even while no node finishes.
"""

from __future__ import annotations

import graphlib
import logging
import threading
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Protocol

from flowy.engine.cache import ResultCache, cache_key, content_key, port_key
from flowy.engine.graph import BoundNode, Workflow
from flowy.engine.lazy import Lazy, resolve
from flowy.engine.spec import SKIP, MediaSource, SecretSource
from flowy.errors import NodeError, NodeTimeout, RunCanceled
from flowy.media.fetch import FetchPolicy

logger = logging.getLogger(__name__)

#: Longest log line a node may send; the rest is cut.
MAX_LOG_LINE = 2000

#: How often the watchdog looks at deadlines and the cancel token while nodes run.
WATCH_INTERVAL = 0.1


class EventSink(Protocol):
    """Receives per-node state changes as they happen, from several threads.

    ``node_started``, ``node_finished`` and ``node_skipped`` come one at a time, in graph
    order, from whichever thread schedules the node (often a pool thread); progress and
    log lines come from the node's own thread, ``tick`` from the thread that called
    :meth:`WorkflowExecutor.execute`.  A sink must therefore be thread-safe.
    """

    def node_started(self, node_id: str) -> None: ...

    def node_progress(self, node_id: str, fraction: float) -> None: ...

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None: ...

    def node_skipped(self, node_id: str) -> None: ...

    def node_log(self, node_id: str, message: str) -> None: ...

    def tick(self) -> None:
        """Called by the watchdog every WATCH_INTERVAL while the run goes on (a sink may
        batch its writes and flush them here)."""
        ...


class NullSink:
    """An event sink that drops everything."""

    def node_started(self, node_id: str) -> None:
        pass

    def node_progress(self, node_id: str, fraction: float) -> None:
        pass

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None:
        pass

    def node_skipped(self, node_id: str) -> None:
        pass

    def node_log(self, node_id: str, message: str) -> None:
        pass

    def tick(self) -> None:
        pass


class CancelToken:
    """Set once to stop a run; nodes and the scheduler look at it."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = "run was canceled"

    def cancel(self, reason: str = "run was canceled") -> None:
        self.reason = reason
        self._event.set()

    @property
    def canceled(self) -> bool:
        return self._event.is_set()


class NoSecrets:
    """A secret source with nothing in it."""

    def get(self, name: str) -> str | None:
        return None


@dataclass(slots=True)
class _Context:
    run_id: str
    node_id: str
    input_value: object
    media: MediaSource
    max_pixels: int
    fetch_policy: FetchPolicy
    secrets: SecretSource
    token: CancelToken
    sink: EventSink

    def check_canceled(self) -> None:
        if self.token.canceled:
            raise RunCanceled(self.token.reason, self.node_id)

    @property
    def canceled(self) -> bool:
        return self.token.canceled

    def secret(self, name: str) -> str:
        value = self.secrets.get(name)
        if not value:
            raise NodeError(
                f"the secret {name!r} is not set in this workspace; add it with "
                f"PUT /v1/secrets/{name}",
                self.node_id,
            )
        return value

    def progress(self, fraction: float) -> None:
        self.sink.node_progress(self.node_id, min(1.0, max(0.0, fraction)))

    def log(self, message: str) -> None:
        self.sink.node_log(self.node_id, str(message)[:MAX_LOG_LINE])


@dataclass
class RunRequest:
    """Everything one execution needs besides the workflow."""

    run_id: str
    inputs: Mapping[str, object]
    media: MediaSource
    max_pixels: int = 64_000_000
    node_timeout: float = 120.0
    deadline: float | None = None  # time.monotonic() value
    token: CancelToken = field(default_factory=CancelToken)
    fetch_policy: FetchPolicy = field(default_factory=FetchPolicy)
    secrets: SecretSource = field(default_factory=NoSecrets)
    cache: ResultCache | None = None


def describe_failure(node: BoundNode, exc: BaseException) -> str:
    """The run's error string: which node failed and why."""
    if isinstance(exc, NodeError):
        cause = exc.message
    else:
        cause = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return f"{node.id} ({node.label}): {cause}"


class RunFailed(Exception):
    """A run failed; ``error`` names the node and the cause."""

    def __init__(self, error: str, node_id: str | None, canceled: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.node_id = node_id
        self.canceled = canceled
        #: Values of the output nodes that finished before the failure (kept on cancel).
        self.outputs: dict[str, object] = {}


@dataclass(frozen=True)
class _Result:
    values: Mapping[str, object]
    keys: Mapping[str, str]
    cached: bool


#: A node whose own thread spent less than the cache's threshold of CPU on it is still
#: worth keeping when it took this many times the threshold in all: its work ran
#: elsewhere (a subprocess, a library's native threads).
OFF_THREAD_FACTOR = 10


def worth_keeping(wall: float, cpu: float, min_seconds: float) -> bool:
    """Whether a node that took ``wall`` seconds, ``cpu`` of them on its own thread's CPU,
    is worth its place in the cache.  Wall time alone counts the waits for the GIL: on a
    busy server a node of a few tenths of a millisecond takes milliseconds of it, and
    keeping its result (copying, writing) then costs more than the node did."""
    return cpu >= min_seconds or wall >= OFF_THREAD_FACTOR * min_seconds


def _invoke(
    b: BoundNode,
    ctx: _Context,
    kwargs: Mapping[str, object],
    key: str | None,
    cache: ResultCache | None,
) -> _Result:
    """Run one node (on a pool thread, or inline), through the cache when it has a key."""
    # Input nodes cost less to run than to look up; they still get keys.
    lookup = key is not None and cache is not None and not b.type.input_kind
    if lookup:
        assert key is not None and cache is not None
        hit = cache.get(key)
        if hit is not None:
            return _Result(hit, {p: port_key(key, p) for p in hit}, True)
    # The node runs: make the values that were left for first use (a decoded image).
    # That work counts in its cost, so a cheap node that decoded an image is kept.
    t0, c0 = time.perf_counter(), time.thread_time()
    if any(isinstance(v, Lazy) for v in kwargs.values()):
        kwargs = {name: resolve(v) for name, v in kwargs.items()}
    result = b.type.run(ctx, b.params, **kwargs)
    if key is None:
        return _Result(result, content_key(result) if cache is not None else {}, False)
    if lookup:
        assert cache is not None
        wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
        if worth_keeping(wall, cpu, cache.min_seconds):
            cache.put(key, result)
    return _Result(result, {p: port_key(key, p) for p in result}, False)


#: A started pool node, ready to run: the node, its context, its inputs and its cache key.
_Job = tuple[BoundNode, _Context, dict[str, object], str | None]


class WorkflowExecutor:
    """Runs workflows on a shared thread pool, at most ``concurrency`` nodes of a run at once.

    The thread that finishes a node schedules the nodes it made ready: it runs the first
    pool node itself and submits the others while slots are free, so a chain stays on one
    pool thread instead of paying a hand-off per node.  Nodes whose type is marked
    ``inline`` run on the scheduling thread (the caller's at the start), still in one of
    the ``concurrency`` slots and through the same cache.  The calling thread is the
    watchdog: it waits for the run to end and, every WATCH_INTERVAL, enforces node
    deadlines, the run deadline and the cancel token, and calls the sink's ``tick``.
    """

    def __init__(self, pool: Executor, *, concurrency: int = 4) -> None:
        self._pool = pool
        self._concurrency = concurrency

    def execute(
        self, workflow: Workflow, request: RunRequest, sink: EventSink | None = None
    ) -> dict[str, object]:
        """Run every node; return the values of the output nodes that ran, by node id.

        Raises :class:`RunFailed` naming the node when a node fails, times out or the run
        is canceled or passes its deadline.
        """
        sink = sink or NullSink()
        nodes = workflow.nodes
        sources = workflow.sources
        # The ready set by hand: graphlib's own bookkeeping and cycle search cost more than
        # the nodes here, and parse_workflow() already refused cycles.
        successors: dict[str, list[str]] = {nid: [] for nid in sources}
        for nid, srcs in sources.items():
            for src in srcs:
                successors[src].append(nid)
        # How many predecessors each node still waits for.
        blockers = {nid: len(srcs) for nid, srcs in sources.items()}
        unfinished = len(blockers)
        # How many consumers still need each node's values, to free images early.
        consumers = dict(workflow.consumer_counts)
        cache = request.cache
        token = request.token
        run_deadline = request.deadline
        concurrency = self._concurrency
        submit = self._pool.submit

        values: dict[str, Mapping[str, object]] = {}
        keys: dict[str, Mapping[str, str]] = {}
        outputs: dict[str, object] = {}
        # Pool nodes started and not finished (queued, running or next on a thread), with
        # their deadlines; a node takes its slot from start to finish.
        running: dict[str, float] = {}
        waiting: deque[str] = deque()
        submitted: list[Future[None]] = []
        # Guards the run's state above.  The sink's started / finished / skipped events are
        # sent under it too, so they stay in graph order whichever thread sends them.
        lock = threading.Lock()
        ended = threading.Event()  # every node finished, or the run failed, or execute() left
        over = ended.is_set
        failure: BaseException | None = None  # what ended the run early, first one wins

        def complete(nid: str, result: Mapping[str, object], port_keys: Mapping[str, str]) -> None:
            nonlocal unfinished
            b = nodes[nid]
            values[nid] = result
            if cache is not None:
                keys[nid] = port_keys
            if b.type.output_kind and result.get("value", SKIP) is not SKIP:
                outputs[nid] = result.get("value")
            for src in sources[nid]:
                left = consumers[src] - 1
                consumers[src] = left
                if left == 0:
                    values.pop(src, None)
            unfinished -= 1
            for nxt in successors[nid]:
                left = blockers[nxt] - 1
                blockers[nxt] = left
                if left == 0:
                    waiting.append(nxt)

        def finish(b: BoundNode, res: _Result) -> None:
            if not res.values.keys() >= b.type.outputs.keys():
                missing = set(b.type.outputs) - set(res.values)
                raise self._fail(b, NodeError(f"node gave no {sorted(missing)} output"), sink)
            sink.node_finished(b.id, cached=res.cached)
            complete(b.id, res.values, res.keys)

        def start(nid: str, now: float) -> _Job | None:
            """Start a node (lock held): its pool job, or None if it finished here (inline
            or skipped)."""
            b = nodes[nid]
            bt = b.type
            kwargs: dict[str, object] = {}
            for name, w in b.wires.items():
                value = values[w.node][w.port]
                if value is SKIP:
                    if not bt.inputs[name].optional:
                        sink.node_skipped(nid)
                        complete(
                            nid,
                            {p: SKIP for p in (*bt.outputs, "value")},
                            dict.fromkeys(bt.outputs, "skip"),
                        )
                        return None
                    value = None
                kwargs[name] = value
            key = None
            if cache is not None and bt.deterministic:
                key = cache_key(
                    bt.type,
                    bt.version,
                    b.params_json,
                    request.inputs.get(nid) if bt.input_kind else None,
                    [(name, keys[w.node][w.port]) for name, w in b.wires.items()],
                )
            ctx = _Context(
                request.run_id,
                nid,
                request.inputs.get(nid),
                request.media,
                request.max_pixels,
                request.fetch_policy,
                request.secrets,
                token,
                sink,
            )
            sink.node_started(nid)
            if bt.inline:
                # Cheap and never blocks: run it here, with no pool hop and no future.
                try:
                    res = _invoke(b, ctx, kwargs, key, cache)
                except Exception as exc:
                    raise self._fail(b, exc, sink) from None
                finish(b, res)
                return None
            running[nid] = now + (bt.timeout_seconds or request.node_timeout)
            return (b, ctx, kwargs, key)

        def launch(keep: bool) -> _Job | None:
            """Start waiting nodes while slots are free (lock held); end the run if none is left.

            Inline and skipped nodes finish here.  With ``keep`` (on a pool thread), the
            first pool node is returned for this thread to run next; the others are
            submitted to the pool.
            """
            now = time.monotonic()
            if token.canceled or (run_deadline is not None and now > run_deadline):
                self._watch(workflow, request, running, sink, now)
            kept = None
            while waiting and len(running) < concurrency:
                job = start(waiting.popleft(), now)
                if job is None:
                    continue
                if keep and kept is None:
                    kept = job
                else:
                    submitted.append(submit(drive, job))
            if not running and not waiting:
                if unfinished:  # nothing runs and nothing can start: not a DAG
                    cycle = [nid for nid, left in blockers.items() if left]
                    raise graphlib.CycleError("nodes are in a cycle", cycle)
                ended.set()
            return kept

        def stop(exc: BaseException) -> None:
            """End the run early with ``exc`` (lock held)."""
            nonlocal failure
            if failure is None:
                failure = exc
            ended.set()

        def drive(job: _Job) -> None:
            """A pool thread's work: run the node, finish it, and go on with the next ready
            node, until none is left for this thread or the run ended."""
            while True:
                b, ctx, kwargs, key = job
                if over():
                    return  # the run ended while this job waited for a thread
                try:
                    res: _Result | BaseException = _invoke(b, ctx, kwargs, key, cache)
                except BaseException as exc:  # reported below, under the lock
                    res = exc
                with lock:
                    if over():
                        return  # the run ended while the node ran: nobody wants its result
                    try:
                        del running[b.id]
                        if isinstance(res, BaseException):
                            raise self._fail(b, res, sink)
                        finish(b, res)
                        # Not to hold the result while the next node runs: its consumers
                        # may all finish on other threads meanwhile.
                        del res
                        kept = launch(keep=True)
                    except BaseException as exc:  # raised by execute() on the calling thread
                        stop(exc)
                        return
                if kept is None:
                    return
                job = kept

        try:
            with lock:
                try:
                    waiting.extend(nid for nid, left in blockers.items() if not left)
                    launch(keep=False)
                except BaseException as exc:
                    stop(exc)
            while not ended.wait(WATCH_INTERVAL):
                with lock:
                    if over():
                        break  # it ended while this thread took the lock
                    try:
                        self._watch(workflow, request, running, sink, time.monotonic())
                    except RunFailed as exc:
                        stop(exc)
                        break
                sink.tick()
            with lock:
                if failure is not None:
                    raise failure
        except RunFailed as failed:
            failed.outputs = dict(outputs)
            raise
        finally:
            with lock:
                ended.set()  # however execute() leaves, pool threads start nothing more
                if running:
                    # Cooperative nodes stop at their next check; the rest finish unobserved.
                    token.cancel(token.reason)
                    for fut in submitted:
                        fut.cancel()
        return outputs

    def _watch(
        self,
        workflow: Workflow,
        request: RunRequest,
        running: Mapping[str, float],
        sink: EventSink,
        now: float,
    ) -> None:
        """Raise RunFailed if the run was canceled or passed its deadline, or a node its own
        (naming a running node when there is one)."""
        for nid, node_deadline in running.items():
            b = workflow.nodes[nid]
            if request.token.canceled:
                raise self._fail(b, RunCanceled(request.token.reason, nid), sink)
            if request.deadline is not None and now > request.deadline:
                raise self._fail(b, NodeTimeout("the run passed its time limit", nid), sink)
            if now > node_deadline:
                limit = b.type.timeout_seconds or request.node_timeout
                raise self._fail(b, NodeTimeout(f"timed out after {limit:g} s", nid), sink)
        if request.token.canceled:
            raise RunFailed(request.token.reason, None, canceled=True)
        if request.deadline is not None and now > request.deadline:
            raise RunFailed("the run passed its time limit", None)

    @staticmethod
    def _fail(b: BoundNode, exc: BaseException, sink: EventSink) -> RunFailed:
        error = describe_failure(b, exc)
        if not isinstance(exc, NodeError):
            logger.error("node %s (%s) raised", b.id, b.type.type, exc_info=exc)
        sink.node_finished(b.id, error=error)
        return RunFailed(error, b.id, canceled=isinstance(exc, RunCanceled))
