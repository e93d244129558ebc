"""Settings: one pydantic-settings object, nested by area, read from ``FLOWY_*``.

Nested fields use a double underscore: ``FLOWY_MEDIA__MAX_BYTES``.  The handful that an
operator sets most often also have a flat alias (``FLOWY_ALLOW_PRIVATE_URLS``,
``FLOWY_DATA_DIR``, ``FLOWY_SECRET_KEY``, ...).  Build one with :func:`load_settings`
in ``create_app()`` or the CLI and pass it down; nothing reads the environment at import.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowy.errors import FlowyError


class ServerSettings(BaseModel):
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, description="Port the HTTP server binds to.")
    public_url: str | None = Field(
        None,
        description="Base URL callers reach Flowy at (no /v1); defaults to http://host:port. "
        "Signed file URLs are built on it.",
    )
    max_body_bytes: int = Field(1 << 20, description="Largest JSON request body accepted.")
    sse_keepalive_seconds: float = Field(
        15.0, gt=0, description="Quiet time after which an event stream sends a keep-alive."
    )


class WorkerSettings(BaseModel):
    concurrency: int = Field(
        2, ge=1, description="Runs executed at once by the workers of each process that runs them."
    )
    processes: int = Field(
        0,
        ge=0,
        description="Worker processes that `flowy serve` starts to run runs, each with "
        "`concurrency` workers (0: the workers are threads of the server process).  Runs "
        "of mostly Python work (small images, many nodes) go faster in processes, since "
        "threads of one process take turns at Python; each process costs its own memory.",
    )
    node_concurrency: int = Field(
        4, ge=1, description="Independent nodes of one run executed at once."
    )
    lease_seconds: float = Field(90.0, gt=0, description="How long a claim on a run lasts.")
    heartbeat_seconds: float = Field(15.0, gt=0, description="How often a lease is renewed.")
    sweep_seconds: float = Field(5.0, gt=0, description="How often expired leases are swept.")
    max_attempts: int = Field(3, ge=1, description="Attempts before a run is failed for good.")
    node_timeout_seconds: float = Field(120.0, gt=0, description="Default per-node timeout.")
    nice: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower than the API's the operating-system priority of the "
        "threads that execute runs is (Unix nice, 0-19; 0: the same).  When the machine is "
        "busy running nodes, requests are still answered first.",
    )
    shutdown_grace_seconds: float = Field(
        10.0,
        ge=0,
        description="On shutdown, how long runs in flight may finish before "
        "they are handed back to the queue for the next start.",
    )
    queue: str = Field(
        "flowy",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="Scaled mode: the name of the broker's queue of runs, and the prefix of "
        "the Redis channels of events and cancels.  The servers and workers of one Flowy "
        "share it; two Flowys on one broker each need their own.",
    )


class MediaSettings(BaseModel):
    allow_private_urls: bool = Field(
        False,
        description="Let media URLs point at private, loopback and link-local addresses. "
        "Off by default: a caller must not make the server fetch its own network.",
    )
    max_bytes: int = Field(25 << 20, description="Largest media file fetched or uploaded.")
    fetch_timeout_seconds: float = Field(20.0, gt=0, description="Whole-fetch time limit.")
    max_redirects: int = Field(5, ge=0, description="Redirects followed, each re-checked.")
    max_pixels: int = Field(
        64_000_000, description="Larger images are refused as decompression bombs."
    )
    url_ttl_seconds: int = Field(
        3600, ge=1, le=7 * 24 * 3600, description="Lifetime of signed file URLs (max 7 days)."
    )


class CacheSettings(BaseModel):
    enabled: bool = Field(True, description="Reuse results of deterministic nodes.")
    max_bytes: int = Field(512 << 20, ge=0, description="Disk the result cache may use.")
    min_node_seconds: float = Field(
        0.002,
        ge=0,
        description="Results of nodes that take less than this of their thread's CPU time "
        "(or ten times this in all) are not kept: storing and finding them costs more than "
        "computing them again.",
    )


class LimitSettings(BaseModel):
    requests_per_minute: int = Field(
        1200, ge=0, description="Requests a minute per API key (0: no limit)."
    )
    burst: int = Field(200, ge=1, description="Requests a key may send at once.")
    concurrent_runs: int = Field(
        16,
        ge=0,
        description="Runs of one workspace running at once; more wait queued (0: no limit).",
    )
    max_inputs: int = Field(100, ge=1, description="Most inputs one run request may carry.")


class RetentionSettings(BaseModel):
    outputs_seconds: int = Field(7 * 24 * 3600, ge=1, description="How long run outputs are kept.")
    uploads_seconds: int = Field(24 * 3600, ge=1, description="How long uploads are kept.")
    sweep_seconds: float = Field(300.0, gt=0, description="How often expired files go.")


#: Seconds between the attempts of a webhook delivery after the first (made at once):
#: 5 s, 5 min, 30 min, 2 h, 5 h, then 10 h six times; about three days, then it fails.
WEBHOOK_RETRY_SCHEDULE = (5.0, 300.0, 1800.0, 7200.0, 18000.0, *(36000.0,) * 6)


class WebhookSettings(BaseModel):
    dispatch: bool = Field(
        True, description="Send webhook deliveries from this process (the dispatcher thread)."
    )
    retry_schedule: list[float] = Field(
        default_factory=lambda: list(WEBHOOK_RETRY_SCHEDULE),
        description="Seconds to wait before each retry of a failed delivery (the first "
        "attempt is made at once); when they are used up the delivery has failed.",
    )
    retry_scale: float = Field(
        1.0, gt=0, description="Multiplies every retry delay (tests shrink the schedule)."
    )
    poll_seconds: float = Field(
        1.0, gt=0, description="How often the dispatcher looks for due deliveries."
    )
    timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="Time limit of one delivery attempt (the whole POST)."
    )
    concurrency: int = Field(4, ge=1, description="Deliveries sent at once.")


class Settings(BaseSettings):
    """Everything Flowy reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="FLOWY_",
        env_nested_delimiter="__",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
    )

    data_dir: Path = Field(
        Path("./flowy-data"), description="SQLite file and stored files live here (embedded)."
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; defaults to a SQLite file in data_dir."
    )
    broker_url: str | None = Field(
        None,
        description="Scaled mode: the Celery broker (redis://… or amqp://…).  When set, "
        "`flowy serve` only answers the API and `flowy worker` processes run the runs.",
    )
    redis_url: str | None = Field(
        None,
        description="Scaled mode: the Redis that carries live events and cancels between "
        "processes; defaults to the broker when that is Redis.",
    )
    storage_url: str | None = Field(
        None,
        description="Where files live: s3://bucket[/prefix][?endpoint=…&region=…] for an "
        "S3-compatible bucket (credentials: the usual AWS_* variables); by default the "
        "data directory.",
    )
    secret_key: str | None = Field(
        None,
        description="Signs file URLs and seals workspace secrets. When unset, a random key "
        "is made once and kept in data_dir/secret.key so URLs survive restarts; scaled "
        "mode requires it, the same on every server and worker.",
    )
    allow_private_urls: bool = Field(False, description="Flat alias of media.allow_private_urls.")
    bootstrap: bool = Field(
        True, description="On first start create the default workspace, key and example apps."
    )
    server: ServerSettings = Field(default_factory=lambda: ServerSettings())
    worker: WorkerSettings = Field(default_factory=lambda: WorkerSettings())
    media: MediaSettings = Field(default_factory=lambda: MediaSettings())
    cache: CacheSettings = Field(default_factory=lambda: CacheSettings())
    limits: LimitSettings = Field(default_factory=lambda: LimitSettings())
    retention: RetentionSettings = Field(default_factory=lambda: RetentionSettings())
    webhooks: WebhookSettings = Field(default_factory=lambda: WebhookSettings())
    log_level: str = Field("INFO", validation_alias=AliasChoices("log_level", "FLOWY_LOG_LEVEL"))

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'flowy.db').resolve()}"

    @property
    def scaled(self) -> bool:
        """Scaled mode: runs go through a broker to `flowy worker` processes."""
        return bool(self.broker_url)

    @property
    def events_url(self) -> str:
        """The Redis of scaled mode's events and cancels."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url and self.broker_url.startswith(("redis://", "rediss://")):
            return self.broker_url
        raise FlowyError(
            "scaled mode needs Redis for live events: set FLOWY_REDIS_URL (the broker is not Redis)"
        )

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "files"

    @property
    def base_url(self) -> str:
        if self.server.public_url:
            return self.server.public_url.rstrip("/")
        return f"http://{self.server.host}:{self.server.port}"

    def private_urls_allowed(self) -> bool:
        return self.allow_private_urls or self.media.allow_private_urls

    def signing_key(self) -> bytes:
        """The HMAC key for file URLs: configured, or made once and kept in data_dir."""
        if self.secret_key:
            return self.secret_key.encode()
        path = self.data_dir / "secret.key"
        if not path.exists():
            # Made beside it and linked into place: of processes that start together on
            # one data directory (scaled mode's servers and workers), one key wins.
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".secret.key.{secrets.token_hex(8)}")
            tmp.write_text(secrets.token_hex(32))
            tmp.chmod(0o600)
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass
            finally:
                tmp.unlink()
        return path.read_text().strip().encode()


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (and ``.env``), with explicit overrides on top."""
    return Settings(**overrides)  # type: ignore[arg-type]
