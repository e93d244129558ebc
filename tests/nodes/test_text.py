"""Text and data nodes: template, regex, JSONPath, split/join/concat, numbers, coalesce."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from flowy.engine.executor import CancelToken, NoSecrets, NullSink, _Context
from flowy.engine.graph import parse_workflow
from flowy.engine.registry import default_registry
from flowy.engine.spec import SKIP, NodeType
from flowy.errors import GraphInvalid, MediaError, NodeError, RunCanceled
from flowy.media.fetch import FetchPolicy
from flowy.nodes import text


class NoMedia:
    def read(self, value: str) -> bytes:
        raise MediaError("no media here")


def ctx(token: CancelToken | None = None) -> _Context:
    return _Context(
        "run_1",
        "node_1",
        None,
        NoMedia(),
        1_000_000,
        FetchPolicy(),
        NoSecrets(),
        token or CancelToken(),
        NullSink(),
    )


def run(nt: NodeType, params: dict[str, Any], **inputs: object) -> dict[str, object]:
    p: BaseModel = nt.params.model_validate(params)
    return dict(nt.run(ctx(), p, **inputs))


# --------------------------------------------------------------------------- template


def test_template_renders_inputs_and_data() -> None:
    out = run(
        text.template,
        {"template": "Hi {{ text_1 }} <{{ text_2 }}>: {% for i in data.rows %}{{i}},{% endfor %}"},
        text_1="Ada",
        data={"rows": [1, 2]},
    )
    assert out == {"text": "Hi Ada <>: 1,2,"}  # no autoescape; missing input is empty


def test_template_undefined_variable_names_it() -> None:
    with pytest.raises(NodeError, match="undefined variable: 'nmae' is undefined"):
        run(text.template, {"template": "{{ nmae }}"})
    with pytest.raises(NodeError, match="has no attribute 'missing'"):
        run(text.template, {"template": "{{ data.missing }}"}, data={"x": 1})


def test_template_syntax_error_is_a_params_error() -> None:
    with pytest.raises(ValidationError, match="invalid template"):
        text.TemplateParams.model_validate({"template": "{{ oops "})


def test_template_is_sandboxed() -> None:
    with pytest.raises(NodeError, match="template failed"):
        run(text.template, {"template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"})


# --------------------------------------------------------------------------- regex


def test_regex_extract_first_all_and_found() -> None:
    out = run(
        text.regex_extract,
        {"pattern": r"(\w+)@(?P<host>[\w.]+)", "group": "host"},
        text="ada@a.org, bob@b.net",
    )
    assert out == {"text": "a.org", "matches": ["a.org", "b.net"], "found": True}
    out = run(text.regex_extract, {"pattern": r"X(\d)?", "group": 1}, text="X")
    assert out["matches"] == [None] and out["text"] == ""


def test_regex_extract_flags() -> None:
    out = run(text.regex_extract, {"pattern": "^b.c$", "ignore_case": True, "multiline": True,
                                   "dotall": True}, text="a\nB\nC\nb\nc")  # fmt: skip
    assert out["matches"] == ["B\nC", "b\nc"]


def test_regex_extract_when_nothing_matches() -> None:
    assert run(text.regex_extract, {"pattern": "z"}, text="abc") == {
        "text": "",
        "matches": [],
        "found": False,
    }
    assert run(text.regex_extract, {"pattern": "z", "if_none": "skip"}, text="abc")["text"] is SKIP
    with pytest.raises(NodeError, match="does not match"):
        run(text.regex_extract, {"pattern": "z", "if_none": "fail"}, text="abc")


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"pattern": "(unclosed"}, "invalid regular expression"),
        ({"pattern": "a", "group": 1}, "group 1 does not exist"),
        ({"pattern": "(a)", "group": "name"}, "no group named 'name'"),
        ({"pattern": "a" * 1001}, "at most 1000 characters"),
    ],
)
def test_regex_params_are_validated(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        text.ExtractParams.model_validate(params)


def test_invalid_regex_fails_workflow_validation() -> None:
    wf = {
        "nodes": [
            {"id": "n1", "type": "input.text"},
            {
                "id": "n2",
                "type": "text.regex_extract",
                "params": {"pattern": "([a-"},
                "inputs": {"text": {"node": "n1", "port": "text"}},
            },
            {"id": "n3", "type": "output.text", "inputs": {"text": {"node": "n2", "port": "text"}}},
        ]
    }
    with pytest.raises(GraphInvalid) as info:
        parse_workflow(wf, default_registry(load_entry_points=False))
    assert info.value.issues[0].node == "n2"
    assert "invalid regular expression" in info.value.issues[0].message


def test_catastrophic_pattern_times_out_without_freezing_the_process() -> None:
    ticks = []
    stop = threading.Event()

    def ticker() -> None:
        while not stop.wait(0.05):
            ticks.append(1)

    t = threading.Thread(target=ticker)
    t.start()
    start = time.monotonic()
    try:
        with pytest.raises(NodeError, match=r"took longer than 0\.5 s.*catastrophic"):
            run(
                text.regex_extract,
                {"pattern": r"^(a+)+$", "timeout_seconds": 0.5},
                text="a" * 40 + "b",
            )
    finally:
        stop.set()
        t.join()
    assert time.monotonic() - start < 5
    assert len(ticks) >= 3  # other threads kept running meanwhile


def test_regex_is_canceled_with_the_run() -> None:
    token = CancelToken()
    params = text.ExtractParams.model_validate({"pattern": r"^(a+)+$", "timeout_seconds": 20})
    threading.Timer(0.3, token.cancel).start()
    start = time.monotonic()
    with pytest.raises(RunCanceled):
        text.regex_extract.run(ctx(token), params, text="a" * 40 + "b")
    assert time.monotonic() - start < 5


def test_regex_replace() -> None:
    out = run(text.regex_replace, {"pattern": r"(\w+)@(\w+)", "replacement": r"\2 at \1"},
              text="ada@home bob@work")  # fmt: skip
    assert out == {"text": "home at ada work at bob"}
    out = run(text.regex_replace, {"pattern": "a", "replacement": "b", "count": 1}, text="aaa")
    assert out == {"text": "baa"}


def test_regex_replace_bad_group_reference_is_a_params_error() -> None:
    with pytest.raises(ValidationError, match="invalid replacement"):
        text.ReplaceParams.model_validate({"pattern": "(a)", "replacement": r"\2"})
    with pytest.raises(ValidationError, match="invalid replacement"):
        text.ReplaceParams.model_validate({"pattern": "(a)", "replacement": r"\g<nope>"})


# --------------------------------------------------------------------------- JSON


DATA = {"items": [{"name": "a", "price": 5}, {"name": "b", "price": 20}], "owner": {"id": 7}}


def test_json_path() -> None:
    assert run(text.json_path, {"expression": "$.owner.id"}, data=DATA) == {
        "value": 7,
        "found": True,
    }
    assert run(text.json_path, {"expression": "$.items[?(@.price > 10)].name"}, data=DATA) == {
        "value": "b",
        "found": True,
    }
    assert run(text.json_path, {"expression": "$.items[*].name", "all": True}, data=DATA) == {
        "value": ["a", "b"],
        "found": True,
    }
    assert run(text.json_path, {"expression": "$.nope", "default": "x"}, data=DATA) == {
        "value": "x",
        "found": False,
    }


def test_json_path_invalid_expression_is_a_params_error() -> None:
    with pytest.raises(ValidationError, match="invalid JSONPath"):
        text.JsonPathParams.model_validate({"expression": "$.[[["})


# --------------------------------------------------------------------------- others


def test_split_and_join() -> None:
    assert run(text.split, {}, text=" a \n\n b\n") == {"items": ["a", "b"]}
    assert run(
        text.split, {"separator": ",", "trim": False, "drop_empty": False}, text="a, b,"
    ) == {"items": ["a", " b", ""]}
    assert run(text.split, {"separator": ""}, text="a  b\tc") == {"items": ["a", "b", "c"]}
    assert run(text.split, {"separator": ",", "max_splits": 1}, text="a,b,c") == {
        "items": ["a", "b,c"]
    }
    assert run(text.join, {"separator": ", "}, items=["a", 1, None, {"k": True}]) == {
        "text": 'a, 1, , {"k": true}'
    }
    with pytest.raises(NodeError, match="must be a list"):
        run(text.join, {}, items="abc")


def test_concat_skips_missing() -> None:
    assert run(text.concat, {"separator": " "}, text_1="a", text_3="c") == {"text": "a c"}


@pytest.mark.parametrize(
    ("number", "params", "expected"),
    [
        (1234567.891, {}, "1,234,567.89"),
        (2.5, {"decimals": 0}, "3"),
        (-1234.5, {"decimals": 1, "prefix": "$"}, "-$1,234.5"),
        (0.256, {"percent": True, "decimals": 1}, "25.6%"),
        (1234.5, {"thousands_separator": ".", "decimal_separator": ","}, "1.234,50"),
        (1000, {"thousands_separator": "", "suffix": " kg", "decimals": 0}, "1000 kg"),
        (0.005, {}, "0.01"),
    ],
)
def test_format_number(number: float, params: dict[str, Any], expected: str) -> None:
    assert run(text.format_number, params, number=number) == {"text": expected}


def test_format_number_refuses_non_numbers() -> None:
    with pytest.raises(NodeError, match="must be a number"):
        run(text.format_number, {}, number=True)
    with pytest.raises(NodeError, match="cannot format"):
        run(text.format_number, {}, number=float("nan"))


def test_coalesce() -> None:
    assert run(text.coalesce, {}, value_1=None, value_2="  ", value_3=[], value_4=0) == {"value": 0}
    assert run(text.coalesce, {"default": "d"}, value_2="") == {"value": "d"}
    assert run(text.coalesce, {"empty_strings": False}, value_1="") == {"value": ""}
    assert run(text.coalesce, {}, value_2={"a": 1}) == {"value": {"a": 1}}


def test_registered_and_deterministic() -> None:
    registry = default_registry(load_entry_points=False)
    for nt in text.NODES:
        assert registry.get(nt.type) is nt
        assert nt.deterministic
    assert all(p.optional for p in text.coalesce.inputs.values())
