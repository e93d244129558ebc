"""Schema migrations (Alembic), run at start-up by ``flowy serve`` and ``flowy migrate``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text

MIGRATIONS = Path(__file__).parent / "migrations"


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


#: The PostgreSQL advisory lock of :func:`startup_lock`.
STARTUP_LOCK = 0x466C6F7779  # "Flowy"


@contextmanager
def startup_lock(url: str) -> Iterator[None]:
    """Held while a process migrates or makes the first workspace: the servers and
    workers of scaled mode may start together, and one does it while the others wait.
    Nothing to hold on SQLite, whose one server owns its data directory.  Not
    re-entrant: each holder has a connection of its own."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK})
    finally:
        engine.dispose()


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    with startup_lock(url):
        command.upgrade(alembic_config(url), "head")
