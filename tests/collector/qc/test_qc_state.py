"""collector.qc history: bounded memory, rebuild after a restart, and deterministic verdicts
(however a stream is split into messages, when a message is redelivered, when a backlog arrives late)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from broker_bridge.envelope import Reading
from collector.qc import FAIL, PASS, SUSPECT, QualityControl, SeriesState, ThresholdSource
from tests.collector.qc.test_qc_checks import MIN, RECEIVED, T0, R, make_qc

STREAM_THRESHOLDS = """
qc:
  parameters:
    TST:
      u:
        gross_range: {fail: [0, 100], suspect: [5, 80]}
        spike: {suspect: 10, fail: 30, window: 3, max_gap_s: 3600}
        rate_of_change: {suspect_per_s: 0.1, min_delta: 5, max_gap_s: 3600}
        flat_line: {tolerance: 0.25, min_count: 3, suspect_s: 300, fail_s: 600}
"""


def stream(seed: int = 7, minutes: int = 240, stations=("S1", "S2"), devices=("d1", "d2")) -> list[list[Reading]]:
    """Per minute, one reading per (station, device): a random walk with spikes, flat
    stretches, missing values, calibrations and out-of-range values."""
    rng = random.Random(seed)
    level = {(s, d): 30.0 for s in stations for d in devices}
    flat_until = {k: -1 for k in level}
    out = []
    for m in range(minutes):
        cycle = []
        for key in level:
            st, dev = key
            r = rng.random()
            if m < flat_until[key]:
                value = level[key]
            else:
                level[key] = min(90.0, max(6.0, level[key] + rng.gauss(0, 2.0)))
                value = level[key]
                if r < 0.03:
                    flat_until[key] = m + rng.randint(3, 20)
            status, cause = "00", ""
            if 0.03 <= r < 0.06:
                value = value + rng.choice([-1, 1]) * rng.uniform(12, 40)
            elif 0.06 <= r < 0.08:
                value = None
            elif 0.08 <= r < 0.10:
                status, cause = "01", "zero calibration"
            elif 0.10 <= r < 0.11:
                value = 150.0
            cycle.append(Reading(T0 + m * MIN, dev, "TST", value, "u", status, cause))
        out.append(cycle)
    return out


def by_station(cycle: list[Reading], station_of) -> list[tuple[str, list[Reading], int]]:
    groups: dict[str, list[Reading]] = {}
    for r in cycle:
        groups.setdefault(station_of(r), []).append(r)
    return [(st, rs, RECEIVED) for st, rs in groups.items()]


STATION_OF: dict[int, str] = {}


def run_cycles(qc: QualityControl, cycles, stations=("S1", "S2")) -> dict[tuple, object]:
    """Evaluate each cycle as one message per station; results keyed by (station, device, ts)."""
    out = {}
    for cycle in cycles:
        n = len(cycle) // len(stations)
        for i, st in enumerate(stations):
            part = cycle[i * n : (i + 1) * n]
            for r, q in zip(part, qc.evaluate(st, part, RECEIVED)):
                out[(st, r.device, r.ts_ns)] = q
    return out


@pytest.fixture
def fresh(tmp_path: Path):
    def make(**state_kw) -> QualityControl:
        return make_qc(tmp_path, STREAM_THRESHOLDS, **state_kw)

    return make


def test_the_stream_exercises_every_verdict(fresh):
    results = run_cycles(fresh(), stream())
    seen = {(q.flag, q.check) for q in results.values()}
    for expected in [(PASS, ""), (SUSPECT, "spike"), (FAIL, "spike"), (SUSPECT, "rate_of_change"),
                     (SUSPECT, "flat_line"), (FAIL, "flat_line"), (FAIL, "gross_range"), (FAIL, "device_status"),
                     (9, "missing")]:  # fmt: skip
        assert expected in seen, expected


# --------------------------------------------------------------------------- #
# Rebuilding after a restart
# --------------------------------------------------------------------------- #


def rows_of(cycles, stations=("S1", "S2")):
    """What the warehouse holds: (station, device, parameter, ts_ns, value, status, unit)."""
    rows = []
    for cycle in cycles:
        n = len(cycle) // len(stations)
        for i, st in enumerate(stations):
            rows += [
                (st, r.device, r.parameter, r.ts_ns, r.value, r.status, r.unit) for r in cycle[i * n : (i + 1) * n]
            ]
    return rows


@pytest.mark.parametrize("split", [1, 37, 120, 200])
def test_rebuilt_state_gives_the_same_verdicts_as_an_uninterrupted_run(fresh, split):
    cycles = stream()
    uninterrupted = run_cycles(fresh(), cycles)

    restarted = fresh()
    rows = rows_of(cycles[:split])
    random.Random(1).shuffle(rows)  # within a chunk any order will do
    assert restarted.seed(rows) == len(rows)
    after = run_cycles(restarted, cycles[split:])
    assert after == {k: v for k, v in uninterrupted.items() if k in after}
    assert len(after) == 4 * (len(cycles) - split)


def test_seed_streams_in_chunks_and_refuses_rows_out_of_time_order(fresh, monkeypatch):
    import collector.qc.engine as engine

    monkeypatch.setattr(engine, "SEED_CHUNK", 50)  # a small chunk: many chunks from a short stream
    cycles = stream()
    uninterrupted = run_cycles(fresh(), cycles)
    restarted = fresh()
    rows = sorted(rows_of(cycles[:100]), key=lambda r: r[3])
    assert restarted.seed(iter(rows)) == len(rows)  # an iterator: streamed, never held whole
    after = run_cycles(restarted, cycles[100:])
    assert after == {k: v for k, v in uninterrupted.items() if k in after}
    with pytest.raises(ValueError, match="time order"):
        fresh().seed(rows[200:] + rows[:200])


def test_rebuild_from_the_lookback_window_gives_the_same_flags(fresh):
    cycles = stream()
    uninterrupted = run_cycles(fresh(), cycles)
    restarted = fresh()
    lookback_min = int(restarted.thresholds.lookback_s() // 60)  # 10 minutes: the flat-line fail window
    split = 150
    restarted.seed(rows_of(cycles[split - lookback_min : split]))
    after = run_cycles(restarted, cycles[split:])
    # Same flags and deciding checks; a flat-line cause may count fewer values (the run is cut at the window).
    assert {k: (v.flag, v.check, v.checks) for k, v in after.items()} == {
        k: (v.flag, v.check, v.checks) for k, v in uninterrupted.items() if k in after
    }


def test_no_seed_loses_history(fresh):
    cycles = stream()
    uninterrupted = run_cycles(fresh(), cycles)
    after = run_cycles(fresh(), cycles[100:])  # restarted without seeding
    assert after != {k: v for k, v in uninterrupted.items() if k in after}  # the rebuild test above is not vacuous


# --------------------------------------------------------------------------- #
# Determinism
# --------------------------------------------------------------------------- #


def test_verdicts_do_not_depend_on_how_a_stream_is_split_into_messages(fresh):
    readings = [r for cycle in stream(stations=("S1",)) for r in cycle]
    whole = dict(zip(((r.device, r.ts_ns) for r in readings), fresh().evaluate("S1", readings, RECEIVED)))
    rng = random.Random(3)
    qc = fresh()
    chunked = {}
    at = 0
    while at < len(readings):
        size = rng.randint(1, 40)
        part = readings[at : at + size]
        chunked.update(zip(((r.device, r.ts_ns) for r in part), qc.evaluate("S1", part, RECEIVED)))
        at += size
    assert chunked == whole


def test_a_redelivered_message_gets_the_same_verdicts(fresh):
    qc = fresh()
    cycles = stream(stations=("S1",), devices=tuple(f"d{i}" for i in range(8)))
    first = {}
    messages = [cycle for cycle in cycles[:60]]
    for i, msg in enumerate(messages):
        first[i] = qc.evaluate("S1", msg, RECEIVED)
    # The last 14 messages are within the kept history (16 points per series): redelivering any
    # of them, even several times and out of order, repeats its verdicts exactly. Those with a
    # windowed verdict prove it: evaluated without their history they would pass.
    windowed = {"spike", "rate_of_change", "flat_line"}
    chosen = [i for i in range(46, 60) if any(windowed & set(q.checks) for q in first[i])]
    assert len(chosen) >= 3
    for i in chosen + chosen[::-1]:
        assert qc.evaluate("S1", messages[i], RECEIVED) == first[i], i
    # ... and leaves the live history alone
    fresh_run = fresh()
    for msg in messages:
        fresh_run.evaluate("S1", msg, RECEIVED)
    nxt = cycles[60]
    assert qc.evaluate("S1", nxt, RECEIVED) == fresh_run.evaluate("S1", nxt, RECEIVED)


def test_a_redelivery_repeats_a_spike_and_is_not_kept_twice(tmp_path):
    from tests.collector.qc.test_qc_checks import only

    qc = make_qc(
        tmp_path, only("spike").replace("window: 2", "window: 3").replace("suspect: [10, 50]", "suspect: [0, 100]")
    )
    for m, v in [(0, 20.0), (1, 20.0)]:
        qc.evaluate("S1", [R(m, v)], RECEIVED)
    (first,) = qc.evaluate("S1", [R(2, 40.0)], RECEIVED)
    assert first.check == "spike"
    assert qc.evaluate("S1", [R(2, 40.0)], RECEIVED) == [first]  # the same verdict again
    assert qc.evaluate("S1", [R(1, 20.0), R(2, 40.0)], RECEIVED)[1] == first
    # Kept once: the window of the next point is (20, 20, 40), median 20, so 31 is a spike.
    # Had the redelivered 40 been kept again, the window (20, 40, 40) would make it pass.
    (nxt,) = qc.evaluate("S1", [R(3, 31.0)], RECEIVED)
    assert nxt.cause == "spike: |31.0 - median(20.0, 20.0, 40.0)| = 11.0 > 10.0 u"


def test_the_same_message_twice_in_one_call_gets_the_same_verdicts(fresh):
    qc = fresh()
    cycles = stream(stations=("S1",))
    for cycle in cycles[:20]:
        qc.evaluate("S1", cycle, RECEIVED)
    msg = [r for cycle in cycles[20:23] for r in cycle]
    a, b = qc.evaluate_many([("S1", msg, RECEIVED), ("S1", msg, RECEIVED)])
    assert a == b
    expected = fresh()
    for cycle in cycles[:20]:
        expected.evaluate("S1", cycle, RECEIVED)
    assert a == expected.evaluate("S1", msg, RECEIVED)


def test_evaluate_many_equals_evaluating_message_by_message(fresh):
    cycles = stream()
    one_by_one = run_cycles(fresh(), cycles)
    qc = fresh()
    together = {}
    for at in range(0, len(cycles), 25):  # 25 minutes of both stations per call
        msgs = []
        for cycle in cycles[at : at + 25]:
            msgs += [("S1", cycle[:2], RECEIVED), ("S2", cycle[2:], RECEIVED)]
        for (st, rs, _), res in zip(msgs, qc.evaluate_many(msgs)):
            together.update({(st, r.device, r.ts_ns): q for r, q in zip(rs, res)})
    assert together == one_by_one


def test_a_late_backlog_is_judged_within_itself_and_leaves_the_live_window_alone(fresh):
    live = [R(m, 20.0 + (m % 3)) for m in range(0, 40, 2)]  # even minutes arrive live
    backlog = [R(m, v) for m, v in [(21, 20.0), (23, 21.0), (25, 95.0), (27, 20.0)]]  # odd minutes, later

    qc = fresh()
    qc.evaluate("S1", live, RECEIVED)
    res = qc.evaluate("S1", backlog, RECEIVED)
    # 95 is a spike against its own message's neighbours; the drop back is a fast change, not a spike
    assert [(q.flag, q.check) for q in res] == [(PASS, ""), (PASS, ""), (FAIL, "spike"), (SUSPECT, "rate_of_change")]
    assert res[2].cause == "spike: |95.0 - median(20.0, 21.0)| = 74.5 > 30.0 u"

    # The first backlog reading has no neighbour in its own message: the live history is not consulted.
    alone = fresh()
    alone.evaluate("S1", live, RECEIVED)
    assert alone.evaluate("S1", [R(29, 45.0)], RECEIVED)[0].flag == PASS  # 45 would be a spike next to the live 20s

    # The live window continues as if the backlog had never come.
    nxt = [R(40, 20.0), R(42, 33.0)]
    without = fresh()
    without.evaluate("S1", live, RECEIVED)
    assert qc.evaluate("S1", nxt, RECEIVED) == without.evaluate("S1", nxt, RECEIVED)


def test_same_time_different_value_is_late_not_redelivered(fresh):
    qc = fresh()
    qc.evaluate("S1", [R(0, 20.0), R(1, 20.0), R(2, 20.0)], RECEIVED)
    # A corrected value for minute 2: compared within its message only, so no spike verdict.
    (res,) = qc.evaluate("S1", [R(2, 45.0)], RECEIVED)
    assert "spike" not in res.checks


# --------------------------------------------------------------------------- #
# Bounded memory
# --------------------------------------------------------------------------- #


def test_memory_stays_bounded_with_many_series(fresh):
    qc = fresh(max_series=50)
    nbytes = None
    for batch in range(40):
        msgs = [(f"ST{batch}_{i}", [R(batch, 20.0), R(batch + 0.5, 20.0)], RECEIVED) for i in range(100)]
        qc.evaluate_many(msgs)
        assert len(qc.state) <= 50 and qc.state.capacity <= 50
        if batch == 1:
            nbytes = qc.state.nbytes()
    assert qc.state.nbytes() == nbytes
    # a call never evicts series it uses itself: 50 of each call's 100 new series are kept
    assert qc.state.evicted == 39 * 50


def test_recently_used_series_survive_eviction(fresh):
    qc = fresh(max_series=20)
    keep = [R(0, 20.0), R(1, 20.0)]
    qc.evaluate("KEEP", keep, RECEIVED)
    for m in range(2, 30):
        qc.evaluate("KEEP", [R(m, 20.0 + (m % 2) * 0.5)], RECEIVED)  # touched every round
        qc.evaluate_many([(f"JUNK{m}_{i}", [R(m, 20.0)], RECEIVED) for i in range(10)])
    assert ("KEEP", "d1", "TST", "u") in qc.state
    (res,) = qc.evaluate("KEEP", [R(30, 45.0)], RECEIVED)
    assert res.check == "spike"  # its history is intact


def test_more_new_series_in_one_call_than_fit_are_evaluated_without_history(fresh):
    qc = fresh(max_series=10)
    msgs = [(f"S{i}", [R(0, 20.0), R(1, 45.0)], RECEIVED) for i in range(30)]
    res = qc.evaluate_many(msgs)
    # within each message the spike is still seen: the batch itself is its window
    assert all(r[1].check == "spike" for r in res)
    assert len(qc.state) == 10


def test_history_ring_keeps_the_newest_points():
    state = SeriesState(max_series=4, history=4)
    (slot,) = state.slots_for([("S", "d", "p", "u")]).tolist()
    ts = np.arange(1, 11, dtype=np.int64)
    zeros = np.zeros(10)
    state.push(np.full(10, slot), ts, ts * 1.0, ts, np.ones(10, dtype=np.int64), zeros, zeros)
    h = state.gather(np.array([slot]), np.array([0]))
    assert h.ts.tolist() == [7, 8, 9, 10]
    state.push(
        np.array([slot]), np.array([11]), np.array([11.0]), np.array([11]), np.array([1]), np.zeros(1), np.zeros(1)
    )
    h = state.gather(np.array([slot]), np.array([0]), depth=np.array([2]))
    assert h.ts.tolist() == [10, 11] and h.value.tolist() == [10.0, 11.0]
    assert state.newest(np.array([slot, -1])).tolist() == [11, -1]


def test_default_thresholds_run_the_stream(tmp_path):
    qc = QualityControl(ThresholdSource())
    cycles = stream(stations=("S1",))
    res = [
        q
        for cycle in cycles
        for q in qc.evaluate(
            "S1", [Reading(r.ts_ns, r.device, "PM2,5", r.value, "ug/m3", r.status, r.cause) for r in cycle], RECEIVED
        )
    ]
    assert len(res) == sum(len(c) for c in cycles)
