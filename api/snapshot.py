"""A shared answer recomputed at most once every ``max_age_s``: many callers of "the latest of every
station" cost one query a second, not one each.

Once there is a value, no caller waits for a recomputation: the first caller to find it stale starts one in
the background and is answered with the value it has (its ``as_of`` says how old), as are the callers
after it until the new one is in. A value older than ``max_age_s + stale_for_s`` (a recomputation that
failed or hangs: the warehouse is down) is never served; the caller then recomputes, and fails, itself.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

import structlog

T = TypeVar("T")
log = structlog.get_logger("api")


class Snapshot(Generic[T]):
    def __init__(
        self,
        compute: Callable[[], T],
        max_age_s: float,
        stale_for_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._compute, self._max_age, self._stale_for, self._clock = compute, max_age_s, stale_for_s, clock
        self._value: T | None = None
        self._at = float("-inf")
        self._refreshing = False
        self._lock = threading.Lock()  # guards the fields above
        self._computing = threading.Lock()  # one recomputation at a time

    def get(self) -> T:
        if self._max_age <= 0:
            return self._compute()
        with self._lock:
            value, age = self._value, self._clock() - self._at
            if value is not None and age < self._max_age:
                return value
            if value is not None and age < self._max_age + self._stale_for:
                if not self._refreshing:
                    self._refreshing = True
                    threading.Thread(target=self._refresh, name="snapshot-refresh", daemon=True).start()
                return value
        return self._recompute()

    def _recompute(self) -> T:
        with self._computing:
            with self._lock:
                if self._value is not None and self._clock() - self._at < self._max_age:
                    return self._value  # another caller recomputed it while this one waited
            started = self._clock()  # the age counts from when the query was sent: the data are as of then
            value = self._compute()
            with self._lock:
                self._value, self._at = value, started
            return value

    def _refresh(self) -> None:
        try:
            self._recompute()
        except Exception as exc:  # noqa: BLE001 - a background thread: logged; the next caller retries itself
            log.warning("snapshot_refresh_failed", error=f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._refreshing = False
