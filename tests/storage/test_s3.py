"""Files in an S3-compatible bucket, on a real S3 HTTP server (moto's, started here)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from flowy.errors import FlowyError
from flowy.storage.s3 import S3BlobStore
from tests.backing import s3_bucket


@pytest.fixture(scope="module")
def storage_url() -> Iterator[str]:
    with s3_bucket() as url:
        yield url


def test_blobs_are_kept_by_content_under_the_prefix(storage_url: str) -> None:
    store = S3BlobStore(storage_url)
    store.check()
    key = store.put(b"hello")
    assert key == hashlib.sha256(b"hello").hexdigest()
    assert store.put(b"hello") == key  # once, however often it is put
    assert store.get(key) == b"hello"
    assert store.local_path(key) is None  # served through the API
    listed = store.client.list_objects_v2(Bucket=store.bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"files/{key[:2]}/{key[2:4]}/{key}"]
    store.delete(key)
    with pytest.raises(FileNotFoundError):
        store.get(key)
    with pytest.raises(FileNotFoundError):
        store.get("../../etc/passwd")  # not a key: never reaches the bucket


def test_a_missing_bucket_is_told_at_start(storage_url: str) -> None:
    other = storage_url.replace("s3://flowy-test-", "s3://flowy-missing-", 1)
    with pytest.raises(
        FlowyError, match="FLOWY_STORAGE_URL: cannot reach the bucket 'flowy-missing-"
    ):
        S3BlobStore(other).check()


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("https://bucket/x", "must look like s3://bucket"),
        ("s3:///prefix", "must look like s3://bucket"),
        ("s3://bucket?endpont=http://x", "unknown option\\(s\\) endpont"),
    ],
)
def test_a_bad_storage_url_is_named(url: str, message: str) -> None:
    with pytest.raises(FlowyError, match=message):
        S3BlobStore(url)
