"""Recent history per series, for the windowed checks (spike, rate of change, flat line).

A series is one (station, device, parameter, unit): the unit belongs to the
key because a history in another unit would make every window wrong (a unit
change simply starts a new series; the old one ages out).

Memory is bounded twice: each series keeps its last ``history`` usable
points, in a ring, and at most ``max_series`` series are kept; the series
used least recently is evicted first (LRU, by a per-slot "last used" tick,
so marking a batch's series as used is one vectorised assignment). All series live in a few shared
numpy arrays (rows = slots), so one batch reads and writes the history of all
its series with a handful of vectorised operations instead of a Python loop
per series.

Each point keeps, next to its time and value, the flat-line run that ends at
it (start time, count, low, high). A point re-evaluated later (a redelivered
message) then finds the same run at its predecessor and gets the same verdict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

HISTORY = 16  # points per series: spike windows (<= 8) plus room for redeliveries to find their neighbours
SeriesKey = tuple[str, str, str, str]  # station, device, parameter, unit


@dataclass(frozen=True)
class History:
    """Points of several series in time order, flattened; ``series`` indexes the caller's list."""

    series: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    run_start: np.ndarray
    run_count: np.ndarray
    run_lo: np.ndarray
    run_hi: np.ndarray


class SeriesState:
    """Bounded per-series history. Not thread-safe: one collector flush loop owns it."""

    def __init__(self, max_series: int = 40_000, history: int = HISTORY) -> None:
        if max_series < 1 or history < 2:
            raise ValueError("SeriesState needs max_series >= 1 and history >= 2")
        self.max_series = max_series
        self.history = history
        self._slot_of: dict[SeriesKey, int] = {}
        self._key_of: list[SeriesKey | None] = []
        self._free: list[int] = []
        self._tick = 0
        self.evicted = 0
        self._cap = 0
        self._alloc(min(1024, max_series))

    def _alloc(self, capacity: int) -> None:
        old, h = self._cap, self.history

        def grow(name: str, shape: tuple[int, ...], dtype: type, fill: float) -> None:
            new = np.full(shape, fill, dtype=dtype)
            if old:
                new[:old] = getattr(self, name)
            setattr(self, name, new)

        grow("_ts", (capacity, h), np.int64, 0)
        grow("_val", (capacity, h), np.float64, 0.0)
        grow("_run_start", (capacity, h), np.int64, 0)
        grow("_run_count", (capacity, h), np.int64, 0)
        grow("_run_lo", (capacity, h), np.float64, 0.0)
        grow("_run_hi", (capacity, h), np.float64, 0.0)
        grow("_head", (capacity,), np.int64, 0)
        grow("_count", (capacity,), np.int64, 0)
        grow("_newest", (capacity,), np.int64, -1)
        grow("_used", (capacity,), np.int64, -1)
        self._key_of.extend([None] * (capacity - old))
        self._free.extend(range(capacity - 1, old - 1, -1))
        self._cap = capacity

    # -- bookkeeping ------------------------------------------------------
    def __len__(self) -> int:
        return len(self._slot_of)

    def __contains__(self, key: SeriesKey) -> bool:
        return key in self._slot_of

    @property
    def capacity(self) -> int:
        return self._cap

    def nbytes(self) -> int:
        """Bytes held by the history arrays (the dominant part of the state's memory)."""
        names = ("_ts", "_val", "_run_start", "_run_count", "_run_lo", "_run_hi", "_head", "_count", "_newest", "_used")
        return sum(getattr(self, a).nbytes for a in names)

    def clear(self) -> None:
        self._slot_of.clear()
        self._key_of = [None] * self._cap
        self._free = list(range(self._cap - 1, -1, -1))
        self._count[:] = 0
        self._head[:] = 0
        self._newest[:] = -1
        self._used[:] = -1

    def slots_for(self, keys: Sequence[SeriesKey | None]) -> np.ndarray:
        """Slot per key (distinct keys; allocating, evicting the least recently used); -1 for None or no room.

        A series used in this call is never evicted by this call: when every
        kept series is in use, further new series get -1 and are evaluated
        without history (and not remembered).
        """
        get = self._slot_of.get
        out = np.array([-1 if k is None else get(k, -1) for k in keys], dtype=np.intp)
        self._tick += 1
        self._used[out[out >= 0]] = self._tick
        missing = [i for i in np.flatnonzero(out < 0).tolist() if keys[i] is not None]
        if missing:
            new = self._new_slots(len(missing))
            for i, slot in zip(missing, new):
                if slot < 0:
                    continue
                key = keys[i]
                self._slot_of[key] = slot
                self._key_of[slot] = key
                out[i] = slot
            out_new = out[missing]
            self._used[out_new[out_new >= 0]] = self._tick
        return out

    def _new_slots(self, m: int) -> list[int]:
        """Up to ``m`` empty slots, growing the arrays, then evicting least recently used series."""
        while len(self._free) < m and self._cap < self.max_series:
            self._alloc(min(self._cap * 2, self.max_series))
        slots = [self._free.pop() for _ in range(min(m, len(self._free)))]
        if len(slots) < m:
            idle = np.flatnonzero((self._used < self._tick) & (self._used >= 0))
            k = min(m - len(slots), len(idle))
            if k:
                victims = idle[np.argpartition(self._used[idle], k - 1)[:k]] if k < len(idle) else idle
                for slot in victims.tolist():
                    del self._slot_of[self._key_of[slot]]
                    self._key_of[slot] = None
                    self._used[slot] = -1
                self.evicted += k
                slots += victims.tolist()
        slots_arr = np.array(slots, dtype=np.intp)
        self._count[slots_arr] = 0
        self._head[slots_arr] = 0
        self._newest[slots_arr] = -1
        return slots + [-1] * (m - len(slots))

    def newest(self, slots: np.ndarray) -> np.ndarray:
        """Newest point time per slot (-1: none or no slot)."""
        out = np.full(len(slots), -1, dtype=np.int64)
        have = slots >= 0
        out[have] = self._newest[slots[have]]
        return out

    # -- reading and writing points -------------------------------------------
    def gather(self, slots: np.ndarray, series: np.ndarray, depth: np.ndarray | None = None) -> History:
        """The kept points of ``slots`` (one per entry of ``series``), oldest first per series;
        only the newest ``depth`` of them where given."""
        have = slots >= 0
        slots, series = slots[have], series[have]
        h = self.history
        keep = self._count[slots] if depth is None else np.minimum(self._count[slots], depth[have])
        width = int(keep.max()) if len(keep) else 0
        j = np.arange(h - width, h)
        phys = (self._head[slots][:, None] + j) % h
        valid = j >= (h - keep)[:, None]
        flat = (slots[:, None] * h + phys)[valid]  # 1-d positions: take() on a flat view is the fast gather
        return History(
            series=np.broadcast_to(series[:, None], phys.shape)[valid],
            ts=self._ts.ravel().take(flat),
            value=self._val.ravel().take(flat),
            run_start=self._run_start.ravel().take(flat),
            run_count=self._run_count.ravel().take(flat),
            run_lo=self._run_lo.ravel().take(flat),
            run_hi=self._run_hi.ravel().take(flat),
        )

    def push(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        value: np.ndarray,
        run_start: np.ndarray,
        run_count: np.ndarray,
        run_lo: np.ndarray,
        run_hi: np.ndarray,
    ) -> None:
        """Append points; rows must be grouped by slot and in time order within a slot."""
        if len(slots) == 0:
            return
        h = self.history
        starts = np.flatnonzero(np.r_[True, slots[1:] != slots[:-1]])
        sizes = np.diff(np.r_[starts, len(slots)])
        rank = np.arange(len(slots)) - np.repeat(starts, sizes)
        kept = np.minimum(sizes, h)
        drop = np.repeat(sizes - kept, sizes)
        keep = rank >= drop  # more than `history` new points: only the last ones matter
        group_slot = slots[starts]
        pos = (np.repeat(self._head[group_slot], sizes) + rank - drop) % h
        flat = slots[keep] * h + pos[keep]
        for arr, new in (
            (self._ts, ts),
            (self._val, value),
            (self._run_start, run_start),
            (self._run_count, run_count),
            (self._run_lo, run_lo),
            (self._run_hi, run_hi),
        ):
            arr.ravel()[flat] = new[keep]  # ravel() of a contiguous array is a view: this writes in place
        self._head[group_slot] = (self._head[group_slot] + kept) % h
        self._count[group_slot] = np.minimum(self._count[group_slot] + kept, h)
        last = starts + sizes - 1
        self._newest[group_slot] = np.maximum(self._newest[group_slot], ts[last])
