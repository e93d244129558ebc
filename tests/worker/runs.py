"""What the worker tests read of runs: their event types, and waiting for a status."""

from __future__ import annotations

import time

from sqlalchemy import select

from flowy.db.models import RunEvent
from flowy.services.platform import Platform


def events(p: Platform, run_id: str) -> list[str]:
    """The run's event types, in order."""
    with p.db.read() as s:
        q = select(RunEvent.type).where(RunEvent.run_id == run_id).order_by(RunEvent.seq)
        return list(s.scalars(q))


def wait_status(p: Platform, ws: str, run_id: str, status: str) -> None:
    """Wait (up to 10 s) until the run has ``status``."""
    deadline = time.monotonic() + 10
    while (now := p.runs.get(ws, run_id).status) != status:
        assert time.monotonic() < deadline, f"run {run_id} is {now}, not {status}"
        time.sleep(0.01)
