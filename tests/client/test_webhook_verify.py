"""``flowy.client.webhooks.verify`` against the reference ``standardwebhooks`` package."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks

from flowy.client import WebhookVerificationError, webhooks
from flowy.client.errors import FlowyError

SECRET = "whsec_" + base64.b64encode(os.urandom(24)).decode()
PAYLOAD = json.dumps(
    {"type": "run.completed", "data": {"runId": "64c3f2a1e8b9c0d1f2e3a4b5", "status": "ok"}},
    separators=(",", ":"),
).encode()


def _signed(
    payload: bytes = PAYLOAD, secret: str = SECRET, ts: int | None = None, msg_id: str = "msg_1"
) -> dict[str, str]:
    """Headers as the reference implementation signs them."""
    when = datetime.fromtimestamp(time.time() if ts is None else ts, tz=UTC)
    sig = standardwebhooks.Webhook(secret).sign(msg_id, when, payload.decode())
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(when.timestamp())),
        "webhook-signature": sig,
    }


def test_accepts_what_the_reference_signs() -> None:
    headers = _signed()
    assert webhooks.verify(PAYLOAD, headers, SECRET) == json.loads(PAYLOAD)
    # Any header case, a str payload, the secret without its prefix or as raw key bytes.
    upper = {k.upper(): v for k, v in headers.items()}
    assert webhooks.verify(PAYLOAD.decode(), upper, SECRET)
    assert webhooks.verify(PAYLOAD, headers, SECRET.removeprefix("whsec_"))
    assert webhooks.verify(PAYLOAD, headers, base64.b64decode(SECRET.removeprefix("whsec_")))


def test_the_reference_accepts_what_we_sign() -> None:
    ts = int(time.time())
    sig = webhooks.sign(PAYLOAD, SECRET, "msg_2", ts)
    headers = {"webhook-id": "msg_2", "webhook-timestamp": str(ts), "webhook-signature": sig}
    assert standardwebhooks.Webhook(SECRET).verify(PAYLOAD, headers) == json.loads(PAYLOAD)
    assert sig == _signed(ts=ts, msg_id="msg_2")["webhook-signature"]


def test_one_matching_signature_among_several_is_enough() -> None:
    headers = _signed()
    other = _signed(secret="whsec_" + base64.b64encode(b"another key, rotated").decode())
    headers["webhook-signature"] = " ".join(
        ["v2,ignored", "v1,not*base64", other["webhook-signature"], headers["webhook-signature"]]
    )
    assert webhooks.verify(PAYLOAD, headers, SECRET)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"payload": PAYLOAD.replace(b"ok", b"ko")}, "no matching signature"),
        ({"secret": "whsec_" + base64.b64encode(b"wrong key").decode()}, "no matching"),
        ({"msg_id": "msg_other"}, "no matching signature"),
        ({"ts_shift": -301}, "too old"),
        ({"ts_shift": 301}, "too new"),
        ({"drop": "webhook-signature"}, "missing"),
        ({"drop": "webhook-id"}, "missing"),
        ({"drop": "webhook-timestamp"}, "missing"),
        ({"timestamp": "yesterday"}, "Unix seconds"),
        ({"timestamp": "nan"}, "Unix seconds"),
        ({"signature": "v1,"}, "no matching signature"),
    ],
)
def test_refuses_what_the_reference_refuses(change: dict[str, object], message: str) -> None:
    shift = change.get("ts_shift", 0)
    assert isinstance(shift, int)
    headers = _signed(ts=int(time.time()) + shift)
    if "msg_id" in change:
        headers["webhook-id"] = str(change["msg_id"])
    if "drop" in change:
        del headers[str(change["drop"])]
    if "timestamp" in change:
        headers["webhook-timestamp"] = str(change["timestamp"])
    if "signature" in change:
        headers["webhook-signature"] = str(change["signature"])
    payload = change.get("payload", PAYLOAD)
    secret = str(change.get("secret", SECRET))
    assert isinstance(payload, bytes)

    with pytest.raises(WebhookVerificationError, match=message) as exc:
        webhooks.verify(payload, headers, secret)
    assert isinstance(exc.value, FlowyError)
    with pytest.raises((standardwebhooks.webhooks.WebhookVerificationError, ValueError)):
        standardwebhooks.Webhook(secret).verify(payload, headers)


def test_tolerance_is_configurable() -> None:
    old = _signed(ts=int(time.time()) - 600)
    with pytest.raises(WebhookVerificationError, match="too old"):
        webhooks.verify(PAYLOAD, old, SECRET)
    assert webhooks.verify(PAYLOAD, old, SECRET, tolerance=900)
    assert webhooks.verify(PAYLOAD, old, SECRET, now=time.time() - 600)


def test_a_bad_secret_is_a_verification_error() -> None:
    with pytest.raises(WebhookVerificationError, match="secret"):
        webhooks.verify(PAYLOAD, _signed(), "whsec_***")
    with pytest.raises(WebhookVerificationError, match="empty"):
        webhooks.verify(PAYLOAD, _signed(), "whsec_")
