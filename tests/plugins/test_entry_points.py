"""A third-party node package, installed beside Flowy, appears in the catalog and runs."""

from __future__ import annotations

import base64
import io
import shutil
import tomllib
from pathlib import Path

import numpy as np
import requests
from PIL import Image

from tests.flowy_process import FlowyProcess

PACKAGE = Path(__file__).parent / "flowy-example-nodes"


def install(site: Path) -> None:
    """Install the example package into ``site`` as pip would lay it out: the module and a
    ``.dist-info`` with its entry points (read from the package's own pyproject.toml)."""
    project = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    shutil.copytree(PACKAGE / "src" / "flowy_example_nodes", site / "flowy_example_nodes")
    dist = site / f"flowy_example_nodes-{project['version']}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    lines = []
    for group, eps in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in eps.items()]
    (dist / "entry_points.txt").write_text("\n".join(lines) + "\n")


def test_plugin_nodes_are_listed_and_run(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    install(site)
    srv = FlowyProcess(tmp_path / "data", env={"PYTHONPATH": str(site)}).start()
    try:
        nodes = {n["type"]: n for n in srv.get("/nodes").json()["data"]}
        assert nodes["example.word_count"]["outputs"]["count"]["type"] == "number"
        assert nodes["example.pixelate"]["params"]["properties"]["block"]["maximum"] == 256
        workflow = {
            "nodes": [
                {"id": "node_1", "type": "input.image_url", "label": "Photo"},
                {"id": "node_2", "type": "input.text", "label": "Caption"},
                {
                    "id": "node_3",
                    "type": "example.pixelate",
                    "params": {"block": 16},
                    "inputs": {"image": {"node": "node_1", "port": "image"}},
                },
                {
                    "id": "node_4",
                    "type": "example.word_count",
                    "inputs": {"text": {"node": "node_2", "port": "text"}},
                },
                {
                    "id": "node_5",
                    "type": "output.image",
                    "label": "Pixels",
                    "inputs": {"image": {"node": "node_3", "port": "image"}},
                },
                {
                    "id": "node_6",
                    "type": "output.json",
                    "label": "Words",
                    "inputs": {"value": {"node": "node_4", "port": "count"}},
                },
            ]
        }
        app = srv.post(
            "/apps", json={"title": "Plugin", "workflow": workflow, "published": True}
        ).json()["data"]["id"]
        rng = np.random.default_rng(0)
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
        uri = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()
        res = srv.post(
            f"/apps/{app}/runs", json={"inputs": {"node_1": uri, "node_2": "three small words"}}
        )
        run = srv.wait_run(res.json()["data"]["runId"])
        assert run["status"] == "completed", run["error"]
        image, words = run["outputs"]
        assert words["value"] == 3
        px = np.asarray(Image.open(io.BytesIO(requests.get(image["url"], timeout=10).content)))
        assert px.shape == (64, 64, 3)
        block = px[:16, :16].reshape(-1, 3)
        assert (block == block[0]).all()  # one colour per 16×16 block
        bad = srv.post(f"/apps/{app}/runs", json={"inputs": {"node_1": uri, "node_2": 5}})
        assert bad.status_code == 422
    finally:
        srv.stop()
