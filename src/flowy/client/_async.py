"""The asynchronous client, :class:`AsyncFlowy`: :class:`~flowy.client.Flowy` for asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Literal, overload

import httpx

from flowy.client import _http
from flowy.client._http import IdempotencyKey, RetryPolicy
from flowy.client._sync import outputs_of
from flowy.client.errors import (
    APIConnectionError,
    FlowyError,
    NotFoundError,
    PermissionDeniedError,
    RunTimeout,
)
from flowy.client.models import App, Outputs, Run, RunEvent, RunOutput, Upload

AsyncEventCallback = Callable[[RunEvent], object | Awaitable[object]]


class AsyncFlowy:
    """The asyncio twin of :class:`~flowy.client.Flowy`: the same resources and
    arguments, every call awaited, lists and event streams as async iterators.

    >>> async with AsyncFlowy() as flowy:
    ...     outputs = await flowy.run(app_id, {"node_1": Path("me.jpg")})
    ...     await outputs[0].asave("out/")
    """

    def __init__(
        self,
        api: str | None = None,
        key: str | None = None,
        *,
        timeout: float | httpx.Timeout | None = _http.DEFAULT_TIMEOUT,
        max_retries: int = _http.DEFAULT_MAX_RETRIES,
        http_client: httpx.AsyncClient | None = None,
    ) -> None:
        self.api, self._key = _http.resolve_config(api, key)
        self.timeout = _http.make_timeout(timeout)
        self.retry = RetryPolicy(max_retries=max_retries)
        self._own_http = http_client is None
        self._http = http_client or httpx.AsyncClient(
            timeout=self.timeout, headers={"User-Agent": _http.USER_AGENT}
        )
        self.apps = AsyncApps(self)
        self.runs = AsyncRuns(self)
        self.uploads = AsyncUploads(self)

    @property
    def max_retries(self) -> int:
        return self.retry.max_retries

    def __repr__(self) -> str:
        return f"AsyncFlowy(api={self.api!r})"

    async def close(self) -> None:
        if self._own_http:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncFlowy:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- HTTP ---------------------------------------------------------------------------

    async def _send(
        self,
        method: str,
        url: str,
        *,
        idempotent: bool,
        stream: bool = False,
        auth: bool = True,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {**(_http.auth_headers(self._key) if auth else {}), **kwargs.pop("headers", {})}
        follow = bool(kwargs.pop("follow_redirects", False))
        attempt = 0
        while True:
            request = self._http.build_request(method, url, headers=headers, **kwargs)
            try:
                res = await self._http.send(request, stream=stream, follow_redirects=follow)
            except httpx.TransportError as exc:
                if attempt < self.retry.max_retries and self.retry.exception_retryable(
                    exc, idempotent
                ):
                    await asyncio.sleep(self.retry.backoff(attempt))
                    attempt += 1
                    continue
                raise APIConnectionError(_http.connection_message(exc, url)) from exc
            if res.status_code < 400:
                return res
            try:
                await res.aread()
            except httpx.TransportError:
                pass
            finally:
                await res.aclose()
            if attempt < self.retry.max_retries and self.retry.status_retryable(
                res.status_code, idempotent
            ):
                delay = self.retry.delay_for(res, attempt)
                if delay is not None:
                    await asyncio.sleep(delay)
                    attempt += 1
                    continue
            raise _http.api_error(res)

    async def _request(
        self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any
    ) -> Any:
        if idempotent is None:
            idempotent = method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS")
        res = await self._send(method, self.api + path, idempotent=idempotent, **kwargs)
        return _http.json_body(res)

    async def _data(self, method: str, path: str, **kwargs: Any) -> Any:
        body = await self._request(method, path, **kwargs)
        return body.get("data") if isinstance(body, dict) else None

    async def _adownload_output(self, output: RunOutput) -> bytes:
        assert output.url is not None
        url = output.url
        if self._http.is_closed:
            return await _http.adownload(url, self.timeout)
        expired = output.expires_at is not None and output.expires_at <= datetime.now(UTC)
        if expired and output.run_id:
            url = await self._fresh_url(output) or url
        try:
            res = await self._send("GET", url, idempotent=True, auth=False, follow_redirects=True)
        except PermissionDeniedError:
            fresh = await self._fresh_url(output) if output.run_id else None
            if not fresh or fresh == url:
                raise
            res = await self._send("GET", fresh, idempotent=True, auth=False, follow_redirects=True)
        return res.content

    async def _fresh_url(self, output: RunOutput) -> str | None:
        assert output.run_id is not None
        current = (await self.runs.get(output.run_id)).output(output.node_id)
        return current.url if current else None

    async def _iter_events(
        self,
        run_id: str,
        after: int = 0,
        *,
        deadline: float | None = None,
        timeout: float | None = None,
    ) -> AsyncIterator[RunEvent]:
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
                res = await self._send(
                    "GET",
                    url,
                    idempotent=True,
                    stream=True,
                    headers=headers,
                    timeout=stream_timeout,
                )
                try:
                    decoder = _http.SSEDecoder()
                    async for line in res.aiter_lines():
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
                    await res.aclose()
            except httpx.TransportError as exc:
                cause = exc
            except APIConnectionError as exc:
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
            await asyncio.sleep(pause)

    # -- the one-call run ---------------------------------------------------------------

    async def prepare_inputs(self, app_id: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
        """See :meth:`flowy.client.Flowy.prepare_inputs`."""
        app: App | None = None
        out: dict[str, Any] = {}
        for node_id, value in inputs.items():
            kind = _http.classify_input(value)
            if kind == "maybe_path":
                app = app or await self.apps.get(app_id)
                spec = app.input(node_id)
                kind = "upload" if spec is not None and spec.is_media else "value"
            out[node_id] = (await self.uploads.create(value)).url if kind == "upload" else value
        return out

    @overload
    async def run(
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
        on_event: AsyncEventCallback | None = ...,
    ) -> Outputs: ...
    @overload
    async def run(
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
        on_event: AsyncEventCallback | None = ...,
    ) -> Run: ...
    @overload
    async def run(
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
        on_event: AsyncEventCallback | None = ...,
    ) -> Outputs | Run: ...
    async def run(
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
        on_event: AsyncEventCallback | None = None,
    ) -> Outputs | Run:
        """See :meth:`flowy.client.Flowy.run`."""
        prepared = await self.prepare_inputs(app_id, inputs or {})
        run = await self.runs.create(
            app_id,
            prepared,
            timeout_seconds=timeout_seconds,
            webhook=webhook,
            webhook_events=webhook_events,
            idempotency_key=idempotency_key,
        )
        if not wait:
            return run
        return outputs_of(await self.runs.wait(run.id, timeout=timeout, on_event=on_event))


class AsyncApps:
    def __init__(self, client: AsyncFlowy) -> None:
        self._client = client

    async def list(self) -> list[App]:
        return [App.from_json(a) for a in await self._client._data("GET", "/apps")]

    async def get(self, app_id: str) -> App:
        return App.from_json(await self._client._data("GET", f"/apps/{app_id}"))

    async def create(
        self,
        workflow: Mapping[str, Any],
        *,
        title: str | None = None,
        description: str | None = None,
        published: bool | None = None,
    ) -> App:
        body: dict[str, Any] = {"workflow": dict(workflow)}
        for name, value in (("title", title), ("description", description)):
            if value is not None:
                body[name] = value
        if published is not None:
            body["published"] = published
        return App.from_json(await self._client._data("POST", "/apps", json=body))


class AsyncRuns:
    def __init__(self, client: AsyncFlowy) -> None:
        self._client = client

    async def create(
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
        """See :meth:`flowy.client.Flowy.runs.create`: the same arguments."""
        headers = {**_http.idempotency_header(idempotency_key), **_http.prefer_wait(wait)}
        body = _http.run_body(
            inputs, timeout_seconds=timeout_seconds, webhook=webhook, webhook_events=webhook_events
        )
        timeout = None
        if wait is not None and self._client.timeout.read is not None:
            timeout = httpx.Timeout(
                self._client.timeout.connect, read=self._client.timeout.read + min(wait, 60)
            )
        data = await self._client._data(
            "POST",
            f"/apps/{app_id}/runs",
            json=body,
            headers=headers,
            idempotent=idempotency_key is not False,
            **({"timeout": timeout} if timeout else {}),
        )
        return Run.from_json(data, client=self._client)

    async def get(self, run_id: str) -> Run:
        data = await self._client._data("GET", f"/runs/{run_id}")
        return Run.from_json(data, client=self._client)

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
    ) -> AsyncIterator[Run]:
        """``async for run in client.runs.list(...)``: pages fetched as you iterate."""
        params = _http.list_params(
            app_id=app_id,
            status=status,
            version_id=version_id,
            created_after=created_after,
            created_before=created_before,
            page_size=page_size if limit is None else max(1, min(page_size, limit)),
        )
        return self._pages(params, limit)

    async def _pages(self, params: dict[str, Any], limit: int | None) -> AsyncIterator[Run]:
        yielded = 0
        cursor: str | None = None
        while limit is None or yielded < limit:
            page = await self._client._request(
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

    async def cancel(self, run_id: str) -> Run:
        data = await self._client._data("POST", f"/runs/{run_id}/cancel", idempotent=True)
        return Run.from_json(data, client=self._client)

    def events(self, run_id: str, after: int = 0) -> AsyncIterator[RunEvent]:
        """``async for event in client.runs.events(run_id)``; resumes after a cut."""
        return self._client._iter_events(run_id, after)

    async def wait(
        self,
        run_id: str,
        timeout: float | None = None,
        *,
        on_event: AsyncEventCallback | None = None,
        poll_interval: float | None = None,
    ) -> Run:
        """See :meth:`flowy.client.Flowy.runs.wait`; ``on_event`` may be a coroutine
        function."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        run = await self.get(run_id)
        if run.done and on_event is None:
            return run
        if poll_interval is None:
            try:
                async for event in self._client._iter_events(
                    run_id, 0, deadline=deadline, timeout=timeout
                ):
                    if on_event is not None:
                        result = on_event(event)
                        if inspect.isawaitable(result):
                            await result
                return await self.get(run_id)
            except RunTimeout:
                status = run.status
                with contextlib.suppress(FlowyError):
                    status = (await self.get(run_id)).status
                raise RunTimeout(run_id, timeout, status=status) from None
            except (APIConnectionError, NotFoundError):
                pass
        if run.done:
            return run
        interval = poll_interval or 0.25
        while True:
            run = await self.get(run_id)
            if run.done:
                return run
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise RunTimeout(run_id, timeout, status=run.status)
            await asyncio.sleep(interval if left is None else min(interval, left))
            interval = min(interval * 1.5, 2.0)


class AsyncUploads:
    def __init__(self, client: AsyncFlowy) -> None:
        self._client = client

    async def create(
        self,
        file: Any,
        *,
        filename: str | None = None,
        content_type: str | None = None,
    ) -> Upload:
        """Upload a path (str or ``Path``), bytes, or a file opened ``'rb'``."""
        name, data, ctype = await asyncio.to_thread(
            _http.upload_parts, file, filename, content_type
        )
        body = await self._client._data(
            "POST", "/uploads", files={"file": (name, data, ctype)}, idempotent=False
        )
        return Upload.from_json(body)

    async def get(self, upload_id: str) -> Upload:
        return Upload.from_json(await self._client._data("GET", f"/uploads/{upload_id}"))
