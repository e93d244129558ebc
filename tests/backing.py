"""The machine's own PostgreSQL and Redis, for the tests of scaled mode: a scratch
database and a queue name of the test's own, dropped afterwards.  Where no server
answers (a laptop with nothing installed), the tests that need one are skipped, saying
why."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import make_url

from flowy.ids import new_id

POSTGRES = os.environ.get("FLOWY_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("FLOWY_TEST_REDIS", "redis://127.0.0.1:6379/0")


@contextmanager
def scratch_postgres() -> Iterator[str]:
    """A new database on the server; its SQLAlchemy URL.  Dropped at the end."""
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(POSTGRES, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL at {POSTGRES}: {exc}")
    name = f"flowy_test_{new_id()}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        url = make_url(POSTGRES).set(drivername="postgresql+psycopg", database=name)
        yield url.render_as_string(hide_password=False)
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@contextmanager
def scratch_queue() -> Iterator[str]:
    """A queue name (and channel prefix) of its own on the Redis server; its keys are
    deleted at the end."""
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url(REDIS, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        pytest.skip(f"no Redis at {REDIS}: {exc}")
    name = f"flowy-test-{new_id()}"
    try:
        yield name
    finally:
        keys = [k for k in client.scan_iter(match=f"*{name}*")]
        if keys:
            client.delete(*keys)
        client.close()
