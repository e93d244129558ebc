"""App builders: create, version, publish and delete apps; read the node catalog; CLI."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from flowy.services.bootstrap import example_apps
from tests.api.test_errors import assert_error
from tests.flowy_process import FlowyProcess

KINDS = {
    "nodes": [
        {
            "id": "node_1",
            "type": "input.number",
            "label": "Count",
            "params": {"required": True, "minimum": 1, "maximum": 10, "integer": True},
        },
        {"id": "node_2", "type": "input.boolean", "label": "Loud", "params": {"default": False}},
        {
            "id": "node_3",
            "type": "input.choice",
            "label": "Size",
            "params": {"options": ["small", "large"], "default": "small"},
        },
        {"id": "node_4", "type": "input.text", "label": "Name", "params": {"max_length": 5}},
        {
            "id": "node_10",
            "type": "output.json",
            "label": "Count out",
            "inputs": {"value": {"node": "node_1", "port": "number"}},
        },
        {
            "id": "node_11",
            "type": "output.json",
            "label": "Loud out",
            "inputs": {"value": {"node": "node_2", "port": "value"}},
        },
        {
            "id": "node_12",
            "type": "output.text",
            "label": "Size out",
            "inputs": {"text": {"node": "node_3", "port": "text"}},
        },
        {
            "id": "node_13",
            "type": "output.text",
            "label": "Name out",
            "inputs": {"text": {"node": "node_4", "port": "text"}},
        },
    ]
}


def _echo(seconds: float, prefix: str) -> dict[str, Any]:
    return {
        "nodes": [
            {"id": "node_1", "type": "input.text", "label": "Text", "params": {"required": True}},
            {
                "id": "node_2",
                "type": "util.delay",
                "params": {"seconds": seconds},
                "inputs": {"value": {"node": "node_1", "port": "text"}},
            },
            {
                "id": "node_3",
                "type": "output.text",
                "label": prefix,
                "inputs": {"text": {"node": "node_2", "port": "value"}},
            },
        ]
    }


def _create(flowy: FlowyProcess, body: dict[str, Any]) -> dict[str, Any]:
    res = flowy.post("/apps", json=body)
    assert res.status_code == 201, res.text
    data: dict[str, Any] = res.json()["data"]
    return data


def _run(flowy: FlowyProcess, app_id: str, inputs: dict[str, Any]) -> dict[str, Any]:
    res = flowy.post(f"/apps/{app_id}/runs", json={"inputs": inputs})
    assert res.status_code == 201, res.text
    return flowy.wait_run(res.json()["data"]["runId"])


def test_every_input_kind_and_value_output(flowy: FlowyProcess) -> None:
    app = _create(flowy, {"title": "Kinds", "workflow": KINDS, "published": True})
    assert [(i["nodeId"], i["kind"], i["required"]) for i in app["inputs"]] == [
        ("node_1", "number", True),
        ("node_2", "boolean", False),
        ("node_3", "choice", False),
        ("node_4", "text", False),
    ]
    assert app["inputs"][2]["options"] == ["small", "large"]
    assert [o["outputType"] for o in app["outputs"]] == ["json", "json", "text", "text"]
    run = _run(flowy, app["id"], {"node_1": 3, "node_2": True, "node_3": "large", "node_4": "Ada"})
    assert run["status"] == "completed"
    assert [(o["nodeId"], o["kind"], o["value"]) for o in run["outputs"]] == [
        ("node_10", "json", 3),
        ("node_11", "json", True),
        ("node_12", "text", "large"),
        ("node_13", "text", "Ada"),
    ]
    defaults = _run(flowy, app["id"], {"node_1": 1})
    assert [o["value"] for o in defaults["outputs"]] == [1, False, "small", ""]
    res = flowy.post(
        f"/apps/{app['id']}/runs",
        json={"inputs": {"node_1": 2.5, "node_2": "yes", "node_3": "medium", "node_4": "toolong"}},
    )
    err = assert_error(res, 422, "validation_error")
    assert {d["field"]: d["message"] for d in err["details"]} == {
        "inputs.node_1": "'Count' (number) must be a whole number",
        "inputs.node_2": "'Loud' (boolean) must be true or false",
        "inputs.node_3": "'Size' (choice) must be one of 'small', 'large'",
        "inputs.node_4": "'Name' (text) must be at most 5 characters",
    }


def test_invalid_workflow_names_every_node(flowy: FlowyProcess) -> None:
    bad = {
        "nodes": [
            {"id": "node_1", "type": "input.text"},
            {
                "id": "node_2",
                "type": "image.resize",
                "params": {"width": 0},
                "inputs": {"image": {"node": "node_1", "port": "text"}},
            },
            {"id": "node_3", "type": "image.nope"},
            {
                "id": "node_4",
                "type": "output.image",
                "inputs": {"image": {"node": "node_1", "port": "text"}},
            },
        ]
    }
    err = assert_error(
        flowy.post("/apps", json={"title": "Bad", "workflow": bad}), 422, "invalid_workflow"
    )
    by_node = {(d["node"], d["code"]) for d in err["details"]}
    assert ("node_2", "invalid_param") in by_node
    assert ("node_3", "unknown_node_type") in by_node
    assert ("node_4", "type_mismatch") in by_node
    assert "node_4: input 'image' takes image but node_1.text gives text" in err["message"]
    cycle = {
        "nodes": [
            {"id": "a", "type": "util.delay", "inputs": {"value": {"node": "b", "port": "value"}}},
            {"id": "b", "type": "util.delay", "inputs": {"value": {"node": "a", "port": "value"}}},
            {"id": "c", "type": "output.json", "inputs": {"value": {"node": "b", "port": "value"}}},
        ]
    }
    err = assert_error(
        flowy.post("/apps", json={"title": "Loop", "workflow": cycle}),
        422,
        "invalid_workflow",
        "cycle",
    )
    assert_error(
        flowy.post("/apps", json={"title": "", "workflow": KINDS}), 422, "validation_error", "title"
    )
    assert_error(flowy.post("/apps", json={"title": "x"}), 422, "validation_error", "workflow")


def test_versions_are_immutable_and_runs_pin_theirs(flowy: FlowyProcess) -> None:
    app = _create(flowy, {"title": "Echo", "workflow": _echo(1.5, "v1"), "published": True})
    assert app["version"] == 1
    first = flowy.post(f"/apps/{app['id']}/runs", json={"inputs": {"node_1": "a"}}).json()["data"][
        "runId"
    ]
    time.sleep(0.3)
    updated = flowy.patch(
        f"/apps/{app['id']}", json={"workflow": _echo(0, "v2"), "title": "Echo 2"}
    ).json()["data"]
    assert updated["version"] == 2 and updated["title"] == "Echo 2"
    assert updated["outputs"][0]["label"] == "v2"
    second = _run(flowy, app["id"], {"node_1": "b"})
    done = flowy.wait_run(first)
    assert done["versionId"] == app["versionId"] != second["versionId"]
    assert done["status"] == second["status"] == "completed"
    assert flowy.get(f"/apps/{app['id']}").json()["data"]["runCount"] == 2
    bad = flowy.patch(f"/apps/{app['id']}", json={"workflow": {"nodes": []}})
    assert_error(bad, 422, "invalid_workflow")
    assert flowy.get(f"/apps/{app['id']}").json()["data"]["version"] == 2


def test_publish_unpublish_delete(flowy: FlowyProcess) -> None:
    app = _create(flowy, {"title": "Draft", "workflow": _echo(0, "out")})
    assert app["published"] is False
    assert_error(
        flowy.post(f"/apps/{app['id']}/runs", json={"inputs": {"node_1": "x"}}), 409, "conflict"
    )
    assert flowy.post(f"/apps/{app['id']}/publish").json()["data"]["published"] is True
    run = _run(flowy, app["id"], {"node_1": "x"})
    assert flowy.delete(f"/apps/{app['id']}").status_code == 204
    assert_error(flowy.get(f"/apps/{app['id']}"), 404, "not_found")
    assert app["id"] not in [a["id"] for a in flowy.get("/apps").json()["data"]]
    assert_error(
        flowy.post(f"/apps/{app['id']}/runs", json={"inputs": {"node_1": "x"}}), 404, "not_found"
    )
    assert flowy.get(f"/runs/{run['runId']}").json()["data"]["status"] == "completed"
    assert_error(flowy.delete(f"/apps/{app['id']}"), 404, "not_found")


def test_node_catalog_schemas_validate_the_example_apps(flowy: FlowyProcess) -> None:
    nodes = {n["type"]: n for n in flowy.get("/nodes").json()["data"]}
    for needed in (
        "input.text",
        "input.image_url",
        "input.number",
        "input.boolean",
        "input.choice",
        "output.image",
        "output.text",
        "output.json",
        "image.face_crop",
        "image.studio_backdrop",
        "image.style",
        "image.detect_faces",
        "image.resize",
    ):
        assert needed in nodes
    crop = nodes["image.face_crop"]
    assert crop["inputs"]["image"]["type"] == "image"
    assert crop["outputs"]["image"]["type"] == "image"
    assert crop["params"]["properties"]["width"]["default"] == 768
    assert nodes["input.image_url"]["inputKind"] == "image_url"
    assert nodes["output.image"]["outputKind"] == "image"
    for doc in example_apps():
        for n in doc["workflow"]["nodes"]:  # type: ignore[index]
            jsonschema.validate(n.get("params", {}), nodes[n["type"]]["params"])
            for port in n.get("inputs", {}):
                assert port in nodes[n["type"]]["inputs"]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"width": 1}, crop["params"])
    assert_error(flowy.get("/nodes", "flowy_sk_wrong"), 401, "unauthorized")


def test_cli_apps_create_and_list(flowy: FlowyProcess, tmp_path: Path) -> None:
    path = tmp_path / "echo.json"
    path.write_text(json.dumps(_echo(0, "Echo")))
    made = flowy.cli("apps", "create", str(path), "--title", "CLI echo")
    assert made.returncode == 0, made.stderr
    assert "created app" in made.stdout and '"CLI echo"' in made.stdout
    assert "input  node_1" in made.stdout and "output node_3" in made.stdout
    app_id = made.stdout.split()[2]
    assert _run(flowy, app_id, {"node_1": "hi"})["outputs"][0]["value"] == "hi"
    listed = flowy.cli("apps", "list")
    assert listed.returncode == 0 and app_id in listed.stdout and "CLI echo" in listed.stdout
    (tmp_path / "bad.json").write_text('{"nodes": [{"id": "n", "type": "nope"}]}')
    bad = flowy.cli("apps", "create", str(tmp_path / "bad.json"))
    assert bad.returncode != 0 and "unknown node type 'nope'" in bad.stderr
    nokey = flowy.cli("apps", "list", FLOWY_KEY="flowy_sk_wrong")
    assert nokey.returncode != 0 and "401" in nokey.stderr
