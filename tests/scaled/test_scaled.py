"""Scaled mode end to end: ``flowy serve`` (the API alone) and ``flowy worker`` processes
on the machine's real PostgreSQL and Redis (Celery's broker, and the relay of events and
cancels), or RabbitMQ as the broker; files in a shared data directory or an S3 bucket."""

from __future__ import annotations

import io
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from PIL import Image

from tests.backing import REDIS, S3_CREDENTIALS, s3_bucket, scratch_postgres, scratch_queue
from tests.flowy_process import FlowyProcess, free_port
from tests.workflows import ECHO, delay


@dataclass
class Cluster:
    """Servers and workers of one Flowy: one database, one queue, one data directory."""

    root: Path
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    procs: list[FlowyProcess] = field(default_factory=list)
    #: Each process gets a data directory of its own (files in a bucket), rather than
    #: all sharing one.
    apart: bool = False

    def _data_dir(self) -> Path:
        return self.root / (f"data-{len(self.procs)}" if self.apart else "data")

    def server(self, port: int | None = None, **env: str) -> FlowyProcess:
        p = FlowyProcess(self._data_dir(), {**self.env, **env}, port=port or self.port)
        self.procs.append(p)
        return p.start()

    def worker(self, **env: str) -> FlowyProcess:
        p = FlowyProcess(self._data_dir(), {**self.env, **env}, command="worker")
        self.procs.append(p)
        return p.start()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with scratch_postgres() as db_url, scratch_queue() as queue:
        port = free_port()
        env = {
            "FLOWY_DATABASE_URL": db_url,
            "FLOWY_BROKER_URL": REDIS,
            "FLOWY_WORKER__QUEUE": queue,
            "FLOWY_SERVER__PUBLIC_URL": f"http://127.0.0.1:{port}",
            "FLOWY_WORKER__CONCURRENCY": "1",
            "FLOWY_SECRET_KEY": "scaled-test-secret",
        }
        c = Cluster(tmp_path, env, port)
        try:
            yield c
        finally:
            for p in reversed(c.procs):
                p.kill()
                # Shown with a failed test's report.
                print(f"--- flowy {p.command} {p.port}:", "".join(p.output), sep="\n")


def _app(server: FlowyProcess, workflow: dict[str, Any], title: str = "Test") -> str:
    r = server.post("/apps", json={"title": title, "workflow": workflow, "published": True})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["id"])


def _run(server: FlowyProcess, app: str, inputs: dict[str, Any]) -> str:
    r = server.post(f"/apps/{app}/runs", json={"inputs": inputs})
    assert r.status_code == 201, r.text
    return str(r.json()["data"]["runId"])


def _wait_status(server: FlowyProcess, run_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while (now := server.get(f"/runs/{run_id}").json()["data"]["status"]) != status:
        assert time.monotonic() < deadline, f"run {run_id} is {now}, never {status}"
        time.sleep(0.05)


@pytest.fixture(params=["shared data directory", "S3 bucket"])
def files(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[str]:
    """Where the cluster's files live.  With a bucket nothing on disk is shared: the
    server and each worker have a data directory of their own."""
    if request.param == "S3 bucket":
        with s3_bucket() as url:
            cluster.env.update(S3_CREDENTIALS, FLOWY_STORAGE_URL=url)
            cluster.apart = True
            yield request.param
    else:
        yield request.param


def test_the_documented_flow_runs_on_workers(
    cluster: Cluster, files: str, portrait_png: bytes
) -> None:
    server = cluster.server()
    workers = [cluster.worker(), cluster.worker()]
    # The seed's flow: list the apps, read one, upload a photo, run, poll, download.
    apps = {a["title"]: a["id"] for a in server.get("/apps").json()["data"]}
    headshot = apps["Headshot generator"]
    assert server.get(f"/apps/{headshot}").json()["data"]["inputs"][0]["nodeId"] == "node_1"
    up = server.post("/uploads", files={"file": ("me.png", portrait_png, "image/png")})
    assert up.status_code == 201, up.text
    run_id = _run(server, headshot, {"node_1": up.json()["data"]["url"], "node_2": "warm"})
    run = server.wait_run(run_id)
    assert run["status"] == "completed", run
    image = requests.get(run["outputs"][0]["url"], timeout=30)
    assert image.status_code == 200
    assert Image.open(io.BytesIO(image.content)).size == (768, 960)
    # Many small runs: every one completes with its own output, on either worker.
    echo = _app(server, ECHO)
    ids = [_run(server, echo, {"node_1": f"text {i}"}) for i in range(30)]
    for i, rid in enumerate(ids):
        done = server.wait_run(rid)
        assert done["status"] == "completed" and done["outputs"][0]["value"] == f"text {i}"
    ran = [sum(f"run {r} done" in "".join(w.output) for r in [run_id, *ids]) for w in workers]
    assert sum(ran) == 31 and all(ran), ran
    if files == "S3 bucket":
        assert not (cluster.root / "data-0" / "files").exists()


def test_events_and_cancels_cross_processes(cluster: Cluster) -> None:
    # With a heartbeat of a minute, only the relay can bring the cancel to the worker
    # before the test gives up, and the stream its events.
    server = cluster.server()
    cluster.worker(FLOWY_WORKER__HEARTBEAT_SECONDS="60")
    app = _app(server, delay(30.0))
    run_id = _run(server, app, {"node_1": "hi"})
    events: list[str] = []
    with server.get(f"/runs/{run_id}/events", stream=True) as stream:
        lines = stream.iter_lines(decode_unicode=True)
        for line in lines:
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if events[-1:] == ["node.started"] and events.count("node.started") == 2:
                break  # the delay node runs
        assert server.post(f"/runs/{run_id}/cancel").status_code == 200
        for line in lines:
            if line.startswith("event:"):
                events.append(line.split(":", 1)[1].strip())
            if events[-1:] == ["run.canceled"]:
                break
    assert events[:2] == ["run.queued", "run.started"]
    assert events[-1] == "run.canceled"
    run = server.wait_run(run_id, timeout=10)
    assert run["status"] == "canceled"


def test_a_killed_workers_run_is_finished_by_another(cluster: Cluster) -> None:
    fast = {"FLOWY_WORKER__LEASE_SECONDS": "2", "FLOWY_WORKER__HEARTBEAT_SECONDS": "0.5"}
    server = cluster.server(**fast)
    first = cluster.worker(**fast)
    app = _app(server, delay(2.0))
    run_id = _run(server, app, {"node_1": "survives"})
    _wait_status(server, run_id, "running")
    first.kill()
    cluster.worker(**fast)
    run = server.wait_run(run_id)
    assert run["status"] == "completed" and run["attempt"] == 2
    assert run["outputs"][0]["value"] == "survives"


def test_a_stopped_worker_hands_its_run_back(cluster: Cluster) -> None:
    server = cluster.server()
    first = cluster.worker(FLOWY_WORKER__SHUTDOWN_GRACE_SECONDS="0.5")
    app = _app(server, delay(3.0))
    run_id = _run(server, app, {"node_1": "handed back"})
    _wait_status(server, run_id, "running")
    assert first.proc is not None
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(20) == 0
    _wait_status(server, run_id, "queued")
    cluster.worker()
    run = server.wait_run(run_id)
    # A hand-back on shutdown is not a failed attempt.
    assert run["status"] == "completed" and run["attempt"] == 1


def test_a_run_whose_message_was_lost_is_sent_again(cluster: Cluster) -> None:
    server = cluster.server(FLOWY_WORKER__LEASE_SECONDS="1")
    app = _app(server, ECHO)
    run_id = _run(server, app, {"node_1": "again"})
    # The broker restarts and forgets the message before any worker took it.
    client = redis.Redis.from_url(REDIS)
    deadline = time.monotonic() + 10
    while not client.delete(cluster.env["FLOWY_WORKER__QUEUE"]):
        assert time.monotonic() < deadline, "the message never reached the broker"
        time.sleep(0.01)
    client.close()
    cluster.worker()
    run = server.wait_run(run_id)
    assert run["status"] == "completed" and run["outputs"][0]["value"] == "again"


def test_servers_share_runs_and_keys(cluster: Cluster) -> None:
    one = cluster.server()
    two = cluster.server(port=free_port(), FLOWY_BOOTSTRAP="false")
    two.key = one.key
    cluster.worker()
    app = _app(one, ECHO)
    run_id = _run(two, app, {"node_1": "either"})
    assert one.wait_run(run_id)["outputs"][0]["value"] == "either"
    # A key revoked through one server is refused by the other at once (not after its
    # key cache's few seconds).
    made = one.cli("keys", "create", "--name", "short-lived", **cluster.env)
    assert made.returncode == 0, made.stderr
    key = made.stdout.split("FLOWY_KEY=")[1].strip()
    assert two.get("/apps", key).status_code == 200
    key_id = made.stdout.split("created key ")[1].split()[0]
    revoked = one.cli("keys", "revoke", key_id, **cluster.env)
    assert revoked.returncode == 0, revoked.stderr
    # The news reaches the other server's listener a moment after the command exits.
    deadline = time.monotonic() + 1
    while two.get("/apps", key).status_code != 401:
        assert time.monotonic() < deadline, "the other server still takes the revoked key"
        time.sleep(0.02)


AMQP = "amqp://guest:guest@127.0.0.1:5672//"


def test_rabbitmq_can_be_the_broker(cluster: Cluster) -> None:
    kombu = pytest.importorskip("kombu")
    conn = kombu.Connection(AMQP, connect_timeout=3)
    try:
        conn.ensure_connection(max_retries=1)
    except Exception as exc:
        pytest.skip(f"no RabbitMQ at {AMQP}: {exc}")
    # Celery's queue on RabbitMQ, events and cancels still over Redis.
    cluster.env.update(FLOWY_BROKER_URL=AMQP, FLOWY_REDIS_URL=REDIS)
    try:
        server = cluster.server()
        cluster.worker(FLOWY_WORKER__HEARTBEAT_SECONDS="60")
        echo = _app(server, ECHO)
        ids = [_run(server, echo, {"node_1": f"rabbit {i}"}) for i in range(5)]
        assert [server.wait_run(r)["outputs"][0]["value"] for r in ids] == [
            f"rabbit {i}" for i in range(5)
        ]
        slow = _run(server, _app(server, delay(30.0)), {"node_1": "stop me"})
        _wait_status(server, slow, "running")
        assert server.post(f"/runs/{slow}/cancel").status_code == 200
        assert server.wait_run(slow, timeout=10)["status"] == "canceled"
    finally:
        for p in cluster.procs:
            p.kill()
        conn.default_channel.queue_delete(cluster.env["FLOWY_WORKER__QUEUE"])
        conn.release()


def test_servers_that_start_together_make_one_workspace(cluster: Cluster) -> None:
    servers = [
        FlowyProcess(cluster.root / "data", cluster.env, port=port)
        for port in (cluster.port, free_port())
    ]
    cluster.procs += servers
    threads = [threading.Thread(target=s.start) for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    keys = [s.key for s in servers if s.key]
    assert len(keys) == 1, [s.output for s in servers]  # one made the workspace and its key
    for s in servers:
        assert s.get("/apps", keys[0]).status_code == 200
    titles = [a["title"] for a in servers[0].get("/apps", keys[0]).json()["data"]]
    assert len(titles) == len(set(titles)) == 7  # the example apps, once
