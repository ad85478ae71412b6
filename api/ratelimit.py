"""Per-caller token buckets: a key's own rate, or the public rate per client address."""

from __future__ import annotations

import math
import threading
import time


class RateLimiter:
    """``allow(who, per_minute)`` takes one token from ``who``'s bucket (holding at most a minute's worth,
    refilled continuously); when empty it answers the seconds until the next token, else None."""

    def __init__(self, clock=time.monotonic, max_callers: int = 100_000) -> None:
        self._clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # who -> (tokens, at)
        self._lock = threading.Lock()
        self._max = max_callers

    def waiting(self, who: str, per_minute: int) -> int | None:
        """The seconds until ``who``'s next token when its bucket is empty, else None; takes nothing."""
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(who, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - at) * rate)
        return None if tokens >= 1.0 else max(1, math.ceil((1.0 - tokens) / rate))

    def allow(self, who: str, per_minute: int) -> int | None:
        now = self._clock()
        rate = per_minute / 60.0
        with self._lock:
            tokens, at = self._buckets.get(who, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - at) * rate)
            if tokens >= 1.0:
                if len(self._buckets) >= self._max and who not in self._buckets:
                    self._buckets.clear()  # a flood of addresses: forget them all rather than grow without end
                self._buckets[who] = (tokens - 1.0, now)
                return None
            self._buckets[who] = (tokens, now)
            return max(1, math.ceil((1.0 - tokens) / rate))
