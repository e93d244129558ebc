"""Shared fixtures: a migrated database, a real portrait, a static file server, a running
Flowy."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from flowy.db.migrate import upgrade
from flowy.db.session import Database
from tests.flowy_process import FlowyProcess, StaticServer


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    """A SQLite database in the test's own directory, migrated to the newest schema."""
    url = f"sqlite:///{tmp_path / 'flowy.db'}"
    upgrade(url)
    d = Database(url)
    yield d
    d.dispose()


@pytest.fixture(scope="session")
def portrait_png() -> bytes:
    """The public-domain astronaut portrait that ships inside scikit-image."""
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory, portrait_png: bytes) -> Path:
    root = tmp_path_factory.mktemp("media")
    (root / "me.png").write_bytes(portrait_png)
    # A photo without a face: smooth noise-free gradient, nothing face-like in it.
    ramp = np.tile(np.linspace(40, 220, 640, dtype=np.uint8), (480, 1))
    Image.fromarray(np.dstack([ramp, ramp[::-1], np.full_like(ramp, 128)])).save(
        root / "landscape.png"
    )
    (root / "notes.txt").write_text("this is not an image\n")
    return root


@pytest.fixture(scope="session")
def media_server(media_dir: Path) -> Iterator[StaticServer]:
    with StaticServer(media_dir) as server:
        yield server


@pytest.fixture(scope="session")
def flowy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlowyProcess]:
    """One Flowy for the session; media URLs on loopback allowed (test servers live there)."""
    server = FlowyProcess(
        tmp_path_factory.mktemp("flowy-data"), env={"FLOWY_ALLOW_PRIVATE_URLS": "1"}
    ).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def headshot_app(flowy: FlowyProcess) -> str:
    apps = flowy.get("/apps").json()["data"]
    return next(a["id"] for a in apps if a["title"] == "Headshot generator")
