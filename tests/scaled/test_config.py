"""What an operator who sets scaled mode up wrongly is told: the setting to fix, before
anything starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

#: Never reached: each setup error is told before any connection.
NO_DATABASE = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def _flowy(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FLOWY_")}
    return subprocess.run(
        [sys.executable, "-m", "flowy.cli.main", *args],
        env={**clean, "FLOWY_DATA_DIR": str(tmp_path / "data"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_worker_without_a_broker_says_it_is_for_scaled_mode(tmp_path: Path) -> None:
    done = _flowy(tmp_path, "worker")
    assert done.returncode == 1
    assert "flowy worker is for scaled mode: set FLOWY_BROKER_URL" in done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_scaled_mode_on_sqlite_asks_for_postgresql(tmp_path: Path, command: str) -> None:
    done = _flowy(tmp_path, command, FLOWY_BROKER_URL="redis://127.0.0.1:6379/0")
    assert done.returncode == 1
    assert "set FLOWY_DATABASE_URL to PostgreSQL" in done.stderr
    assert not (tmp_path / "data" / "flowy.db").exists()  # nothing was started


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_scaled_mode_without_a_secret_key_asks_for_one(tmp_path: Path, command: str) -> None:
    done = _flowy(
        tmp_path,
        command,
        FLOWY_BROKER_URL="redis://127.0.0.1:6379/0",
        FLOWY_DATABASE_URL=NO_DATABASE,
    )
    assert done.returncode == 1
    assert "needs FLOWY_SECRET_KEY, the same on every server and worker" in done.stderr


def test_an_amqp_broker_needs_a_redis_for_events(tmp_path: Path) -> None:
    done = _flowy(
        tmp_path,
        "worker",
        FLOWY_BROKER_URL="amqp://guest:guest@127.0.0.1:5672//",
        FLOWY_DATABASE_URL=NO_DATABASE,
        FLOWY_SECRET_KEY="k",
    )
    assert done.returncode == 1
    assert "set FLOWY_REDIS_URL (the broker is not Redis)" in done.stderr
