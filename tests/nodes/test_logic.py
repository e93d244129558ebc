"""Logic nodes: if, switch, compare; and skipped branches through the real executor."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pydantic import ValidationError

from flowy.engine.cache import MemoryResultCache
from flowy.engine.executor import CancelToken, NoSecrets, NullSink, RunRequest, WorkflowExecutor
from flowy.engine.executor import _Context as Context
from flowy.engine.graph import parse_workflow
from flowy.engine.registry import default_registry
from flowy.engine.spec import SKIP, NoParams
from flowy.errors import MediaError
from flowy.media.fetch import FetchPolicy
from flowy.nodes import logic
from flowy.nodes.logic import compare_values, truthy


class NoMedia:
    def read(self, value: str) -> bytes:
        raise MediaError("no media here")


def ctx() -> Context:
    return Context(
        "run_1",
        "n",
        None,
        NoMedia(),
        1_000_000,
        FetchPolicy(),
        NoSecrets(),
        CancelToken(),
        NullSink(),
    )


# --------------------------------------------------------------------------- if


@pytest.mark.parametrize(
    "value",
    [True, 1, -2.5, "yes", "true", " x ", [0], {"a": 1}, "False!"],
)
def test_truthy(value: object) -> None:
    assert truthy(value) is True


@pytest.mark.parametrize(
    "value",
    [False, 0, 0.0, float("nan"), "", "  ", "false", "FALSE", " no ", "0", "off", "null",
     "None", None, [], {}, SKIP],
)  # fmt: skip
def test_falsy(value: object) -> None:
    assert truthy(value) is False


def test_if_sends_value_down_one_branch() -> None:
    assert logic.if_.run(ctx(), NoParams(), condition=True, value="v") == {
        "then": "v",
        "else": SKIP,
    }
    assert logic.if_.run(ctx(), NoParams(), condition="no", value="v") == {
        "then": SKIP,
        "else": "v",
    }


# --------------------------------------------------------------------------- switch


def _switch(value: str, data: object = None, **params: Any) -> dict[str, object]:
    p = logic.SwitchParams.model_validate({"cases": ["red", "Green", "blue"], **params})
    return dict(logic.switch.run(ctx(), p, value=value, data=data))


def test_switch_takes_exactly_one_output() -> None:
    out = _switch("blue", data={"x": 1})
    assert out["case_3"] == {"x": 1}
    assert [k for k, v in out.items() if v is not SKIP] == ["case_3"]
    assert set(out) == {*(f"case_{i}" for i in range(1, 9)), "default"}


def test_switch_without_data_carries_the_value_and_defaults() -> None:
    assert _switch(" red ")["case_1"] == " red "
    out = _switch("purple")
    assert out["default"] == "purple"
    assert all(v is SKIP for k, v in out.items() if k != "default")


def test_switch_case_options() -> None:
    assert _switch("green")["default"] == "green"  # case-sensitive by default
    assert _switch("green", ignore_case=True)["case_2"] == "green"
    assert _switch(" red", trim=False)["default"] == " red"


@pytest.mark.parametrize(
    "cases", [[], [str(i) for i in range(9)], ["a", "a"]], ids=["none", "nine", "duplicate"]
)
def test_switch_cases_are_validated(cases: list[str]) -> None:
    with pytest.raises(ValidationError):
        logic.SwitchParams.model_validate({"cases": cases})


# --------------------------------------------------------------------------- compare


@pytest.mark.parametrize(
    ("a", "op", "b", "expected"),
    [
        (3, "==", "3", True),
        (3, "<", 10, True),
        ("9", "<", "10", True),  # numbers when both read as numbers
        ("apple", "<", "banana", True),
        ("abc", "==", "ABC", False),
        ("Hello world", "contains", "world", True),
        (["a", "b"], "contains", "b", True),
        ("Hello", "starts_with", "He", True),
        ("Hello", "ends_with", "lo", True),
        (True, "==", True, True),
        (True, "==", "true", True),
        (2.5, ">=", 2.5, True),
        (1, "!=", 2, True),
        ("", "is_empty", None, True),
        ([1], "is_empty", None, False),
    ],
)
def test_compare_values(a: object, op: str, b: object, expected: bool) -> None:
    assert compare_values(a, op, b) is expected


def test_compare_node_uses_value_param_when_b_is_absent() -> None:
    p = logic.CompareParams.model_validate({"op": ">", "value": 10})
    assert logic.compare.run(ctx(), p, a=11) == {"result": True}
    p = logic.CompareParams.model_validate({"op": "==", "value": "abc", "ignore_case": True})
    assert logic.compare.run(ctx(), p, a="ABC") == {"result": True}
    assert logic.compare.run(ctx(), p, a="ABC", b="abd") == {"result": False}


# --------------------------------------------------------------------------- engine


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, str | None]] = []
        self._lock = threading.Lock()

    def node_log(self, node_id: str, message: str) -> None:
        pass

    def tick(self) -> None:
        pass

    def node_started(self, node_id: str) -> None:
        with self._lock:
            self.events.append(("started", node_id, None))

    def node_progress(self, node_id: str, fraction: float) -> None:
        pass

    def node_finished(
        self, node_id: str, *, error: str | None = None, cached: bool = False
    ) -> None:
        with self._lock:
            self.events.append(("finished", node_id, error))

    def node_skipped(self, node_id: str) -> None:
        with self._lock:
            self.events.append(("skipped", node_id, None))

    def ids(self, kind: str) -> set[str]:
        return {e[1] for e in self.events if e[0] == kind}


def _wire(node: str, port: str) -> dict[str, str]:
    return {"node": node, "port": port}


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    p = ThreadPoolExecutor(max_workers=4)
    yield p
    p.shutdown(wait=True)


SKIPPING = {
    "nodes": [
        {"id": "cond", "type": "input.boolean", "params": {"default": False}},
        {"id": "name", "type": "input.text"},
        {
            "id": "if",
            "type": "logic.if",
            "inputs": {"condition": _wire("cond", "value"), "value": _wire("name", "text")},
        },
        {
            "id": "shout",
            "type": "text.regex_replace",
            "params": {"pattern": "$", "replacement": "!"},
            "inputs": {"text": _wire("if", "then")},
        },
        {"id": "out_then", "type": "output.text", "inputs": {"text": _wire("shout", "text")}},
        {"id": "out_else", "type": "output.text", "inputs": {"text": _wire("if", "else")}},
        {
            "id": "merge",
            "type": "data.coalesce",
            "inputs": {"value_1": _wire("shout", "text"), "value_2": _wire("if", "else")},
        },
        {"id": "out_merge", "type": "output.json", "inputs": {"value": _wire("merge", "value")}},
        # An optional input fed by an untaken branch gets None: the node still runs.
        {
            "id": "note",
            "type": "text.template",
            "params": {"template": "then={{ text_1 }}"},
            "inputs": {"text_1": _wire("if", "then")},
        },
        {"id": "out_note", "type": "output.text", "inputs": {"text": _wire("note", "text")}},
    ]
}


@pytest.mark.parametrize("cached", [False, True])
def test_engine_skips_nodes_of_the_untaken_branch(pool: ThreadPoolExecutor, cached: bool) -> None:
    wf = parse_workflow(SKIPPING, default_registry(load_entry_points=False))
    cache = MemoryResultCache() if cached else None
    for _ in range(2 if cached else 1):  # with a cache, the second run reuses results
        sink = Recorder()
        req = RunRequest("run_1", {"cond": False, "name": "Ada"}, NoMedia(), cache=cache)
        result = WorkflowExecutor(pool).execute(wf, req, sink)
        assert result == {"out_else": "Ada", "out_merge": "Ada", "out_note": "then="}
        assert sink.ids("skipped") == {"shout", "out_then"}
        assert not sink.ids("started") & {"shout", "out_then"}
        assert all(e[2] is None for e in sink.events if e[0] == "finished")

        sink = Recorder()
        req = RunRequest("run_2", {"cond": True, "name": "Ada"}, NoMedia(), cache=cache)
        result = WorkflowExecutor(pool).execute(wf, req, sink)
        assert result == {"out_then": "Ada!", "out_merge": "Ada!", "out_note": "then=Ada"}
        assert sink.ids("skipped") == {"out_else"}
