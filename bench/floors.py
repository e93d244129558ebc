"""The floors of the HTTP rows: bare FastAPI endpoints on Flowy's server stack (uvicorn,
one process, same loop and HTTP parser), doing the least the Flowy path must also do.

* ``GET /v1/runs/{id}``: a pydantic model of a run, validated in and serialized out; no
  database, no auth lookup, no URL signing (row 1).
* ``POST /v1/apps/{id}/runs``: parse the JSON body, one ``INSERT`` in SQLite WAL mode
  (``synchronous=NORMAL``, as Flowy) per request, answer the id (row 2).
* ``GET /sse`` + ``POST /sse/start``: Server-Sent Events fanned out from an in-memory
  broadcast, no database (row 11).

Run: ``python -m bench.floors --port 8001 --db /tmp/floor.db``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import Body, FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel


class OutputView(BaseModel):
    nodeId: str
    kind: str
    url: str
    expiresAt: str
    contentType: str
    size: int


class NodeView(BaseModel):
    nodeId: str
    type: str
    label: str
    status: str
    startedAt: str | None = None
    completedAt: str | None = None
    durationMs: float | None = None
    progress: float | None = None


class RunView(BaseModel):
    runId: str
    appId: str
    versionId: str
    status: str
    outputs: list[OutputView]
    error: str | None
    errorNode: str | None
    createdAt: str
    startedAt: str | None
    completedAt: str | None
    attempt: int
    deadlineAt: str | None
    nodes: list[NodeView]


class RunEnvelope(BaseModel):
    data: RunView


_T = "2025-01-01T00:00:00.000000Z"
_NODE = {
    "status": "completed",
    "startedAt": _T,
    "completedAt": _T,
    "durationMs": 1.0,
    "progress": 1.0,
}
TEMPLATE: dict[str, Any] = {
    "appId": "0" * 24,
    "versionId": "1" * 24,
    "status": "completed",
    "outputs": [
        {
            "nodeId": "node_3",
            "kind": "image",
            "url": "http://127.0.0.1:8000/v1/files/" + "2" * 24 + "/output.png?expires=1"
            "&signature=" + "ab" * 32,
            "expiresAt": _T,
            "contentType": "image/png",
            "size": 1234,
        }
    ],
    "error": None,
    "errorNode": None,
    "createdAt": _T,
    "startedAt": _T,
    "completedAt": _T,
    "attempt": 1,
    "deadlineAt": None,
    "nodes": [
        {"nodeId": "node_1", "type": "input.image_url", "label": "Image", **_NODE},
        {"nodeId": "node_2", "type": "image.resize", "label": "Resize", **_NODE},
        {"nodeId": "node_3", "type": "output.image", "label": "Result", **_NODE},
    ],
}


def create_app(db_path: str) -> FastAPI:
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    local = threading.local()

    def conn() -> sqlite3.Connection:
        c: sqlite3.Connection | None = getattr(local, "conn", None)
        if c is None:
            c = local.conn = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
            c.execute("PRAGMA journal_mode=WAL")
            c.execute("PRAGMA synchronous=NORMAL")
            c.execute("PRAGMA busy_timeout=30000")
        return c

    with sqlite3.connect(db_path) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(
            "CREATE TABLE IF NOT EXISTS runs (id TEXT PRIMARY KEY, app_id TEXT, status TEXT, "
            "inputs TEXT, created_at TEXT)"
        )

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/runs/{run_id}", response_model=RunEnvelope)
    def get_run(run_id: str) -> RunEnvelope:
        return RunEnvelope(data=RunView.model_validate({**TEMPLATE, "runId": run_id}))

    @app.post("/v1/apps/{app_id}/runs", status_code=201)
    def create_run(app_id: str, body: dict[str, Any] = Body(...)) -> dict[str, Any]:  # noqa: B008
        run_id = secrets.token_hex(12)
        now = datetime.now(UTC).isoformat()
        conn().execute(
            "INSERT INTO runs (id, app_id, status, inputs, created_at) VALUES (?, ?, ?, ?, ?)",
            (run_id, app_id, "queued", json.dumps(body.get("inputs")), now),
        )
        return {"data": {"runId": run_id, "status": "queued", "appId": app_id, "createdAt": now}}

    subscribers: set[asyncio.Queue[bytes | None]] = set()

    @app.get("/sse/subscribers")
    def sse_subscribers() -> dict[str, int]:
        return {"count": len(subscribers)}

    async def stream(queue: asyncio.Queue[bytes | None]) -> AsyncIterator[bytes]:
        try:
            yield b"retry: 1000\n\n"
            while (item := await queue.get()) is not None:
                yield item
        finally:
            subscribers.discard(queue)

    @app.get("/sse")
    async def sse() -> StreamingResponse:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        subscribers.add(queue)
        return StreamingResponse(stream(queue), media_type="text/event-stream")

    async def broadcast(count: int, interval: float) -> None:
        for seq in range(1, count + 1):
            await asyncio.sleep(interval)
            kind = "run.completed" if seq == count else "tick"
            payload = {"seq": seq, "type": kind, "createdAt": datetime.now(UTC).isoformat()}
            body = f"id: {seq}\nevent: {kind}\ndata: {json.dumps(payload)}\n\n".encode()
            for q in list(subscribers):
                q.put_nowait(body)
        for q in list(subscribers):
            q.put_nowait(None)

    tasks: set[asyncio.Task[None]] = set()

    @app.post("/sse/start")
    async def sse_start(count: int = 10, interval: float = 0.1) -> dict[str, int]:
        task = asyncio.create_task(broadcast(count, interval))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return {"subscribers": len(subscribers)}

    return app


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--db", required=True)
    args = ap.parse_args()
    # The same server stack and defaults as `flowy serve` (uvloop and httptools when
    # installed, no access log).
    uvicorn.run(
        create_app(args.db), host="127.0.0.1", port=args.port, log_level="info", access_log=False
    )


if __name__ == "__main__":
    main()
