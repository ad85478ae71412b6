"""A shared answer recomputed at most once every ``max_age_s``: many callers of "the latest of every
station" cost one query a second, not one each. Callers that find it stale while it is being recomputed
wait for that one recomputation instead of starting their own."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Snapshot(Generic[T]):
    def __init__(self, compute: Callable[[], T], max_age_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._compute, self._max_age, self._clock = compute, max_age_s, clock
        self._value: T | None = None
        self._at = float("-inf")
        self._lock = threading.Lock()

    def get(self) -> T:
        if self._max_age <= 0:
            return self._compute()
        value, at = self._value, self._at
        if value is not None and self._clock() - at < self._max_age:
            return value
        with self._lock:
            if self._value is not None and self._clock() - self._at < self._max_age:
                return self._value  # another caller recomputed it while this one waited
            started = self._clock()
            self._value = self._compute()
            self._at = started  # the age counts from when the query was sent: the data are as of then
            return self._value
