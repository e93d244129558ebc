"""Stored files (assets): uploads and run outputs, and the signed links to them.

A link is ``{base}/v1/files/{assetId}/{filename}?expires=…&signature=…``.  The signature
covers method, path and expiry, so the link itself is the credential; it is signed afresh
each time a run is read.  A link to an upload is also a valid run input: it is resolved
here, inside the workspace, without an HTTP round trip (and so without the address guard
refusing Flowy's own loopback address).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from urllib.parse import parse_qs, quote, urlsplit

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.orm import Session

from flowy.db.models import Asset, utcnow
from flowy.db.prepared import Prepared
from flowy.db.session import Database
from flowy.errors import FlowyError, Forbidden, Gone, MediaError, NotFound
from flowy.ids import is_id, new_id
from flowy.media.sniff import sniff_content_type
from flowy.storage.base import BlobStore
from flowy.storage.signing import UrlSigner

logger = logging.getLogger(__name__)

FILES_PREFIX = "/v1/files/"

_ASSET_COLUMNS = [c.key for c in Asset.__table__.c]
_INSERT_ASSETS = Prepared(insert(cast(Table, Asset.__table__)), _ASSET_COLUMNS)


def _first(query: dict[str, list[str]], name: str) -> str | None:
    values = query.get(name)
    return values[0] if values else None


def _expired(asset: Asset) -> bool:
    return asset.expires_at is not None and asset.expires_at <= utcnow()


@dataclass(frozen=True)
class SignedLink:
    url: str
    expires_at: datetime


class FileService:
    def __init__(
        self,
        db: Database,
        blobs: BlobStore,
        signer: UrlSigner,
        base_url: str,
        ttl_seconds: int,
        retention: Mapping[str, int] | None = None,
    ) -> None:
        self.db = db
        self.blobs = blobs
        self.signer = signer
        self.base_url = base_url.rstrip("/")
        self.ttl = ttl_seconds
        #: How long files of each kind ("upload", "output") are kept, in seconds.
        self.retention = dict(retention or {})

    def store(
        self,
        workspace_id: str,
        data: bytes,
        *,
        filename: str,
        kind: str,
        content_type: str | None = None,
        run_id: str | None = None,
    ) -> Asset:
        """Keep ``data`` (content-addressed) and record it as an asset of the workspace."""
        asset = self.keep(
            workspace_id,
            data,
            filename=filename,
            kind=kind,
            content_type=content_type,
            run_id=run_id,
        )
        with self.db.write() as s:
            self.record(s, [asset])
        return asset

    def keep(
        self,
        workspace_id: str,
        data: bytes,
        *,
        filename: str,
        kind: str,
        content_type: str | None = None,
        run_id: str | None = None,
    ) -> Asset:
        """Keep ``data`` in the blob store and answer its asset, with its id, for the
        caller to add in a write transaction of its own (a run's terminal one)."""
        key = self.blobs.put(data)
        keep = self.retention.get(kind)
        now = utcnow()
        return Asset(
            id=new_id(),
            created_at=now,
            expires_at=now + timedelta(seconds=keep) if keep else None,
            workspace_id=workspace_id,
            kind=kind,
            key=key,
            size=len(data),
            content_type=content_type or sniff_content_type(data),
            filename=filename,
            run_id=run_id,
        )

    @staticmethod
    def record(s: Session, assets: Sequence[Asset]) -> None:
        """Add assets :meth:`keep` answered, in the caller's write transaction (one
        statement for all, without the ORM's unit of work)."""
        if assets:
            _INSERT_ASSETS.execute_many(
                s, [{c: getattr(a, c) for c in _ASSET_COLUMNS} for a in assets]
            )

    def link(self, asset_id: str, filename: str) -> SignedLink:
        path = f"{FILES_PREFIX}{asset_id}/{quote(filename)}"
        url, expires = self.signer.signed_url(self.base_url, path, self.ttl)
        return SignedLink(url, expires)

    def open(
        self, asset_id: str, filename: str, expires: str | None, signature: str | None
    ) -> tuple[Asset, bytes]:
        """The asset behind a signed link; Forbidden for any bad or expired link."""
        path = f"{FILES_PREFIX}{asset_id}/{quote(filename)}"
        self.signer.verify("GET", path, expires, signature)
        asset = self._asset(asset_id)
        # The link is genuine, so the file existed: it was removed by retention.
        if asset is None or asset.filename != filename or _expired(asset):
            raise Gone("this file was deleted after its retention period")
        try:
            return asset, self.blobs.get(asset.key)
        except FileNotFoundError:
            raise Gone("this file was deleted after its retention period") from None

    def purge_expired(self, batch: int = 500) -> int:
        """Delete files past their retention: the rows, and each blob no file still uses."""
        now = utcnow()
        with self.db.write() as s:
            rows = s.execute(
                select(Asset.id, Asset.key)
                .where(Asset.expires_at.is_not(None), Asset.expires_at < now)
                .limit(batch)
            ).all()
            if not rows:
                return 0
            s.execute(delete(Asset).where(Asset.id.in_([r.id for r in rows])))
            keys = {r.key for r in rows}
            still_used = set(s.scalars(select(Asset.key).where(Asset.key.in_(keys))))
        for key in keys - still_used:
            self.blobs.delete(key)
        logger.info("retention: deleted %d file(s)", len(rows))
        return len(rows)

    def get(self, workspace_id: str, asset_id: str) -> Asset:
        """An asset of the workspace; NotFound for an unknown id or another workspace's."""
        asset = self._asset(asset_id)
        if asset is None or asset.workspace_id != workspace_id:
            raise NotFound(f"file {asset_id} not found")
        return asset

    def _asset(self, asset_id: str) -> Asset | None:
        if not is_id(asset_id):
            return None
        with self.db.read() as s:
            return s.get(Asset, asset_id)

    def _own_path(self, url: str) -> tuple[str, str, dict[str, list[str]]] | None:
        """(asset id, filename, query) when ``url`` is one of Flowy's file links."""
        if not url.startswith(self.base_url + FILES_PREFIX):
            return None
        parts = urlsplit(url)
        rest = parts.path[len(FILES_PREFIX) :]
        asset_id, _, filename = rest.partition("/")
        return asset_id, filename, parse_qs(parts.query)

    def check_link(self, url: str, workspace_id: str) -> str | None:
        """For run creation: a problem with a Flowy file link, or None if fine or foreign."""
        try:
            self.read_link(url, workspace_id, allow_expired=False)
        except FlowyError as exc:
            return exc.message
        return None

    def read_link(self, url: str, workspace_id: str, *, allow_expired: bool) -> bytes | None:
        """The bytes behind a Flowy file link of this workspace; None if not a Flowy link.

        Raises MediaError for a bad or expired link or another workspace's file.
        """
        own = self._own_path(url)
        if own is None:
            return None
        asset_id, filename, query = own
        try:
            self.signer.verify(
                "GET",
                FILES_PREFIX + asset_id + "/" + filename,
                _first(query, "expires"),
                _first(query, "signature"),
                allow_expired=allow_expired,
            )
        except Forbidden:
            raise MediaError(
                "the file link is invalid or has expired; upload the file again"
            ) from None
        asset = self._asset(asset_id)
        if asset is None or asset.workspace_id != workspace_id or _expired(asset):
            raise MediaError(
                "the file link points to a file that does not exist (or was "
                "deleted after its retention period)"
            )
        try:
            return self.blobs.get(asset.key)
        except FileNotFoundError:
            raise MediaError("the linked file is no longer stored") from None
