"""Content-addressed blobs in an S3-compatible bucket (scaled mode's files).

``FLOWY_STORAGE_URL=s3://bucket[/prefix][?endpoint=http://host:9000&region=…]``; the
credentials are the usual AWS ones (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, a
profile, an instance role).  Links stay Flowy's own signed URLs: the API checks them and
serves the bytes from the bucket, so a link means the same in both modes and an upload's
link is checked against the caller's workspace when a run takes it as an input.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from flowy.errors import FlowyError

_KEY = re.compile(r"^[0-9a-f]{64}$")


class S3BlobStore:
    """A :class:`~flowy.storage.base.BlobStore` on S3: ``{prefix}ab/cd/abcd…``."""

    def __init__(self, url: str) -> None:
        import boto3
        from botocore.config import Config

        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise FlowyError(f"FLOWY_STORAGE_URL must look like s3://bucket[/prefix], not {url!r}")
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        unknown = set(query) - {"endpoint", "region"}
        if unknown:
            raise FlowyError(f"FLOWY_STORAGE_URL: unknown option(s) {', '.join(sorted(unknown))}")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.client: Any = boto3.client(
            "s3",
            endpoint_url=query.get("endpoint"),
            region_name=query.get("region"),
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
                max_pool_connections=32,
            ),
        )
        from botocore.exceptions import ClientError

        self._client_error = ClientError

    def _key(self, key: str) -> str:
        if not _KEY.match(key):
            raise FileNotFoundError(key)
        return f"{self.prefix}{key[:2]}/{key[2:4]}/{key}"

    def check(self) -> None:
        """Fail at start-up, not at the first file, when the bucket cannot be reached."""
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            raise FlowyError(
                f"FLOWY_STORAGE_URL: cannot reach the bucket {self.bucket!r}: {exc}"
            ) from None

    def put(self, data: bytes) -> str:
        key = hashlib.sha256(data).hexdigest()
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data)
        return key

    def get(self, key: str) -> bytes:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
        except self._client_error as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise FileNotFoundError(key) from None
            raise
        return bytes(answer["Body"].read())

    def local_path(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
