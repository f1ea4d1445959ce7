"""Per-tenant submission rate limit: a token bucket, refilled continuously.

Each gateway replica enforces its own buckets, so N replicas admit up to N times the
rate; the scheduler's queue limits are the cluster-wide backstop.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    def __init__(self, *, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def try_acquire(self, tenant: str, per_minute: int) -> float:
        """Take one submission; return 0 if allowed, else the seconds until one is available."""
        now = self._clock()
        capacity = float(per_minute)  # a full minute's worth may arrive as one burst
        rate = per_minute / 60.0
        bucket = self._buckets.setdefault(tenant, _Bucket(capacity, now))
        bucket.tokens = min(capacity, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return 0.0
        return (1.0 - bucket.tokens) / rate


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
