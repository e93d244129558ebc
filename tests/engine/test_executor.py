"""WorkflowExecutor: scheduling, concurrency, failures, timeouts, cancellation, events."""

from __future__ import annotations

import dataclasses
import gc
import graphlib
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from flowy.engine.executor import (
    CancelToken,
    RunFailed,
    RunRequest,
    WorkflowExecutor,
    describe_failure,
)
from flowy.engine.graph import Wire, Workflow, parse_workflow
from flowy.engine.registry import NodeRegistry, default_registry
from flowy.engine.spec import NodeType, Port, node
from flowy.errors import MediaError, NodeError, RunCanceled

#: Generous upper bound for "this happened promptly, not after the node's 5 s sleep".
PROMPT = 3.0


class P(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: Any = None


class NoMedia:
    def read(self, value: str) -> bytes:
        raise MediaError("no media in these tests")


def request(inputs: dict[str, object] | None = None, **kw: Any) -> RunRequest:
    return RunRequest(run_id="run_1", inputs=inputs or {}, media=NoMedia(), **kw)


Fn = Callable[..., dict[str, object]]


def ntype(
    name: str,
    fn: Fn,
    *,
    ins: tuple[str, ...] = (),
    outs: tuple[str, ...] = ("value",),
    output_kind: str | None = None,
    timeout_seconds: float | None = None,
    title: str | None = None,
) -> NodeType:
    return node(
        name,
        title=title or name.title(),
        category="test",
        params=P,
        inputs={i: Port("any") for i in ins},
        outputs={o: Port("any") for o in outs},
        output_kind=output_kind,
        timeout_seconds=timeout_seconds,
    )(fn)


def _out(ctx: Any, params: P, value: object) -> dict[str, object]:
    return {"value": value}


OUT = ntype("out", _out, ins=("value",), outs=(), output_kind="json", title="Out")


def build(types: list[NodeType], nodes: list[dict[str, Any]]) -> Workflow:
    return parse_workflow({"nodes": nodes}, NodeRegistry([*types, OUT]))


def nd(
    nid: str, type_: str, *, label: str | None = None, param: object = None, **wires: str
) -> dict[str, Any]:
    d: dict[str, Any] = {
        "id": nid,
        "type": type_,
        "params": {"value": param},
        "inputs": {
            port: {"node": src.split(".")[0], "port": src.split(".")[1]}
            for port, src in wires.items()
        },
    }
    if label:
        d["label"] = label
    return d


class Recorder:
    """An EventSink that keeps every event in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def node_log(self, node_id: str, message: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def node_started(self, node_id: str) -> None:
        with self._lock:
            self.events.append(("started", node_id))

    def node_progress(self, node_id: str, fraction: float) -> None:
        with self._lock:
            self.events.append(("progress", node_id, fraction))

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None:
        with self._lock:
            self.events.append(("finished", node_id, error))
            if cached:
                self.events.append(("cached", node_id))

    def node_skipped(self, node_id: str) -> None:
        with self._lock:
            self.events.append(("skipped", node_id))

    def of(self, kind: str) -> list[tuple[Any, ...]]:
        return [e for e in self.events if e[0] == kind]


@pytest.fixture
def release() -> threading.Event:
    """Set at teardown so that nodes still blocked in the pool wake up and end."""
    return threading.Event()


@pytest.fixture
def pool(release: threading.Event) -> Iterator[ThreadPoolExecutor]:
    p = ThreadPoolExecutor(max_workers=8, thread_name_prefix="test-node")
    yield p
    release.set()
    p.shutdown(wait=True, cancel_futures=True)


def _const(ctx: Any, params: P) -> dict[str, object]:
    return {"value": params.value}


def _add(ctx: Any, params: P, a: object, b: object) -> dict[str, object]:
    return {"value": a + b}  # type: ignore[operator]


def _input(ctx: Any, params: P) -> dict[str, object]:
    return {"value": ctx.input_value}


CONST = ntype("const", _const)
ADD = ntype("add", _add, ins=("a", "b"))
INPUT = ntype("input", _input)


# --------------------------------------------------------------------------- results


def test_results_come_from_output_nodes(pool: ThreadPoolExecutor) -> None:
    wf = build(
        [CONST, ADD, INPUT],
        [
            nd("c1", "const", param=40),
            nd("in", "input"),
            nd("sum", "add", a="c1.value", b="in.value"),
            nd("o1", "out", value="sum.value"),
            nd("o2", "out", value="c1.value"),
        ],
    )
    sink = Recorder()
    result = WorkflowExecutor(pool).execute(wf, request({"in": 2}), sink)
    assert result == {"o1": 42, "o2": 40}
    assert {e[1] for e in sink.of("started")} == {"c1", "in", "sum", "o1", "o2"}
    assert all(e[2] is None for e in sink.of("finished"))


def test_nodes_get_their_input_value_and_params(pool: ThreadPoolExecutor) -> None:
    seen: dict[str, Any] = {}

    def probe(ctx: Any, params: P) -> dict[str, object]:
        seen[ctx.node_id] = (ctx.run_id, ctx.input_value, params.value, ctx.max_pixels)
        return {"value": None}

    wf = build(
        [ntype("probe", probe)],
        [
            nd("a", "probe", param="pa"),
            nd("b", "probe", param="pb"),
            nd("o", "out", value="a.value"),
            nd("o2", "out", value="b.value"),
        ],
    )
    WorkflowExecutor(pool).execute(wf, request({"a": "A"}, max_pixels=1234))
    assert seen == {"a": ("run_1", "A", "pa", 1234), "b": ("run_1", None, "pb", 1234)}


def test_missing_output_fails_the_node(pool: ThreadPoolExecutor) -> None:
    def lazy(ctx: Any, params: P) -> dict[str, object]:
        return {"other": 1}

    wf = build([ntype("lazy", lazy)], [nd("l", "lazy"), nd("o", "out", value="l.value")])
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request())
    assert info.value.node_id == "l"
    assert info.value.error == "l (Lazy): node gave no ['value'] output"


# --------------------------------------------------------------------------- concurrency


def _barrier_types(barrier: threading.Barrier) -> list[NodeType]:
    def waiter(ctx: Any, params: P) -> dict[str, object]:
        barrier.wait(timeout=5)  # BrokenBarrierError if the other branch does not run too
        return {"value": params.value}

    return [ntype("waiter", waiter), ADD]


def test_independent_branches_run_concurrently(pool: ThreadPoolExecutor) -> None:
    barrier = threading.Barrier(2)
    wf = build(
        _barrier_types(barrier),
        [
            nd("w1", "waiter", param=1),
            nd("w2", "waiter", param=2),
            nd("sum", "add", a="w1.value", b="w2.value"),
            nd("o", "out", value="sum.value"),
        ],
    )
    start = time.monotonic()
    assert WorkflowExecutor(pool, concurrency=4).execute(wf, request()) == {"o": 3}
    assert time.monotonic() - start < PROMPT


def test_concurrency_one_runs_nodes_one_at_a_time(pool: ThreadPoolExecutor) -> None:
    cond = threading.Condition()
    active = [0]
    peak = [0]

    def busy(ctx: Any, params: P) -> dict[str, object]:
        with cond:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            cond.notify_all()
            # Linger until another node overlaps, or a little while if none can.
            cond.wait_for(lambda: active[0] > 1, timeout=0.1)
            active[0] -= 1
        return {"value": params.value}

    nodes = [nd(f"b{i}", "busy", param=i) for i in range(4)]
    nodes += [nd(f"o{i}", "out", value=f"b{i}.value") for i in range(4)]
    wf = build([ntype("busy", busy)], nodes)

    assert WorkflowExecutor(pool, concurrency=1).execute(wf, request()) == {
        f"o{i}": i for i in range(4)
    }
    assert peak[0] == 1

    # Control: the same graph with room for more does overlap.
    peak[0] = 0
    WorkflowExecutor(pool, concurrency=4).execute(wf, request())
    assert peak[0] > 1


def test_concurrency_one_breaks_the_barrier(pool: ThreadPoolExecutor) -> None:
    barrier = threading.Barrier(2)
    types = _barrier_types(barrier)
    # Short barrier wait so the serial run fails fast.
    types[0] = ntype("waiter", lambda ctx, params: (barrier.wait(timeout=0.3), {"value": 1})[1])
    wf = build(
        types,
        [
            nd("w1", "waiter"),
            nd("w2", "waiter"),
            nd("sum", "add", a="w1.value", b="w2.value"),
            nd("o", "out", value="sum.value"),
        ],
    )
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool, concurrency=1).execute(wf, request())
    assert "BrokenBarrierError" in info.value.error


def test_slow_branch_does_not_hold_back_fast_branch(pool: ThreadPoolExecutor) -> None:
    order: list[str] = []
    fast_child_ran = threading.Event()

    def slow(ctx: Any, params: P) -> dict[str, object]:
        order.append("slow start")
        # Only returns early if the fast branch's downstream node ran meanwhile.
        if not fast_child_ran.wait(timeout=5):
            raise NodeError("fast branch's child never ran while I was busy")
        order.append("slow end")
        return {"value": "slow"}

    def fast(ctx: Any, params: P) -> dict[str, object]:
        order.append("fast")
        return {"value": "fast"}

    def child(ctx: Any, params: P, value: object) -> dict[str, object]:
        order.append("child")
        fast_child_ran.set()
        return {"value": f"{value}+child"}

    wf = build(
        [ntype("slow", slow), ntype("fast", fast), ntype("child", child, ins=("value",))],
        [
            nd("s", "slow"),
            nd("f", "fast"),
            nd("c", "child", value="f.value"),
            nd("o1", "out", value="s.value"),
            nd("o2", "out", value="c.value"),
        ],
    )
    result = WorkflowExecutor(pool, concurrency=2).execute(wf, request())
    assert result == {"o1": "slow", "o2": "fast+child"}
    assert order.index("child") < order.index("slow end")
    assert order.index("slow start") < order.index("child")


# --------------------------------------------------------------------------- failures


def _chain_with(fail: Fn, started: list[str]) -> Workflow:
    def step(ctx: Any, params: P, value: object) -> dict[str, object]:
        started.append(ctx.node_id)
        return {"value": value}

    def first(ctx: Any, params: P) -> dict[str, object]:
        started.append(ctx.node_id)
        return {"value": 1}

    def failing(ctx: Any, params: P, value: object) -> dict[str, object]:
        started.append(ctx.node_id)
        return fail()

    return build(
        [
            ntype("first", first),
            ntype("step", step, ins=("value",)),
            ntype("failing", failing, ins=("value",), title="Failing"),
        ],
        [
            nd("node_1", "first"),
            nd("node_x", "failing", label="Crop face", value="node_1.value"),
            nd("node_3", "step", value="node_x.value"),
            nd("node_4", "out", value="node_3.value"),
        ],
    )


def test_failing_node_names_node_and_label_and_stops_downstream(
    pool: ThreadPoolExecutor,
) -> None:
    def fail() -> dict[str, object]:
        raise NodeError("no face found in the image")

    started: list[str] = []
    wf = _chain_with(fail, started)
    sink = Recorder()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request(), sink)
    err = info.value
    assert err.error == "node_x (Crop face): no face found in the image"
    assert str(err) == err.error
    assert err.node_id == "node_x"
    assert err.canceled is False
    assert started == ["node_1", "node_x"]
    assert sink.events == [
        ("started", "node_1"),
        ("finished", "node_1", None),
        ("started", "node_x"),
        ("finished", "node_x", "node_x (Crop face): no face found in the image"),
    ]


def test_label_defaults_to_node_type_title(pool: ThreadPoolExecutor) -> None:
    def boom(ctx: Any, params: P) -> dict[str, object]:
        raise NodeError("nope")

    wf = build(
        [ntype("boom", boom, title="Exploder")],
        [nd("node_7", "boom"), nd("o", "out", value="node_7.value")],
    )
    with pytest.raises(RunFailed, match=r"^node_7 \(Exploder\): nope$"):
        WorkflowExecutor(pool).execute(wf, request())


def test_unexpected_exception_includes_its_type(
    pool: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    def fail() -> dict[str, object]:
        raise KeyError("width")

    wf = _chain_with(fail, [])
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request())
    assert info.value.error == "node_x (Crop face): KeyError: 'width'"
    assert info.value.node_id == "node_x"
    # An unexpected exception is logged with its traceback for the operator.
    assert any("node_x" in r.getMessage() and r.exc_info for r in caplog.records)


def test_unexpected_exception_without_message(pool: ThreadPoolExecutor) -> None:
    def fail() -> dict[str, object]:
        raise ZeroDivisionError

    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(_chain_with(fail, []), request())
    assert info.value.error == "node_x (Crop face): ZeroDivisionError"


def test_describe_failure_prefers_node_error_message() -> None:
    wf = _chain_with(lambda: {"value": 1}, [])
    b = wf.nodes["node_x"]
    assert describe_failure(b, MediaError("not an image")) == "node_x (Crop face): not an image"
    assert describe_failure(b, ValueError("bad")) == "node_x (Crop face): ValueError: bad"


def test_failure_tells_cooperative_siblings_to_stop(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    saw_cancel = threading.Event()

    def looper(ctx: Any, params: P) -> dict[str, object]:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                ctx.check_canceled()
            except RunCanceled:
                saw_cancel.set()
                raise
            time.sleep(0.01)
        return {"value": None}

    def boom(ctx: Any, params: P) -> dict[str, object]:
        time.sleep(0.1)
        raise NodeError("broken")

    wf = build(
        [ntype("looper", looper), ntype("boom", boom)],
        [
            nd("l", "looper"),
            nd("b", "boom"),
            nd("o1", "out", value="l.value"),
            nd("o2", "out", value="b.value"),
        ],
    )
    req = request()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req)
    assert info.value.node_id == "b"
    assert saw_cancel.wait(PROMPT), "the sibling never saw the run being stopped"
    assert req.token.canceled


# --------------------------------------------------------------------------- time limits


def test_node_timeout_enforced_while_node_is_blocked(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    def sleepy(ctx: Any, params: P) -> dict[str, object]:
        release.wait(5)  # a 5 s sleep that the test can cut short at teardown
        return {"value": "late"}

    wf = build(
        [ntype("sleepy", sleepy, timeout_seconds=0.3, title="Sleepy")],
        [nd("node_2", "sleepy"), nd("o", "out", value="node_2.value")],
    )
    sink = Recorder()
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request(node_timeout=60), sink)
    elapsed = time.monotonic() - start
    assert info.value.error == "node_2 (Sleepy): timed out after 0.3 s"
    assert info.value.node_id == "node_2"
    assert info.value.canceled is False
    assert 0.25 <= elapsed < PROMPT
    assert not release.is_set()  # the node really was still blocked
    assert sink.events[-1] == ("finished", "node_2", "node_2 (Sleepy): timed out after 0.3 s")


def test_request_node_timeout_applies_when_type_has_none(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    def sleepy(ctx: Any, params: P) -> dict[str, object]:
        release.wait(5)
        return {"value": "late"}

    wf = build(
        [ntype("sleepy", sleepy, title="Sleepy")],
        [nd("s", "sleepy"), nd("o", "out", value="s.value")],
    )
    start = time.monotonic()
    with pytest.raises(RunFailed, match=r"^s \(Sleepy\): timed out after 0.2 s$"):
        WorkflowExecutor(pool).execute(wf, request(node_timeout=0.2))
    assert time.monotonic() - start < PROMPT


def test_run_deadline(pool: ThreadPoolExecutor, release: threading.Event) -> None:
    def step(ctx: Any, params: P) -> dict[str, object]:
        release.wait(5)
        return {"value": 1}

    wf = build(
        [ntype("step", step, title="Step")],
        [nd("node_1", "step"), nd("o", "out", value="node_1.value")],
    )
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(
            wf, request(node_timeout=60, deadline=time.monotonic() + 0.3)
        )
    assert info.value.error == "node_1 (Step): the run passed its time limit"
    assert info.value.node_id == "node_1"
    assert time.monotonic() - start < PROMPT


def test_fast_nodes_do_not_time_out(pool: ThreadPoolExecutor) -> None:
    def quick(ctx: Any, params: P) -> dict[str, object]:
        time.sleep(0.05)
        return {"value": params.value}

    wf = build(
        [ntype("quick", quick, timeout_seconds=2)],
        [nd("q", "quick", param=5), nd("o", "out", value="q.value")],
    )
    assert WorkflowExecutor(pool).execute(wf, request(deadline=time.monotonic() + 30)) == {"o": 5}


# --------------------------------------------------------------------------- cancellation


def test_cancel_from_another_thread_stops_a_blocked_node(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    started = threading.Event()

    def stuck(ctx: Any, params: P) -> dict[str, object]:
        started.set()
        release.wait(5)  # does not look at the token
        return {"value": 1}

    wf = build(
        [ntype("stuck", stuck, title="Stuck")],
        [nd("node_1", "stuck"), nd("o", "out", value="node_1.value")],
    )
    req = request()
    canceler = threading.Thread(
        target=lambda: (
            started.wait(5) and (time.sleep(0.1), req.token.cancel("canceled by the caller"))
        )
    )
    canceler.start()
    sink = Recorder()
    begin = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req, sink)
    canceler.join()
    assert info.value.canceled is True
    assert info.value.node_id == "node_1"
    assert info.value.error == "node_1 (Stuck): canceled by the caller"
    assert time.monotonic() - begin < PROMPT
    assert not release.is_set()
    assert sink.events[-1] == ("finished", "node_1", "node_1 (Stuck): canceled by the caller")


def test_cooperative_node_sees_check_canceled_raise(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    raised: list[BaseException] = []
    done = threading.Event()
    started = threading.Event()

    def polite(ctx: Any, params: P) -> dict[str, object]:
        started.set()
        try:
            for _ in range(500):
                ctx.check_canceled()
                time.sleep(0.01)
        except RunCanceled as exc:
            raised.append(exc)
            raise
        finally:
            done.set()
        return {"value": "finished anyway"}

    wf = build(
        [ntype("polite", polite, title="Polite")],
        [nd("p", "polite"), nd("o", "out", value="p.value")],
    )
    req = request()
    threading.Timer(0.0, lambda: started.wait(5) and req.token.cancel()).start()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req)
    assert info.value.canceled is True
    assert info.value.node_id == "p"
    assert info.value.error == "p (Polite): run was canceled"
    assert done.wait(PROMPT)
    assert len(raised) == 1
    assert isinstance(raised[0], RunCanceled)
    assert raised[0].node == "p"
    assert raised[0].message == "run was canceled"


def test_token_canceled_before_start(pool: ThreadPoolExecutor) -> None:
    ran: list[str] = []

    def step(ctx: Any, params: P) -> dict[str, object]:
        ran.append(ctx.node_id)
        ctx.check_canceled()
        return {"value": 1}

    wf = build([ntype("step", step)], [nd("a", "step"), nd("o", "out", value="a.value")])
    req = request()
    req.token.cancel("nobody wants this any more")
    sink = Recorder()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req, sink)
    assert info.value.canceled is True
    assert "nobody wants this any more" in info.value.error
    assert ("started", "o") not in sink.events
    assert ran in ([], ["a"])


def test_cancel_token() -> None:
    t = CancelToken()
    assert not t.canceled
    assert t.reason == "run was canceled"
    t.cancel("server shutting down")
    assert t.canceled
    assert t.reason == "server shutting down"


# --------------------------------------------------------------------------- events


def test_events_in_order_for_a_chain(pool: ThreadPoolExecutor) -> None:
    def work(ctx: Any, params: P, value: object = None) -> dict[str, object]:
        ctx.progress(0.5)
        ctx.progress(7)  # clamped to 1
        ctx.progress(-3)  # clamped to 0
        return {"value": value}

    wf = build(
        [ntype("src", work), ntype("mid", work, ins=("value",))],
        [
            nd("a", "src"),
            nd("b", "mid", value="a.value"),
            nd("o", "out", value="b.value"),
        ],
    )
    sink = Recorder()
    WorkflowExecutor(pool).execute(wf, request(), sink)
    assert sink.events == [
        ("started", "a"),
        ("progress", "a", 0.5),
        ("progress", "a", 1.0),
        ("progress", "a", 0.0),
        ("finished", "a", None),
        ("started", "b"),
        ("progress", "b", 0.5),
        ("progress", "b", 1.0),
        ("progress", "b", 0.0),
        ("finished", "b", None),
        ("started", "o"),
        ("finished", "o", None),
    ]


def test_every_started_node_finishes_once_in_a_diamond(pool: ThreadPoolExecutor) -> None:
    wf = build(
        [CONST, ADD],
        [
            nd("a", "const", param=1),
            nd("b", "add", a="a.value", b="a.value"),
            nd("c", "add", a="a.value", b="b.value"),
            nd("d", "add", a="b.value", b="c.value"),
            nd("o", "out", value="d.value"),
        ],
    )
    sink = Recorder()
    assert WorkflowExecutor(pool).execute(wf, request(), sink) == {"o": 5}
    starts = [e[1] for e in sink.of("started")]
    finishes = [e[1] for e in sink.of("finished")]
    assert sorted(starts) == sorted(finishes) == ["a", "b", "c", "d", "o"]
    for nid in starts:
        assert sink.events.index(("started", nid)) < sink.events.index(("finished", nid, None))
    # a node starts only after all of its predecessors finished
    for nid in starts:
        for pred in wf.predecessors(nid):
            assert sink.events.index(("finished", pred, None)) < sink.events.index(("started", nid))


# --------------------------------------------------------------------------- memory


class Blob:
    """A big intermediate value (stands for an image)."""


def test_intermediate_values_released_once_consumed(pool: ThreadPoolExecutor) -> None:
    refs: list[weakref.ref[Blob]] = []
    alive_when_last_ran: list[bool] = []

    def make(ctx: Any, params: P) -> dict[str, object]:
        blob = Blob()
        refs.append(weakref.ref(blob))
        return {"value": blob}

    def shrink(ctx: Any, params: P, value: object) -> dict[str, object]:
        return {"value": "small"}

    def last(ctx: Any, params: P, value: object) -> dict[str, object]:
        gc.collect()
        alive_when_last_ran.append(refs[0]() is not None)
        return {"value": value}

    wf = build(
        [
            ntype("make", make),
            ntype("shrink", shrink, ins=("value",)),
            ntype("last", last, ins=("value",)),
        ],
        [
            nd("m", "make"),
            nd("s", "shrink", value="m.value"),
            nd("l", "last", value="s.value"),
            nd("o", "out", value="l.value"),
        ],
    )
    assert WorkflowExecutor(pool).execute(wf, request()) == {"o": "small"}
    assert alive_when_last_ran == [False]


# --------------------------------------------------------------------------- built-ins


@pytest.fixture(scope="module")
def builtins() -> NodeRegistry:
    return default_registry(load_entry_points=False)


def _text_delay_text(registry: NodeRegistry, seconds: float) -> Workflow:
    return parse_workflow(
        {
            "nodes": [
                {"id": "node_1", "type": "input.text", "params": {"default": "fallback"}},
                {
                    "id": "node_2",
                    "type": "util.delay",
                    "params": {"seconds": seconds},
                    "inputs": {"value": {"node": "node_1", "port": "text"}},
                },
                {
                    "id": "node_3",
                    "type": "output.text",
                    "inputs": {"text": {"node": "node_2", "port": "value"}},
                },
            ]
        },
        registry,
    )


def test_builtin_text_through_delay(pool: ThreadPoolExecutor, builtins: NodeRegistry) -> None:
    wf = _text_delay_text(builtins, 0.2)
    sink = Recorder()
    start = time.monotonic()
    assert WorkflowExecutor(pool).execute(wf, request({"node_1": "hello"}), sink) == {
        "node_3": "hello"
    }
    elapsed = time.monotonic() - start
    assert 0.2 <= elapsed < PROMPT
    progress = [e[2] for e in sink.of("progress") if e[1] == "node_2"]
    assert progress, "the delay node reports progress"
    assert progress == sorted(progress)
    assert all(0.0 <= f <= 1.0 for f in progress)
    assert [e[1] for e in sink.of("finished")] == ["node_1", "node_2", "node_3"]


def test_builtin_text_input_default(pool: ThreadPoolExecutor, builtins: NodeRegistry) -> None:
    wf = _text_delay_text(builtins, 0)
    assert WorkflowExecutor(pool).execute(wf, request()) == {"node_3": "fallback"}


def test_builtin_delay_is_canceled_promptly(
    pool: ThreadPoolExecutor, builtins: NodeRegistry
) -> None:
    wf = _text_delay_text(builtins, 30)
    req = request({"node_1": "x"})
    timer = threading.Timer(0.2, req.token.cancel)
    timer.start()
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req)
    timer.join()
    assert time.monotonic() - start < PROMPT
    assert info.value.canceled is True
    assert info.value.node_id == "node_2"
    assert info.value.error == "node_2 (Delay): run was canceled"


def test_builtin_delay_respects_node_timeout(
    pool: ThreadPoolExecutor, builtins: NodeRegistry
) -> None:
    wf = _text_delay_text(builtins, 30)
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request({"node_1": "x"}, node_timeout=0.3))
    assert time.monotonic() - start < PROMPT
    assert info.value.error == "node_2 (Delay): timed out after 0.3 s"
    assert info.value.canceled is False


def test_builtin_json_output_refuses_non_json(
    pool: ThreadPoolExecutor, builtins: NodeRegistry
) -> None:
    reg = NodeRegistry([*builtins, ntype("const", _const)])
    wf = parse_workflow(
        {
            "nodes": [
                {"id": "node_1", "type": "const", "params": {"value": None}},
                {
                    "id": "node_2",
                    "type": "output.json",
                    "label": "Result",
                    "inputs": {"value": {"node": "node_1", "port": "value"}},
                },
            ]
        },
        reg,
    )
    assert WorkflowExecutor(pool).execute(wf, request()) == {"node_2": None}

    def weird(ctx: Any, params: P) -> dict[str, object]:
        return {"value": {1, 2}}

    reg2 = NodeRegistry([*builtins, ntype("const", weird)])
    wf2 = parse_workflow(
        {
            "nodes": [
                {"id": "node_1", "type": "const"},
                {
                    "id": "node_2",
                    "type": "output.json",
                    "label": "Result",
                    "inputs": {"value": {"node": "node_1", "port": "value"}},
                },
            ]
        },
        reg2,
    )
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf2, request())
    assert info.value.node_id == "node_2"
    assert info.value.error.startswith("node_2 (Result): value is not JSON: ")


# --------------------------------------------------------------------------- inline nodes


def _inline_types(threads: dict[str, int]) -> list[NodeType]:
    """A pool node and an inline node that record the thread they ran on."""

    def on_pool(ctx: Any, params: P, value: object = None) -> dict[str, object]:
        threads[ctx.node_id] = threading.get_ident()
        return {"value": value if value is not None else params.value}

    def inline(ctx: Any, params: P, value: object = None) -> dict[str, object]:
        threads[ctx.node_id] = threading.get_ident()
        return {"value": value if value is not None else params.value}

    pool_t = ntype("pooled", on_pool, ins=("value",))
    inline_t = node(
        "inl",
        title="Inl",
        category="test",
        params=P,
        inputs={"value": Port("any", optional=True)},
        outputs={"value": Port("any")},
        inline=True,
    )(inline)
    return [pool_t, inline_t]


def test_inline_node_runs_on_the_thread_that_scheduled_it(pool: ThreadPoolExecutor) -> None:
    threads: dict[str, int] = {}
    wf = build(
        _inline_types(threads),
        [
            nd("a", "inl", param=7),
            nd("b", "pooled", value="a.value"),
            nd("c", "inl", value="b.value"),
            nd("o", "out", value="c.value"),
        ],
    )
    sink = Recorder()
    assert WorkflowExecutor(pool).execute(wf, request(), sink) == {"o": 7}
    me = threading.get_ident()
    # Ready at the start: run by the calling thread, which only submits pool nodes.
    assert threads["a"] == me
    assert threads["b"] != me
    # Made ready by a pool node: run by the thread that finished it, with no pool hop.
    assert threads["c"] == threads["b"]
    assert sink.events == [
        ("started", "a"),
        ("finished", "a", None),
        ("started", "b"),
        ("finished", "b", None),
        ("started", "c"),
        ("finished", "c", None),
        ("started", "o"),
        ("finished", "o", None),
    ]


def test_builtin_io_nodes_are_inline(builtins: NodeRegistry) -> None:
    for t in ("input.text", "input.number", "input.boolean", "input.choice"):
        assert builtins.get(t).inline, t  # type: ignore[union-attr]
    for t in ("output.text", "output.json"):
        assert builtins.get(t).inline, t  # type: ignore[union-attr]
    for t in ("input.image_url", "output.image", "util.delay"):
        assert not builtins.get(t).inline, t  # type: ignore[union-attr]


def test_failing_inline_node_names_the_node(pool: ThreadPoolExecutor) -> None:
    def bad(ctx: Any, params: P) -> dict[str, object]:
        raise NodeError("bad inline")

    bad_t = node(
        "bad", title="Bad", category="test", params=P, outputs={"value": Port("any")}, inline=True
    )(bad)
    wf = build(
        [CONST, bad_t],
        [
            nd("c", "const", param=1),
            nd("x", "bad"),
            nd("o", "out", value="c.value"),
            nd("o2", "out", value="x.value"),
        ],
    )
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool, concurrency=1).execute(wf, request())
    assert info.value.node_id == "x"
    assert info.value.error == "x (Bad): bad inline"


def _mixed_with_blocked(
    release: threading.Event, started: threading.Event, timeout_seconds: float | None
) -> tuple[Workflow, dict[str, int]]:
    threads: dict[str, int] = {}

    def stuck(ctx: Any, params: P, value: object) -> dict[str, object]:
        started.set()
        release.wait(5)  # does not look at the token
        return {"value": value}

    types = [
        *_inline_types(threads),
        ntype("stuck", stuck, ins=("value",), timeout_seconds=timeout_seconds, title="Stuck"),
    ]
    wf = build(
        types,
        [
            nd("a", "inl", param=1),
            nd("s", "stuck", value="a.value"),
            nd("b", "pooled", value="a.value"),
            nd("c", "inl", value="b.value"),
            nd("o1", "out", value="s.value"),
            nd("o2", "out", value="c.value"),
        ],
    )
    return wf, threads


def test_mixed_inline_and_pool_honours_node_timeout(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    wf, threads = _mixed_with_blocked(release, threading.Event(), timeout_seconds=0.3)
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request(node_timeout=60))
    elapsed = time.monotonic() - start
    assert info.value.error == "s (Stuck): timed out after 0.3 s"
    assert info.value.canceled is False
    assert 0.25 <= elapsed < PROMPT
    assert not release.is_set()
    # The other branch, inline nodes included, ran meanwhile; its output is kept.
    assert threads["c"] == threads["b"]
    assert info.value.outputs == {"o2": 1}


def test_mixed_inline_and_pool_honours_cancellation(
    pool: ThreadPoolExecutor, release: threading.Event
) -> None:
    started = threading.Event()
    wf, _threads = _mixed_with_blocked(release, started, timeout_seconds=None)
    req = request()
    canceler = threading.Thread(
        target=lambda: started.wait(5) and (time.sleep(0.1), req.token.cancel("stop now"))
    )
    canceler.start()
    begin = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req)
    canceler.join()
    assert time.monotonic() - begin < PROMPT
    assert info.value.canceled is True
    assert info.value.node_id == "s"
    assert info.value.error == "s (Stuck): stop now"
    assert not release.is_set()


def test_mixed_inline_and_pool_respects_concurrency_one(pool: ThreadPoolExecutor) -> None:
    threads: dict[str, int] = {}
    nodes = [nd(f"i{i}", "inl", param=i) for i in range(3)]
    nodes += [nd(f"p{i}", "pooled", value=f"i{i}.value") for i in range(3)]
    nodes += [nd(f"o{i}", "out", value=f"p{i}.value") for i in range(3)]
    wf = build(_inline_types(threads), nodes)
    sink = Recorder()
    assert WorkflowExecutor(pool, concurrency=1).execute(wf, request(), sink) == {
        f"o{i}": i for i in range(3)
    }
    # One node at a time: every start is followed by its own finish.
    for i in range(0, len(sink.events), 2):
        assert sink.events[i][0] == "started"
        assert sink.events[i + 1][:2] == ("finished", sink.events[i][1])


# --------------------------------------------------------------------------- pool threads


def _head(ctx: Any, params: P) -> dict[str, object]:
    return {"value": 0}


def _chain(length: int, step: Fn, extra: list[NodeType] | None = None) -> Workflow:
    """head -> s1 -> ... -> s<length> -> o, every node on the pool."""
    nodes = [nd("head", "head")]
    nodes += [
        nd(f"s{i}", "step", value=f"s{i - 1}.value" if i > 1 else "head.value")
        for i in range(1, length + 1)
    ]
    nodes.append(nd("o", "out", value=f"s{length}.value"))
    types = [ntype("head", _head), ntype("step", step, ins=("value",), title="Step")]
    return build([*types, *(extra or [])], nodes)


class _CountingPool(ThreadPoolExecutor):
    """A pool that counts the jobs it was given."""

    submits = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submits += 1
        return super().submit(fn, *args, **kwargs)


def test_chain_of_pool_nodes_stays_on_one_pool_thread() -> None:
    threads: dict[str, int] = {}

    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        threads[ctx.node_id] = threading.get_ident()
        return {"value": value + 1}

    sink = Recorder()
    with _CountingPool(max_workers=8) as pool:
        assert WorkflowExecutor(pool).execute(_chain(30, step), request(), sink) == {"o": 30}
    # The thread that finishes a node runs the next one: one job, no hand-off per node.
    assert pool.submits == 1
    assert len(threads) == 30
    assert len(set(threads.values())) == 1
    assert threading.get_ident() not in threads.values()
    order = ["head", *(f"s{i}" for i in range(1, 31)), "o"]
    assert sink.events == [e for nid in order for e in (("started", nid), ("finished", nid, None))]


def _stuck_at(k: int, started: threading.Event, release: threading.Event, ran: list[str]) -> Fn:
    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        ran.append(ctx.node_id)
        if ctx.node_id == f"s{k}":
            started.set()
            release.wait(5)  # does not look at the token
        return {"value": value + 1}

    return step


def test_node_timeout_fires_mid_chain(pool: ThreadPoolExecutor, release: threading.Event) -> None:
    ran: list[str] = []
    wf = _chain(6, _stuck_at(3, threading.Event(), release, ran))
    sink = Recorder()
    start = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, request(node_timeout=0.3), sink)
    assert 0.25 <= time.monotonic() - start < PROMPT
    assert info.value.error == "s3 (Step): timed out after 0.3 s"
    assert info.value.node_id == "s3"
    assert ran == ["s1", "s2", "s3"]
    assert not release.is_set()  # s3 really was still blocked
    assert sink.events[-1] == ("finished", "s3", "s3 (Step): timed out after 0.3 s")
    # The stuck thread ends later: it must not report s3 or start s4 after the failure.
    release.set()
    time.sleep(0.1)
    assert sink.events[-1] == ("finished", "s3", "s3 (Step): timed out after 0.3 s")
    assert ran == ["s1", "s2", "s3"]


def test_cancel_fires_mid_chain(pool: ThreadPoolExecutor, release: threading.Event) -> None:
    started = threading.Event()
    ran: list[str] = []
    wf = _chain(6, _stuck_at(4, started, release, ran))
    req = request()

    def cancel_once_stuck() -> None:
        if started.wait(5):
            time.sleep(0.1)
            req.token.cancel("stop now")

    canceler = threading.Thread(target=cancel_once_stuck)
    canceler.start()
    begin = time.monotonic()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(wf, req)
    canceler.join()
    assert time.monotonic() - begin < PROMPT
    assert info.value.canceled is True
    assert info.value.node_id == "s4"
    assert info.value.error == "s4 (Step): stop now"
    assert ran == ["s1", "s2", "s3", "s4"]


def test_cancel_between_pool_nodes_starts_nothing_more(pool: ThreadPoolExecutor) -> None:
    req = request()

    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        if ctx.node_id == "s2":
            req.token.cancel("enough")  # and finishes normally: s3 must not start
        return {"value": value + 1}

    sink = Recorder()
    with pytest.raises(RunFailed) as info:
        WorkflowExecutor(pool).execute(_chain(5, step), req, sink)
    assert info.value.canceled is True
    assert info.value.error == "enough"
    assert [e[1] for e in sink.of("started")] == ["head", "s1", "s2"]


def test_run_deadline_fires_mid_chain(pool: ThreadPoolExecutor) -> None:
    ran: list[str] = []

    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        ran.append(ctx.node_id)
        time.sleep(0.05)
        return {"value": value + 1}

    start = time.monotonic()
    with pytest.raises(RunFailed, match="the run passed its time limit"):
        WorkflowExecutor(pool).execute(_chain(40, step), request(deadline=time.monotonic() + 0.3))
    assert time.monotonic() - start < PROMPT
    assert 3 <= len(ran) < 40


def test_fan_out_on_pool_threads_keeps_to_its_slots(pool: ThreadPoolExecutor) -> None:
    cond = threading.Condition()
    active = [0]
    peak = [0]

    def busy(ctx: Any, params: P, value: int) -> dict[str, object]:
        with cond:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            cond.notify_all()
            # Linger until a fourth node overlaps, or a little while if none can.
            cond.wait_for(lambda: active[0] > 3, timeout=0.05)
            active[0] -= 1
        return {"value": value + int(ctx.node_id[1:])}

    nodes = [nd("head", "head")]
    nodes += [nd(f"b{i}", "busy", value="head.value") for i in range(24)]
    nodes += [nd(f"o{i}", "out", value=f"b{i}.value") for i in range(24)]
    wf = build([ntype("head", _head), ntype("busy", busy, ins=("value",))], nodes)
    result = WorkflowExecutor(pool, concurrency=3).execute(wf, request())
    assert result == {f"o{i}": i for i in range(24)}
    assert peak[0] == 3


def test_value_freed_while_its_producers_thread_runs_on(pool: ThreadPoolExecutor) -> None:
    """x's only consumer y finishes on another thread while x's thread runs w: x's value
    must not be kept alive by the thread that produced it."""
    refs: list[weakref.ref[Blob]] = []
    w_started = threading.Event()
    y_ran = threading.Event()
    freed: list[bool] = []
    threads: dict[str, int] = {}

    def make(ctx: Any, params: P) -> dict[str, object]:
        threads["x"] = threading.get_ident()
        blob = Blob()
        refs.append(weakref.ref(blob))
        return {"value": blob}

    def hold(ctx: Any, params: P) -> dict[str, object]:
        w_started.wait(5)  # so that x's thread, not this one, runs w
        return {"value": "q"}

    def watch(ctx: Any, params: P) -> dict[str, object]:
        threads["w"] = threading.get_ident()
        w_started.set()
        y_ran.wait(5)
        deadline = time.monotonic() + 2
        while refs[0]() is not None and time.monotonic() < deadline:
            gc.collect()
            time.sleep(0.01)
        freed.append(refs[0]() is None)
        return {"value": "w"}

    def use(ctx: Any, params: P, value: object) -> dict[str, object]:
        y_ran.set()
        return {"value": "small"}

    wf = build(
        [
            ntype("make", make),
            ntype("hold", hold),
            ntype("watch", watch),
            ntype("use", use, ins=("value",)),
        ],
        [
            nd("x", "make"),
            nd("q", "hold"),
            nd("w", "watch"),
            nd("y", "use", value="x.value"),
            nd("oq", "out", value="q.value"),
            nd("ow", "out", value="w.value"),
            nd("oy", "out", value="y.value"),
        ],
    )
    result = WorkflowExecutor(pool, concurrency=2).execute(wf, request())
    assert result == {"oq": "q", "ow": "w", "oy": "small"}
    assert threads["w"] == threads["x"]
    assert freed == [True]


class _BrokenSink(Recorder):
    def node_started(self, node_id: str) -> None:
        if node_id == "s2":
            raise RuntimeError("the sink broke")
        super().node_started(node_id)


@pytest.mark.timeout(10)  # what breaks here is execute() waiting forever
def test_sink_error_on_a_pool_thread_is_raised_by_execute(pool: ThreadPoolExecutor) -> None:
    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        return {"value": value + 1}

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="the sink broke"):
        WorkflowExecutor(pool).execute(_chain(4, step), request(), _BrokenSink())
    assert time.monotonic() - start < PROMPT


class _Ticks(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.ticks = 0

    def tick(self) -> None:
        self.ticks += 1


def test_sink_ticks_while_a_node_runs(pool: ThreadPoolExecutor) -> None:
    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        if ctx.node_id == "s2":
            time.sleep(0.45)
        return {"value": value + 1}

    sink = _Ticks()
    WorkflowExecutor(pool).execute(_chain(3, step), request(), sink)
    assert sink.ticks >= 2  # one every WATCH_INTERVAL (0.1 s)


class _TickFails(Recorder):
    def tick(self) -> None:
        raise RuntimeError("the flush failed")


def test_error_in_tick_stops_the_run(pool: ThreadPoolExecutor) -> None:
    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        time.sleep(0.05)
        return {"value": value + 1}

    sink = _TickFails()
    with pytest.raises(RuntimeError, match="the flush failed"):
        WorkflowExecutor(pool).execute(_chain(20, step), request(), sink)
    started = len(sink.of("started"))
    assert started < 20
    time.sleep(0.3)
    # The pool thread that was running the chain goes no further.
    assert len(sink.of("started")) == started


@pytest.mark.timeout(10)
def test_a_cycle_raises_instead_of_hanging(pool: ThreadPoolExecutor) -> None:
    def step(ctx: Any, params: P, value: int) -> dict[str, object]:
        return {"value": value + 1}

    wf = _chain(2, step)
    # parse_workflow refuses cycles; a hand-made Workflow can still hold one.
    a = dataclasses.replace(wf.nodes["s1"], wires={"value": Wire(node="s2", port="value")})
    looped = Workflow({**wf.nodes, "s1": a}, wf.order)
    with pytest.raises(graphlib.CycleError):
        WorkflowExecutor(pool).execute(looped, request())
