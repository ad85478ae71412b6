"""The checks. Each is a small named class that looks at a whole batch at once.

``run(batch)`` returns one flag per reading (0: nothing to say, 1 pass,
3 suspect, 4 fail, 9 missing) and a ``cause(i)`` that words the verdict on
reading ``i``; causes are only built for readings a check decided, so a
passing batch costs no string formatting at all.

Per-parameter settings come from the thresholds as one row of numbers per
series (``thresholds.COLS``), so a check reads e.g. the spike threshold of
every reading with one fancy index instead of a lookup per reading.

Windowed checks (spike, rate of change, flat line) share one ``Windows``
pass: the batch's usable points merged with each series' kept history,
sorted by series and time. Every reading is compared only with points
*before* it in time, so a reading gets the same verdict however its series
was split into batches, and again when it is redelivered.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import compress, repeat

import numpy as np

from collector.qc.flags import FAIL, MISSING, PASS, SUSPECT
from collector.qc.state import History
from collector.qc.thresholds import C, StationSettings

NS = 1_000_000_000


def num(x: float) -> str:
    """A value as people write it: 45.0, 0.543, 1.2e+06."""
    if not math.isfinite(x):
        return str(x)
    s = f"{x:.6g}"
    return s if any(c in s for c in ".e") else s + ".0"


def secs(ns: float) -> str:
    return f"{num(ns / NS)} s"


def when(ts_ns: int) -> str:
    return dt.datetime.fromtimestamp(ts_ns // NS, tz=dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- #
# The batch: the readings of a flush's messages as columns, and per-series settings
# --------------------------------------------------------------------------- #


@dataclass
class Batch:
    """The readings of one or more messages (each one station's batch), as columns.

    ``group`` says which message a reading came from; settings that belong to
    a station (time limits, rules) are looked up through it.
    """

    stations: list[str]  # per message
    received: np.ndarray  # int64 ns per reading: when its message arrived
    settings: list[StationSettings]  # per message
    group: np.ndarray  # message index per reading
    ts: np.ndarray  # int64 ns
    value: np.ndarray  # float64, NaN for None
    status: tuple[str, ...]
    cause: tuple[str, ...]
    series_keys: list[tuple[str, str, str, str]]  # (station, device, parameter, unit) per series
    series: np.ndarray  # series index per reading
    P: np.ndarray  # (series, COLS) threshold settings; all zero: no thresholds
    series_param: np.ndarray  # parameter id per series, by ``param_ids``
    series_unit: np.ndarray  # unit id per series
    param_ids: dict[str, int]
    range_profiles: list[str] = field(default_factory=list)  # by the range_profile column; [0] is ""
    n: int = 0
    PT: np.ndarray = field(default=None)  # P transposed
    finite: np.ndarray = field(default=None)
    measuring: np.ndarray = field(default=None)  # status "00"
    has_thresholds: np.ndarray = field(default=None)  # per reading
    time_failed: np.ndarray = field(default=None)  # set by TimestampCheck
    range_failed: np.ndarray = field(default=None)  # set by GrossRangeCheck

    def __post_init__(self) -> None:
        self.n = len(self.ts)
        with np.errstate(invalid="ignore"):
            self.finite = np.isfinite(self.value)
        n00 = self.status.count("00")
        self.measuring = (
            np.ones(self.n, dtype=bool) if n00 == self.n else np.fromiter(map("00".__eq__, self.status), bool, self.n)
        )
        self.PT = np.ascontiguousarray(self.P.T)  # one contiguous row per setting: cheap gathers
        self.series_has = self.P.any(axis=1)
        self.has_thresholds = self.series_has[self.series]
        self.time_failed = np.zeros(self.n, dtype=bool)
        self.range_failed = np.zeros(self.n, dtype=bool)

    def col(self, name: str, series: np.ndarray | None = None) -> np.ndarray:
        """One threshold setting per reading (or per entry of ``series``)."""
        return self.PT[C[name]].take(self.series if series is None else series)

    def per_message(self, values: list) -> np.ndarray:
        """One station setting per reading."""
        return np.array(values)[self.group]

    def setting(self, i: int) -> StationSettings:
        return self.settings[self.group[i]]

    def unit(self, i: int) -> str:
        return self.series_keys[self.series[i]][3]

    def parameter(self, i: int) -> str:
        return self.series_keys[self.series[i]][2]

    def usable(self) -> np.ndarray:
        """Readings that are measurements worth comparing neighbours with: measuring, a value,
        thresholds, neither time nor value impossible. Only these enter windows and history."""
        return self.measuring & self.finite & self.has_thresholds & ~self.time_failed & ~self.range_failed


@dataclass
class Output:
    flags: np.ndarray  # int8 per reading
    cause: Callable[[int], str]


class Check:
    name = ""

    def run(self, batch: Batch) -> Output:
        raise NotImplementedError


def _none(n: int) -> np.ndarray:
    return np.zeros(n, dtype=np.int8)


# --------------------------------------------------------------------------- #
# Status, missing, time
# --------------------------------------------------------------------------- #


class DeviceStatusCheck(Check):
    """Regulation status 01 (calibrating, maintenance) and 02 (device error) -> fail.

    Both are 4: during calibration the analyzer measures zero or span gas, not
    the site (EEA validity -99, AQS null codes for calibration hours), and a
    device error value is not a measurement. The status column keeps 01 apart
    from 02 for completeness statistics, which exclude calibration time.
    """

    name = "device_status"
    words = {"01": "calibrating", "02": "device error"}

    def run(self, b: Batch) -> Output:
        flags = _none(b.n)
        flags[~b.measuring] = FAIL

        def cause(i: int) -> str:
            s = b.status[i]
            what = self.words.get(s, "unknown status")
            return f"{self.name}: {what} (status {s})" + (f": {b.cause[i]}" if b.cause[i] else "")

        return Output(flags, cause)


class MissingCheck(Check):
    """No value (the agent sends nil for no reply, sentinels, non-finite numbers) -> 9."""

    name = "missing"

    def run(self, b: Batch) -> Output:
        flags = _none(b.n)
        flags[~b.finite] = MISSING

        def cause(i: int) -> str:
            v = b.value[i]
            if not math.isnan(v):
                return f"{self.name}: value {num(v)} is not finite"
            return f"{self.name}: no value" + (f" ({b.cause[i]})" if b.cause[i] else "")

        return Output(flags, cause)


class TimestampCheck(Check):
    """Time sanity against the collector's receive time.

    * later than receipt + ``future_skew_s`` -> 4: nothing is measured in the future
      (typically a station clock set to local time but labelled UTC: +7 h);
    * before ``not_before`` -> 4: a clock reset (1970, 2000), not a measurement time;
    * older than ``max_age_s`` at receipt -> 3: possibly a real backlog, but beyond any
      reporting window, and as likely a clock that is far behind.

    Age is measured against receipt, not against the batch's send time, so a
    collector outage (messages waiting at the broker) cannot make live data
    look old within ``max_age_s``.
    """

    name = "timestamp"

    def run(self, b: Batch) -> Output:
        st = b.settings
        if len(st) == 1:
            skew, max_age, not_before = st[0].future_skew_ns, st[0].max_age_ns, st[0].not_before_ns
        else:
            skew = b.per_message([s.future_skew_ns for s in st])
            max_age = b.per_message([s.max_age_ns for s in st])
            not_before = b.per_message([s.not_before_ns for s in st])
        future = b.ts > b.received + skew
        early = b.ts < not_before
        failed = future | early
        old = ~failed & (b.ts < b.received - max_age)
        b.time_failed = failed
        flags = _none(b.n)
        flags[old] = SUSPECT
        flags[failed] = FAIL

        def cause(i: int) -> str:
            s, t, rec = b.setting(i), int(b.ts[i]), int(b.received[i])
            if t > rec + s.future_skew_ns:
                return (
                    f"{self.name}: {when(t)} is {secs(t - rec)} after receipt at {when(rec)} "
                    f"(limit {secs(s.future_skew_ns)})"
                )
            if t < s.not_before_ns:
                return f"{self.name}: {when(t)} is before {s.not_before_text} (station clock reset?)"
            return (
                f"{self.name}: {when(t)} is {num((rec - t) / NS / 86400)} days old at receipt "
                f"(limit {num(s.max_age_ns / NS / 86400)} days)"
            )

        return Output(flags, cause)


# The edge agent reports its clock state in the reading's cause, e.g.
# "clock offset +2.350 s" or "clock offset -850 ms", or "clock unsynchronised".
CLOCK_OFFSET = re.compile(r"clock[ _-]?(?:offset|skew)\s*[:=]?\s*([+-]?\d+(?:\.\d+)?)\s*(ms|s)\b", re.IGNORECASE)
CLOCK_UNSYNCED = re.compile(r"clock[ _-]?(?:un|not[ _-]?)synchroni[sz]ed", re.IGNORECASE)


def clock_offset_s(cause: str) -> float | None:
    """Offset in seconds named in a cause; inf for "unsynchronised"; None if it names none."""
    m = CLOCK_OFFSET.search(cause)
    if m:
        return float(m.group(1)) / (1000.0 if m.group(2).lower() == "ms" else 1.0)
    if CLOCK_UNSYNCED.search(cause):
        return math.inf
    return None


class ClockSyncCheck(Check):
    """A reading taken while the station clock was off by more than ``max_offset_s`` -> 3."""

    name = "clock_sync"

    def run(self, b: Batch) -> Output:
        flags = _none(b.n)
        if any(b.cause):  # most readings carry no cause: skip the parsing entirely
            offsets = {c: clock_offset_s(c) for c in set(b.cause) if c}
            named = {c: abs(off) for c, off in offsets.items() if off is not None}
            if named:
                idx = np.fromiter((i for i in compress(range(b.n), b.cause) if b.cause[i] in named), np.intp)
                off = np.fromiter((named[b.cause[i]] for i in idx.tolist()), np.float64, len(idx))
                limits = np.array([s.clock_max_offset_s for s in b.settings])[b.group[idx]]
                flags[idx[off > limits]] = SUSPECT

        def cause(i: int) -> str:
            off = clock_offset_s(b.cause[i])
            if off is not None and math.isinf(off):
                return f"{self.name}: station clock unsynchronised ({b.cause[i]})"
            return f"{self.name}: station clock offset {off:+.3f} s > {num(b.setting(i).clock_max_offset_s)} s"

        return Output(flags, cause)


# --------------------------------------------------------------------------- #
# Value checks
# --------------------------------------------------------------------------- #


class GrossRangeCheck(Check):
    """QARTOD gross range: outside the analyzer's range -> 4, outside the operator's -> 3.

    The analyzer's range is its profile's (from the station's birth) when the collector knows it,
    and the cause then names the profile; else the thresholds' ``fail`` span.

    Bounds are inclusive (a value equal to a bound passes), as in QARTOD and
    SaQC ``flagRange``. Only measuring readings with a value are examined: a
    calibration value is span gas, not a measurement.
    """

    name = "gross_range"

    def run(self, b: Batch) -> Output:
        flags = _none(b.n)
        on = b.measuring & b.finite & (b.col("range_on") > 0)
        if on.any():
            v = b.value
            with np.errstate(invalid="ignore"):
                fail = on & ((v < b.col("fail_lo")) | (v > b.col("fail_hi")))
                suspect = on & ~fail & ((v < b.col("suspect_lo")) | (v > b.col("suspect_hi")))
            flags[on] = PASS
            flags[suspect] = SUSPECT
            flags[fail] = FAIL
            b.range_failed = fail

        def cause(i: int) -> str:
            row = b.P[b.series[i]]
            v, u = b.value[i], b.unit(i)
            lo, hi = row[C["fail_lo"]], row[C["fail_hi"]]
            if v < lo or v > hi:
                profile = int(row[C["range_profile"]])
                source = f" of profile {b.range_profiles[profile]}" if profile else ""
                return f"{self.name}: {num(v)} {u} outside the analyzer range [{num(lo)}, {num(hi)}]{source}"
            return (
                f"{self.name}: {num(v)} {u} outside the operator range "
                f"[{num(row[C['suspect_lo']])}, {num(row[C['suspect_hi']])}]"
            )

        return Output(flags, cause)


def _median_of_columns(cols: list[np.ndarray], count: np.ndarray) -> np.ndarray:
    """Row-wise median of the first ``count`` finite entries, +inf marking absent ones.

    An odd-even transposition sort over the (at most 8) columns, each step one
    vectorised min/max across all rows: sorting every tiny row with np.sort
    costs a call per row and was most of the evaluation time.
    """
    cols = list(cols)
    w = len(cols)
    for rnd in range(w):
        for a in range(rnd % 2, w - 1, 2):
            lo, hi = np.minimum(cols[a], cols[a + 1]), np.maximum(cols[a], cols[a + 1])
            cols[a], cols[a + 1] = lo, hi
    ordered = np.stack(cols, axis=1)  # absent (+inf) entries sort last
    rows = np.arange(len(count))
    lo_i = np.maximum(count - 1, 0) // 2
    hi_i = np.minimum(count // 2, w - 1)
    with np.errstate(invalid="ignore", over="ignore"):
        med = (ordered[rows, lo_i] + ordered[rows, hi_i]) / 2
    med[count == 0] = np.nan
    return med


@dataclass
class Points:
    """Points sorted by (key, time). ``key`` says which points are neighbours: the series,
    or (message, series) for late points, which only meet points of their own message."""

    key: np.ndarray
    series: np.ndarray
    ts: np.ndarray
    value: np.ndarray
    reading: np.ndarray  # index of the batch reading, -1 for a kept history point
    run_start: np.ndarray
    run_count: np.ndarray
    run_lo: np.ndarray
    run_hi: np.ndarray

    def take(self, mask: np.ndarray) -> Points:
        return Points(*(getattr(self, f)[mask] for f in self.__dataclass_fields__))


_EMPTY = Points(
    *(
        np.zeros(0, dtype=t)
        for t in (np.intp, np.intp, np.int64, np.float64, np.intp, np.int64, np.int64, np.float64, np.float64)
    )
)


class Windows:
    """One pass computing spike, rate-of-change and flat-line verdicts for a batch.

    Reading classes (per series, against ``newest``, its newest kept point before this batch):
    * live: newer than ``newest``. Compared with the kept history and earlier
      batch points; then appended to the history.
    * redelivered: equal in time and value to a kept point. Compared with the
      kept points before it, exactly as the first time (so a redelivered message
      writes the same flags); not appended again.
    * late: older than ``newest`` and not kept (a replayed backlog, an out-of-order
      message). Compared with earlier points *of its own message* only, and never
      appended: it must not rewrite the live window, and its verdict must not
      depend on what the live history happens to hold when it arrives.
    A reading identical (series, time, value) to an earlier one of the batch, e.g.
    the same message twice in one flush, gets that reading's verdict.
    """

    FIELDS = (
        "spike",
        "roc",
        "flat",
        "spike_ref",
        "prev_ts",
        "prev_value",
        "run_start",
        "run_count",
        "run_lo",
        "run_hi",
    )

    def __init__(self, b: Batch, history: History, newest: np.ndarray) -> None:
        self.b = b
        n = b.n
        self.spike, self.roc, self.flat = _none(n), _none(n), _none(n)
        self.spike_ref = np.full(n, np.nan)
        self.prev_ts = np.zeros(n, dtype=np.int64)
        self.prev_value = np.full(n, np.nan)
        self.run_start = np.zeros(n, dtype=np.int64)
        self.run_count = np.zeros(n, dtype=np.int64)
        self.run_lo = np.zeros(n)
        self.run_hi = np.zeros(n)
        self.spike_windows: dict[int, tuple[np.ndarray, int, int]] = {}  # reading -> (values, position, count)
        self.live = _EMPTY

        idx = np.flatnonzero(b.usable())
        if len(idx) == 0:
            return
        h = history
        nh, nb = len(h.ts), len(idx)
        series = np.concatenate([h.series, b.series[idx]])
        ts = np.concatenate([h.ts, b.ts[idx]])
        reading = np.concatenate([np.full(nh, -1, dtype=np.intp), idx])
        # lexsort is stable: at equal (series, time) kept points stay before batch readings, and
        # batch readings keep their order in the batch.
        order = np.lexsort((ts, series))
        pts = Points(
            series[order],
            series[order],
            ts[order],
            np.concatenate([h.value, b.value[idx]])[order],
            reading[order],
            np.concatenate([h.run_start, np.zeros(nb, dtype=np.int64)])[order],
            np.concatenate([h.run_count, np.zeros(nb, dtype=np.int64)])[order],
            np.concatenate([h.run_lo, np.zeros(nb)])[order],
            np.concatenate([h.run_hi, np.zeros(nb)])[order],
        )
        is_batch = pts.reading >= 0
        same_point = np.zeros(len(pts.ts), dtype=bool)  # equal series, time and value to the point before
        same_point[1:] = (
            (pts.series[1:] == pts.series[:-1]) & (pts.ts[1:] == pts.ts[:-1]) & (pts.value[1:] == pts.value[:-1])
        )
        redelivered = is_batch & same_point & np.r_[False, ~is_batch[:-1]]
        live = is_batch & (pts.ts > newest[pts.series])
        late = is_batch & ~live & ~redelivered
        # Batch copies of a point already in the sequence (a kept point, or an earlier batch reading)
        # take that point's verdict instead of being compared with it.
        copy = is_batch & ~late & same_point & ~redelivered
        keep = ~late & ~copy
        keep[:-1] &= ~redelivered[1:]  # the redelivered reading stands in for the kept point it repeats
        main = pts if keep.all() else pts.take(keep)
        self._evaluate(main)
        self.live = main.take(live[keep])
        if copy.any():
            first = np.maximum.accumulate(np.where(copy, 0, np.arange(len(copy))))  # the point each copy repeats
            # A copy always follows a batch reading that is not late (a late one makes the copy late
            # too, a kept point makes it "redelivered"), so its source is a batch reading.
            src, dst = pts.reading[first[copy]], pts.reading[copy]
            for name in self.FIELDS:
                arr = getattr(self, name)
                arr[dst] = arr[src]
            for d, s_ in zip(dst.tolist(), src.tolist()):
                if s_ in self.spike_windows:
                    self.spike_windows[d] = self.spike_windows[s_]
        if late.any():
            li = pts.reading[late]
            key = b.group[li].astype(np.int64) * len(b.series_keys) + b.series[li]
            o = np.lexsort((li, b.ts[li], key))
            li, key = li[o], key[o]
            m = len(li)
            zi, zf = np.zeros(m, dtype=np.int64), np.zeros(m)
            self._evaluate(Points(key, b.series[li], b.ts[li], b.value[li], li, zi, zi.copy(), zf, zf.copy()))

    def _evaluate(self, s: Points) -> None:
        m = len(s.ts)
        if m == 0:
            return

        def col(name: str) -> np.ndarray:
            return self.b.col(name, s.series)

        at_b = s.reading >= 0
        rd = s.reading[at_b]
        # ---- spike: |x - median(previous `window` points within max_gap_s)| ----
        window = col("spike_window").astype(np.int64)
        wmax = int(window[at_b].max()) if at_b.any() else 0
        gap = col("spike_gap_ns")
        same1 = np.zeros(m, dtype=bool)
        same1[1:] = s.key[1:] == s.key[:-1]
        cols = []  # cols[j-1]: the point j places back where it is in the window, else +inf
        count = np.zeros(m, dtype=np.int64)
        for j in range(1, wmax + 1):
            ok = np.zeros(m, dtype=bool)
            ok[j:] = (s.key[j:] == s.key[:-j]) & (s.ts[j:] - s.ts[:-j] <= gap[j:]) & (j <= window[j:])
            back = np.full(m, np.inf)
            back[j:] = np.where(ok[j:], s.value[:-j], np.inf)
            cols.append(back)
            count += ok
        ref = _median_of_columns(cols, count) if cols else np.full(m, np.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            dev = np.abs(s.value - ref)
        evaluated = at_b & (count > 0)
        fail = evaluated & (dev > col("spike_fail"))
        suspect = evaluated & ~fail & (dev > col("spike_suspect"))
        flags = np.zeros(m, dtype=np.int8)
        flags[evaluated] = PASS
        flags[suspect] = SUSPECT
        flags[fail] = FAIL
        self.spike[rd] = flags[at_b]
        self.spike_ref[rd] = ref[at_b]
        flagged = np.flatnonzero(suspect | fail)
        # Where each flagged reading's window lies; the values are only read if its cause is wanted.
        self.spike_windows.update(
            zip(s.reading[flagged].tolist(), zip(repeat(s.value), flagged.tolist(), count[flagged].tolist()))
        )

        # ---- rate of change: |dx| / dt against the previous point ----
        dt_ns = np.zeros(m, dtype=np.int64)
        dt_ns[1:] = s.ts[1:] - s.ts[:-1]
        prev_v = np.full(m, np.nan)
        prev_v[1:] = s.value[:-1]
        prev_t = np.zeros(m, dtype=np.int64)
        prev_t[1:] = s.ts[:-1]
        with np.errstate(invalid="ignore", over="ignore"):
            dv = np.abs(s.value - prev_v)
            ok = at_b & same1 & (col("roc_on") > 0) & (dt_ns > 0) & (dt_ns <= col("roc_gap_ns"))
            # |dx| * 1e9 > rate * dt_ns rather than |dx| / dt > rate: exact at the boundary for whole numbers.
            fire = ok & (dv > col("roc_min_delta")) & (dv * NS > col("roc_per_s") * dt_ns)
        flags = np.zeros(m, dtype=np.int8)
        flags[ok] = PASS
        flags[fire] = SUSPECT  # QARTOD: rate of change is never more than suspect
        self.roc[rd] = flags[at_b]
        self.prev_ts[rd] = prev_t[at_b]
        self.prev_value[rd] = prev_v[at_b]

        # ---- flat line: the run of consecutive values whose spread stays within tolerance ----
        tol = col("flat_tol")
        with np.errstate(invalid="ignore", over="ignore"):
            close = at_b & same1 & (dv <= tol)
        fresh = at_b & ~close
        rs, rc, lo, hi = s.run_start, s.run_count, s.run_lo, s.run_hi
        rs[fresh], rc[fresh], lo[fresh], hi[fresh] = s.ts[fresh], 1, s.value[fresh], s.value[fresh]
        ks = np.flatnonzero(close)
        if len(ks):
            # A run extends point by point, so this part is sequential; it only
            # visits points within tolerance of their predecessor, which a live
            # noisy signal rarely has.
            rs_l, rc_l, lo_l, hi_l = rs.tolist(), rc.tolist(), lo.tolist(), hi.tolist()
            v_l, t_l, tol_l = s.value.tolist(), s.ts.tolist(), tol.tolist()
            for k in ks.tolist():
                v = v_l[k]
                nlo, nhi = min(lo_l[k - 1], v), max(hi_l[k - 1], v)
                if nhi - nlo <= tol_l[k]:
                    rs_l[k], rc_l[k], lo_l[k], hi_l[k] = rs_l[k - 1], rc_l[k - 1] + 1, nlo, nhi
                else:  # the spread grew too wide: a new run starts at the predecessor
                    p = v_l[k - 1]
                    rs_l[k], rc_l[k], lo_l[k], hi_l[k] = t_l[k - 1], 2, min(p, v), max(p, v)
            rs[:], rc[:], lo[:], hi[:] = rs_l, rc_l, lo_l, hi_l
        on = at_b & (col("flat_on") > 0)
        duration = s.ts - rs
        flat = on & (rc >= col("flat_min_count")) & (hi > col("flat_floor"))
        fail = flat & (duration >= col("flat_fail_ns"))
        suspect = flat & ~fail & (duration >= col("flat_suspect_ns"))
        flags = np.zeros(m, dtype=np.int8)
        flags[on] = PASS
        flags[suspect] = SUSPECT
        flags[fail] = FAIL
        self.flat[rd] = flags[at_b]
        self.run_start[rd], self.run_count[rd], self.run_lo[rd], self.run_hi[rd] = (
            rs[at_b],
            rc[at_b],
            lo[at_b],
            hi[at_b],
        )


class SpikeCheck(Check):
    """Spike against a trailing window: |x - median(previous ``window`` points)| > suspect -> 3, > fail -> 4.

    QARTOD's spike test compares a point with the average of the points before
    *and after* it. The collector must judge a reading when it arrives (with
    one reading per series per message the next point is not there yet), so
    the reference is the previous ``window`` usable points within
    ``max_gap_s``, and their median rather than their mean: a lone outlier
    does not move the median of three, so the point after a spike is not
    flagged for it, while a genuine level shift is accepted after
    ceil(window / 2) points. (The return from a spike can still be a
    rate-of-change suspect, as in QARTOD.)
    """

    name = "spike"

    def __init__(self, windows: Callable[[], Windows]) -> None:
        self.windows = windows

    def run(self, b: Batch) -> Output:
        w = self.windows()

        def cause(i: int) -> str:
            row = b.P[b.series[i]]
            dev = abs(b.value[i] - w.spike_ref[i])
            limit = row[C["spike_fail"]] if dev > row[C["spike_fail"]] else row[C["spike_suspect"]]
            values, k, count = w.spike_windows[i]
            used = ", ".join(num(float(values[k - j])) for j in range(count, 0, -1))
            return f"{self.name}: |{num(b.value[i])} - median({used})| = {num(dev)} > {num(limit)} {b.unit(i)}"

        return Output(w.spike, cause)


class RateOfChangeCheck(Check):
    """QARTOD rate of change: |dx/dt| over ``suspect_per_s`` (and |dx| over ``min_delta``) -> 3.

    ``min_delta`` keeps sensor noise between closely spaced samples from
    counting as a rate; points further apart than ``max_gap_s`` are not compared.
    """

    name = "rate_of_change"

    def __init__(self, windows: Callable[[], Windows]) -> None:
        self.windows = windows

    def run(self, b: Batch) -> Output:
        w = self.windows()

        def cause(i: int) -> str:
            row = b.P[b.series[i]]
            dt_s = (b.ts[i] - w.prev_ts[i]) / NS
            rate = abs(b.value[i] - w.prev_value[i]) / dt_s
            u = b.unit(i)
            return (
                f"{self.name}: |{num(b.value[i])} - {num(w.prev_value[i])}| / {num(dt_s)} s "
                f"= {num(rate)} {u}/s > {num(row[C['roc_per_s']])} {u}/s"
            )

        return Output(w.roc, cause)


class FlatLineCheck(Check):
    """A stuck sensor: ``min_count`` or more consecutive values within ``tolerance`` of each
    other for ``suspect_s`` -> 3, for ``fail_s`` -> 4 (QARTOD flat line, in seconds).

    Runs whose values all sit at or below ``floor`` are not flagged: clean air
    and clean water legitimately read the analyzer's floor for hours.
    """

    name = "flat_line"

    def __init__(self, windows: Callable[[], Windows]) -> None:
        self.windows = windows

    def run(self, b: Batch) -> Output:
        w = self.windows()

        def cause(i: int) -> str:
            row = b.P[b.series[i]]
            dur = b.ts[i] - w.run_start[i]
            limit = row[C["flat_fail_ns"]] if dur >= row[C["flat_fail_ns"]] else row[C["flat_suspect_ns"]]
            u = b.unit(i)
            return (
                f"{self.name}: {int(w.run_count[i])} values within {num(row[C['flat_tol']])} {u} "
                f"({num(w.run_lo[i])} to {num(w.run_hi[i])}) for {secs(dur)} >= {secs(limit)}"
            )

        return Output(w.flat, cause)


class ConsistencyCheck(Check):
    """Related values at the same time and station: ``lesser`` above ``greater`` (beyond the
    rule's tolerance) -> both 3. PM2,5 <= PM10, NO2 <= NOx, NO <= NOx, NH4 <= TN by default.

    Pairs are matched on the exact timestamp across all devices of the
    station, and only when both carry the same unit (a conversion factor
    would be a guess). Only measuring readings with a value that did not
    fail the range or time checks take part.
    """

    name = "consistency"

    def run(self, b: Batch) -> Output:
        flags = _none(b.n)
        why: dict[int, str] = {}
        by_rules: dict[tuple, list[int]] = {}
        for g, st in enumerate(b.settings):
            if st.rules:
                by_rules.setdefault(st.rules, []).append(g)
        if by_rules:
            params = b.param_ids
            ok = b.measuring & b.finite & ~b.time_failed & ~b.range_failed
            passed: list[np.ndarray] = []
            violated: list[int] = []
            for rules, groups in by_rules.items():
                wanted = [r for r in rules if r.lesser in params and r.greater in params]
                if not wanted:
                    continue
                rows = ok if len(groups) == len(b.settings) else ok & np.isin(b.group, groups)
                self._pairs(b, wanted, rows, passed, violated, why)
            for arr in passed:
                flags[arr] = PASS
            if violated:
                flags[np.array(violated)] = SUSPECT

        def cause(i: int) -> str:
            return why[i]

        return Output(flags, cause)

    def _pairs(self, b: Batch, rules, rows: np.ndarray, passed: list, violated: list, why: dict[int, str]) -> None:
        is_par: dict[str, np.ndarray] = {}
        reading_param = b.series_param[b.series]

        def rows_of(par: str) -> np.ndarray:
            if par not in is_par:
                is_par[par] = np.flatnonzero(rows & (reading_param == b.param_ids[par]))
            return is_par[par]

        series_unit = b.series_unit
        for rule in rules:
            li, gi = rows_of(rule.lesser), rows_of(rule.greater)
            if not len(li) or not len(gi):
                continue
            # Match on (message, time, unit): give each distinct triple a number, then join on it.
            cand = np.concatenate([li, gi])
            o = np.lexsort((series_unit[b.series[cand]], b.ts[cand], b.group[cand]))
            c = cand[o]
            g_, t_, u_ = b.group[c], b.ts[c], series_unit[b.series[c]]
            new = np.r_[True, (g_[1:] != g_[:-1]) | (t_[1:] != t_[:-1]) | (u_[1:] != u_[:-1])]
            rid = np.empty(len(cand), dtype=np.int64)
            rid[o] = np.cumsum(new)
            lkey, gkey = rid[: len(li)], rid[len(li) :]
            go = np.argsort(gkey, kind="stable")
            gsorted = gkey[go]
            left = np.searchsorted(gsorted, lkey, "left")
            cnt = np.searchsorted(gsorted, lkey, "right") - left
            if not cnt.any():
                continue
            L = np.repeat(li, cnt)
            G = gi[go[np.repeat(left, cnt) + np.arange(cnt.sum()) - np.repeat(np.cumsum(cnt) - cnt, cnt)]]
            passed += [L, G]
            bad = b.value[L] > rule.limit(b.value[G])
            for l_, g_i in zip(L[bad].tolist(), G[bad].tolist()):
                text = (
                    f"{self.name}: {rule.lesser} {num(b.value[l_])} > {rule.greater} {num(b.value[g_i])} {b.unit(l_)} "
                    "at the same time "
                    f"(allowed: {rule.greater} x {num(1 + rule.rel_tolerance)} + {num(rule.abs_tolerance)})"
                )
                why.setdefault(l_, text)
                why.setdefault(g_i, text)
                violated += [l_, g_i]
