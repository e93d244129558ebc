"""The synchronous client, :class:`Flowy`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from flowy.client import _http
from flowy.client._http import IdempotencyKey, RetryPolicy
from flowy.client.errors import (
    APIConnectionError,
    FlowyError,
    NotFoundError,
    PermissionDeniedError,
    RunCanceled,
    RunFailed,
    RunTimeout,
)
from flowy.client.models import App, Outputs, Run, RunEvent, RunOutput, Upload

EventCallback = Callable[[RunEvent], object]


class Flowy:
    """A client of one Flowy API.

    ``api`` and ``key`` default to the ``FLOWY_API`` and ``FLOWY_KEY`` environment
    variables (``api`` then to ``http://127.0.0.1:8000/v1``).  ``timeout`` is the limit
    of one HTTP request, in seconds; ``max_retries`` how often a request that may be
    repeated is retried (see :class:`RetryPolicy`).  Use it as a context manager, or
    call :meth:`close`.

    >>> with Flowy() as flowy:
    ...     outputs = flowy.run(app_id, {"node_1": Path("me.jpg")})
    ...     outputs[0].save("out/")
    """

    def __init__(
        self,
        api: str | None = None,
        key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = _http.DEFAULT_TIMEOUT,
        max_retries: int = _http.DEFAULT_MAX_RETRIES,
        http_client: httpx.Client | None = None,
    ) -> None:
        self.api, self._key = _http.resolve_config(api, key)
        self.timeout = _http.make_timeout(timeout)
        self.retry = RetryPolicy(max_retries=max_retries)
        self._own_http = http_client is None
        self._http = http_client or httpx.Client(
            timeout=self.timeout, headers={"User-Agent": _http.USER_AGENT}
        )
        self.apps = Apps(self)
        self.runs = Runs(self)
        self.uploads = Uploads(self)

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return f"Flowy(api={self.api!r})"

    def close(self) -> None:
        """Close the connections (a client given as ``http_client`` is left open)."""
        if self._own_http:
            self._http.close()

    def __enter__(self) -> Flowy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        stream: bool = False,
        auth: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send with retries; answer a successful response or raise the APIError."""
        headers = {**(_http.auth_headers(self._key) if auth else {}), **kwargs.pop("headers", {})}
        follow = bool(kwargs.pop("follow_redirects", False))
        attempt = 0
        while True:
            request = self._http.build_request(method, url, headers=headers, **kwargs)
            try:
                res = self._http.send(request, stream=stream, follow_redirects=follow)
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and self.retry.exception_retryable(
                    exc, idempotent
                ):
                    time.sleep(self.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise APIConnectionError(_http.connection_message(exc, url)) from exc
            if res.status_code < 400:
                return res
            try:
                res.read()
            except httpx.TransportError:
                pass
            finally:
                res.close()
            if attempt < self.retry.max_retries and self.retry.status_retryable(
                res.status_code, idempotent
            ):
                delay = self.retry.delay_for(res, attempt)
                if delay is not None:
                    time.sleep(delay)
                    attempt += 1
                    continue
            raise _http.api_error(res)

    def _request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> Any:
        """An API call; answers the JSON body (``{"data": ...}``)."""
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        res = self._send(method, self.api + path, idempotent=idempotent, **kwargs)
        return _http.json_body(res)

    def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        body = self._request(method, path, **kwargs)
        return body.get("data") if isinstance(body, dict) else None

    def _download_output(self, output: RunOutput) -> bytes:
        """Download a file output; an expired link is signed afresh by reading the run."""
        assert output.url is not None
        url = output.url
        if self._http.is_closed:  # outputs outlive their client: a connection of their own
            return _http.download(url, self.timeout)
        expired = output.expires_at is not None and output.expires_at <= datetime.now(UTC)
        if expired and output.run_id:
            url = self._fresh_url(output) or url
        try:
            res = self._send("GET", url, idempotent=True, auth=False, follow_redirects=True)
        except PermissionDeniedError:
            fresh = self._fresh_url(output) if output.run_id else None
            if not fresh or fresh == url:
                raise
            res = self._send("GET", fresh, idempotent=True, auth=False, follow_redirects=True)
        return res.content

    def _fresh_url(self, output: RunOutput) -> str | None:
        assert output.run_id is not None
        current = self.runs.get(output.run_id).output(output.node_id)
        return current.url if current else None

    def _iter_events(
        self,
        run_id: str,
        after: int = 0,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> Iterator[RunEvent]:
        """The run's events after ``after``, reconnecting with ``Last-Event-ID`` when the
        stream is cut; ends after the terminal event.  Past ``deadline`` (monotonic) it
        raises RunTimeout."""
        url = f"{self.api}/runs/{run_id}/events"
        last = after
        failures = 0
        retry_ms: int | None = None
        while True:
            headers = {"Accept": "text/event-stream", "Cache-Control": "no-store"}
            if last:
                headers["Last-Event-ID"] = str(last)
            read = _http.STREAM_READ_TIMEOUT
            if deadline is not None:
                read = max(0.05, min(read, deadline - time.monotonic()))
            stream_timeout = httpx.Timeout(self.timeout.connect or 10.0, read=read)
            cause: Exception | None = None
            try:
                res = self._send(
                    "GET",
                    url,
                    idempotent=True,
                    stream=True,
                    headers=headers,
                    timeout=stream_timeout,
                )
                try:
                    decoder = _http.SSEDecoder()
                    for line in res.iter_lines():
                        if deadline is not None and time.monotonic() >= deadline:
                            raise RunTimeout(run_id, timeout)
                        sse = decoder.feed(line)
                        retry_ms = decoder.retry_ms or retry_ms
                        payload = _http.decode_event(sse) if sse else None
                        if payload is None:
                            continue
                        event = RunEvent.from_json(payload)
                        if event.seq <= last:
                            continue
                        last, failures = event.seq, 0
                        yield event
                        if event.terminal:
                            return
                finally:
                    res.close()
            except httpx.TransportError as exc:  # cut mid-stream, or a read timed out
                cause = exc
            except APIConnectionError as exc:  # could not even open it, after retries
                cause = exc
            if deadline is not None and time.monotonic() >= deadline:
                raise RunTimeout(run_id, timeout)
            failures += 1
            if failures > self.retry.max_retries:
                raise APIConnectionError(
                    f"the event stream of run {run_id} ended before the run did"
                    + (f": {cause}" if cause else "")
                ) from cause
            pause = retry_ms / 1000 if retry_ms is not None else self.retry.backoff(failures - 1)
            if deadline is not None:
                pause = min(pause, max(0.0, deadline - time.monotonic()))
            time.sleep(pause)

    # -- the one-call run ---------------------------------------------------------------

    def prepare_inputs(self, app_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """Inputs with local files uploaded: a ``Path``, an open binary file or bytes is
        uploaded; a string naming an existing file is uploaded when the app's input takes
        a file URL (``image_url``, ``file_url``...).  URLs and plain values pass as they
        are."""
        app: App | None = None
        out: dict[str, Any] = {}
        for node_id, value in inputs.items():
            kind = _http.classify_input(value)
            if kind == "maybe_path":
                app = app or self.apps.get(app_id)
                spec = app.input(node_id)
                kind = "upload" if spec is not None and spec.is_media else "value"
            out[node_id] = self.uploads.create(value).url if kind == "upload" else value
        return out

    @overload
    def run(
        self,
        app_id: str,
        inputs: Mapping[str, Any] | None = ...,
        *,
        wait: Literal[True] = ...,
        timeout: float | None = ...,
        timeout_seconds: float | None = ...,
        webhook: str | None = ...,
        webhook_events: list[str] | tuple[str, ...] | None = ...,
        idempotency_key: IdempotencyKey = ...,
        on_event: EventCallback | None = ...,
    ) -> Outputs: ...
    @overload
    def run(
        self,
        app_id: str,
        inputs: Mapping[str, Any] | None = ...,
        *,
        wait: Literal[False],
        timeout: float | None = ...,
        timeout_seconds: float | None = ...,
        webhook: str | None = ...,
        webhook_events: list[str] | tuple[str, ...] | None = ...,
        idempotency_key: IdempotencyKey = ...,
        on_event: EventCallback | None = ...,
    ) -> Run: ...
    @overload
    def run(
        self,
        app_id: str,
        inputs: Mapping[str, Any] | None = ...,
        *,
        wait: bool = ...,
        timeout: float | None = ...,
        timeout_seconds: float | None = ...,
        webhook: str | None = ...,
        webhook_events: list[str] | tuple[str, ...] | None = ...,
        idempotency_key: IdempotencyKey = ...,
        on_event: EventCallback | None = ...,
    ) -> Outputs | Run: ...
    def run(
        self,
        app_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        timeout: float | None = None,
        timeout_seconds: float | None = None,
        webhook: str | None = None,
        webhook_events: list[str] | tuple[str, ...] | None = None,
        idempotency_key: IdempotencyKey = None,
        on_event: EventCallback | None = None,
    ) -> Outputs | Run:
        """Run an app and answer its outputs.

        Local files among ``inputs`` are uploaded first (see :meth:`prepare_inputs`).
        With ``wait=False`` answer the queued :class:`Run` at once.  Otherwise wait (at
        most ``timeout`` seconds, then :class:`RunTimeout`) and answer the
        :class:`Outputs`; a failed run raises :class:`RunFailed` (``RunCanceled`` if it
        was canceled).  ``timeout_seconds`` is the server-side limit of the run itself.
        """
        prepared = self.prepare_inputs(app_id, inputs or {})
        run = self.runs.create(
            app_id,
            prepared,
            timeout_seconds=timeout_seconds,
            webhook=webhook,
            webhook_events=webhook_events,
            idempotency_key=idempotency_key,
        )
        if not wait:
            return run
        return outputs_of(self.runs.wait(run.id, timeout=timeout, on_event=on_event))


def outputs_of(run: Run) -> Outputs:
    """The outputs of a completed run; RunFailed / RunCanceled for the others."""
    if run.status == "failed":
        raise RunFailed(run.id, run.error, run.error_node, run=run)
    if run.status == "canceled":
        raise RunCanceled(run.id, run.error, run=run)
    if run.status != "completed":
        raise FlowyError(f"run {run.id} is {run.status}, not finished")
    return Outputs(run)


class Apps:
    """``client.apps``: the workspace's apps."""

    def __init__(self, client: Flowy) -> None:
        self._client = client

    def list(self) -> list[App]:
        return [App.from_json(a) for a in self._client._data("GET", "/apps")]

    def get(self, app_id: str) -> App:
        """The app with its inputs, outputs, version and workflow."""
        return App.from_json(self._client._data("GET", f"/apps/{app_id}"))

    def create(
        self,
        workflow: Mapping[str, Any],
        *,
        title: str | None = None,
        description: str | None = None,
        published: bool | None = None,
    ) -> App:
        """Create an app from a workflow (``{"nodes": [...]}``); drafts unless published."""
        body: dict[str, Any] = {"workflow": dict(workflow)}
        for name, value in (("title", title), ("description", description)):
            if value is not None:
                body[name] = value
        if published is not None:
            body["published"] = published
        return App.from_json(self._client._data("POST", "/apps", json=body))


class Runs:
    """``client.runs``: start, read, list, cancel, follow and wait for runs."""

    def __init__(self, client: Flowy) -> None:
        self._client = client

    def create(
        self,
        app_id: str,
        inputs: Mapping[str, Any] | None = None,
        *,
        webhook: str | None = None,
        webhook_events: list[str] | tuple[str, ...] | None = None,
        idempotency_key: IdempotencyKey = None,
        timeout_seconds: float | None = None,
        wait: float | None = None,
    ) -> Run:
        """Start a run of ``app_id`` with ``inputs`` (nodeId -> value, sent as given).

        ``idempotency_key``: None (the default) sends a fresh uuid4 as ``Idempotency-Key``,
        so a retried request cannot start the run twice and is retried safely; a string
        sends that key (reuse it to retry yourself); ``False`` sends none, and then the
        request is retried only when it never reached the server.
        ``webhook`` / ``webhook_events`` ask for callbacks (``webhook``,
        ``webhookEventsFilter``); they are sent only when given.  ``timeout_seconds``
        limits the run on the server.  ``wait`` (seconds, ≤ 60) asks the server to answer
        once the run has ended or that time has passed (``Prefer: wait=N``).
        """
        headers = {**_http.idempotency_header(idempotency_key), **_http.prefer_wait(wait)}
        body = _http.run_body(
            inputs, timeout_seconds=timeout_seconds, webhook=webhook, webhook_events=webhook_events
        )
        timeout = None
        if wait is not None and self._client.timeout.read is not None:
            timeout = httpx.Timeout(
                self._client.timeout.connect, read=self._client.timeout.read + min(wait, 60)
            )
        data = self._client._data(
            "POST",
            f"/apps/{app_id}/runs",
            json=body,
            headers=headers,
            idempotent=idempotency_key is not False,
            **({"timeout": timeout} if timeout else {}),
        )
        return Run.from_json(data, client=self._client)

    def get(self, run_id: str) -> Run:
        """The run, with its node states and output links signed afresh."""
        return Run.from_json(self._client._data("GET", f"/runs/{run_id}"), client=self._client)

    def list(
        self,
        app_id: str | None = None,
        status: str | None = None,
        *,
        version_id: str | None = None,
        created_after: datetime | str | None = None,
        created_before: datetime | str | None = None,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[Run]:
        """Runs, newest first, fetched a page (``page_size`` ≤ 100) at a time as you
        iterate; ``limit`` caps how many are yielded in all (None: every one)."""
        params = _http.list_params(
            app_id=app_id,
            status=status,
            version_id=version_id,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size if limit is None else max(1, min(page_size, limit)),
        )
        return self._pages(params, limit)

    def _pages(self, params: dict[str, Any], limit: int | None) -> Iterator[Run]:
        yielded = 0
        cursor: str | None = None
        while limit is None or yielded < limit:
            page = self._client._request(
                "GET", "/runs", params={**params, **({"cursor": cursor} if cursor else {})}
            )
            for item in page.get("data") or ():
                if limit is not None and yielded >= limit:
                    return
                yield Run.from_json(item, client=self._client)
                yielded += 1
            cursor = page.get("nextCursor")
            if not cursor:
                return

    def cancel(self, run_id: str) -> Run:
        """Cancel the run (idempotent): a queued run ends at once, a running one soon."""
        data = self._client._data("POST", f"/runs/{run_id}/cancel", idempotent=True)
        return Run.from_json(data, client=self._client)

    def events(self, run_id: str, after: int = 0) -> Iterator[RunEvent]:
        """The run's events after sequence number ``after``, live, until the run ends.

        A dropped connection is resumed with ``Last-Event-ID``: no event is lost or
        repeated.  Raises APIConnectionError when it cannot be resumed."""
        return self._client._iter_events(run_id, after)

    def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        *,
        on_event: EventCallback | None = None,
        poll_interval: float | None = None,
    ) -> Run:
        """Wait until the run has ended and answer it, whatever its status.

        Follows the event stream (``on_event`` sees each event, from the first); with
        ``poll_interval``, or when the stream is not available, polls with backoff.
        Raises :class:`RunTimeout` (carrying the run id) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout if timeout is not None else None
        run = self.get(run_id)
        if run.done and on_event is None:
            return run
        if poll_interval is None:
            try:
                for event in self._client._iter_events(
                    run_id, 0, deadline=deadline, timeout=timeout
                ):
                    if on_event is not None:
                        on_event(event)
                return self.get(run_id)
            except RunTimeout:
                raise RunTimeout(run_id, timeout, status=self._status(run_id, run)) from None
            except (APIConnectionError, NotFoundError):
                pass  # no stream here: poll
        if run.done:
            return run
        return self._poll(run_id, deadline, timeout, poll_interval or 0.25)

    def _status(self, run_id: str, fallback: Run) -> str:
        try:
            return self.get(run_id).status
        except FlowyError:
            return fallback.status

    def _poll(
        self, run_id: str, deadline: float | None, timeout: float | None, interval: float
    ) -> Run:
        while True:
            run = self.get(run_id)
            if run.done:
                return run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunTimeout(run_id, timeout, status=run.status)
            time.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 1.5, 2.0)


class Uploads:
    """``client.uploads``: store a file and get a link any run input accepts."""

    def __init__(self, client: Flowy) -> None:
        self._client = client

    def create(
        self,
        file: Any,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Upload:
        """Upload ``file``: a path (str or ``Path``), bytes, or a file opened ``'rb'``."""
        name, data, ctype = _http.upload_parts(file, filename, content_type)
        body = self._client._data(
            "POST", "/uploads", files={"file": (name, data, ctype)}, idempotent=False
        )
        return Upload.from_json(body)

    def get(self, upload_id: str) -> Upload:
        """An upload, with a freshly signed link."""
        return Upload.from_json(self._client._data("GET", f"/uploads/{upload_id}"))
