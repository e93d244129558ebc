"""Media in and out on a server with default settings: private addresses refused,
uploads and data: URIs accepted, output links signed, expiring and tamper-proof."""

from __future__ import annotations

import base64
import io
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
import requests
from PIL import Image

from tests.api.test_errors import assert_error
from tests.api.test_seed_flow import assert_headshot
from tests.flowy_process import FlowyProcess, StaticServer


@pytest.fixture(scope="module")
def strict(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    """Flowy as installed: loopback URLs refused; links live 2 s so expiry can be seen."""
    server = FlowyProcess(
        tmp_path_factory.mktemp("strict"), env={"FLOWY_MEDIA__URL_TTL_SECONDS": "2"}
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def app_id(strict: FlowyProcess) -> str:
    apps = strict.get("/apps").json()["data"]
    return str(next(a["id"] for a in apps if a["title"] == "Headshot generator"))


def _run(server: FlowyProcess, app_id: str, inputs: dict[str, object]) -> dict[str, object]:
    res = server.post(f"/apps/{app_id}/runs", json={"inputs": inputs})
    assert res.status_code == 201, res.text
    return server.wait_run(res.json()["data"]["runId"])


def test_private_address_is_refused_by_default(
    strict: FlowyProcess, app_id: str, media_server: StaticServer
) -> None:
    run = _run(strict, app_id, {"node_1": media_server.url("me.png")})
    assert run["status"] == "failed"
    error = str(run["error"])
    assert error.startswith("node_1 (Your photo): refused")
    assert "127.0.0.1" in error and "FLOWY_ALLOW_PRIVATE_URLS" in error
    metadata = _run(strict, app_id, {"node_1": "http://169.254.169.254/latest/meta-data"})
    assert metadata["status"] == "failed" and "169.254.169.254" in str(metadata["error"])


def test_upload_then_run_with_its_url(
    strict: FlowyProcess, app_id: str, portrait_png: bytes
) -> None:
    res = strict.post("/uploads", files={"file": ("my photo.png", portrait_png, "text/plain")})
    assert res.status_code == 201, res.text
    up = res.json()["data"]
    assert up["contentType"] == "image/png"  # from the bytes, not from the sender
    assert up["size"] == len(portrait_png) and up["filename"] == "my_photo.png"
    assert up["url"].startswith(strict.api + "/files/")
    run = _run(strict, app_id, {"node_1": up["url"], "node_2": "warm"})
    assert run["status"] == "completed", run["error"]
    out = run["outputs"][0]  # type: ignore[index]
    assert_headshot(requests.get(out["url"], timeout=10).content)


def test_data_uri_input(strict: FlowyProcess, app_id: str, portrait_png: bytes) -> None:
    buf = io.BytesIO()
    Image.open(io.BytesIO(portrait_png)).save(buf, "JPEG", quality=90)
    uri = "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()
    run = _run(strict, app_id, {"node_1": uri, "node_2": "black and white"})
    assert run["status"] == "completed", run["error"]
    png = requests.get(run["outputs"][0]["url"], timeout=10).content  # type: ignore[index]
    img = Image.open(io.BytesIO(png)).convert("RGB")
    r, g, b = img.split()
    assert r.tobytes() == g.tobytes() == b.tobytes()  # the style was applied


def test_upload_errors(strict: FlowyProcess) -> None:
    assert_error(
        strict.post("/uploads", files={"photo": ("a.png", b"x", "image/png")}),
        422,
        "validation_error",
        "file",
    )
    assert_error(
        strict.post("/uploads", json={"file": "x"}), 400, "bad_request", "multipart/form-data"
    )
    assert_error(
        strict.post("/uploads", files={"file": ("e.png", b"", "image/png")}),
        422,
        "validation_error",
        "empty",
    )
    res = requests.post(
        f"{strict.api}/uploads", files={"file": ("a.png", b"x", "image/png")}, timeout=10
    )
    assert_error(res, 401, "unauthorized")


def test_output_links_are_signed_and_expire(
    strict: FlowyProcess, app_id: str, portrait_png: bytes
) -> None:
    uri = "data:image/png;base64," + base64.b64encode(portrait_png).decode()
    run = _run(strict, app_id, {"node_1": uri})
    url = str(run["outputs"][0]["url"])  # type: ignore[index]
    ok = requests.get(url, timeout=10)
    assert ok.status_code == 200
    assert ok.headers["content-type"] == "image/png"
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert ok.headers["content-disposition"] == 'inline; filename="headshot.png"'

    parts = urlsplit(url)
    asset_path = parts.path
    tampered = [
        url.replace("signature=", "signature=A"),
        url.replace("expires=", "expires=9"),
        url.replace("headshot.png", "other.png"),
        f"{strict.base}{asset_path}",
        f"{strict.base}{asset_path}?expires=9999999999&signature=abc",
    ]
    for bad in tampered:
        err = assert_error(requests.get(bad, timeout=10), 403, "forbidden")
        assert err["message"] == "invalid or expired link"  # reveals nothing

    time.sleep(3.1)
    err = assert_error(requests.get(url, timeout=10), 403, "forbidden")
    assert err["message"] == "invalid or expired link"
    # Polling again signs afresh.
    again = strict.get(f"/runs/{run['runId']}").json()["data"]["outputs"][0]
    assert again["url"] != url
    assert requests.get(again["url"], timeout=10).content == ok.content


def test_expired_upload_link_is_refused_at_run_creation(
    strict: FlowyProcess, app_id: str, portrait_png: bytes
) -> None:
    up = strict.post("/uploads", files={"file": ("me.png", portrait_png, "image/png")})
    link = up.json()["data"]["url"]
    time.sleep(3.1)
    res = strict.post(f"/apps/{app_id}/runs", json={"inputs": {"node_1": link}})
    assert_error(res, 422, "validation_error", "inputs.node_1", "expired")
