"""A token bucket per Google account, so the sidecar stays under Google's per-user quota.

Google allows 600 requests per minute per user per project (NOTES.md C, "Quotas"). Each account
gets a bucket refilled at ``rate`` requests per second (``google.requests_per_second``, default 9/s)
holding at most ``burst`` tokens (the runtime gives 6 seconds' worth, so any 60 s stays within
6r + 60r ≤ 600); a call waits for a token instead of provoking 403 rateLimitExceeded. Buckets are
per process: several worker processes share the quota, so each should get a smaller rate.
"""

from __future__ import annotations

import threading
import time


class TokenBucket:
    """``acquire()`` blocks until a token is free (monotonic clock, seconds); thread-safe."""

    def __init__(self, rate: float, burst: int):
        self.rate = float(rate)
        self.capacity = float(burst)
        self.tokens = float(burst)
        self.updated = time.monotonic()
        self.lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token; returns the seconds waited."""
        waited = 0.0
        while True:
            with self.lock:
                now = time.monotonic()
                self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
                self.updated = now
                if self.tokens >= 1:
                    self.tokens -= 1
                    return waited
                pause = (1 - self.tokens) / self.rate
            time.sleep(pause)
            waited += pause


class Buckets:
    """One TokenBucket per key (the Google account's e-mail, or the connection id)."""

    def __init__(self, rate: float, burst: int = 20):
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> TokenBucket:
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(self.rate, self.burst)
            return bucket
