"""Webhooks: tell other systems when a run starts and ends, signed per Standard Webhooks.

Two kinds of receiver:

* a run's own ``webhook`` URL (``{"inputs": ..., "webhook": URL, "webhookEventsFilter":
  [...]}``), signed with the workspace's *run webhook secret* (``GET
  /v1/webhooks/run-secret``, made on first use);
* the workspace's endpoints (``/v1/webhooks``), each with the events it wants and its own
  ``whsec_`` secret, shown once when it is made or rotated.

Outbox: :func:`enqueue_for_run` is called by the run state transitions
(:mod:`flowy.services.states`) in the transaction that writes the new status, so a
terminal status and the deliveries announcing it commit together or not at all.  The
dispatcher (:mod:`flowy.worker.webhooks`) sends due deliveries and retries failures on
:data:`~flowy.settings.WEBHOOK_RETRY_SCHEDULE`.

Signing (https://www.standardwebhooks.com): headers ``webhook-id`` (the message id, the
same on every attempt), ``webhook-timestamp`` (unix seconds of the attempt) and
``webhook-signature`` = ``v1,`` + base64(HMAC-SHA256(key, f"{id}.{timestamp}.{body}"))
where ``key`` is the base64-decoded part of the secret after ``whsec_``.  After a rotation
the previous secret signs too, for a day, so receivers can switch without losing messages.
Secrets are sealed with Fernet under a key derived from the server secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import and_, bindparam, delete, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from flowy.db.models import (
    Run,
    UTCDateTime,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    WebhookRunSecret,
    utcnow,
)
from flowy.db.prepared import Prepared
from flowy.db.session import Database, mark
from flowy.errors import Conflict, FlowyError, Issue, NotFound, ValidationFailed
from flowy.ids import is_id, new_id
from flowy.services.cursors import decode_cursor, encode_cursor

#: The events a receiver can ask for.  ``run.started`` comes each time a worker starts
#: the run (a run requeued after its worker died starts again).
EVENT_TYPES = ("run.started", "run.completed", "run.failed", "run.canceled")
#: What a receiver gets when it names no events: the end of the run, however it ended.
DEFAULT_EVENTS = ("run.completed", "run.failed", "run.canceled")

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
#: How long the previous secret keeps signing after a rotation.
PREVIOUS_SECRET_GRACE = timedelta(hours=24)
#: Retry delays get up to this fraction added at random, so receivers that failed
#: together are not all retried in the same second.
JITTER = 0.2
MAX_URL = 2048
MAX_DESCRIPTION = 500
MAX_PAGE = 100
MAX_ENDPOINTS = 50


class DeliveryStatus:
    PENDING = "pending"  # waiting for its next attempt
    SENDING = "sending"  # claimed by a dispatcher, attempt in flight
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # retries used up, 410 Gone, or its endpoint was disabled

    ALL = (PENDING, SENDING, DELIVERED, FAILED)


# --------------------------------------------------------------------------- signing


def new_secret() -> str:
    """A fresh ``whsec_`` secret: 24 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (the base64-decoded part after the prefix)."""
    raw = secret.removeprefix(SECRET_PREFIX)
    try:
        return base64.b64decode(raw + "=" * (-len(raw) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not a whsec_ secret") from None


def sign(secret: str, msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The Standard Webhooks signature ``v1,<base64 HMAC-SHA256>`` of one attempt."""
    data = body.encode() if isinstance(body, str) else body
    to_sign = f"{msg_id}.{timestamp}.".encode() + data
    digest = hmac.new(secret_key(secret), to_sign, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """``webhook-signature``: one ``v1,`` signature per secret, space-separated."""
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def retry_delay(
    attempts: int,
    schedule: Sequence[float],
    scale: float = 1.0,
    rand: Callable[[], float] = random.random,
) -> float | None:
    """Seconds to wait after ``attempts`` failed attempts, or None: give up.

    The first attempt is made at once; the n-th retry waits ``schedule[n-1] * scale``
    plus up to :data:`JITTER` of it at random (never less than the schedule says).
    """
    if attempts < 1 or attempts > len(schedule):
        return None
    base = schedule[attempts - 1] * scale
    return base * (1 + JITTER * rand())


# --------------------------------------------------------------------------- validation


def check_url(value: object, field: str) -> list[Issue]:
    """Issues with a webhook URL: it must be an absolute http(s) URL with a host.

    Where it points is checked when it is called, by the outbound address guard."""
    bad = Issue("invalid_value", "must be an absolute http:// or https:// URL", field=field)
    if not isinstance(value, str) or not value:
        return [bad]
    if len(value) > MAX_URL:
        return [Issue("invalid_value", f"must be at most {MAX_URL} characters", field=field)]
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in value):
        return [bad]
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError:
        return [bad]
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return [bad]
    return []


def check_events(value: object, field: str) -> tuple[list[str], list[Issue]]:
    """A list of event types, checked; answers them in the documented order."""
    allowed = ", ".join(EVENT_TYPES)
    if not isinstance(value, list) or not value:
        msg = f"must be a non-empty list of event types among {allowed}"
        return [], [Issue("invalid_value", msg, field=field)]
    issues = [
        Issue("invalid_value", f"unknown event {e!r}; events are {allowed}", field=field)
        for e in value
        if not isinstance(e, str) or e not in EVENT_TYPES
    ]
    return [e for e in EVENT_TYPES if e in value], issues


def check_run_webhook(body: Mapping[str, Any]) -> tuple[str | None, list[str] | None, list[Issue]]:
    """The ``webhook`` and ``webhookEventsFilter`` of a run request, checked."""
    url, events, issues = body.get("webhook"), None, []
    if url is not None:
        issues += check_url(url, "webhook")
    if body.get("webhookEventsFilter") is not None:
        events, more = check_events(body["webhookEventsFilter"], "webhookEventsFilter")
        issues += more
        if url is None:
            issues.append(
                Issue(
                    "invalid_value", "needs a 'webhook' URL to send to", field="webhookEventsFilter"
                )
            )
    return (url if isinstance(url, str) else None), events, issues


# --------------------------------------------------------------------------- outbox


def _snapshot(row: Mapping[Any, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


def run_from_snapshot(snap: Mapping[str, Any]) -> Run:
    """A detached :class:`Run` as it was at the event, for ``RunService.public``."""
    values = dict(snap)
    for col in Run.__table__.columns:
        if isinstance(col.type, UTCDateTime) and isinstance(values.get(col.key), str):
            values[col.key] = datetime.fromisoformat(values[col.key])
    return Run(**{k: v for k, v in values.items() if k in Run.__table__.columns})


#: The commit flag of a transaction that queued webhook deliveries.
DELIVERIES_QUEUED = "webhook_deliveries"


def new_message_id() -> str:
    return "msg_" + new_id()


_RUN_HOOK = Prepared(
    select(
        Run.__table__.c.workspace_id, Run.__table__.c.webhook_url, Run.__table__.c.webhook_events
    ).where(Run.__table__.c.id == bindparam("p_run_id"))
)
_ENDPOINTS = Prepared(
    select(WebhookEndpoint.__table__.c.id, WebhookEndpoint.__table__.c.events)
    .where(
        WebhookEndpoint.__table__.c.workspace_id == bindparam("p_workspace_id"),
        WebhookEndpoint.__table__.c.enabled.is_(True),
    )
    .order_by(WebhookEndpoint.__table__.c.created_at, WebhookEndpoint.__table__.c.id)
)


def enqueue_for_run(
    s: Session,
    run_id: str,
    event_type: str,
    *,
    head: tuple[str, str | None, list[str] | None] | None = None,
) -> int:
    """Queue ``event_type`` of a run for its own webhook and the workspace's enabled
    endpoints that want it, in the caller's transaction.  Answers the deliveries made.
    ``head``: the run's workspace id, webhook URL and events, when the caller has them
    (a claim returns them), saving their read."""
    if head is None:
        head = _RUN_HOOK.execute(s, {"p_run_id": run_id}).first()
        if head is None:
            return 0
    workspace_id, webhook_url, webhook_events = head
    targets: list[tuple[str | None, str | None]] = []
    if webhook_url and event_type in (webhook_events or DEFAULT_EVENTS):
        targets.append((None, webhook_url))
    endpoints = _ENDPOINTS.execute(s, {"p_workspace_id": workspace_id}).all()
    targets += [(ep.id, None) for ep in endpoints if event_type in ep.events]
    if not targets:
        return 0  # the common case: two small reads, nothing written
    runs = Run.__table__
    row = s.execute(select(*runs.c).where(runs.c.id == run_id)).mappings().one()
    now = utcnow()
    msg = WebhookMessage(
        id=new_message_id(),
        workspace_id=workspace_id,
        run_id=run_id,
        type=event_type,
        run=_snapshot(row),
        created_at=now,
    )
    s.add(msg)
    s.flush()
    for endpoint_id, url in targets:
        s.add(
            WebhookDelivery(
                workspace_id=workspace_id,
                message_id=msg.id,
                endpoint_id=endpoint_id,
                url=url,
                status=DeliveryStatus.PENDING,
                step=0,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    s.flush()
    mark(s, DELIVERIES_QUEUED)  # wakes the dispatcher once this commits
    return len(targets)


# --------------------------------------------------------------------------- service


@dataclass(frozen=True)
class DeliveryInfo:
    delivery: WebhookDelivery
    message: WebhookMessage
    attempts: list[WebhookAttempt]


def _fernet(server_secret: bytes) -> Fernet:
    key = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=None, info=b"flowy webhook secrets"
    ).derive(server_secret)
    return Fernet(base64.urlsafe_b64encode(key))


_ENDPOINT_FIELDS = frozenset({"url", "events", "description", "enabled"})


class WebhookService:
    """Endpoints, their secrets and delivery logs, per workspace."""

    def __init__(
        self, db: Database, server_secret: bytes, retry_schedule: Sequence[float] = ()
    ) -> None:
        self.db = db
        self._fernet = _fernet(server_secret)
        self.retry_schedule = list(retry_schedule)
        #: Called when a delivery becomes due outside a run transition (redeliver); the
        #: dispatcher sets it to wake itself.
        self.wake: Callable[[], None] = lambda: None

    # -- secrets

    def _seal(self, secret: str) -> str:
        return self._fernet.encrypt(secret.encode()).decode()

    def _open(self, sealed: str) -> str:
        try:
            return self._fernet.decrypt(sealed.encode()).decode()
        except InvalidToken:
            raise FlowyError(
                "the webhook signing secret cannot be decrypted (was FLOWY_SECRET_KEY "
                "changed?); rotate the secret"
            ) from None

    def _signing(
        self, current: str, previous: str | None, previous_expires_at: datetime | None
    ) -> list[str]:
        out = [self._open(current)]
        if previous and previous_expires_at and previous_expires_at > utcnow():
            out.append(self._open(previous))
        return out

    def signing_secrets(self, workspace_id: str, endpoint_id: str | None) -> list[str]:
        """The secrets that sign a delivery: its endpoint's, or the run webhook secret."""
        if endpoint_id is None:
            self.run_secret(workspace_id)  # made on first use
            with self.db.read() as s:
                rs = s.get(WebhookRunSecret, workspace_id)
                assert rs is not None
                return self._signing(
                    rs.secret_ciphertext, rs.previous_secret_ciphertext, rs.previous_expires_at
                )
        with self.db.read() as s:
            ep = s.get(WebhookEndpoint, endpoint_id)
            if ep is None:
                raise NotFound(f"webhook endpoint {endpoint_id} not found")
            return self._signing(
                ep.secret_ciphertext, ep.previous_secret_ciphertext, ep.previous_expires_at
            )

    def run_secret(self, workspace_id: str) -> str:
        """The workspace's run webhook secret, made on first use."""
        with self.db.read() as s:
            rs = s.get(WebhookRunSecret, workspace_id)
        if rs is not None:
            return self._open(rs.secret_ciphertext)
        secret = new_secret()
        now = utcnow()
        try:
            with self.db.write() as s:
                if s.get(WebhookRunSecret, workspace_id) is None:
                    s.add(
                        WebhookRunSecret(
                            workspace_id=workspace_id,
                            secret_ciphertext=self._seal(secret),
                            created_at=now,
                            updated_at=now,
                        )
                    )
        except IntegrityError:
            pass  # made at the same moment by another process: read theirs
        with self.db.read() as s:
            rs = s.get(WebhookRunSecret, workspace_id)
            assert rs is not None
            return self._open(rs.secret_ciphertext)

    def rotate_run_secret(self, workspace_id: str) -> str:
        """A new run webhook secret; the previous one also signs for a day."""
        self.run_secret(workspace_id)
        secret = new_secret()
        now = utcnow()
        with self.db.write() as s:
            rs = s.get(WebhookRunSecret, workspace_id)
            assert rs is not None
            rs.previous_secret_ciphertext = rs.secret_ciphertext
            rs.previous_expires_at = now + PREVIOUS_SECRET_GRACE
            rs.secret_ciphertext = self._seal(secret)
            rs.updated_at = now
        return secret

    # -- endpoints

    def _check_endpoint(self, body: object, *, create: bool) -> dict[str, Any]:
        if not isinstance(body, Mapping):
            raise ValidationFailed(
                [Issue("invalid_type", "the body must be a JSON object", field="body")]
            )
        issues = [
            Issue("unknown_field", f"unknown field {k!r}", field=str(k))
            for k in body
            if k not in _ENDPOINT_FIELDS
        ]
        out: dict[str, Any] = {}
        if "url" in body or create:
            if "url" not in body:
                issues.append(Issue("required", "'url' is required", field="url"))
            else:
                issues += check_url(body["url"], "url")
                out["url"] = body["url"]
        if "events" in body and not (create and body["events"] is None):
            events, more = check_events(body["events"], "events")
            issues += more
            out["events"] = events
        if "description" in body:
            d = body["description"]
            if not isinstance(d, str) or len(d) > MAX_DESCRIPTION:
                issues.append(
                    Issue(
                        "invalid_value",
                        f"must be a string of at most {MAX_DESCRIPTION} characters",
                        field="description",
                    )
                )
            out["description"] = d
        if "enabled" in body:
            if not isinstance(body["enabled"], bool):
                issues.append(Issue("invalid_type", "must be true or false", field="enabled"))
            out["enabled"] = body["enabled"]
        if issues:
            raise ValidationFailed(issues)
        return out

    def create_endpoint(self, workspace_id: str, body: object) -> tuple[WebhookEndpoint, str]:
        """Make an endpoint; answers it and its secret (which is never shown again)."""
        b = self._check_endpoint(body, create=True)
        secret = new_secret()
        now = utcnow()
        ep = WebhookEndpoint(
            workspace_id=workspace_id,
            url=b["url"],
            description=b.get("description", ""),
            events=b.get("events") or list(DEFAULT_EVENTS),
            enabled=b.get("enabled", True),
            secret_ciphertext=self._seal(secret),
            created_at=now,
            updated_at=now,
        )
        with self.db.write() as s:
            count = s.scalar(
                select(func.count())
                .select_from(WebhookEndpoint)
                .where(WebhookEndpoint.workspace_id == workspace_id)
            )
            if (count or 0) >= MAX_ENDPOINTS:
                raise Conflict(f"a workspace has at most {MAX_ENDPOINTS} webhook endpoints")
            s.add(ep)
        return ep, secret

    def list_endpoints(self, workspace_id: str) -> list[WebhookEndpoint]:
        with self.db.read() as s:
            return list(
                s.scalars(
                    select(WebhookEndpoint)
                    .where(WebhookEndpoint.workspace_id == workspace_id)
                    .order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)
                )
            )

    @staticmethod
    def _endpoint_in(s: Session, workspace_id: str, endpoint_id: str) -> WebhookEndpoint:
        ep = s.get(WebhookEndpoint, endpoint_id) if is_id(endpoint_id) else None
        if ep is None or ep.workspace_id != workspace_id:
            raise NotFound(f"webhook endpoint {endpoint_id} not found")
        return ep

    def get_endpoint(self, workspace_id: str, endpoint_id: str) -> WebhookEndpoint:
        with self.db.read() as s:
            return self._endpoint_in(s, workspace_id, endpoint_id)

    def update_endpoint(self, workspace_id: str, endpoint_id: str, body: object) -> WebhookEndpoint:
        """Change url/events/description/enabled.  Disabling fails its pending
        deliveries; enabling clears the reason Flowy disabled it for."""
        b = self._check_endpoint(body, create=False)
        with self.db.write() as s:
            ep = self._endpoint_in(s, workspace_id, endpoint_id)
            for k, v in b.items():
                setattr(ep, k, v)
            if b.get("enabled") is True:
                ep.disabled_reason = None
            elif b.get("enabled") is False:
                _fail_pending(s, ep.id, "the endpoint was disabled")
            ep.updated_at = utcnow()
        return ep

    def delete_endpoint(self, workspace_id: str, endpoint_id: str) -> None:
        """Delete an endpoint with its delivery log."""
        with self.db.write() as s:
            ep = self._endpoint_in(s, workspace_id, endpoint_id)
            ids = select(WebhookDelivery.id).where(WebhookDelivery.endpoint_id == ep.id)
            s.execute(delete(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids)))
            s.execute(delete(WebhookDelivery).where(WebhookDelivery.endpoint_id == ep.id))
            s.delete(ep)

    def rotate_endpoint_secret(
        self, workspace_id: str, endpoint_id: str
    ) -> tuple[WebhookEndpoint, str]:
        """A new secret for an endpoint; the previous one also signs for a day."""
        secret = new_secret()
        now = utcnow()
        with self.db.write() as s:
            ep = self._endpoint_in(s, workspace_id, endpoint_id)
            ep.previous_secret_ciphertext = ep.secret_ciphertext
            ep.previous_expires_at = now + PREVIOUS_SECRET_GRACE
            ep.secret_ciphertext = self._seal(secret)
            ep.updated_at = now
        return ep, secret

    # -- deliveries

    def list_deliveries(
        self,
        workspace_id: str,
        *,
        endpoint_id: str | None = None,
        run_id: str | None = None,
        status: str | None = None,
        limit: int = 20,
        cursor: str | None = None,
    ) -> tuple[list[DeliveryInfo], str | None]:
        """Deliveries of the workspace (or of one endpoint / run), newest first."""
        issues = []
        if not 1 <= limit <= MAX_PAGE:
            issues.append(
                Issue("invalid_value", f"must be between 1 and {MAX_PAGE}", field="limit")
            )
        if status is not None and status not in DeliveryStatus.ALL:
            issues.append(
                Issue(
                    "invalid_value",
                    "must be one of " + ", ".join(DeliveryStatus.ALL),
                    field="status",
                )
            )
        if issues:
            raise ValidationFailed(issues)
        with self.db.read() as s:
            if endpoint_id is not None:
                self._endpoint_in(s, workspace_id, endpoint_id)
            q = select(WebhookDelivery).where(WebhookDelivery.workspace_id == workspace_id)
            if endpoint_id is not None:
                q = q.where(WebhookDelivery.endpoint_id == endpoint_id)
            if run_id is not None:
                q = q.where(
                    WebhookDelivery.message_id.in_(
                        select(WebhookMessage.id).where(WebhookMessage.run_id == run_id)
                    )
                )
            if status is not None:
                q = q.where(WebhookDelivery.status == status)
            if cursor:
                at, last = decode_cursor(cursor)
                q = q.where(
                    or_(
                        WebhookDelivery.created_at < at,
                        and_(WebhookDelivery.created_at == at, WebhookDelivery.id < last),
                    )
                )
            q = q.order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
            rows = list(s.scalars(q.limit(limit + 1)))
            more = len(rows) > limit
            rows = rows[:limit]
            infos = self._infos(s, rows)
        last_row = rows[-1] if rows else None
        next_cursor = encode_cursor(last_row.created_at, last_row.id) if more and last_row else None
        return infos, next_cursor

    @staticmethod
    def _infos(s: Session, rows: list[WebhookDelivery]) -> list[DeliveryInfo]:
        if not rows:
            return []
        msgs = {
            m.id: m
            for m in s.scalars(
                select(WebhookMessage).where(WebhookMessage.id.in_({d.message_id for d in rows}))
            )
        }
        attempts: dict[str, list[WebhookAttempt]] = {d.id: [] for d in rows}
        for a in s.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(list(attempts)))
            .order_by(WebhookAttempt.number, WebhookAttempt.id)
        ):
            attempts[a.delivery_id].append(a)
        return [DeliveryInfo(d, msgs[d.message_id], attempts[d.id]) for d in rows]

    @staticmethod
    def _delivery_in(
        s: Session, workspace_id: str, delivery_id: str, endpoint_id: str | None
    ) -> WebhookDelivery:
        d = s.get(WebhookDelivery, delivery_id) if is_id(delivery_id) else None
        if (
            d is None
            or d.workspace_id != workspace_id
            or (endpoint_id is not None and d.endpoint_id != endpoint_id)
        ):
            raise NotFound(f"webhook delivery {delivery_id} not found")
        return d

    def get_delivery(
        self, workspace_id: str, delivery_id: str, endpoint_id: str | None = None
    ) -> DeliveryInfo:
        with self.db.read() as s:
            if endpoint_id is not None:
                self._endpoint_in(s, workspace_id, endpoint_id)
            d = self._delivery_in(s, workspace_id, delivery_id, endpoint_id)
            return self._infos(s, [d])[0]

    def redeliver(
        self, workspace_id: str, delivery_id: str, endpoint_id: str | None = None
    ) -> DeliveryInfo:
        """Send a delivery's message again now, with the same ``webhook-id``.

        A delivery still retrying is just made due now; a finished one gets one more
        attempt (no retries after it).  Conflict when its endpoint is disabled."""
        now = utcnow()
        with self.db.write() as s:
            if endpoint_id is not None:
                self._endpoint_in(s, workspace_id, endpoint_id)
            d = self._delivery_in(s, workspace_id, delivery_id, endpoint_id)
            if d.endpoint_id is not None:
                ep = s.get(WebhookEndpoint, d.endpoint_id)
                if ep is not None and not ep.enabled:
                    raise Conflict(
                        f"webhook endpoint {ep.id} is disabled; enable it before redelivering"
                    )
            if d.status == DeliveryStatus.SENDING:
                raise Conflict("an attempt of this delivery is in flight; try again shortly")
            if d.status != DeliveryStatus.PENDING:
                d.status = DeliveryStatus.PENDING
                d.step = len(self.retry_schedule)
                d.delivered_at = None
            d.next_attempt_at = now
            d.updated_at = now
        self.wake()
        return self.get_delivery(workspace_id, delivery_id)


def _fail_pending(s: Session, endpoint_id: str, reason: str) -> None:
    """Fail an endpoint's deliveries that wait for an attempt."""
    s.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.endpoint_id == endpoint_id,
            WebhookDelivery.status == DeliveryStatus.PENDING,
        )
        .values(
            status=DeliveryStatus.FAILED,
            last_error=reason,
            next_attempt_at=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )


def disable_endpoint(s: Session, endpoint_id: str, reason: str) -> None:
    """Turn an endpoint off (it answered 410 Gone) and fail what it still had to get."""
    s.execute(
        update(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint_id)
        .values(enabled=False, disabled_reason=reason, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    _fail_pending(s, endpoint_id, f"the endpoint was disabled: {reason}")
