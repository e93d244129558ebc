"""parse_workflow: validation of workflow documents against a node catalog."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, Field

from flowy.engine.graph import Workflow, parse_workflow
from flowy.engine.inputs import MediaInputParams, NumberInputParams, TextInputParams
from flowy.engine.registry import NodeRegistry, default_registry
from flowy.engine.spec import Port, node
from flowy.errors import GraphInvalid, Issue, ValidationFailed

# --------------------------------------------------------------------------- catalog


def _noop(ctx: object, params: object, **inputs: object) -> dict[str, object]:
    return {}


class ScaleParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    factor: float = Field(ge=0, le=10)


class OutParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    label: str | None = None


TYPES = [
    node(
        "t.text_in",
        title="Text in",
        category="input",
        input_kind="text",
        params=TextInputParams,
        outputs={"text": Port("text")},
    )(_noop),
    node(
        "t.number_in",
        title="Number in",
        category="input",
        input_kind="number",
        params=NumberInputParams,
        outputs={"number": Port("number")},
    )(_noop),
    node(
        "t.image_in",
        title="Image in",
        category="input",
        input_kind="image_url",
        params=MediaInputParams,
        outputs={"image": Port("image")},
    )(_noop),
    node(
        "t.upper",
        title="Upper",
        category="text",
        inputs={"text": Port("text")},
        outputs={"text": Port("text")},
    )(_noop),
    node(
        "t.join",
        title="Join",
        category="text",
        inputs={"a": Port("text"), "b": Port("text", optional=True)},
        outputs={"text": Port("text")},
    )(_noop),
    node(
        "t.scale",
        title="Scale",
        category="number",
        params=ScaleParams,
        inputs={"number": Port("number")},
        outputs={"number": Port("number")},
    )(_noop),
    node(
        "t.anything",
        title="Anything",
        category="util",
        inputs={"value": Port("any")},
        outputs={"value": Port("any")},
    )(_noop),
    node(
        "t.text_out",
        title="Text out",
        category="output",
        output_kind="text",
        params=OutParams,
        inputs={"text": Port("text")},
    )(_noop),
    node(
        "t.json_out",
        title="JSON out",
        category="output",
        output_kind="json",
        params=OutParams,
        inputs={"value": Port("any")},
    )(_noop),
]


@pytest.fixture
def registry() -> NodeRegistry:
    return NodeRegistry(TYPES)


def w(node_id: str, port: str) -> dict[str, str]:
    return {"node": node_id, "port": port}


def n(
    node_id: str,
    type_: str,
    *,
    label: str | None = None,
    params: dict[str, Any] | None = None,
    **inputs: dict[str, str],
) -> dict[str, Any]:
    d: dict[str, Any] = {"id": node_id, "type": type_, "inputs": inputs}
    if label is not None:
        d["label"] = label
    if params is not None:
        d["params"] = params
    return d


def invalid(doc: object, registry: NodeRegistry) -> GraphInvalid:
    with pytest.raises(GraphInvalid) as info:
        parse_workflow(doc, registry)
    return info.value


def only(err: GraphInvalid) -> Issue:
    assert len(err.issues) == 1, err.issues
    return err.issues[0]


# --------------------------------------------------------------------------- valid graphs


def test_valid_graph_topological_order_and_interface(registry: NodeRegistry) -> None:
    # Listed deliberately out of dependency order.
    doc = {
        "nodes": [
            n("node_10", "t.text_out", text=w("node_3", "text")),
            n("node_3", "t.join", a=w("node_2", "text"), b=w("node_1", "text")),
            n("node_2", "t.upper", text=w("node_1", "text")),
            n("node_1", "t.text_in", params={"required": True, "label": "Prompt"}),
            n("node_11", "t.number_in"),
            n("node_4", "t.scale", params={"factor": 2}, number=w("node_11", "number")),
            n("node_5", "t.json_out", label="Scaled", value=w("node_4", "number")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert isinstance(wf, Workflow)

    assert sorted(wf.order) == sorted(d["id"] for d in doc["nodes"])
    pos = {nid: i for i, nid in enumerate(wf.order)}
    for nid in wf.order:
        for pred in wf.predecessors(nid):
            assert pos[pred] < pos[nid], f"{pred} must come before {nid} in {wf.order}"
    assert wf.predecessors("node_3") == {"node_1", "node_2"}
    assert wf.predecessors("node_1") == set()

    # node_1 before node_11, by number, not as strings.
    assert [(i.node_id, i.kind, i.required, i.label) for i in wf.inputs] == [
        ("node_1", "text", True, "Prompt"),
        ("node_11", "number", False, "Number in"),
    ]
    assert [(o.node_id, o.output_type, o.label) for o in wf.outputs] == [
        ("node_5", "json", "Scaled"),
        ("node_10", "text", "Text out"),
    ]
    assert isinstance(wf.inputs[0].params, TextInputParams)
    assert wf.nodes["node_4"].params.factor == 2  # type: ignore[attr-defined]
    assert wf.nodes["node_4"].type.type == "t.scale"


def test_app_outputs_sorted_numerically_node_2_before_node_10(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_10", "t.text_out", text=w("node_1", "text")),
            n("node_2", "t.text_out", text=w("node_1", "text")),
            n("node_9", "t.text_in"),
            n("node_20", "t.text_in"),
            n("node_3", "t.json_out", value=w("node_20", "text")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert [o.node_id for o in wf.outputs] == ["node_2", "node_3", "node_10"]
    assert [i.node_id for i in wf.inputs] == ["node_1", "node_9", "node_20"]


def test_ids_without_numbers_sort_after_numbered_ones(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("src", "t.text_in"),
            n("result", "t.text_out", text=w("src", "text")),
            n("out_5", "t.text_out", text=w("src", "text")),
            n("alpha", "t.text_out", text=w("src", "text")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert [o.node_id for o in wf.outputs] == ["out_5", "alpha", "result"]


def test_labels_node_label_then_params_label_then_title(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in", label="From node", params={"label": "From params"}),
            n("node_2", "t.text_in", params={"label": "From params"}),
            n("node_3", "t.text_in"),
            n("node_4", "t.join", a=w("node_1", "text")),
            n("node_5", "t.text_out", params={"label": "Answer"}, text=w("node_4", "text")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert wf.nodes["node_1"].label == "From node"
    assert wf.nodes["node_2"].label == "From params"
    assert wf.nodes["node_3"].label == "Text in"
    assert wf.nodes["node_4"].label == "Join"
    assert [i.label for i in wf.inputs] == ["From node", "From params", "Text in"]
    assert wf.outputs[0].label == "Answer"


def test_optional_input_may_stay_unconnected_and_any_ports_accept_all(
    registry: NodeRegistry,
) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.number_in"),
            n("node_2", "t.anything", value=w("node_1", "number")),  # number -> any
            n("node_3", "t.join", a=w("node_2", "value")),  # any -> text; b optional
            n("node_4", "t.text_out", text=w("node_3", "text")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert wf.order.index("node_2") < wf.order.index("node_3") < wf.order.index("node_4")
    assert "b" not in wf.nodes["node_3"].wires


def test_media_input_is_required_by_default(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.image_in"),
            n("node_2", "t.image_in", params={"required": False}),
            n("node_3", "t.json_out", value=w("node_1", "image")),
        ]
    }
    wf = parse_workflow(doc, registry)
    assert [(i.node_id, i.kind, i.required) for i in wf.inputs] == [
        ("node_1", "image_url", True),
        ("node_2", "image_url", False),
    ]


def test_builtin_registry_text_in_delay_text_out() -> None:
    doc = {
        "nodes": [
            n("node_1", "input.text", params={"label": "Name", "required": True}),
            n("node_2", "util.delay", params={"seconds": 0}, value=w("node_1", "text")),
            n("node_3", "output.text", params={"label": "Greeting"}, text=w("node_2", "value")),
        ]
    }
    wf = parse_workflow(doc, default_registry(load_entry_points=False))
    assert wf.order == ("node_1", "node_2", "node_3")
    assert [(i.node_id, i.kind, i.label, i.required) for i in wf.inputs] == [
        ("node_1", "text", "Name", True)
    ]
    assert [(o.node_id, o.output_type, o.label) for o in wf.outputs] == [
        ("node_3", "text", "Greeting")
    ]
    assert wf.nodes["node_2"].label == "Delay"


def test_builtin_registry_rejects_image_into_text_output() -> None:
    doc = {
        "nodes": [
            n("node_1", "input.image_url"),
            n("node_2", "output.text", text=w("node_1", "image")),
        ]
    }
    err = invalid(doc, default_registry(load_entry_points=False))
    issue = only(err)
    assert issue.code == "type_mismatch"
    assert issue.node == "node_2"
    assert issue.message == "input 'text' takes text but node_1.image gives image"


# --------------------------------------------------------------------------- single issues


def test_unknown_node_type(registry: NodeRegistry) -> None:
    doc = {"nodes": [n("node_1", "t.text_in"), n("node_2", "t.nope", text=w("node_1", "text"))]}
    issue = only(invalid(doc, registry))
    assert issue.code == "unknown_node_type"
    assert issue.node == "node_2"
    assert "unknown node type 't.nope'" in issue.message


def test_bad_params_out_of_range(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.number_in"),
            n("node_2", "t.scale", params={"factor": 11}, number=w("node_1", "number")),
            n("node_3", "t.json_out", value=w("node_2", "number")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "invalid_param"
    assert issue.node == "node_2"
    assert issue.message == "param factor: Input should be less than or equal to 10"


def test_bad_params_missing_wrong_type_and_extra_all_reported(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.number_in", params={"minimum": "low", "colour": "red"}),
            n("node_2", "t.scale", params={}, number=w("node_1", "number")),
            n("node_3", "t.json_out", value=w("node_2", "number")),
        ]
    }
    err = invalid(doc, registry)
    got = {(i.node, i.message) for i in err.issues}
    assert all(i.code == "invalid_param" for i in err.issues)
    assert ("node_2", "param factor: Field required") in got
    assert ("node_1", "param colour: Extra inputs are not permitted") in got
    assert any(
        nid == "node_1" and msg.startswith("param minimum: Input should be a valid number")
        for nid, msg in got
    )
    assert len(err.issues) == 3


def test_bad_params_model_level_error_names_the_node() -> None:
    doc = {
        "nodes": [
            n("node_1", "input.choice", params={"options": ["red", "blue"], "default": "green"}),
            n("node_2", "output.text", text=w("node_1", "text")),
        ]
    }
    issue = only(invalid(doc, default_registry(load_entry_points=False)))
    assert issue.code == "invalid_param"
    assert issue.node == "node_1"
    assert "default 'green' is not one of the options" in issue.message
    assert issue.message.startswith("params: ")


def test_missing_required_input_port(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_2", "t.join"),
            n("node_3", "t.text_out", text=w("node_1", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "missing_input"
    assert issue.node == "node_2"
    assert issue.message == "input 'a' is not connected"  # 'b' is optional: not reported


def test_wire_to_unknown_node(registry: NodeRegistry) -> None:
    doc = {"nodes": [n("node_1", "t.text_out", text=w("node_9", "text"))]}
    issue = only(invalid(doc, registry))
    assert issue.code == "dangling_wire"
    assert issue.node == "node_1"
    assert issue.message == "input 'text' is wired to unknown node 'node_9'"


def test_wire_from_node_of_unknown_type_reports_only_the_type(registry: NodeRegistry) -> None:
    doc = {"nodes": [n("node_1", "t.ghost"), n("node_2", "t.text_out", text=w("node_1", "text"))]}
    issue = only(invalid(doc, registry))
    assert (issue.code, issue.node) == ("unknown_node_type", "node_1")


def test_wire_to_unknown_output_port(registry: NodeRegistry) -> None:
    doc = {"nodes": [n("node_1", "t.text_in"), n("node_2", "t.text_out", text=w("node_1", "txt"))]}
    issue = only(invalid(doc, registry))
    assert issue.code == "unknown_port"
    assert issue.node == "node_2"
    assert issue.message == (
        "input 'text' is wired to node_1.txt, but t.text_in has no output 'txt'"
    )


def test_wire_into_unknown_input_port(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_2", "t.text_out", text=w("node_1", "text"), extra=w("node_1", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "unknown_port"
    assert issue.node == "node_2"
    assert issue.message == "t.text_out has no input 'extra'"


def test_port_type_mismatch(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.number_in"),
            n("node_2", "t.upper", text=w("node_1", "number")),
            n("node_3", "t.text_out", text=w("node_2", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "type_mismatch"
    assert issue.node == "node_2"
    assert issue.message == "input 'text' takes text but node_1.number gives number"


def test_cycle_lists_the_nodes(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_2", "t.join", a=w("node_1", "text"), b=w("node_4", "text")),
            n("node_3", "t.upper", text=w("node_2", "text")),
            n("node_4", "t.upper", text=w("node_3", "text")),
            n("node_5", "t.text_out", text=w("node_4", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "cycle"
    assert issue.message.startswith("nodes form a cycle: ")
    listed = issue.message.removeprefix("nodes form a cycle: ").split(" -> ")
    assert sorted(listed) == ["node_2", "node_3", "node_4"]
    assert issue.node in {"node_2", "node_3", "node_4"}
    assert issue.node == listed[0]


def test_self_loop_is_a_cycle(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.join", a=w("node_1", "text")),
            n("node_2", "t.text_out", text=w("node_1", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert (issue.code, issue.node) == ("cycle", "node_1")
    assert "node_1" in issue.message


def test_duplicate_ids(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_1", "t.text_in"),
            n("node_2", "t.text_out", text=w("node_1", "text")),
        ]
    }
    issue = only(invalid(doc, registry))
    assert issue.code == "duplicate_node"
    assert issue.node == "node_1"
    assert issue.message == "node id 'node_1' is used twice"


@pytest.mark.parametrize("bad_id", ["1node", "has space", "", "a" * 65, "dot.ted", "ünï"])
def test_invalid_id(registry: NodeRegistry, bad_id: str) -> None:
    doc = {"nodes": [n(bad_id, "t.text_in"), n("node_2", "t.text_out", text=w(bad_id, "text"))]}
    issue = only(invalid(doc, registry))
    assert issue.code == "invalid_node_id"
    assert issue.node == bad_id
    assert issue.message == f"invalid node id {bad_id!r}"


@pytest.mark.parametrize("good_id", ["a", "_x", "Node-1", "a" * 64])
def test_valid_ids(registry: NodeRegistry, good_id: str) -> None:
    doc = {"nodes": [n(good_id, "t.text_in"), n("out", "t.text_out", text=w(good_id, "text"))]}
    assert good_id in parse_workflow(doc, registry).nodes


def test_empty_workflow(registry: NodeRegistry) -> None:
    issue = only(invalid({"nodes": []}, registry))
    assert issue.code == "empty_workflow"
    assert issue.message == "a workflow needs at least one node"


def test_no_outputs(registry: NodeRegistry) -> None:
    doc = {"nodes": [n("node_1", "t.text_in"), n("node_2", "t.upper", text=w("node_1", "text"))]}
    issue = only(invalid(doc, registry))
    assert issue.code == "no_outputs"
    assert issue.message == "a workflow needs at least one output node"


@pytest.mark.parametrize(
    ("doc", "field", "message"),
    [
        ([], "workflow", "Input should be a valid dictionary or instance of WorkflowDef"),
        ("nodes", "workflow", "Input should be a valid dictionary or instance of WorkflowDef"),
        (None, "workflow", "Input should be a valid dictionary or instance of WorkflowDef"),
        ({}, "workflow.nodes", "Field required"),
        ({"nodes": "node_1"}, "workflow.nodes", "Input should be a valid list"),
        ({"nodes": {"node_1": {}}}, "workflow.nodes", "Input should be a valid list"),
        ({"nodes": [], "edges": []}, "workflow.edges", "Extra inputs are not permitted"),
        (
            {"nodes": [{"id": "a", "type": "t.text_in", "colour": "red"}]},
            "workflow.nodes.0.colour",
            "Extra inputs are not permitted",
        ),
        ({"nodes": [{"type": "t.text_in"}]}, "workflow.nodes.0.id", "Field required"),
        (
            {"nodes": [{"id": "a", "type": "t.text_out", "inputs": {"text": {"node": "b"}}}]},
            "workflow.nodes.0.inputs.text.port",
            "Field required",
        ),
        (
            {"nodes": ["a"]},
            "workflow.nodes.0",
            "Input should be a valid dictionary or instance of NodeDef",
        ),
    ],
)
def test_malformed_document(registry: NodeRegistry, doc: object, field: str, message: str) -> None:
    issue = only(invalid(doc, registry))
    assert issue.code == "invalid_workflow"
    assert issue.field == field
    assert issue.message == message
    assert issue.node is None


# --------------------------------------------------------------------------- many issues


def test_all_issues_collected_in_one_error(registry: NodeRegistry) -> None:
    doc = {
        "nodes": [
            n("node_1", "t.text_in"),
            n("node_2", "t.mystery"),  # unknown type
            n(
                "node_3", "t.scale", params={"factor": -1}, number=w("node_1", "number")
            ),  # bad param
            n("node_4", "t.join"),  # missing input a
            n("node_5", "t.upper", text=w("node_99", "text")),  # dangling wire
            n("node_6", "t.upper", text=w("node_1", "words")),  # unknown output port
            n("node_7", "t.json_out", value=w("node_1", "text")),
            n("node_7", "t.json_out", value=w("node_1", "text")),  # duplicate id
            n("9lives", "t.text_in"),  # invalid id
            n("node_8", "t.text_out", text=w("node_11", "number")),  # type mismatch
            n("node_11", "t.number_in"),
        ]
    }
    err = invalid(doc, registry)
    assert isinstance(err, ValidationFailed)
    assert err.code == "invalid_workflow"
    assert err.status == 422
    got = sorted((i.code, i.node) for i in err.issues)
    assert got == sorted(
        [
            ("unknown_node_type", "node_2"),
            ("invalid_param", "node_3"),
            ("missing_input", "node_4"),
            ("dangling_wire", "node_5"),
            ("unknown_port", "node_6"),
            ("duplicate_node", "node_7"),
            ("invalid_node_id", "9lives"),
            ("type_mismatch", "node_8"),
        ]
    )
    # details mirror the issues, without empty keys, for the JSON error body.
    assert err.details == [i.to_dict() for i in err.issues]
    assert all(set(d) == {"code", "message", "node"} for d in err.details)
    # the message names every node with its problem
    for issue in err.issues:
        assert f"{issue.node}: {issue.message}" in err.message
    assert str(err) == err.message


def test_registry_refuses_the_same_type_twice() -> None:
    reg = NodeRegistry(TYPES)
    with pytest.raises(ValueError, match="'t.upper' is registered twice"):
        reg.register(TYPES[3])
    assert "t.upper" in reg and "t.nope" not in reg
    assert [t.type for t in reg] == sorted(t.type for t in TYPES)
