"""Request rate limits per API key: a token bucket each, refilled continuously.

Embedded mode keeps the buckets in memory (one process serves every request); scaled mode
will keep them in Redis behind the same ``hit`` call.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass

from flowy.errors import RateLimited


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``per_minute`` requests a minute per key, in bursts of up to ``burst``."""

    def __init__(self, per_minute: int, burst: int, clock: object = time.monotonic) -> None:
        self.per_minute = per_minute
        self.burst = max(1, burst)
        self.rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> dict[str, str]:
        """Take one token for ``key``; answer the rate-limit headers.

        Raises RateLimited (429) with Retry-After when the bucket is empty.
        """
        if self.per_minute <= 0:
            return {}
        now: float = self._clock()  # type: ignore[operator]
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                b = self._buckets[key] = _Bucket(float(self.burst), now)
            b.tokens = min(self.burst, b.tokens + (now - b.updated) * self.rate)
            b.updated = now
            if b.tokens < 1:
                wait = (1 - b.tokens) / self.rate
                raise RateLimited(
                    f"rate limit of {self.per_minute} requests a minute for this API key; "
                    f"retry in {math.ceil(wait)} s",
                    wait,
                    self._headers(0, wait),
                )
            b.tokens -= 1
            full_in = (self.burst - b.tokens) / self.rate
            return self._headers(int(b.tokens), full_in)

    def _headers(self, remaining: int, reset: float) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.burst),
            "RateLimit-Remaining": str(remaining),
            "RateLimit-Reset": str(max(0, math.ceil(reset))),
            "RateLimit-Policy": f"{self.burst};w={math.ceil(self.burst / self.rate)}",
        }
