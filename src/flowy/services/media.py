"""Where a run's media inputs come from: data: URIs, Flowy's own file links, or the web
(behind the address guard)."""

from __future__ import annotations

from flowy.media.fetch import FetchPolicy, fetch_url, read_data_uri
from flowy.services.files import FileService


class RunMedia:
    """A :class:`~flowy.engine.spec.MediaSource` for one run of one workspace."""

    def __init__(self, files: FileService, workspace_id: str, policy: FetchPolicy) -> None:
        self.files = files
        self.workspace_id = workspace_id
        self.policy = policy

    def read(self, value: str) -> bytes:
        if value.startswith("data:"):
            return read_data_uri(value, max_bytes=self.policy.max_bytes).data
        # The run was accepted while the link was valid; it may expire while queued.
        own = self.files.read_link(value, self.workspace_id, allow_expired=True)
        if own is not None:
            return own
        return fetch_url(value, self.policy).data
