"""Schema migrations (Alembic), run at start-up by ``flowy serve`` and ``flowy migrate``."""

from __future__ import annotations

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


#: The PostgreSQL advisory lock held while migrating: the servers and workers of scaled
#: mode may start together, and one migrates while the others wait.
MIGRATION_LOCK = 0x466C6F7779  # "Flowy"


def upgrade(url: str) -> None:
    """Bring the database at ``url`` to the newest schema."""
    if not url.startswith("postgresql"):
        command.upgrade(alembic_config(url), "head")
        return
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK})
            try:
                command.upgrade(alembic_config(url), "head")
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK})
    finally:
        engine.dispose()
