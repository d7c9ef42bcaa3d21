"""Per-feedstock rate limits on attestation intake: a token bucket per feedstock.

Each accepted request costs one token per artifact; a bucket holds `burst` tokens and
refills at `rate` per second. Buckets live in the process: with N server processes a
feedstock may submit up to N times the rate. That is deliberate (no shared state on the
hot path); the limit exists to stop a runaway or stolen CI secret from flooding the
service, which N times a modest rate still does. Only registered feedstocks get a bucket,
so the table cannot be grown by made-up names.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class TokenBuckets:
    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, key: str, cost: int) -> float:
        """Spend `cost` tokens: 0.0 when allowed, else the seconds to wait before retrying."""
        cost = min(max(cost, 1), self.burst)  # a request can never need more than a full bucket
        now = self._clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens >= cost:
                self._buckets[key] = (tokens - cost, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (cost - tokens) / self.rate
