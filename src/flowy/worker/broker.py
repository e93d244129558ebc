"""Scaled mode's work queue: Celery on Redis (or RabbitMQ).

A message carries only a run id; the database row is the truth (DESIGN.md §7).  The
servers send (:class:`BrokerQueue`: at creation, when the sweeper requeues a run, and
again for a run left queued too long, since a broker that restarts may lose what it
held); ``flowy worker`` processes (:class:`QueueWorker`) claim the run with the same
compare-and-set as embedded mode and run it with the same :class:`RunProcessor`.  A
message for a run already claimed, or no longer queued, is dropped at its claim.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from flowy.db.models import Run, utcnow
from flowy.db.session import Database
from flowy.engine.cache import ResultCache
from flowy.engine.registry import NodeRegistry
from flowy.services.apps import WorkflowCache
from flowy.services.files import FileService
from flowy.services.relay import RedisRelay
from flowy.services.secrets import SecretService
from flowy.services.states import RunStatus
from flowy.settings import Settings
from flowy.worker.pool import Housekeeper, make_processor, new_owner

if TYPE_CHECKING:  # Celery is scaled mode's extra (flowy[scaled]), imported when used
    from celery import Celery

logger = logging.getLogger(__name__)

#: The task a message names; its one argument is the run id.
TASK = "flowy.run"
#: How many runs left queued the sweeper sends again at each pass, at most.
RESEND_BATCH = 500


def celery_app(settings: Settings) -> Celery:
    """The Celery application of this Flowy's broker and queue."""
    from celery import Celery

    app = Celery("flowy", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=settings.worker.queue,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        # A worker takes one message per free worker thread, no more: the rest stay in
        # the broker for the other workers.  The message is acknowledged when taken;
        # the run's lease, not the message, covers a worker that dies.
        worker_prefetch_multiplier=1,
        task_acks_late=False,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
    )
    return app


class _Sender:
    """Sends run ids to the broker from a thread of its own, so that a request (or the
    writer that commits it) never waits on the broker.  A send that fails is logged and
    dropped: the run is committed ``queued``, and the sweeper sends it again."""

    def __init__(self, app: Celery, queue_name: str) -> None:
        self.app = app
        self.queue_name = queue_name
        self._outbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="flowy-broker-out", daemon=True)
        self._thread.start()

    def send(self, run_id: str) -> None:
        with self._lock:
            if not self._closed:
                self._outbox.put(run_id)
                return
        self._send(run_id)  # closed: on the caller's thread

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            self._outbox.put(None)
        self._thread.join(timeout)

    def _loop(self) -> None:
        with self.app.producer_pool.acquire(block=True) as producer:
            while (run_id := self._outbox.get()) is not None:
                self._send(run_id, producer)

    def _send(self, run_id: str, producer: Any = None) -> None:
        try:
            self.app.send_task(
                TASK,
                args=[run_id],
                queue=self.queue_name,
                producer=producer,
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2},
            )
        except Exception as exc:
            logger.warning("could not send run %s to the broker: %s", run_id, exc)


class BrokerQueue(Housekeeper):
    """A server's side of scaled mode: runs go to the broker, cancels to every worker;
    the sweeper requeues runs whose lease ran out and sends again runs left queued."""

    def __init__(self, settings: Settings, db: Database, files: FileService) -> None:
        super().__init__(settings, db, files)
        self.app = celery_app(settings)
        self.relay = RedisRelay(settings.events_url, settings.worker.queue, db)
        self._sender: _Sender | None = None
        self._sent: dict[str, float] = {}  # run id -> when this server last sent it

    def enqueue(self, run_id: str) -> None:
        if self._sender is None:
            raise RuntimeError("the broker queue is not started")
        self._sent[run_id] = time.monotonic()
        self._sender.send(run_id)

    def cancel(self, run_id: str, reason: str) -> None:
        self.relay.cancel(run_id, reason)

    def start(self) -> None:
        """Other servers and workers share the database: no run is an orphan because
        this server starts; only leases that run out are swept."""
        self.relay.attach()
        self.relay.start()
        self._sender = _Sender(self.app, self.settings.worker.queue)
        self._start_housekeeping()
        self._spawn(self._every(self.settings.worker.sweep_seconds, self.resend), "flowy-resend")

    def resend(self) -> None:
        """Send again the runs queued for longer than a lease: their message may be gone
        with a broker that restarted (a claimed run's duplicate is dropped)."""
        lease = self.settings.worker.lease_seconds
        cutoff = utcnow() - timedelta(seconds=lease)
        with self.db.read() as s:
            ids = list(
                s.scalars(
                    select(Run.id)
                    .where(Run.status == RunStatus.QUEUED, Run.created_at < cutoff)
                    .order_by(Run.created_at)
                    .limit(RESEND_BATCH)
                )
            )
        now = time.monotonic()
        self._sent = {r: t for r, t in self._sent.items() if now - t < lease}
        again = [r for r in ids if r not in self._sent]
        if again:
            logger.info("sending %d run(s) left queued to the broker again", len(again))
        for run_id in again:
            self.enqueue(run_id)

    def stop(self) -> None:
        self._stop.set()
        if self._sender is not None:
            self._sender.close()
        for t in self._threads:
            t.join(timeout=1)
        self.relay.stop()


class QueueWorker(Housekeeper):
    """The runs side of a ``flowy worker`` process: the Celery task calls :meth:`run`
    on one of ``worker.concurrency`` threads.  Its leases are renewed by a heartbeat,
    cancels reach it through the relay, and on shutdown the runs still in flight after
    the grace period go back to the queue."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        workflows: WorkflowCache,
        files: FileService,
        secrets: SecretService,
        cache: ResultCache | None,
    ) -> None:
        super().__init__(settings, db, files)
        self.owner = new_owner()
        self._node_pool, self.processor = make_processor(
            settings, db, workflows, files, secrets, cache, self.owner
        )
        self.app = celery_app(settings)
        self.relay = RedisRelay(
            settings.events_url, settings.worker.queue, db, on_cancel=self.processor.cancel
        )
        self._sender: _Sender | None = None
        self._stopping = threading.Lock()
        self._stopped = False

    def enqueue(self, run_id: str) -> None:
        """A run parked at its workspace's concurrent-run limit goes back to the broker
        (any worker may take it)."""
        if self._sender is not None:
            self._sender.send(run_id)

    def run(self, run_id: str) -> None:
        """The task: claim and run ``run_id`` (nothing, if another worker has it)."""
        if self._stop.is_set():
            logger.info("run %s: stopping, so it goes back to the queue", run_id)
            self.enqueue(run_id)
            return
        started = time.monotonic()
        outcome = self.processor.process(run_id)
        if outcome is None:
            logger.debug("run %s: not queued any more (another worker has it)", run_id)
        elif self._stop.is_set():
            logger.info("run %s handed back to the queue", run_id)
        elif not outcome.startswith("deferred:"):
            logger.info("run %s done in %.2f s", run_id, time.monotonic() - started)
        self.settle(run_id, outcome)

    def start(self) -> None:
        self.relay.attach()
        self.relay.start()
        self._sender = _Sender(self.app, self.settings.worker.queue)
        w = self.settings.worker
        self._spawn(
            self._every(w.heartbeat_seconds, self.processor.renew_leases), "flowy-heartbeat"
        )
        # Runs parked at a workspace's limit are looked at again (the run that frees the
        # slot may end on another worker).
        self._spawn(self._every(w.sweep_seconds, self._release), "flowy-parked")

    def stop(self) -> None:
        """Give runs in flight the shutdown grace period, then hand them back to the queue
        and stop them (their later writes are fenced off)."""
        with self._stopping:  # a second caller returns once the first is done
            if not self._stopped:
                self._stop_now()
                self._stopped = True

    def _stop_now(self) -> None:
        self._stop.set()
        deadline = time.monotonic() + self.settings.worker.shutdown_grace_seconds
        while self.processor.active and time.monotonic() < deadline:
            time.sleep(0.05)
        self._release()  # parked runs are still queued: a message lets another worker take them
        self.hand_back(self.owner)
        for run_id in list(self.processor.active):
            self.enqueue(run_id)
            self.processor.cancel(run_id, "the worker is stopping")
        for t in self._threads:
            t.join(timeout=1)
        if self._sender is not None:
            self._sender.close()
        self.relay.stop()
        self._node_pool.shutdown(wait=False, cancel_futures=True)


def run_worker(settings: Settings, registry: NodeRegistry) -> int:
    """``flowy worker``: take runs from the broker until stopped (Ctrl-C or SIGTERM, a
    warm shutdown: the runs in flight get the shutdown grace period).  Its exit code."""
    from celery import signals

    # Imported here: the platform module imports this one.
    from flowy.db.migrate import upgrade
    from flowy.services.platform import check_scaled, result_cache, worker_services

    check_scaled(settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(settings.sqlalchemy_url)
    db = Database(settings.sqlalchemy_url)
    files, secrets = worker_services(settings, db)
    cache = result_cache(settings)  # this machine's, shared with its other workers
    worker = QueueWorker(settings, db, WorkflowCache(registry), files, secrets, cache)

    @worker.app.task(name=TASK, ignore_result=True)  # type: ignore[untyped-decorator]
    def run(run_id: str) -> None:
        worker.run(run_id)

    def shutting_down(**_: object) -> None:
        # Called in the signal handler: the grace period is waited out on a thread.
        threading.Thread(target=worker.stop, name="flowy-stop", daemon=True).start()

    signals.worker_shutting_down.connect(shutting_down, weak=False)
    worker.start()
    logger.info("worker %s takes runs from queue %r", worker.owner, settings.worker.queue)
    if not settings.server.public_url:
        logger.warning(
            "FLOWY_SERVER__PUBLIC_URL is not set: this worker takes %s for the servers' "
            "address, and fetches file links of any other one over HTTP",
            settings.base_url,
        )
    # This worker logs one line per run itself (run); Celery's two per task are noise.
    for name in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.WARNING)
    host, pid, tag = worker.owner.split(":")
    celery_worker = worker.app.Worker(
        hostname=f"flowy-{pid}-{tag}@{host}",
        pool_cls="threads",
        concurrency=settings.worker.concurrency,
        queues=[settings.worker.queue],
        loglevel=settings.log_level.upper(),
        quiet=True,
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
    )
    try:
        celery_worker.start()
    finally:
        signals.worker_shutting_down.disconnect(shutting_down)
        worker.stop()
        if cache is not None:
            cache.close()
        db.dispose()
    return int(celery_worker.exitcode or 0)
