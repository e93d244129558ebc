"""Run media and the shared result cache, seen from runs of two workspaces on a real
in-process Platform (SQLite, workers, disk cache)."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowy.db.models import Run
from flowy.errors import NotFound, ValidationFailed
from flowy.services.keys import create_workspace
from flowy.services.platform import Platform
from flowy.services.states import TERMINAL
from flowy.settings import Settings

WORKFLOW = {
    "nodes": [
        {"id": "photo", "type": "input.image_url", "params": {"required": True}},
        {
            "id": "grey",
            "type": "image.grayscale",
            "inputs": {"image": {"node": "photo", "port": "image"}},
        },
        {
            "id": "out",
            "type": "output.image",
            "inputs": {"image": {"node": "grey", "port": "image"}},
        },
    ]
}


def _png(seed: int, nudge: bool = False) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8)
    if nudge:
        pixels[5, 7] = 255 - pixels[5, 7]  # one pixel, changed enough to show in grey
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    # Every result is kept, however fast its node (the threshold has its own test).
    settings = Settings(_env_file=None, data_dir=tmp_path / "data", cache={"min_node_seconds": 0})
    p = Platform.build(settings)
    p.start()
    yield p
    p.stop()


def _app(p: Platform, ws: str) -> str:
    return p.apps.create(ws, title="Grey", workflow=WORKFLOW, published=True).app.id


def _upload(p: Platform, ws: str, data: bytes) -> str:
    asset = p.files.store(ws, data, filename="me.png", kind="upload")
    return p.files.link(asset.id, asset.filename).url


def _run(p: Platform, ws: str, app: str, url: str) -> Run:
    run = p.runs.create(ws, app, {"inputs": {"photo": url}})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run = p.runs.get(ws, run.id)
        if run.status in TERMINAL:
            return run
        time.sleep(0.01)
    raise AssertionError(f"run {run.id} still {run.status}")


def _cached(run: Run) -> set[str]:
    return {nid for nid, state in run.nodes.items() if state.get("cached")}


def _output(p: Platform, ws: str, run: Run) -> bytes:
    asset = p.files.get(ws, run.outputs[0]["assetId"])
    assert asset.run_id == run.id
    return p.files.blobs.get(asset.key)


def test_workspaces_share_results_by_content_but_never_files(platform: Platform) -> None:
    a, b = create_workspace(platform.db, "a"), create_workspace(platform.db, "b")
    app_a, app_b = _app(platform, a), _app(platform, b)
    png = _png(1)
    url_a = _upload(platform, a, png)
    first = _run(platform, a, app_a, url_a)
    assert first.status == "completed" and not _cached(first)

    # B's own upload of the same bytes reuses A's work; the output is B's own file.
    second = _run(platform, b, app_b, _upload(platform, b, png))
    assert second.status == "completed", second.error
    assert _cached(second) == {"grey", "out"}
    assert _output(platform, b, second) == _output(platform, a, first)
    with pytest.raises(NotFound):
        platform.files.get(b, first.outputs[0]["assetId"])

    # A's link is no input for B, though A's results for those very bytes are cached.
    with pytest.raises(ValidationFailed, match="does not exist"):
        platform.runs.create(b, app_b, {"inputs": {"photo": url_a}})


def test_a_one_pixel_different_upload_is_computed_again(platform: Platform) -> None:
    ws = create_workspace(platform.db, "w")
    app = _app(platform, ws)
    first = _run(platform, ws, app, _upload(platform, ws, _png(2)))
    again = _run(platform, ws, app, _upload(platform, ws, _png(2)))
    other = _run(platform, ws, app, _upload(platform, ws, _png(2, nudge=True)))
    assert (first.status, again.status, other.status) == ("completed",) * 3
    assert _cached(again) == {"grey", "out"}
    assert not _cached(other)
    assert _output(platform, ws, other) != _output(platform, ws, first)
