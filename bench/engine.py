"""Row 4: the executor's own cost per node, on graphs of no-op nodes.

A 1,000-node chain (each node waits for the previous) and a 1,000-node fan-out (all
ready at once) go through :class:`WorkflowExecutor` on a thread pool shaped like the
embedded worker's (8 threads, 4 nodes of a run at once), with no cache and a null sink.
The floor is ``graphlib.TopologicalSorter`` alone: prepare / get_ready / done.  Two
references explain the gap: calling the node functions inline, and one thread-pool
round trip per node (what a chain paid before the thread finishing a node started the
next one itself).
"""

from __future__ import annotations

import graphlib
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench import workflows
from bench.common import ENGINE_PACKAGES, Config, Row, median, versions
from flowy.engine.executor import RunRequest, WorkflowExecutor
from flowy.engine.graph import Workflow, parse_workflow
from flowy.engine.spec import NoParams

NODES = 1000
POOL_THREADS = 8  # worker.concurrency (2) x worker.node_concurrency (4)
NODE_CONCURRENCY = 4


class _NoMedia:
    def read(self, value: str) -> bytes:
        raise RuntimeError("no media in the engine bench")


def _graph(wf: Workflow) -> dict[str, set[str]]:
    return {nid: wf.predecessors(nid) for nid in wf.nodes}


def _sorter_only(graph: Mapping[str, set[str]]) -> None:
    ts = graphlib.TopologicalSorter(graph)
    ts.prepare()
    while ts.is_active():
        for n in ts.get_ready():
            ts.done(n)


def _inline(wf: Workflow, graph: Mapping[str, set[str]]) -> None:
    """The sorter loop plus calling each node's function in this thread."""
    ts = graphlib.TopologicalSorter(graph)
    ts.prepare()
    values: dict[str, Mapping[str, object]] = {}
    while ts.is_active():
        for nid in ts.get_ready():
            b = wf.nodes[nid]
            kwargs = {name: values[w.node][w.port] for name, w in b.wires.items()}
            values[nid] = b.type.run(None, NoParams(), **kwargs)
            ts.done(nid)


def _pool_round_trips(pool: ThreadPoolExecutor, n: int) -> None:
    """n sequential submit -> result round trips of a no-op on the pool."""
    for _ in range(n):
        pool.submit(int).result()


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _measure(cfg: Config, wf: Workflow, pool: ThreadPoolExecutor) -> dict[str, Any]:
    executor = WorkflowExecutor(pool, concurrency=NODE_CONCURRENCY)
    graph = _graph(wf)
    n = len(wf.nodes)
    counter = iter(range(1_000_000))

    def run() -> None:
        executor.execute(wf, RunRequest(f"bench{next(counter)}", {}, _NoMedia()))

    sides: dict[str, Callable[[], Any]] = {
        "executor": run,
        "sorter": lambda: _sorter_only(graph),
        "inline": lambda: _inline(wf, graph),
        "pool_round_trips": lambda: _pool_round_trips(pool, n),
    }
    for fn in sides.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in sides}
    for _ in range(cfg.n(15, 3)):
        for k, fn in sides.items():
            times[k].append(_time(fn))
    us = {k: median(v) / n * 1e6 for k, v in times.items()}
    return {
        "us_per_node": {k: round(v, 2) for k, v in us.items()},
        "ratio_executor_vs_sorter": round(us["executor"] / us["sorter"], 1),
        "samples": {k: [round(x * 1e3, 2) for x in v] for k, v in times.items()},
        "samples_unit": "ms per whole graph",
    }


def row_engine(cfg: Config) -> Row:
    row = Row(
        4,
        f"engine overhead/node: {NODES}-node chain | fan-out",
        "graphlib.TopologicalSorter alone",
        "≤5× (≈10 µs/node)",
        command=cfg.command,
    )
    reg = workflows.registry()
    graphs = {
        "chain": parse_workflow(workflows.chain(NODES), reg),
        "fanout": parse_workflow(workflows.fanout(NODES), reg),
    }
    with ThreadPoolExecutor(max_workers=POOL_THREADS, thread_name_prefix="bench-node") as pool:
        results = {name: _measure(cfg, wf, pool) for name, wf in graphs.items()}
    ex = {k: v["us_per_node"]["executor"] for k, v in results.items()}
    fl = {k: v["us_per_node"]["sorter"] for k, v in results.items()}
    ratios = {k: ex[k] / fl[k] for k in ex}
    worst = max(ratios.values())
    row.measured = f"{ex['chain']:.1f} | {ex['fanout']:.1f} µs/node"
    row.floor = f"{fl['chain']:.2f} | {fl['fanout']:.2f} µs/node"
    row.ratio = worst
    row.ratio_text = f"{ratios['chain']:.0f}× | {ratios['fanout']:.0f}×"
    row.ok = worst <= 5
    row.details = {
        "nodes": NODES,
        "pool_threads": POOL_THREADS,
        "node_concurrency": NODE_CONCURRENCY,
        **results,
    }
    row.versions = versions(*ENGINE_PACKAGES)
    return row
