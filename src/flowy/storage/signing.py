"""HMAC-signed, expiring URLs for stored files.

A signed URL is ``<base_url><path>?expires=<unix seconds>&signature=<sig>`` where
``sig`` is the unpadded URL-safe base64 of HMAC-SHA256 over
``"<METHOD>\\n<path>\\n<expires>"``.  Only the URL path is signed (no query, no host), so
the same link works behind any proxy that preserves the path.  Pass :meth:`UrlSigner.verify`
the path exactly as it appears in the URL (still percent-encoded), the form that was
signed.

Every failed check raises :class:`~flowy.errors.Forbidden` with one message, so a
caller probing links learns nothing about why one was refused.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime

from flowy.errors import Forbidden

logger = logging.getLogger(__name__)

#: Shortest and longest lifetime of a signed URL, in seconds.
MIN_TTL_SECONDS = 1
MAX_TTL_SECONDS = 7 * 24 * 3600

_REFUSED = "invalid or expired link"
_METHOD_RE = re.compile(r"^[A-Z]{1,16}$")
# Canonical unix seconds only: no sign, no leading zeros, no Unicode digits, bounded.
_EXPIRES_RE = re.compile(r"^(?:0|[1-9][0-9]{0,11})$")
# 32 HMAC-SHA256 bytes as unpadded URL-safe base64.
_SIGNATURE_RE = re.compile(r"^[A-Za-z0-9_-]{43}$")


class UrlSigner:
    """Signs and verifies expiring URLs with one secret key.

    ``clock`` returns the current unix time; tests inject a fake one.

    Raises:
        ValueError: ``key`` is empty.
    """

    def __init__(self, key: bytes, *, clock: Callable[[], float] = time.time) -> None:
        if not key:
            raise ValueError("signing key must not be empty")
        self._key = bytes(key)
        self._clock = clock

    def sign(self, method: str, path: str, expires: int) -> str:
        """The signature of ``method`` (case-insensitive) on ``path`` until ``expires``.

        Raises:
            ValueError: ``method`` is not an HTTP method name, ``path`` does not start with
                "/" or holds a query, fragment or line break, or ``expires`` is negative.
        """
        method = method.upper()
        if not _METHOD_RE.match(method):
            raise ValueError(f"invalid HTTP method {method!r}")
        if not path.startswith("/") or any(c in path for c in "?#\r\n"):
            # The signed path is the URL path alone; a newline would also blur the
            # boundaries of the signed message.
            raise ValueError("path must be a URL path starting with '/', without query")
        if isinstance(expires, bool) or not isinstance(expires, int) or expires < 0:
            raise ValueError("expires must be a non-negative int of unix seconds")
        return self._signature(method, path, str(expires))

    def signed_url(
        self, base_url: str, path: str, ttl_seconds: int, *, method: str = "GET"
    ) -> tuple[str, datetime]:
        """An absolute URL for ``path`` valid for ``ttl_seconds``, and its UTC expiry.

        ``base_url`` is where callers reach Flowy (``https://flowy.example``); a trailing
        slash is ignored.

        Raises:
            ValueError: ``ttl_seconds`` is not an int from 1 s to 7 days, or ``sign``
                refuses ``method`` or ``path``.
        """
        if (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int)
            or not MIN_TTL_SECONDS <= ttl_seconds <= MAX_TTL_SECONDS
        ):
            raise ValueError(
                f"ttl_seconds must be an int from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}"
            )
        # Truncating "now" makes the link live at most ttl_seconds, never longer.
        expires = int(self._clock()) + ttl_seconds
        signature = self.sign(method, path, expires)
        url = f"{base_url.rstrip('/')}{path}?expires={expires}&signature={signature}"
        return url, datetime.fromtimestamp(expires, tz=UTC)

    def verify(
        self,
        method: str,
        path: str,
        expires: str | None,
        signature: str | None,
        *,
        allow_expired: bool = False,
    ) -> None:
        """Check a request's ``expires`` and ``signature`` query values for ``path``.

        ``path`` is the request's URL path without query.  A link is valid until the
        second ``expires`` included; ``allow_expired`` skips only that check.

        Raises:
            Forbidden: "invalid or expired link" - for a missing, malformed, tampered or
                expired link alike.
        """
        if expires is None or signature is None:
            raise Forbidden(_REFUSED)
        if not _EXPIRES_RE.match(expires) or not _SIGNATURE_RE.match(signature):
            raise Forbidden(_REFUSED)
        method = method.upper()
        if not _METHOD_RE.match(method) or any(c in path for c in "\r\n"):
            raise Forbidden(_REFUSED)
        expected = self._signature(method, path, expires)
        # Constant time, so response timing does not reveal how much of a guess matched.
        if not hmac.compare_digest(expected.encode("ascii"), signature.encode("ascii")):
            logger.debug("refused signed URL for %s: bad signature", path)
            raise Forbidden(_REFUSED)
        if not allow_expired and self._clock() > int(expires):
            logger.debug("refused signed URL for %s: expired", path)
            raise Forbidden(_REFUSED)

    def _signature(self, method: str, path: str, expires: str) -> str:
        message = f"{method}\n{path}\n{expires}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
