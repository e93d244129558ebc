"""check_run_inputs: a caller's ``inputs`` map checked against the app's input nodes."""

from __future__ import annotations

import math
from typing import Any

import pytest

from flowy.engine.graph import Workflow, parse_workflow
from flowy.engine.inputs import MAX_URL_LENGTH, check_run_inputs
from flowy.engine.registry import NodeRegistry, default_registry
from flowy.errors import Issue, ValidationFailed

PNG_DATA_URI = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk"


@pytest.fixture(scope="module")
def registry() -> NodeRegistry:
    return default_registry(load_entry_points=False)


def _wf(registry: NodeRegistry, inputs: dict[str, tuple[str, dict[str, Any]]]) -> Workflow:
    nodes: list[dict[str, Any]] = [
        {"id": nid, "type": type_, "params": params} for nid, (type_, params) in inputs.items()
    ]
    first = next(iter(inputs))
    port = registry.get(inputs[first][0]).outputs  # type: ignore[union-attr]
    nodes.append(
        {
            "id": "node_99",
            "type": "output.json",
            "inputs": {"value": {"node": first, "port": next(iter(port))}},
        }
    )
    return parse_workflow({"nodes": nodes}, registry)


@pytest.fixture(scope="module")
def workflow(registry: NodeRegistry) -> Workflow:
    return _wf(
        registry,
        {
            "node_1": ("input.text", {"label": "Prompt", "required": True, "max_length": 5}),
            "node_2": (
                "input.number",
                {"label": "Count", "minimum": 1, "maximum": 10, "integer": True},
            ),
            "node_3": ("input.boolean", {"label": "Flag"}),
            "node_4": (
                "input.choice",
                {"label": "Size", "options": ["small", "large"], "default": "small"},
            ),
            "node_5": ("input.image_url", {"label": "Photo"}),
            "node_6": ("input.text", {"label": "Greeting", "default": "hello"}),
            "node_7": ("input.number", {"label": "Ratio", "default": 2.5}),
            "node_8": ("input.boolean", {"label": "Opt-in", "default": False}),
            "node_10": (
                "input.image_url",
                {"label": "Backdrop", "required": False, "default": "https://example.com/bg.png"},
            ),
        },
    )


def good(**over: object) -> dict[str, object]:
    base: dict[str, object] = {"node_1": "hi", "node_5": "https://example.com/me.png"}
    base.update(over)
    return {k: v for k, v in base.items() if v is not _DROP}


_DROP = object()


def failure(workflow: Workflow, inputs: object, **kw: Any) -> ValidationFailed:
    with pytest.raises(ValidationFailed) as info:
        check_run_inputs(workflow, inputs, **kw)
    assert info.value.code == "validation_error"
    assert info.value.status == 422
    return info.value


def one(workflow: Workflow, inputs: object, **kw: Any) -> Issue:
    err = failure(workflow, inputs, **kw)
    assert len(err.issues) == 1, err.issues
    return err.issues[0]


# --------------------------------------------------------------------------- accepted


def test_valid_inputs_with_defaults_filled_in(workflow: Workflow) -> None:
    out = check_run_inputs(
        workflow, {"node_1": "hi", "node_2": 3, "node_5": "https://example.com/me.png"}
    )
    assert out == {
        "node_1": "hi",
        "node_2": 3,
        "node_3": None,  # optional, no default
        "node_4": "small",  # choice default
        "node_5": "https://example.com/me.png",
        "node_6": "hello",  # text default
        "node_7": 2.5,  # number default
        "node_8": False,  # boolean default False is kept, not treated as missing
        "node_10": "https://example.com/bg.png",
    }


def test_given_values_override_defaults(workflow: Workflow) -> None:
    out = check_run_inputs(
        workflow,
        good(
            node_4="large",
            node_6="yo",
            node_7=-1.5,
            node_8=True,
            node_3=False,
            node_10="http://example.org/x.jpg",
        ),
    )
    assert out["node_4"] == "large"
    assert out["node_6"] == "yo"
    assert out["node_7"] == -1.5
    assert out["node_8"] is True
    assert out["node_3"] is False
    assert out["node_10"] == "http://example.org/x.jpg"


@pytest.mark.parametrize("value", [1, 10, 3.0, 7])
def test_numbers_in_range_accepted(workflow: Workflow, value: float) -> None:
    assert check_run_inputs(workflow, good(node_2=value))["node_2"] == value


def test_text_at_max_length_accepted(workflow: Workflow) -> None:
    assert check_run_inputs(workflow, good(node_1="12345"))["node_1"] == "12345"


@pytest.mark.parametrize(
    "url",
    [PNG_DATA_URI, "https://example.com/a.png?x=1", "http://127.0.0.1:8000/v1/files/abc/content"],
)
def test_media_urls_accepted(workflow: Workflow, url: str) -> None:
    assert check_run_inputs(workflow, good(node_5=url))["node_5"] == url


def test_long_data_uri_accepted_but_long_url_refused(workflow: Workflow) -> None:
    long_data = "data:image/png;base64," + "A" * (MAX_URL_LENGTH + 10)
    assert check_run_inputs(workflow, good(node_5=long_data))["node_5"] == long_data
    issue = one(workflow, good(node_5="https://example.com/" + "a" * MAX_URL_LENGTH))
    assert issue.field == "inputs.node_5"
    assert issue.message == f"'Photo' (image_url) URL is longer than {MAX_URL_LENGTH} characters"


def test_media_check_sees_data_uris_and_urls(workflow: Workflow) -> None:
    seen: list[str] = []

    def check(value: str) -> str | None:
        seen.append(value)
        return None

    check_run_inputs(
        workflow, good(node_5=PNG_DATA_URI, node_10="https://cdn.example/x.png"), media_check=check
    )
    assert sorted(seen) == sorted([PNG_DATA_URI, "https://cdn.example/x.png"])


# --------------------------------------------------------------------------- refused


def test_inputs_must_be_an_object(workflow: Workflow) -> None:
    for bad in (["node_1"], "node_1", None, 3):
        issue = one(workflow, bad)
        assert issue.field == "inputs"
        assert issue.code == "invalid_type"
        assert issue.message == "must be an object of nodeId -> value"


def test_required_missing(workflow: Workflow) -> None:
    issue = one(workflow, good(node_1=_DROP))
    assert issue.code == "required"
    assert issue.field == "inputs.node_1"
    assert issue.node == "node_1"
    assert issue.message == "'Prompt' (text) is required"


def test_required_given_as_null_is_missing(workflow: Workflow) -> None:
    issue = one(workflow, good(node_1=None))
    assert (issue.code, issue.field) == ("required", "inputs.node_1")


def test_media_input_required_by_default(workflow: Workflow) -> None:
    issue = one(workflow, good(node_5=_DROP))
    assert issue.code == "required"
    assert issue.field == "inputs.node_5"
    assert issue.message == "'Photo' (image_url) is required"


def test_unknown_node_id(workflow: Workflow) -> None:
    issue = one(workflow, good(node_42="x"))
    assert issue.code == "unknown_input"
    assert issue.field == "inputs.node_42"
    assert issue.node == "node_42"
    assert issue.message.startswith("no input with nodeId 'node_42' (inputs: node_1, node_2, ")
    assert "node_10" in issue.message


def test_output_node_id_is_not_an_input(workflow: Workflow) -> None:
    issue = one(workflow, good(node_99="x"))
    assert (issue.code, issue.field) == ("unknown_input", "inputs.node_99")


def test_unknown_input_lists_none_when_app_has_no_inputs(registry: NodeRegistry) -> None:
    wf = parse_workflow(
        {
            "nodes": [
                {"id": "node_1", "type": "output.json", "inputs": {}},
            ]
        },
        NodeRegistry(
            [t for t in registry if t.type != "output.json"] + [_optional_json_out(registry)]
        ),
    )
    issue = one(wf, {"node_1": 1})
    assert issue.message == "no input with nodeId 'node_1' (inputs: none)"


def _optional_json_out(registry: NodeRegistry) -> Any:
    from dataclasses import replace

    from flowy.engine.spec import Port

    base = registry.get("output.json")
    assert base is not None
    return replace(base, inputs={"value": Port("any", optional=True)})


@pytest.mark.parametrize(
    ("node_id", "value", "message"),
    [
        ("node_1", 42, "'Prompt' (text) must be a string"),
        ("node_1", ["hi"], "'Prompt' (text) must be a string"),
        ("node_1", "123456", "'Prompt' (text) must be at most 5 characters"),
        ("node_2", "5", "'Count' (number) must be a number"),
        ("node_2", True, "'Count' (number) must be a number"),
        ("node_2", False, "'Count' (number) must be a number"),
        ("node_2", math.nan, "'Count' (number) must be a finite number"),
        ("node_2", math.inf, "'Count' (number) must be a finite number"),
        ("node_2", -math.inf, "'Count' (number) must be a finite number"),
        ("node_2", 2.5, "'Count' (number) must be a whole number"),
        ("node_2", 0, "'Count' (number) must be at least 1"),
        ("node_2", 11, "'Count' (number) must be at most 10"),
        ("node_2", 10.0001, "'Count' (number) must be a whole number"),
        ("node_3", "true", "'Flag' (boolean) must be true or false"),
        ("node_3", 1, "'Flag' (boolean) must be true or false"),
        ("node_4", "medium", "'Size' (choice) must be one of 'small', 'large'"),
        ("node_4", 1, "'Size' (choice) must be one of 'small', 'large'"),
        ("node_4", "Small", "'Size' (choice) must be one of 'small', 'large'"),
        (
            "node_5",
            "ftp://example.com/me.png",
            "'Photo' (image_url) must be an http(s) URL, a data: URI or an upload URL",
        ),
        (
            "node_5",
            "/v1/files/abc/content",
            "'Photo' (image_url) must be an http(s) URL, a data: URI or an upload URL",
        ),
        (
            "node_5",
            "me.png",
            "'Photo' (image_url) must be an http(s) URL, a data: URI or an upload URL",
        ),
        (
            "node_5",
            "https://",
            "'Photo' (image_url) must be an http(s) URL, a data: URI or an upload URL",
        ),
        (
            "node_5",
            "file:///etc/passwd",
            "'Photo' (image_url) must be an http(s) URL, a data: URI or an upload URL",
        ),
        ("node_5", 123, "'Photo' (image_url) must be a URL string"),
        (
            "node_5",
            {"url": "https://example.com/me.png"},
            "'Photo' (image_url) must be a URL string",
        ),
    ],
)
def test_invalid_values(workflow: Workflow, node_id: str, value: object, message: str) -> None:
    issue = one(workflow, good(**{node_id: value}))
    assert issue.code == "invalid_value"
    assert issue.field == f"inputs.{node_id}"
    assert issue.node == node_id
    assert issue.message == message


def test_number_bounds_without_integer_flag(registry: NodeRegistry) -> None:
    wf = _wf(registry, {"node_1": ("input.number", {"minimum": -0.5, "maximum": 0.5})})
    assert check_run_inputs(wf, {"node_1": 0.25}) == {"node_1": 0.25}
    assert one(wf, {"node_1": -0.75}).message == "'Number input' (number) must be at least -0.5"
    assert one(wf, {"node_1": 0.75}).message == "'Number input' (number) must be at most 0.5"


def test_media_check_message_reported(workflow: Workflow) -> None:
    calls: list[str] = []

    def check(value: str) -> str | None:
        calls.append(value)
        return "is not a file of this workspace" if "evil" in value else None

    issue = one(
        workflow, good(node_5="https://flowy.example/v1/files/evil/content"), media_check=check
    )
    assert issue.code == "invalid_value"
    assert issue.field == "inputs.node_5"
    assert issue.message == "'Photo' (image_url) is not a file of this workspace"
    assert "https://flowy.example/v1/files/evil/content" in calls

    issue = one(workflow, good(node_5="data:image/png;base64,evil"), media_check=check)
    assert issue.message == "'Photo' (image_url) is not a file of this workspace"


def test_media_check_not_called_for_refused_urls(workflow: Workflow) -> None:
    calls: list[str] = []

    def check(value: str) -> str | None:
        calls.append(value)
        return None

    failure(workflow, good(node_5="ftp://example.com/x.png"), media_check=check)
    assert "ftp://example.com/x.png" not in calls


def test_all_problems_reported_together(workflow: Workflow) -> None:
    err = failure(
        workflow,
        {
            # node_1 missing (required), node_5 is not a URL
            "node_2": "three",
            "node_3": "yes",
            "node_4": "huge",
            "node_5": "ftp://x/y.png",
            "node_6": 7,
            "node_7": math.nan,
            "bogus": 1,
        },
    )
    by_field = {i.field: i for i in err.issues}
    assert set(by_field) == {
        "inputs.node_1",
        "inputs.node_2",
        "inputs.node_3",
        "inputs.node_4",
        "inputs.node_5",
        "inputs.node_6",
        "inputs.node_7",
        "inputs.bogus",
    }
    assert by_field["inputs.node_1"].code == "required"
    assert by_field["inputs.bogus"].code == "unknown_input"
    assert len(err.issues) == 8
    assert err.details == [i.to_dict() for i in err.issues]
    assert all({"code", "message", "field", "node"} == set(d) for d in err.details)
    # the message names every field
    for f in by_field:
        assert f"{f}: " in err.message
