"""Webhooks without a server: signing, the retry schedule, the outbox, claims, retries."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from standardwebhooks import Webhook, WebhookVerificationError

from flowy.db.models import (
    App,
    AppVersion,
    Run,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
    WebhookMessage,
    WebhookRunSecret,
    Workspace,
    utcnow,
)
from flowy.db.session import Database
from flowy.services.states import (
    RunStatus,
    cancel_queued,
    claim,
    fail_queued,
    finish,
    requeue_expired,
)
from flowy.services.webhooks import (
    DEFAULT_EVENTS,
    JITTER,
    DeliveryStatus,
    WebhookService,
    check_events,
    check_run_webhook,
    check_url,
    new_secret,
    retry_delay,
    run_from_snapshot,
    secret_key,
    sign,
    signature_header,
)
from flowy.settings import WEBHOOK_RETRY_SCHEDULE, Settings
from flowy.worker.webhooks import Outcome, WebhookDispatcher

LEASE = timedelta(minutes=5)
SERVER_SECRET = b"x" * 32

# --------------------------------------------------------------------------- signing


def test_secret_is_whsec_and_24_random_bytes() -> None:
    a, b = new_secret(), new_secret()
    assert a.startswith("whsec_") and a != b
    assert len(secret_key(a)) == 24
    assert base64.b64decode(a.removeprefix("whsec_")) == secret_key(a)


def test_signature_is_the_standard_webhooks_one() -> None:
    secret = new_secret()
    ts = int(datetime.now(UTC).timestamp())
    body = '{"type":"run.completed","data":{"é":1}}'
    ours = sign(secret, "msg_1", ts, body.encode())
    theirs = Webhook(secret).sign("msg_1", datetime.fromtimestamp(ts, UTC), body)
    assert ours == theirs
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": ours}
    assert Webhook(secret).verify(body, headers) == {"type": "run.completed", "data": {"é": 1}}
    # A known vector, computed by hand from the spec's formula.
    import hashlib
    import hmac

    key = bytes(range(24))
    fixed = "whsec_" + base64.b64encode(key).decode()
    mac = hmac.new(key, b"msg_x.1700000000.{}", hashlib.sha256).digest()
    assert sign(fixed, "msg_x", 1700000000, b"{}") == "v1," + base64.b64encode(mac).decode()


def test_bad_secret_id_timestamp_or_body_is_rejected() -> None:
    secret = new_secret()
    ts = int(datetime.now(UTC).timestamp())
    body = b'{"a":1}'
    headers = {
        "webhook-id": "msg_1",
        "webhook-timestamp": str(ts),
        "webhook-signature": sign(secret, "msg_1", ts, body),
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(b'{"a":2}', headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-id": "msg_2"})
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, {**headers, "webhook-timestamp": str(ts + 1)})
    with pytest.raises(WebhookVerificationError):  # replayed long after
        old = ts - 3600
        Webhook(secret).verify(
            body,
            {
                **headers,
                "webhook-timestamp": str(old),
                "webhook-signature": sign(secret, "msg_1", old, body),
            },
        )


def test_rotation_header_carries_both_signatures() -> None:
    new, old = new_secret(), new_secret()
    ts = int(datetime.now(UTC).timestamp())
    body = b"{}"
    header = signature_header([new, old], "msg_1", ts, body)
    assert header.count("v1,") == 2
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(ts), "webhook-signature": header}
    Webhook(new).verify(body, headers)
    Webhook(old).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


# --------------------------------------------------------------------------- schedule


def test_retry_schedule_spans_about_three_days() -> None:
    s = WEBHOOK_RETRY_SCHEDULE
    delays = [retry_delay(n, s, rand=lambda: 0.0) for n in range(1, len(s) + 1)]
    assert delays[:6] == [5, 300, 1800, 7200, 18000, 36000]
    assert retry_delay(len(s) + 1, s) is None  # 12 attempts, then it fails
    assert retry_delay(0, s) is None
    total = sum(d for d in delays if d is not None)
    assert 2.5 * 86400 < total < 3.5 * 86400


def test_retry_delay_jitter_and_scale() -> None:
    s = WEBHOOK_RETRY_SCHEDULE
    assert retry_delay(1, s, rand=lambda: 1.0) == pytest.approx(5 * (1 + JITTER))
    assert retry_delay(1, s, 0.01, rand=lambda: 0.0) == pytest.approx(0.05)
    for _ in range(200):  # never earlier than the schedule, at most JITTER later
        d = retry_delay(2, s)
        assert d is not None and 300 <= d <= 300 * (1 + JITTER)
    assert retry_delay(1, []) is None  # no retries configured


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "url",
    ["ftp://example.com/x", "example.com/hook", "http://", "", 3, "http://a b/", "http://h:99999/"],
)
def test_bad_urls(url: object) -> None:
    assert check_url(url, "webhook")[0].field == "webhook"


def test_good_urls_and_events() -> None:
    assert check_url("https://example.com/hooks?x=1", "url") == []
    assert check_url("http://127.0.0.1:8080/h", "url") == []  # guarded when called
    events, issues = check_events(["run.failed", "run.started", "run.failed"], "events")
    assert events == ["run.started", "run.failed"] and issues == []
    _, issues = check_events(["run.done"], "events")
    assert issues[0].field == "events" and "run.done" in issues[0].message
    assert check_events([], "events")[1] and check_events("run.failed", "events")[1]
    url, ev, issues = check_run_webhook({"webhookEventsFilter": ["run.failed"]})
    assert issues and issues[0].field == "webhookEventsFilter"
    assert check_run_webhook({"webhook": "https://x.example/h"}) == (
        "https://x.example/h",
        None,
        [],
    )


# --------------------------------------------------------------------------- outbox


@pytest.fixture
def version(db: Database) -> AppVersion:
    with db.write() as s:
        ws = Workspace(name="acme")
        s.add(ws)
        s.flush()
        app = App(workspace_id=ws.id, title="Headshots")
        s.add(app)
        s.flush()
        v = AppVersion(app_id=app.id, number=1, workflow={"nodes": []})
        s.add(v)
        s.flush()
    return v


def new_run(
    db: Database,
    version: AppVersion,
    webhook: str | None = "https://hooks.example/run",
    events: list[str] | None = None,
) -> str:
    with db.write() as s:
        app = s.get(App, version.app_id)
        assert app is not None
        run = Run(
            workspace_id=app.workspace_id,
            app_id=app.id,
            version_id=version.id,
            status=RunStatus.QUEUED,
            webhook_url=webhook,
            webhook_events=events,
        )
        s.add(run)
    return run.id


def endpoint(db: Database, version: AppVersion, events: list[str], enabled: bool = True) -> str:
    service = WebhookService(db, SERVER_SECRET)
    with db.read() as s:
        ws = s.get(App, version.app_id).workspace_id  # type: ignore[union-attr]
    ep, _ = service.create_endpoint(
        ws, {"url": "https://hooks.example/ep", "events": events, "enabled": enabled}
    )
    return ep.id


def deliveries(db: Database) -> list[tuple[str, str | None, str | None]]:
    with db.read() as s:
        rows = s.execute(
            WebhookDelivery.__table__.join(WebhookMessage.__table__)
            .select()
            .with_only_columns(
                WebhookMessage.type, WebhookDelivery.endpoint_id, WebhookDelivery.url
            )
            .order_by(WebhookMessage.created_at, WebhookDelivery.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def test_finish_writes_the_delivery_in_its_transaction(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version)
    with db.write() as s:
        assert claim(s, run_id, "w", LEASE)
    assert deliveries(db) == []  # run.started is not a default event
    with pytest.raises(RuntimeError), db.write() as s:
        assert finish(s, run_id, "w", 1, RunStatus.COMPLETED, outputs=[])
        raise RuntimeError("crash before commit")
    assert deliveries(db) == []  # rolled back together with the status
    with db.write() as s:
        assert finish(s, run_id, "w", 1, RunStatus.COMPLETED, outputs=[])
    assert deliveries(db) == [("run.completed", None, "https://hooks.example/run")]
    with db.read() as s:
        msg = s.query(WebhookMessage).one()
        d = s.query(WebhookDelivery).one()
    assert msg.id.startswith("msg_") and msg.run_id == run_id
    assert d.status == DeliveryStatus.PENDING and d.next_attempt_at is not None
    assert "inputs" not in msg.run  # may be large, never shown
    snap = run_from_snapshot(msg.run)
    assert snap.status == "completed" and snap.completed_at is not None
    assert snap.completed_at.tzinfo is not None


def test_endpoints_get_the_events_they_want(db: Database, version: AppVersion) -> None:
    ends = endpoint(db, version, ["run.completed", "run.failed"])
    starts = endpoint(db, version, ["run.started"])
    endpoint(db, version, ["run.started", "run.completed"], enabled=False)
    run_id = new_run(db, version, webhook=None)
    with db.write() as s:
        claim(s, run_id, "w", LEASE)
    with db.write() as s:
        finish(s, run_id, "w", 1, RunStatus.FAILED, error="boom")
    assert deliveries(db) == [("run.started", starts, None), ("run.failed", ends, None)]


def test_queued_cancel_fail_and_give_up_are_announced(db: Database, version: AppVersion) -> None:
    every = list(DEFAULT_EVENTS)
    a, b, c = (new_run(db, version, events=every) for _ in range(3))
    with db.write() as s:
        assert cancel_queued(s, a, "canceled by request")
        assert fail_queued(s, b, "deadline passed")
    with db.write() as s:
        assert claim(s, c, "w", timedelta(seconds=-1))  # a lease that already ran out
    with db.write() as s:
        assert requeue_expired(s, utcnow(), max_attempts=1) == ([], [c])
    assert [t for t, _, _ in deliveries(db)] == ["run.canceled", "run.failed", "run.failed"]


def test_run_filter_narrows_the_runs_own_webhook(db: Database, version: AppVersion) -> None:
    run_id = new_run(db, version, events=["run.started"])
    with db.write() as s:
        claim(s, run_id, "w", LEASE)
    with db.write() as s:
        finish(s, run_id, "w", 1, RunStatus.COMPLETED, outputs=[])
    assert [t for t, _, _ in deliveries(db)] == ["run.started"]


# --------------------------------------------------------------------------- dispatcher


def dispatcher(db: Database, tmp_path: Path, **webhooks: object) -> WebhookDispatcher:
    settings = Settings(data_dir=tmp_path, webhooks=webhooks)  # type: ignore[arg-type]
    service = WebhookService(db, SERVER_SECRET, settings.webhooks.retry_schedule)
    return WebhookDispatcher(settings, db, service, runs=None)  # type: ignore[arg-type]


def completed_run(db: Database, version: AppVersion) -> str:
    run_id = new_run(db, version)
    with db.write() as s:
        claim(s, run_id, "w", LEASE)
    with db.write() as s:
        finish(s, run_id, "w", 1, RunStatus.COMPLETED, outputs=[])
    with db.read() as s:
        return s.query(WebhookDelivery).one().id


def test_only_one_dispatcher_claims_a_delivery(
    db: Database, version: AppVersion, tmp_path: Path
) -> None:
    delivery_id = completed_run(db, version)
    a, b = dispatcher(db, tmp_path), dispatcher(db, tmp_path)
    token = a.claim(delivery_id)
    assert token is not None
    assert b.claim(delivery_id) is None and a.claim(delivery_id) is None
    b.record(delivery_id, "someone-else", Outcome(1, "u", status_code=200))  # fenced: no-op
    with db.read() as s:
        d = s.get(WebhookDelivery, delivery_id)
        assert d is not None and d.status == DeliveryStatus.SENDING and d.attempts == 0


def test_failures_retry_on_the_schedule_then_fail(
    db: Database, version: AppVersion, tmp_path: Path
) -> None:
    delivery_id = completed_run(db, version)
    disp = dispatcher(db, tmp_path, retry_schedule=[60, 120])
    for n, code in enumerate([500, 503, 500], start=1):
        with db.write() as s:  # make it due
            d = s.get(WebhookDelivery, delivery_id)
            assert d is not None
            d.next_attempt_at = utcnow()
        token = disp.claim(delivery_id)
        assert token is not None
        before = utcnow()
        disp.record(delivery_id, token, Outcome(n, "https://h/", status_code=code, error="x"))
        with db.read() as s:
            d = s.get(WebhookDelivery, delivery_id)
            assert d is not None and d.attempts == n and d.last_status_code == code
            if n < 3:
                assert d.status == DeliveryStatus.PENDING and d.next_attempt_at is not None
                wait = (d.next_attempt_at - before).total_seconds()
                assert [60, 120][n - 1] - 1 <= wait <= [60, 120][n - 1] * (1 + JITTER) + 1
            else:
                assert d.status == DeliveryStatus.FAILED and d.next_attempt_at is None
    with db.read() as s:
        codes = [a.status_code for a in s.query(WebhookAttempt).order_by(WebhookAttempt.number)]
    assert codes == [500, 503, 500]


def test_gone_disables_the_endpoint_and_its_pending_deliveries(
    db: Database, version: AppVersion, tmp_path: Path
) -> None:
    ep_id = endpoint(db, version, ["run.completed"])
    first = new_run(db, version, webhook=None)
    second = new_run(db, version, webhook=None)
    for run_id in (first, second):
        with db.write() as s:
            claim(s, run_id, "w", LEASE)
        with db.write() as s:
            finish(s, run_id, "w", 1, RunStatus.COMPLETED, outputs=[])
    with db.read() as s:
        ids = [d.id for d in s.query(WebhookDelivery).order_by(WebhookDelivery.created_at)]
    disp = dispatcher(db, tmp_path)
    token = disp.claim(ids[0])
    assert token is not None
    disp.record(ids[0], token, Outcome(1, "https://h/", status_code=410, error="gone"))
    with db.read() as s:
        ep = s.get(WebhookEndpoint, ep_id)
        assert ep is not None and not ep.enabled and "410" in (ep.disabled_reason or "")
        statuses = {d.id: (d.status, d.last_error) for d in s.query(WebhookDelivery)}
    assert statuses[ids[0]][0] == DeliveryStatus.FAILED
    assert statuses[ids[1]][0] == DeliveryStatus.FAILED
    assert "disabled" in (statuses[ids[1]][1] or "")
    assert disp.claim(ids[1]) is None


def test_recover_hands_back_attempts_cut_off_by_a_crash(
    db: Database, version: AppVersion, tmp_path: Path
) -> None:
    delivery_id = completed_run(db, version)
    assert dispatcher(db, tmp_path).claim(delivery_id) is not None
    fresh = dispatcher(db, tmp_path)
    fresh.recover()
    assert fresh.claim(delivery_id) is not None


def test_run_secret_is_made_once_and_rotation_keeps_the_old_one_a_while(
    db: Database, version: AppVersion
) -> None:
    service = WebhookService(db, SERVER_SECRET)
    with db.read() as s:
        ws = s.get(App, version.app_id).workspace_id  # type: ignore[union-attr]
    first = service.run_secret(ws)
    assert first == service.run_secret(ws) and first.startswith("whsec_")
    second = service.rotate_run_secret(ws)
    assert second != first
    assert service.signing_secrets(ws, None) == [second, first]
    # Sealed at rest: the database holds no secret in clear.
    with db.read() as s:
        raw = str(s.execute(WebhookRunSecret.__table__.select()).all())
    assert "gAAAA" in raw  # Fernet tokens
    assert first not in raw and second not in raw
    # Another server secret cannot open it.
    with pytest.raises(Exception, match="cannot be decrypted"):
        WebhookService(db, b"y" * 32).run_secret(ws)


def test_snapshot_keeps_times_aware() -> None:
    snap = {"id": "a" * 24, "status": "completed", "created_at": "2026-01-01T00:00:00+00:00"}
    run = run_from_snapshot(snap)
    assert run.created_at == datetime(2026, 1, 1, tzinfo=UTC)
