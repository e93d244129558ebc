"""Files are deleted after the retention period, and runs say so instead of dead links."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.api.test_errors import assert_error
from tests.flowy_process import FlowyProcess

GREY = {
    "nodes": [
        {"id": "node_1", "type": "input.image_url", "label": "Photo"},
        {
            "id": "node_2",
            "type": "image.resize",
            "params": {"width": 16, "height": 16},
            "inputs": {"image": {"node": "node_1", "port": "image"}},
        },
        {
            "id": "node_3",
            "type": "output.image",
            "label": "Small",
            "inputs": {"image": {"node": "node_2", "port": "image"}},
        },
    ]
}


def test_files_go_after_retention(tmp_path: Path, portrait_png: bytes) -> None:
    srv = FlowyProcess(
        tmp_path,
        env={
            "FLOWY_RETENTION__OUTPUTS_SECONDS": "2",
            "FLOWY_RETENTION__UPLOADS_SECONDS": "2",
            "FLOWY_RETENTION__SWEEP_SECONDS": "0.3",
            "FLOWY_CACHE__ENABLED": "false",
        },
    ).start()
    try:
        app = srv.post("/apps", json={"title": "Small", "workflow": GREY, "published": True})
        app_id = app.json()["data"]["id"]
        up = srv.post("/uploads", files={"file": ("me.png", portrait_png, "image/png")})
        link = up.json()["data"]["url"]
        run = srv.wait_run(
            srv.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": link}}).json()["data"][
                "runId"
            ]
        )
        out = run["outputs"][0]
        assert requests.get(out["url"], timeout=10).status_code == 200
        blobs = [p for p in (tmp_path / "files").rglob("*") if p.is_file()]
        assert len(blobs) == 2  # the upload and the output

        time.sleep(3)
        again = srv.get(f"/runs/{run['runId']}").json()["data"]["outputs"][0]
        assert again["url"] is None and again["deleted"] is True and again["deletedAt"]
        gone = requests.get(out["url"], timeout=10)
        assert_error(gone, 410, "gone", "retention")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(
            p.is_file() for p in (tmp_path / "files").rglob("*")
        ):
            time.sleep(0.1)
        assert not [p for p in (tmp_path / "files").rglob("*") if p.is_file()]
        res = srv.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": link}})
        assert_error(res, 422, "validation_error", "inputs.node_1")
        assert_error(srv.get(f"/uploads/{up.json()['data']['id']}"), 404, "not_found")
    finally:
        srv.stop()
