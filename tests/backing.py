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


#: The credentials of the S3-compatible test server (it takes any).
S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "flowy-test", "AWS_SECRET_ACCESS_KEY": "flowy-test-secret"}


@contextmanager
def s3_bucket() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's) on a free port of 127.0.0.1 with a new
    bucket; the ``FLOWY_STORAGE_URL`` of that bucket, under a prefix.  The credentials
    are :data:`S3_CREDENTIALS`, set in this process's environment meanwhile."""
    boto3 = pytest.importorskip("boto3")
    server_mod = pytest.importorskip("moto.server")
    server = server_mod.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    saved = {k: os.environ.get(k) for k in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        bucket = f"flowy-test-{new_id()}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/files?endpoint={endpoint}&region=us-east-1"
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        server.stop()
