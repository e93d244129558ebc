"""Verify the webhooks Flowy sends, by the Standard Webhooks scheme.

Each delivery carries three headers::

    webhook-id:         the message id (the same on every retry of one delivery)
    webhook-timestamp:  Unix seconds when it was signed
    webhook-signature:  space-separated "v1,<base64 HMAC-SHA256>" signatures

The HMAC is over ``"{webhook-id}.{webhook-timestamp}.{body}"`` with the secret's key;
secrets look like ``whsec_<base64 key>``.  Verify the *raw* body bytes, before parsing.

>>> from flowy.client import webhooks
>>> event = webhooks.verify(request.body, request.headers, secret)  # raises if forged
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import time
from collections.abc import Mapping
from typing import Any

from flowy.client.errors import WebhookVerificationError

__all__ = ["WebhookVerificationError", "sign", "verify"]

SECRET_PREFIX = "whsec_"


def _key(secret: str | bytes) -> bytes:
    if isinstance(secret, bytes):
        key = secret
    else:
        encoded = secret.removeprefix(SECRET_PREFIX)
        try:
            key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise WebhookVerificationError(
                "the webhook secret is not 'whsec_' followed by base64"
            ) from None
    if not key:
        raise WebhookVerificationError("the webhook secret is empty")
    return key


def _as_bytes(payload: bytes | bytearray | memoryview | str) -> bytes:
    return payload.encode() if isinstance(payload, str) else bytes(payload)


def _mac(key: bytes, msg_id: str, timestamp: str, body: bytes) -> bytes:
    return hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign(
    payload: bytes | str, secret: str | bytes, msg_id: str, timestamp: int | float | None = None
) -> str:
    """The ``webhook-signature`` value (``v1,<base64>``) of a payload."""
    ts = str(int(time.time() if timestamp is None else timestamp))
    return "v1," + base64.b64encode(_mac(_key(secret), msg_id, ts, _as_bytes(payload))).decode()


def verify(
    payload: bytes | str,
    headers: Mapping[str, str],
    secret: str | bytes,
    tolerance: float = 300,
    *,
    now: float | None = None,
) -> Any:
    """Check a webhook delivery; answer its JSON body, parsed.

    ``payload`` is the raw request body, ``headers`` the request headers (any case),
    ``secret`` the endpoint's ``whsec_...`` secret.  A timestamp more than ``tolerance``
    seconds away from now is refused (a replayed or delayed message).  Raises
    :class:`~flowy.client.errors.WebhookVerificationError`.
    """
    lower = {k.lower(): v for k, v in headers.items()}
    msg_id = lower.get("webhook-id")
    timestamp = lower.get("webhook-timestamp")
    signatures = lower.get("webhook-signature")
    if not (msg_id and timestamp and signatures):
        raise WebhookVerificationError(
            "missing webhook-id, webhook-timestamp or webhook-signature header"
        )
    try:
        ts = float(timestamp.strip())
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds") from None
    if not math.isfinite(ts):
        raise WebhookVerificationError("webhook-timestamp is not Unix seconds")
    current = time.time() if now is None else now
    if ts < current - tolerance:
        raise WebhookVerificationError("message timestamp too old")
    if ts > current + tolerance:
        raise WebhookVerificationError("message timestamp too new")
    body = _as_bytes(payload)
    expected = _mac(_key(secret), msg_id, timestamp.strip(), body)
    for candidate in signatures.split():
        version, _, value = candidate.partition(",")
        if version != "v1":
            continue
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if hmac.compare_digest(expected, given):
            break
    else:
        raise WebhookVerificationError("no matching signature")
    try:
        return json.loads(body)
    except ValueError:
        raise WebhookVerificationError("the signed payload is not JSON") from None
