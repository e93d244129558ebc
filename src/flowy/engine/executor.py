"""Execute a validated workflow: a ready set, bounded concurrency, a watchdog.

The executor imports no web framework, database or queue.  It reports through an
:class:`EventSink` and stops when its :class:`CancelToken` is set.  Scheduling follows
``graphlib.TopologicalSorter``'s ready set, so a slow branch never holds back a fast
one; the scheduler thread waits on the running nodes with a short timeout so that node
deadlines, the run deadline and cancellation are enforced even while no node finishes.
"""

from __future__ import annotations

import graphlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import Executor, Future
from dataclasses import dataclass, field
from typing import Protocol

from flowy.engine.cache import ResultCache, cache_key, content_key, port_key
from flowy.engine.graph import BoundNode, Workflow
from flowy.engine.spec import SKIP, MediaSource, SecretSource
from flowy.errors import NodeError, NodeTimeout, RunCanceled
from flowy.media.fetch import FetchPolicy

logger = logging.getLogger(__name__)

#: Longest log line a node may send; the rest is cut.
MAX_LOG_LINE = 2000

#: How often the scheduler looks at deadlines and the cancel token while nodes run.
WATCH_INTERVAL = 0.1


class EventSink(Protocol):
    """Receives per-node state changes as they happen."""

    def node_started(self, node_id: str) -> None: ...

    def node_progress(self, node_id: str, fraction: float) -> None: ...

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None: ...

    def node_skipped(self, node_id: str) -> None: ...

    def node_log(self, node_id: str, message: str) -> None: ...

    def tick(self) -> None:
        """Called by the scheduler at least every WATCH_INTERVAL while the run goes on
        (a sink may batch its writes and flush them here)."""
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
    result = b.type.run(ctx, b.params, **kwargs)
    if key is None:
        return _Result(result, content_key(result) if cache is not None else {}, False)
    if lookup:
        assert cache is not None
        cache.put(key, result)
    return _Result(result, {p: port_key(key, p) for p in result}, False)


#: What a pool thread hands back: the node id, and its result or what it raised.
_Outcome = tuple[str, "_Result | None", "BaseException | None"]


def _run_on_pool(
    put: Callable[[_Outcome], None],
    b: BoundNode,
    ctx: _Context,
    kwargs: Mapping[str, object],
    key: str | None,
    cache: ResultCache | None,
) -> None:
    """A pool thread's job: run the node and put its outcome on the scheduler's queue."""
    try:
        res = _invoke(b, ctx, kwargs, key, cache)
    except BaseException as exc:  # handed to the scheduler thread, which reports it
        put((b.id, None, exc))
        return
    put((b.id, res, None))


class WorkflowExecutor:
    """Runs workflows on a shared thread pool, at most ``concurrency`` nodes of a run at once.

    Nodes whose type is marked ``inline`` run on the scheduler thread itself (still one of
    the ``concurrency`` slots, through the same cache); the rest run on the pool, and each
    puts its outcome on a queue that the scheduler thread blocks on.
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
        sorter = graphlib.TopologicalSorter(sources)
        sorter.prepare()
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
        # node id -> (its future, its deadline); nodes on the pool only.
        running: dict[str, tuple[Future[None], float]] = {}
        waiting: deque[str] = deque()
        finished: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        put = finished.put

        def complete(nid: str, result: Mapping[str, object], port_keys: Mapping[str, str]) -> None:
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
            sorter.done(nid)

        def finish(b: BoundNode, res: _Result) -> None:
            if not res.values.keys() >= b.type.outputs.keys():
                missing = set(b.type.outputs) - set(res.values)
                raise self._fail(b, NodeError(f"node gave no {sorted(missing)} output"), sink)
            sink.node_finished(b.id, cached=res.cached)
            complete(b.id, res.values, res.keys)

        def start(nid: str, now: float) -> bool:
            """Start a node; True if it already finished here (inline or skipped)."""
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
                        return True
                    value = None
                kwargs[name] = value
            key = None
            if cache is not None and bt.deterministic:
                key = cache_key(
                    bt.type,
                    bt.version,
                    b.params,
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
                return True
            timeout = bt.timeout_seconds or request.node_timeout
            fut = submit(_run_on_pool, put, b, ctx, kwargs, key, cache)
            running[nid] = (fut, now + timeout)
            return False

        next_watch = 0.0
        try:
            while sorter.is_active():
                now = time.monotonic()
                if token.canceled or (run_deadline is not None and now > run_deadline):
                    self._watch(workflow, request, running, sink, now)
                waiting.extend(sorter.get_ready())
                ran_here = False
                while waiting and len(running) < concurrency:
                    if start(waiting.popleft(), now):
                        ran_here = True
                if running:
                    try:
                        # Nodes that ran here (inline, skipped) may have readied others:
                        # only look at the queue then; otherwise wait for a node to finish.
                        if ran_here:
                            outcome = finished.get_nowait()
                        else:
                            outcome = finished.get(timeout=WATCH_INTERVAL)
                    except queue.Empty:
                        outcome = None
                    while outcome is not None:
                        nid, res, exc = outcome
                        del running[nid]
                        b = nodes[nid]
                        if exc is not None:
                            raise self._fail(b, exc, sink)
                        assert res is not None
                        finish(b, res)
                        try:
                            outcome = finished.get_nowait()
                        except queue.Empty:
                            outcome = None
                    now = time.monotonic()
                if now >= next_watch:
                    # Node deadlines and the sink's tick: at least every WATCH_INTERVAL
                    # (the queue wait's timeout), at most every WATCH_INTERVAL / 10.
                    self._watch(workflow, request, running, sink, now)
                    sink.tick()
                    next_watch = now + WATCH_INTERVAL / 10
        except RunFailed as failed:
            failed.outputs = dict(outputs)
            raise
        finally:
            if running:
                # Cooperative nodes stop at their next check; the rest finish unobserved.
                token.cancel(token.reason)
                for fut, _deadline in running.values():
                    fut.cancel()
        return outputs

    def _watch(
        self,
        workflow: Workflow,
        request: RunRequest,
        running: Mapping[str, tuple[Future[None], float]],
        sink: EventSink,
        now: float,
    ) -> None:
        for nid, (_fut, node_deadline) in running.items():
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
