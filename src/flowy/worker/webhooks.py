"""The webhook dispatcher: a background thread that sends due deliveries.

A delivery is claimed with a compare-and-set (``pending`` and due -> ``sending`` with a
lease), so two dispatchers never send one attempt twice; every later write is fenced by
that lease.  Each attempt is one POST through the outbound address guard with a short
time limit and no redirects.  2xx: delivered.  ``410 Gone``: the receiver wants no more,
its endpoint is disabled.  Anything else (another status, refused address, timeout,
connection error): retried on the schedule, then failed.  Every attempt is logged.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select, update

from flowy import __version__
from flowy.db.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint, WebhookMessage, utcnow
from flowy.db.session import Database
from flowy.errors import FlowyError, MediaError
from flowy.ids import new_id
from flowy.media.fetch import FetchPolicy, request
from flowy.services.runs import RunService
from flowy.services.webhooks import (
    DELIVERIES_QUEUED,
    DeliveryStatus,
    WebhookService,
    disable_endpoint,
    retry_delay,
    run_from_snapshot,
    signature_header,
)
from flowy.settings import Settings

logger = logging.getLogger(__name__)

#: Largest answer body read from a receiver (the start of it is kept in the log).
MAX_ANSWER_BYTES = 1 << 20
KEPT_ANSWER_CHARS = 500
#: A claim outlives the attempt's time limit by this much before another may take it.
LEASE_SLACK = timedelta(seconds=30)


def safe_url(url: str) -> str:
    """``url`` without userinfo, query or fragment (they may carry credentials)."""
    try:
        p = urlsplit(url)
    except ValueError:
        return "<invalid URL>"
    return urlunsplit((p.scheme, p.netloc.rpartition("@")[2], p.path, "", ""))[:300]


def _describe(exc: MediaError) -> str:
    msg = str(exc)
    if "too many redirects" in msg:
        return "the endpoint answered with a redirect (webhooks do not follow redirects)"
    return msg.replace("refused to fetch", "refused to send to").replace(
        "failed to fetch", "failed to send to"
    )


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to (``timestamp`` is None when no POST was made)."""

    timestamp: int | None
    url: str
    status_code: int | None = None
    error: str | None = None
    response: str | None = None
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


class WebhookDispatcher:
    def __init__(
        self, settings: Settings, db: Database, webhooks: WebhookService, runs: RunService
    ) -> None:
        self.settings = settings
        self.db = db
        self.webhooks = webhooks
        self.runs = runs
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        w = settings.webhooks
        self.policy = FetchPolicy(
            allow_private=settings.private_urls_allowed(),
            max_bytes=MAX_ANSWER_BYTES,
            timeout=w.timeout_seconds,
            max_redirects=0,
        )
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._inflight = 0
        self._pool: ThreadPoolExecutor | None = None
        self._thread: threading.Thread | None = None
        # Deliveries are written by run transitions; the commit of one that queued any
        # wakes us (not every commit: most runs have no webhook).
        db.flag_hooks.setdefault(DELIVERIES_QUEUED, []).append(self._wake.set)
        webhooks.wake = self._wake.set

    # -- life cycle

    def start(self) -> None:
        if not self.settings.webhooks.dispatch or self._thread is not None:
            return
        if not self.settings.scaled:  # scaled out, other servers' attempts are in flight
            self.recover()
        self._pool = ThreadPoolExecutor(
            max_workers=self.settings.webhooks.concurrency, thread_name_prefix="flowy-webhook"
        )
        self._thread = threading.Thread(target=self._loop, name="flowy-webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            # Attempts in flight finish (each is bounded by the timeout) or their lease
            # runs out and the next start sends them again.
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    def recover(self) -> None:
        """Embedded mode owns its data directory alone (a lock file ensures it), so a
        delivery still ``sending`` at start-up was cut off with its process: send again."""
        with self.db.write() as s:
            s.execute(
                update(WebhookDelivery)
                .where(WebhookDelivery.status == DeliveryStatus.SENDING)
                .values(
                    status=DeliveryStatus.PENDING,
                    lease_owner=None,
                    lease_expires_at=None,
                    next_attempt_at=utcnow(),
                )
                .execution_options(synchronize_session=False)
            )

    def _loop(self) -> None:
        poll = self.settings.webhooks.poll_seconds
        while not self._stop.is_set():
            try:
                wait = self.tick()
            except Exception:
                logger.exception("webhook dispatcher failed; trying again")
                wait = poll
            self._wake.wait(wait)
            self._wake.clear()

    # -- claiming

    def tick(self) -> float:
        """Claim and start what is due; answers how long to sleep."""
        poll = self.settings.webhooks.poll_seconds
        now = utcnow()
        self.release_expired(now)
        with self._lock:
            free = self.settings.webhooks.concurrency - self._inflight
        if free <= 0:
            return poll  # a finishing attempt wakes us
        with self.db.read() as s:
            due = list(
                s.scalars(
                    select(WebhookDelivery.id)
                    .where(
                        WebhookDelivery.status == DeliveryStatus.PENDING,
                        WebhookDelivery.next_attempt_at <= now,
                    )
                    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
                    .limit(free)
                )
            )
        for delivery_id in due:
            token = self.claim(delivery_id)
            if token is not None:
                with self._lock:
                    self._inflight += 1
                assert self._pool is not None
                self._pool.submit(self._run_one, delivery_id, token)
        if len(due) == free:
            return 0.0 if free else poll
        with self.db.read() as s:
            nxt = s.scalar(
                select(func.min(WebhookDelivery.next_attempt_at)).where(
                    WebhookDelivery.status == DeliveryStatus.PENDING
                )
            )
        if nxt is None:
            return poll
        return max(0.005, min(poll, (nxt - utcnow()).total_seconds()))

    def release_expired(self, now: datetime) -> None:
        """Hand back the claims of dispatchers that died mid-attempt (read first, so an
        idle dispatcher never takes the write lock)."""
        expired = (
            WebhookDelivery.status == DeliveryStatus.SENDING,
            WebhookDelivery.lease_expires_at < now,
        )
        with self.db.read() as s:
            if s.scalar(select(WebhookDelivery.id).where(*expired).limit(1)) is None:
                return
        with self.db.write() as s:
            s.execute(
                update(WebhookDelivery)
                .where(*expired)
                .values(status=DeliveryStatus.PENDING, lease_owner=None, lease_expires_at=None)
                .execution_options(synchronize_session=False)
            )

    def claim(self, delivery_id: str) -> str | None:
        """pending and due -> sending, compare-and-set; answers the lease token or None
        when another dispatcher (or a redelivery/disable) got there first."""
        token = f"{self.owner}:{new_id()[-8:]}"[:64]
        now = utcnow()
        lease = timedelta(seconds=self.settings.webhooks.timeout_seconds) + LEASE_SLACK
        with self.db.write() as s:
            res = s.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                    WebhookDelivery.next_attempt_at <= now,
                )
                .values(
                    status=DeliveryStatus.SENDING,
                    lease_owner=token,
                    lease_expires_at=now + lease,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
            won = res.rowcount == 1  # type: ignore[attr-defined]
        return token if won else None

    def _run_one(self, delivery_id: str, token: str) -> None:
        try:
            out = self.attempt(delivery_id)
            if out is not None:
                self.record(delivery_id, token, out)
        except Exception:
            logger.exception("webhook delivery %s failed unexpectedly", delivery_id)
        finally:
            with self._lock:
                self._inflight -= 1
            self._wake.set()

    # -- sending

    def attempt(self, delivery_id: str) -> Outcome | None:
        """Build, sign and POST a claimed delivery's message (None: it was deleted)."""
        with self.db.read() as s:
            d = s.get(WebhookDelivery, delivery_id)
            msg = s.get(WebhookMessage, d.message_id) if d is not None else None
            if d is None or msg is None:
                return None  # its endpoint was deleted meanwhile
            ep = s.get(WebhookEndpoint, d.endpoint_id) if d.endpoint_id else None
        if d.endpoint_id is not None and (ep is None or not ep.enabled):
            return Outcome(None, d.url or "", error="the endpoint is disabled")
        url = ep.url if ep is not None else (d.url or "")
        shown = safe_url(url)
        try:
            secrets_ = self.webhooks.signing_secrets(d.workspace_id, d.endpoint_id)
        except FlowyError as exc:
            return Outcome(None, shown, error=exc.message)
        payload = {
            "type": msg.type,
            "timestamp": msg.created_at.isoformat().replace("+00:00", "Z"),
            "data": self.runs.public(run_from_snapshot(msg.run)),
        }
        body = json.dumps(payload, separators=(",", ":")).encode()
        timestamp = int(time.time())
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"Flowy-Webhooks/{__version__}",
            "webhook-id": msg.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets_, msg.id, timestamp, body),
        }
        t0 = time.monotonic()
        try:
            answer = request("POST", url, self.policy, headers=headers, body=body)
        except MediaError as exc:
            took = int((time.monotonic() - t0) * 1000)
            logger.info("webhook %s to %s: %s", msg.id, shown, exc)
            return Outcome(timestamp, shown, error=_describe(exc), duration_ms=took)
        took = int((time.monotonic() - t0) * 1000)
        error = None if answer.ok else f"the endpoint answered HTTP {answer.status}"
        logger.info("webhook %s to %s: HTTP %d in %d ms", msg.id, shown, answer.status, took)
        return Outcome(
            timestamp,
            shown,
            status_code=answer.status,
            error=error,
            response=answer.text[:KEPT_ANSWER_CHARS] or None,
            duration_ms=took,
        )

    def record(self, delivery_id: str, token: str, out: Outcome) -> None:
        """Log the attempt and move the delivery on, fenced by the claim's lease."""
        w = self.settings.webhooks
        now = utcnow()
        with self.db.write() as s:
            d = s.scalar(
                select(WebhookDelivery).where(
                    WebhookDelivery.id == delivery_id,
                    WebhookDelivery.status == DeliveryStatus.SENDING,
                    WebhookDelivery.lease_owner == token,
                )
            )
            if d is None:
                return  # lease lost (or the endpoint was deleted meanwhile)
            d.lease_owner = None
            d.lease_expires_at = None
            d.updated_at = now
            d.last_status_code = out.status_code
            d.last_error = out.error
            if out.timestamp is None:  # nothing was sent: a disabled endpoint, no secret
                give_up = out.error == "the endpoint is disabled"
            else:
                d.attempts += 1
                s.add(
                    WebhookAttempt(
                        delivery_id=d.id,
                        number=d.attempts,
                        timestamp=out.timestamp,
                        url=out.url,
                        status_code=out.status_code,
                        error=out.error,
                        response=out.response,
                        duration_ms=out.duration_ms,
                        created_at=now,
                    )
                )
                give_up = out.status_code == 410
            if out.ok:
                d.status = DeliveryStatus.DELIVERED
                d.delivered_at = now
                d.next_attempt_at = None
                return
            d.step += 1
            delay = None if give_up else retry_delay(d.step, w.retry_schedule, w.retry_scale)
            if delay is None:
                d.status = DeliveryStatus.FAILED
                d.next_attempt_at = None
            else:
                d.status = DeliveryStatus.PENDING
                d.next_attempt_at = now + timedelta(seconds=delay)
            if out.status_code == 410 and d.endpoint_id is not None:
                s.flush()
                disable_endpoint(s, d.endpoint_id, "it answered 410 Gone")
                logger.warning("webhook endpoint %s answered 410 Gone: disabled", d.endpoint_id)
