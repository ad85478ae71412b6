"""QualityControl: evaluates readings as they arrive and keeps the series history.

    qc = QualityControl(ThresholdSource("qc.yaml"), SeriesState())
    qc.seed(rows)                                            # after a restart: store.queries.recent_readings
    per_message = qc.evaluate_many([(station, readings, received_ns), ...])   # a collector flush
    results = qc.evaluate(station, readings, received_ns)    # one message (same verdicts, slower)

Each result list holds one QcResult per reading, in the input order.
Evaluation is deterministic: the same readings against the same history give
the same results. The history changes only by appending readings newer than
the newest point of their series, so a redelivered message (same readings,
same times, same values) finds the same predecessors and gets the same
flags; see checks.Windows for the exact policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, islice, repeat
from operator import attrgetter, itemgetter

import numpy as np
import structlog

from broker_bridge.envelope import Reading
from collector.qc.checks import (
    Batch,
    Check,
    ClockSyncCheck,
    ConsistencyCheck,
    DeviceStatusCheck,
    FlatLineCheck,
    GrossRangeCheck,
    MissingCheck,
    RateOfChangeCheck,
    SpikeCheck,
    TimestampCheck,
    Windows,
)
from collector.qc.flags import FIRED, FLAG_OF_SEVERITY, NOT_EVALUATED, SEVERITY, QcColumns, QcResult
from collector.qc.state import SeriesState
from collector.qc.thresholds import C, ThresholdSource

log = structlog.get_logger("collector.qc")

_FIELDS = attrgetter("ts_ns", "device", "parameter", "value", "unit", "status", "cause")
SEED_CHUNK = 50_000  # rows per internal batch while seeding; any size gives the same state


class QualityControl:
    """Runs the checks over the messages of a flush; owns the windowed checks' history.

    Not thread-safe: the collector's flush loop is its only caller.
    """

    def __init__(
        self, thresholds: ThresholdSource, state: SeriesState | None = None, clock: Callable[[], int] = time.time_ns
    ) -> None:
        self.thresholds = thresholds
        self.state = state if state is not None else SeriesState()
        self.clock = clock
        # The series table: key -> row; per row its key and (thresholds row, parameter id, unit id).
        self._info: dict[tuple[str, str, str, str], int] = {}
        self._info_keys: list[tuple[str, str, str, str]] = []
        self._info_rows: list[tuple[int, int, int]] = []
        self._info_table = np.zeros((0, 3), dtype=np.intp)
        self._info_generation = -1
        self._param_ids: dict[str, int] = {}
        self._unit_ids: dict[str, int] = {}
        self._not_evaluated: dict[
            tuple[str, str, int, bool], QcResult
        ] = {}  # cached: the same text for every such reading
        self._windows: Windows | None = None
        self._batch: Batch | None = None
        self.checks: tuple[Check, ...] = (
            DeviceStatusCheck(),
            MissingCheck(),
            TimestampCheck(),
            ClockSyncCheck(),
            GrossRangeCheck(),
            SpikeCheck(self._window_pass),
            RateOfChangeCheck(self._window_pass),
            FlatLineCheck(self._window_pass),
            ConsistencyCheck(),
        )
        self.names = tuple(c.name for c in self.checks)

    # -- public API -----------------------------------------------------------
    def evaluate(self, station: str, readings: Sequence[Reading], received_ns: int | None = None) -> list[QcResult]:
        """One result per reading, in the input order. ``received_ns`` defaults to the clock."""
        return self.evaluate_many([(station, readings, self.clock() if received_ns is None else received_ns)])[0]

    def evaluate_many(self, messages: Sequence[tuple[str, Sequence[Reading], int]]) -> list[list[QcResult]]:
        """Evaluate several messages (station, readings, received_ns) at once, in arrival order.

        The same verdicts as calling ``evaluate`` per message in that order when
        each series arrives in time order; the difference is speed: a collector
        flush evaluates all its messages in one vectorised pass instead of
        paying numpy's per-call cost per message. Late readings (older than
        their series' history) are compared within their own message only.
        """
        messages = list(messages)
        sizes = [len(m[1]) for m in messages]
        # C-level iteration throughout: this runs once per reading of a whole flush.
        fields = tuple(zip(*map(_FIELDS, chain.from_iterable(m[1] for m in messages))))
        verdicts = self.evaluate_columns([m[0] for m in messages], sizes, [m[2] for m in messages], fields)
        flat = verdicts.results()
        out, at = [], 0
        for n in sizes:
            out.append(flat[at : at + n])
            at += n
        return out

    def evaluate_columns(
        self, stations: Sequence[str], sizes: Sequence[int], received: Sequence[int], columns: tuple[Sequence, ...]
    ) -> QcColumns:
        """The collector's form of ``evaluate_many``: messages as columns, verdicts as columns.

        ``stations``, ``sizes`` (readings per message) and ``received`` (ns)
        are per message; ``columns`` is (ts_ns, device, parameter, value,
        unit, status, cause), each holding every message's readings in order.
        """
        n = sum(sizes)
        if n == 0:
            return QcColumns.passed(0)
        stations = list(stations)
        group = np.repeat(np.arange(len(stations)), sizes)
        received_col = np.repeat(np.array([int(r) for r in received], dtype=np.int64), sizes)
        station_col = list(chain.from_iterable(map(repeat, stations, sizes)))
        return self._run(stations, station_col, group, received_col, columns, want_results=True)

    def seed(self, rows: Iterable[tuple]) -> int:
        """Rebuild the history after a restart from stored readings; returns the number of rows.

        ``rows``: (station, device, parameter, ts_ns, value, status, unit) in time
        order, as ``store.queries.recent_readings`` returns them (any order within
        SEED_CHUNK rows). They stream through the same evaluation as live
        messages, so the history ends up as an uninterrupted run left it,
        provided the rows reach back ``thresholds.lookback_s()`` (the longest
        flat-line window; a shorter look-back only delays flat-line verdicts
        for runs that began before it).
        """
        total, newest = 0, None
        it = iter(rows)
        while chunk := list(islice(it, SEED_CHUNK)):
            chunk.sort(key=itemgetter(3))
            if newest is not None and chunk[0][3] < newest:
                raise ValueError(
                    "seed rows must come in time order (ORDER BY ts): "
                    f"a row at {chunk[0][3]} ns follows one at {newest} ns"
                )
            newest = chunk[-1][3]
            st, dev, par, ts, val, status, unit = zip(*chunk)
            ts = tuple(int(t) for t in ts)
            val = tuple(None if v is None else float(v) for v in val)
            stations = list(dict.fromkeys(st))
            index = {s: i for i, s in enumerate(stations)}
            group = np.fromiter(map(index.__getitem__, st), np.intp, len(chunk))
            # "Received" at the newest row: stored rows are not re-judged as future.
            received = np.full(len(chunk), ts[-1], dtype=np.int64)
            self._run(
                stations,
                list(st),
                group,
                received,
                (ts, dev, par, val, unit, status, ("",) * len(chunk)),
                want_results=False,
            )
            total += len(chunk)
        log.info("qc_state_seeded", rows=total, series=len(self.state))
        return total

    # -- the evaluation ---------------------------------------------------------
    def _window_pass(self) -> Windows:
        if self._windows is None:
            b = self._batch
            keys = [k if has else None for k, has in zip(b.series_keys, b.series_has.tolist())]
            slots = self.state.slots_for(keys)
            usable = b.usable()
            u_series = b.series[usable]
            used = np.flatnonzero(np.bincount(u_series, minlength=len(keys)))
            newest = np.full(len(keys), -1, dtype=np.int64)
            newest[used] = self.state.newest(slots[used])
            # Live points only need the last `window` kept points; a series with a point at or
            # before its newest kept one (a redelivery) needs all it keeps, to find its neighbours.
            depth = np.zeros(len(keys), dtype=np.int64)
            depth[used] = np.maximum(b.PT[C["spike_window"]].take(used).astype(np.int64), 1)
            depth[u_series[b.ts[usable] <= newest[u_series]]] = self.state.history
            history = self.state.gather(slots[used], used, depth[used])
            self._windows = Windows(b, history, newest)
            live = self._windows.live
            if len(live.ts):
                slot_of = slots[live.series]
                have = slot_of >= 0
                self.state.push(
                    slot_of[have],
                    live.ts[have],
                    live.value[have],
                    live.run_start[have],
                    live.run_count[have],
                    live.run_lo[have],
                    live.run_hi[have],
                )
        return self._windows

    def _run(
        self,
        stations: list[str],
        station_col: list[str],
        group: np.ndarray,
        received: np.ndarray,
        fields: tuple[Sequence, ...],
        want_results: bool,
    ) -> QcColumns | None:
        ts_t, dev_t, par_t, val_t, unit_t, status_t, cause_t = fields
        rows = self._series_rows(list(zip(station_col, dev_t, par_t, unit_t)))
        known, series = np.unique(rows, return_inverse=True)  # the call's series, as rows of the series table
        tab = self._info_table[known]
        th = self.thresholds
        batch = Batch(
            stations=stations,
            received=received,
            settings=[th.station(st) for st in stations],
            group=group,
            ts=np.array(ts_t, dtype=np.int64),
            value=np.array(val_t, dtype=np.float64),
            status=status_t,
            cause=cause_t,
            series_keys=[self._info_keys[r] for r in known.tolist()],
            series=series.astype(np.intp, copy=False),
            P=th.matrix()[tab[:, 0]],
            series_param=tab[:, 1],
            series_unit=tab[:, 2],
            param_ids=self._param_ids,
            range_profiles=th.range_profiles,
        )
        self._batch, self._windows = batch, None
        try:
            outputs = [check.run(batch) for check in self.checks]
            self._window_pass()  # even if no windowed check is configured: the history must advance
        finally:
            self._batch, self._windows = None, None
        if not want_results:
            return None
        return self._results(batch, outputs)

    def _series_rows(self, keys: list[tuple[str, str, str, str]]) -> np.ndarray:
        """Row of each reading's series in the series table (thresholds row, parameter id, unit id),
        interned across calls: one dict lookup per reading."""
        th = self.thresholds
        if self._info_generation != th.generation or len(self._info) > 200_000:
            # New thresholds, or too many series names seen (junk must not grow this forever).
            self._info, self._info_keys, self._info_rows, self._info_generation = {}, [], [], th.generation
            self._param_ids, self._unit_ids = {}, {}
        rows = list(map(self._info.get, keys))
        if None in rows:
            for i in [i for i, r in enumerate(rows) if r is None]:
                k = keys[i]
                row = self._info.get(k)
                if row is None:
                    pt = th.param(*k)
                    row = self._info[k] = len(self._info_rows)
                    self._info_keys.append(k)
                    self._info_rows.append(
                        (
                            0 if pt is None else pt.vid,
                            self._param_ids.setdefault(k[2], len(self._param_ids)),
                            self._unit_ids.setdefault(k[3], len(self._unit_ids)),
                        )
                    )
                rows[i] = row
            self._info_table = np.array(self._info_rows, dtype=np.intp).reshape(len(self._info_rows), 3)
        return np.array(rows, dtype=np.intp)

    def _results(self, b: Batch, outputs) -> QcColumns:
        severity = SEVERITY[np.stack([o.flags for o in outputs])]  # (checks, readings)
        decider = severity.argmax(axis=0)  # the first of the worst, in check order
        worst = severity[decider, np.arange(b.n)]
        verdicts = QcColumns.passed(b.n)
        pass_rank = SEVERITY[1]
        # "Not evaluated" depends only on the series: one result per series, shared by its readings.
        idle = np.flatnonzero(worst < pass_rank)
        if len(idle):
            series, first = np.unique(b.series[idle], return_index=True)
            shared = {s: self._not_evaluated_result(b, i) for s, i in zip(series.tolist(), idle[first].tolist())}
            verdicts.fill(idle.tolist(), list(map(shared.__getitem__, b.series[idle].tolist())))
        for i in np.flatnonzero(worst > pass_rank).tolist():
            w = worst[i]
            c = int(decider[i])
            fired = tuple(self.names[k] for k in np.flatnonzero(severity[:, i] >= FIRED).tolist())
            verdicts.set(i, QcResult(int(FLAG_OF_SEVERITY[w]), self.names[c], outputs[c].cause(i), fired))
        return verdicts

    def _not_evaluated_result(self, b: Batch, i: int) -> QcResult:
        par, unit = b.parameter(i), b.unit(i)
        has = bool(b.series_has[b.series[i]])
        key = (par, unit, self.thresholds.generation, has)
        found = self._not_evaluated.get(key)
        if found is None:
            if has:
                cause = f"not_evaluated: no value check applies to {par} in {unit!r} (all are off)"
            else:
                units = self.thresholds.units_for(par)
                known = (
                    f"thresholds exist for {', '.join(repr(u) for u in units)}"
                    if units
                    else "no thresholds for this symbol at all"
                )
                cause = f"not_evaluated: no QC thresholds for {par} in {unit!r} ({known})"
            found = QcResult(NOT_EVALUATED, "not_evaluated", cause, ())
            if len(self._not_evaluated) > 10_000:
                self._not_evaluated.clear()
            self._not_evaluated[key] = found
        return found

    def reload_thresholds(self) -> bool:
        """Pick up a changed thresholds file; call once per collector flush."""
        return self.thresholds.reload_if_changed()
