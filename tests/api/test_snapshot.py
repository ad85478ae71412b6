"""The shared latest answer's rules (api/snapshot.py) on a clock the test moves: reused while fresh, served
stale only while a background recomputation is under way and not past its bound, recomputed by the caller
(and its failure raised) after that."""

from __future__ import annotations

import threading
import time

import pytest

from api.snapshot import Snapshot


def test_fresh_reused_stale_refreshed_in_the_background_too_old_never_served():
    now = [100.0]
    calls: list[float] = []
    release = threading.Event()
    failing = [False]

    def compute() -> int:
        calls.append(now[0])
        if len(calls) == 2:
            release.wait(10)  # the background recomputation takes a while
        if failing[0]:
            raise ConnectionError("warehouse down")
        return len(calls)

    snap = Snapshot(compute, max_age_s=1.0, stale_for_s=5.0, clock=lambda: now[0])
    assert snap.get() == 1 and snap.get() == 1 and len(calls) == 1, "fresh: one computation for many callers"
    now[0] += 1.5
    assert snap.get() == 1, "stale: served at once while the new one is computed"
    deadline = time.monotonic() + 10
    while len(calls) < 2:  # the background thread has started computing
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert [snap.get() for _ in range(5)] == [1] * 5 and len(calls) == 2, "one recomputation, not one per caller"
    release.set()
    while snap.get() != 2:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    now[0] += 1.0 + 5.0 + 0.1  # past its age and the stale bound
    failing[0] = True
    with pytest.raises(ConnectionError):
        snap.get()  # never the old value: the caller recomputes and fails like a direct query
    failing[0] = False
    assert snap.get() == 4


def test_max_age_zero_computes_every_time():
    n = [0]

    def compute() -> int:
        n[0] += 1
        return n[0]

    snap = Snapshot(compute, max_age_s=0)
    assert [snap.get(), snap.get(), snap.get()] == [1, 2, 3]
