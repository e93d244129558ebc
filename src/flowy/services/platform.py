"""The parts of a running Flowy, built once from settings and passed down."""

from __future__ import annotations

import fcntl
import logging
import os
from dataclasses import dataclass, field
from typing import IO

from flowy.db.migrate import upgrade
from flowy.db.session import Database
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
from flowy.storage.cache import DiskResultCache
from flowy.storage.local import LocalBlobStore
from flowy.storage.signing import UrlSigner
from flowy.worker.pool import LocalWorkerPool
from flowy.worker.webhooks import WebhookDispatcher

logger = logging.getLogger(__name__)


@dataclass
class Platform:
    settings: Settings
    db: Database
    registry: NodeRegistry
    files: FileService
    apps: AppService
    runs: RunService
    secrets: SecretService
    workers: LocalWorkerPool
    bus: EventBus
    limiter: RateLimiter
    idempotency: IdempotencyStore
    webhooks: WebhookService
    dispatcher: WebhookDispatcher
    _lock_file: IO[str] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, settings: Settings, registry: NodeRegistry | None = None) -> Platform:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.sqlalchemy_url, background_checkpoints=True)
        registry = registry or default_registry()
        workflows = WorkflowCache(registry)
        files = FileService(
            db,
            LocalBlobStore(settings.storage_dir),
            UrlSigner(settings.signing_key()),
            settings.base_url,
            settings.media.url_ttl_seconds,
            {
                "upload": settings.retention.uploads_seconds,
                "output": settings.retention.outputs_seconds,
            },
        )
        apps = AppService(db, workflows)
        secrets = SecretService(db, settings.signing_key())
        cache = (
            DiskResultCache(
                settings.cache_dir,
                settings.cache.max_bytes,
                min_seconds=settings.cache.min_node_seconds,
            )
            if settings.cache.enabled
            else None
        )
        workers = LocalWorkerPool(settings, db, workflows, files, secrets, cache)
        runs = RunService(
            db,
            apps,
            files,
            workers.enqueue,
            workers.processor.cancel,
            settings.limits.max_inputs,
            direct=workers,
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
        """Migrate the schema, take the data directory, start the in-process workers."""
        self._lock_data_dir()
        cache = self.workers.processor.cache
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
        cache = self.workers.processor.cache
        if isinstance(cache, DiskResultCache):
            cache.close()  # results still queued for the disk are written first
        self.db.dispose()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

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
