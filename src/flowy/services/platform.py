"""The parts of a running Flowy, built once from settings and passed down."""

from __future__ import annotations

import fcntl
import importlib.util
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from flowy.db.migrate import upgrade
from flowy.db.session import Database
from flowy.engine.cache import ResultCache
from flowy.engine.registry import NodeRegistry, default_registry
from flowy.errors import FlowyError
from flowy.services.apps import AppService, WorkflowCache
from flowy.services.events import EventBus, LocalEventBus
from flowy.services.files import FileService
from flowy.services.idempotency import IdempotencyStore
from flowy.services.limits import RateLimiter
from flowy.services.runs import RunService
from flowy.services.secrets import SecretService
from flowy.services.webhooks import WebhookService
from flowy.settings import Settings
from flowy.storage.base import BlobStore
from flowy.storage.cache import DiskResultCache
from flowy.storage.local import LocalBlobStore
from flowy.storage.signing import UrlSigner
from flowy.worker.broker import BrokerQueue
from flowy.worker.pool import LocalWorkerPool
from flowy.worker.processes import ProcessWorkerPool
from flowy.worker.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)


def write_lock_path(settings: Settings) -> Path:
    """The lock file of the writers of the server and its worker processes."""
    return settings.data_dir / "flowy.write.lock"


def blob_store(settings: Settings) -> BlobStore:
    """Where files live: the data directory, or an S3-compatible bucket."""
    if not settings.storage_url:
        return LocalBlobStore(settings.storage_dir)
    if importlib.util.find_spec("boto3") is None:
        raise FlowyError('FLOWY_STORAGE_URL needs boto3: pip install "flowy[scaled]"')
    from flowy.storage.s3 import S3BlobStore

    store = S3BlobStore(settings.storage_url)
    store.check()
    return store


def check_scaled(settings: Settings) -> None:
    """What every process of scaled mode must have and share, checked before it starts."""
    needed = ["celery", "redis"] + (["boto3"] if settings.storage_url else [])
    missing = [m for m in needed if importlib.util.find_spec(m) is None]
    if missing:
        raise FlowyError(f'scaled mode needs {", ".join(missing)}: pip install "flowy[scaled]"')
    if settings.sqlalchemy_url.startswith("sqlite"):
        raise FlowyError(
            "scaled mode (FLOWY_BROKER_URL) needs a database that every server and "
            "worker shares: set FLOWY_DATABASE_URL to PostgreSQL"
        )
    if not settings.secret_key:
        raise FlowyError(
            "scaled mode (FLOWY_BROKER_URL) needs FLOWY_SECRET_KEY, the same on every "
            "server and worker: it signs file links and seals workspace secrets"
        )
    settings.events_url  # noqa: B018 - raises FlowyError when there is no Redis for events


def worker_services(settings: Settings, db: Database) -> tuple[FileService, SecretService]:
    """The services that run execution needs beside the database and the node catalog
    (the server's, or a worker process's own)."""
    files = FileService(
        db,
        blob_store(settings),
        UrlSigner(settings.signing_key()),
        settings.base_url,
        settings.media.url_ttl_seconds,
        {
            "upload": settings.retention.uploads_seconds,
            "output": settings.retention.outputs_seconds,
        },
    )
    return files, SecretService(db, settings.signing_key())


def result_cache(settings: Settings) -> DiskResultCache | None:
    """The node result cache of the process that runs nodes, if it is enabled."""
    if not settings.cache.enabled:
        return None
    return DiskResultCache(
        settings.cache_dir, settings.cache.max_bytes, min_seconds=settings.cache.min_node_seconds
    )


@dataclass
class Platform:
    settings: Settings
    db: Database
    registry: NodeRegistry
    files: FileService
    apps: AppService
    runs: RunService
    secrets: SecretService
    workers: LocalWorkerPool | ProcessWorkerPool | BrokerQueue
    bus: EventBus
    limiter: RateLimiter
    idempotency: IdempotencyStore
    webhooks: WebhookService
    dispatcher: WebhookDispatcher
    _lock_file: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        registry: NodeRegistry | None = None,
        *,
        registry_factory: Callable[[], NodeRegistry] = default_registry,
    ) -> Platform:
        """The parts, unstarted.  ``registry_factory`` makes the node catalog (unless
        ``registry`` is given); worker processes call it to make theirs, so it must be a
        module-level function when ``worker.processes`` is set.  With a broker
        (scaled mode) this process only answers the API: ``flowy worker`` runs the runs."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if settings.scaled:
            check_scaled(settings)
        processes = 0 if settings.scaled else settings.worker.processes
        db = Database(
            settings.sqlalchemy_url,
            background_checkpoints=True,
            process_lock=write_lock_path(settings) if processes else None,
        )
        registry = registry or registry_factory()
        workflows = WorkflowCache(registry)
        files, secrets = worker_services(settings, db)
        apps = AppService(db, workflows)
        workers: LocalWorkerPool | ProcessWorkerPool | BrokerQueue
        if settings.scaled:
            workers = BrokerQueue(settings, db, files)
        elif processes:
            workers = ProcessWorkerPool(settings, db, files, registry_factory)
        else:
            cache = result_cache(settings)
            workers = LocalWorkerPool(settings, db, workflows, files, secrets, cache)
        runs = RunService(
            db,
            apps,
            files,
            workers.enqueue,
            workers.cancel,
            settings.limits.max_inputs,
            direct=workers if isinstance(workers, LocalWorkerPool) else None,
        )
        bus = LocalEventBus()
        db.commit_hooks.append(bus.notify)
        limiter = RateLimiter(settings.limits.requests_per_minute, settings.limits.burst)
        webhooks = WebhookService(db, settings.signing_key(), settings.webhooks.retry_schedule)
        dispatcher = WebhookDispatcher(settings, db, webhooks, runs)
        return cls(
            settings,
            db,
            registry,
            files,
            apps,
            runs,
            secrets,
            workers,
            bus,
            limiter,
            IdempotencyStore(db),
            webhooks=webhooks,
            dispatcher=dispatcher,
        )

    def start(self) -> None:
        """Migrate the schema, take the data directory (embedded mode), start the
        in-process workers (or, scaled out, the broker queue)."""
        if not self.settings.scaled:
            self._lock_data_dir()
        cache = self._cache()
        if isinstance(cache, DiskResultCache):
            cache.exclusive = True  # its directory is the data directory's, now ours alone
        upgrade(self.settings.sqlalchemy_url)
        self.db.start_checkpointer()
        self.workers.start()
        self.dispatcher.start()

    def stop(self) -> None:
        self.runs.writer.close()  # runs accepted until now are committed and queued
        self.workers.stop()
        self.dispatcher.stop()
        cache = self._cache()
        if isinstance(cache, DiskResultCache):
            cache.close()  # results still queued for the disk are written first
        self.db.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def _cache(self) -> ResultCache | None:
        """The result cache of this process's workers (none with worker processes)."""
        return self.workers.processor.cache if isinstance(self.workers, LocalWorkerPool) else None

    def _lock_data_dir(self) -> None:
        # Embedded mode recovers "running" runs at start-up as orphans; that is only
        # sound when one process owns the data directory, so make sure of it.
        path = self.settings.data_dir / "flowy.lock"
        f = open(path, "a+")  # noqa: SIM115 - held open for the process's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise FlowyError(
                f"another Flowy process is using {self.settings.data_dir}; "
                "stop it or pick another FLOWY_DATA_DIR"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._lock_file = f
