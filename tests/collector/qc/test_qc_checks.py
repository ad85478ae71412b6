"""collector.qc checks: each fires where it must and stays quiet where it must not.

The thresholds are written here (a test parameter ``TST`` in unit ``u``) so
the tests do not depend on the shipped defaults, which will be tuned.
"""

from __future__ import annotations

import datetime as dt
import textwrap
from pathlib import Path

import pytest

from broker_bridge.envelope import Reading
from collector.qc import (
    FAIL,
    MISSING,
    NOT_EVALUATED,
    PASS,
    SUSPECT,
    QualityControl,
    SeriesState,
    ThresholdSource,
    worst,
)

T0 = int(dt.datetime(2025, 1, 1, tzinfo=dt.UTC).timestamp()) * 10**9
S = 10**9
MIN = 60 * S
RECEIVED = T0 + 86400 * S  # every test reading lies in the past of this, unless a test says otherwise

THRESHOLDS = """
qc:
  timestamps: {future_skew_s: 300, max_age_s: 7776000, not_before: 2020-01-01}
  clock: {max_offset_s: 5}
  consistency:
    - {lesser: A, greater: B}
  parameters:
    TST:
      u:
        gross_range: {fail: [0, 100], suspect: [10, 50]}
        spike: {suspect: 10, fail: 30, window: 2, max_gap_s: 3600}
        rate_of_change: {suspect_per_s: 0.1, min_delta: 5, max_gap_s: 3600}
        flat_line: {tolerance: 0.25, min_count: 3, suspect_s: 300, fail_s: 600}
    A:
      u: {gross_range: {fail: [-1000, 1000]}}
      v: {gross_range: {fail: [-1000, 1000]}}
    B:
      u: {gross_range: {fail: [-1000, 1000]}}
"""


def make_qc(tmp_path: Path, text: str = THRESHOLDS, **state_kw) -> QualityControl:
    path = tmp_path / "qc.yaml"
    path.write_text(textwrap.dedent(text))
    return QualityControl(ThresholdSource(path), SeriesState(**state_kw))


def only(check: str) -> str:
    """THRESHOLDS with every windowed check of TST off except ``check``."""
    text = THRESHOLDS
    for other in ("spike", "rate_of_change", "flat_line"):
        if other != check:
            text = text.replace(f"        {other}: {{", f"        {other}: off\n        _{other}: {{", 1)
    return "\n".join(line for line in text.splitlines() if not line.strip().startswith("_"))


def R(
    minute: float,
    value: float | None,
    parameter: str = "TST",
    status: str = "00",
    cause: str = "",
    device: str = "d1",
    unit: str = "u",
) -> Reading:
    return Reading(T0 + int(minute * MIN), device, parameter, value, unit, status, cause)


def series(minutes_values) -> list[Reading]:
    return [R(m, v) for m, v in minutes_values]


def flags(qc: QualityControl, readings, station: str = "ST1", received: int = RECEIVED) -> list[int]:
    return [r.flag for r in qc.evaluate(station, readings, received)]


@pytest.fixture
def qc(tmp_path: Path) -> QualityControl:
    return make_qc(tmp_path)


# --------------------------------------------------------------------------- #
# Flag order
# --------------------------------------------------------------------------- #


def test_worst_flag_order_is_fail_missing_suspect_pass_not_evaluated():
    assert worst(PASS, NOT_EVALUATED) == PASS
    assert worst(NOT_EVALUATED, SUSPECT) == SUSPECT
    assert worst(SUSPECT, MISSING) == MISSING
    assert worst(MISSING, FAIL) == FAIL
    assert worst(FAIL, SUSPECT, PASS, MISSING, NOT_EVALUATED) == FAIL


def test_worst_flag_wins_and_every_fired_check_is_listed(qc):
    # calibrating + no value + in the future + clock off: device_status decides (4, first in check order)
    r = Reading(RECEIVED + 3600 * S, "d1", "TST", None, "u", "01", "zero calibration; clock offset +9 s")
    (res,) = qc.evaluate("ST1", [r], RECEIVED)
    assert res.flag == FAIL
    assert res.check == "device_status"
    assert res.checks == ("device_status", "missing", "timestamp", "clock_sync")
    assert res.checks_text == "device_status,missing,timestamp,clock_sync"
    assert "calibrating" in res.cause and "zero calibration" in res.cause


def test_missing_beats_suspect_and_fail_beats_missing(qc):
    missing_and_clock = R(1, None, cause="clock offset +30 s")
    error_without_value = R(2, None, status="02", cause="no reply: timeout after 1.0 s")
    res = qc.evaluate("ST1", [missing_and_clock, error_without_value], RECEIVED)
    assert (res[0].flag, res[0].check, res[0].checks) == (MISSING, "missing", ("missing", "clock_sync"))
    assert (res[1].flag, res[1].check) == (FAIL, "device_status")
    assert "device error" in res[1].cause and "no reply" in res[1].cause


def test_fail_from_a_windowed_check_beats_suspect(tmp_path):
    qc = make_qc(tmp_path)
    # flat for 10 min (fail at 600 s) and a gross-range suspect value (5 < 10) at once
    readings = series([(m, 5.0) for m in range(11)])
    res = qc.evaluate("ST1", readings, RECEIVED)
    assert res[-1].flag == FAIL and res[-1].check == "flat_line"
    assert res[-1].checks == ("gross_range", "flat_line")


def test_nothing_is_dropped_and_order_is_kept(qc):
    readings = [R(3, 20.0), R(1, None), R(2, 20.0, status="01"), R(1, 5.0, parameter="UNKNOWN")]
    res = qc.evaluate("ST1", readings, RECEIVED)
    assert [r.flag for r in res] == [PASS, MISSING, FAIL, NOT_EVALUATED]


def test_no_thresholds_is_not_evaluated_with_a_cause_naming_known_units(qc):
    res = qc.evaluate("ST1", [R(1, 20.0, unit="mg/L"), R(1, 20.0, parameter="XYZ")], RECEIVED)
    assert res[0].flag == NOT_EVALUATED and res[0].check == "not_evaluated"
    assert "TST" in res[0].cause and "'mg/L'" in res[0].cause and "'u'" in res[0].cause
    assert res[1].flag == NOT_EVALUATED and "no thresholds for this symbol" in res[1].cause


def test_empty_batch_gives_empty_results(qc):
    assert qc.evaluate("ST1", [], RECEIVED) == []
    assert qc.evaluate_many([]) == []


# --------------------------------------------------------------------------- #
# Device status and missing
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("status", "flag", "word"), [("00", PASS, None), ("01", FAIL, "calibrating"), ("02", FAIL, "device error")]
)
def test_device_status(qc, status, flag, word):
    (res,) = qc.evaluate(
        "ST1", [R(1, 20.0, status=status, cause="span calibration" if status == "01" else "")], RECEIVED
    )
    assert res.flag == flag
    if word:
        assert res.check == "device_status" and word in res.cause and f"status {status}" in res.cause


def test_values_of_a_calibrating_analyzer_are_not_range_checked(qc):
    # 500 is outside the fail range, but span gas is not a measurement: only the status speaks
    (res,) = qc.evaluate("ST1", [R(1, 500.0, status="01")], RECEIVED)
    assert res.checks == ("device_status",)


@pytest.mark.parametrize(
    ("value", "text"), [(None, "no value (sentinel -9999.0)"), (float("nan"), "no value"), (float("inf"), "not finite")]
)
def test_missing(qc, value, text):
    (res,) = qc.evaluate("ST1", [R(1, value, cause="sentinel -9999.0" if value is None else "")], RECEIVED)
    assert (res.flag, res.check) == (MISSING, "missing")
    assert text in res.cause


def test_zero_is_a_value_not_missing(qc):
    assert flags(qc, [R(1, 0.0, parameter="A")]) == [PASS]


# --------------------------------------------------------------------------- #
# Timestamps and clock
# --------------------------------------------------------------------------- #


def test_timestamp_in_the_future_beyond_the_skew_fails_at_the_boundary_passes(qc):
    at_limit = Reading(RECEIVED + 300 * S, "d1", "A", 1.0, "u", "00")
    beyond = Reading(RECEIVED + 300 * S + 1, "d1", "A", 1.0, "u", "00")
    res = qc.evaluate("ST1", [at_limit, beyond], RECEIVED)
    assert res[0].flag == PASS
    assert (res[1].flag, res[1].check) == (FAIL, "timestamp")
    assert "after receipt" in res[1].cause and "limit 300.0 s" in res[1].cause


def test_timestamp_before_not_before_fails_and_old_is_suspect(qc):
    reset = Reading(946684800 * S, "d1", "A", 1.0, "u", "00")  # 2000-01-01: an RTC reset
    old = Reading(RECEIVED - 91 * 86400 * S, "d1", "A", 1.0, "u", "00")
    not_so_old = Reading(RECEIVED - 89 * 86400 * S, "d1", "A", 1.0, "u", "00")
    res = qc.evaluate("ST1", [reset, old, not_so_old], RECEIVED)
    assert (res[0].flag, res[0].check) == (FAIL, "timestamp") and "before 2020-01-01" in res[0].cause
    assert (res[1].flag, res[1].check) == (SUSPECT, "timestamp") and "days old" in res[1].cause
    assert res[2].flag == PASS


def test_a_future_reading_does_not_enter_the_history(qc):
    qc.evaluate("ST1", series([(0, 20.0), (1, 20.0)]), RECEIVED)
    qc.evaluate("ST1", [Reading(RECEIVED + 86400 * S, "d1", "TST", 20.0, "u", "00")], RECEIVED)
    # were the future reading kept, this one would count as late and lose its history
    (res,) = qc.evaluate("ST1", [R(2, 31.0)], RECEIVED)
    assert res.check == "spike"


@pytest.mark.parametrize(
    ("cause", "flag"),
    [
        ("clock offset +5.0 s", PASS),  # at the limit
        ("clock offset +5.001 s", SUSPECT),
        ("clock offset -6 s", SUSPECT),
        ("clock offset 800 ms", PASS),
        ("clock offset -5001 ms", SUSPECT),
        ("clock unsynchronised", SUSPECT),
        ("zero calibration", PASS),
        ("", PASS),
    ],
)
def test_clock_sync(qc, cause, flag):
    (res,) = qc.evaluate("ST1", [R(1, 1.0, parameter="A", cause=cause)], RECEIVED)
    assert res.flag == flag
    if flag == SUSPECT:
        assert res.check == "clock_sync" and "clock" in res.cause


# --------------------------------------------------------------------------- #
# Gross range
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("value", "flag"),
    [
        (0.0, SUSPECT),
        (-0.001, FAIL),
        (10.0, PASS),
        (9.99, SUSPECT),
        (50.0, PASS),
        (50.5, SUSPECT),
        (100.0, SUSPECT),
        (100.0001, FAIL),
    ],
)
def test_gross_range_bounds_are_inclusive(tmp_path, value, flag):
    qc = make_qc(tmp_path, only("none"))
    (res,) = qc.evaluate("ST1", [R(1, value)], RECEIVED)
    assert res.flag == flag
    if flag != PASS:
        assert res.check == "gross_range"
    if flag == FAIL:
        assert "outside the analyzer range [0.0, 100.0]" in res.cause
    elif flag == SUSPECT:
        assert "outside the operator range [10.0, 50.0]" in res.cause


def test_a_failed_value_stays_out_of_the_spike_window(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 20.0), (2, 500.0), (3, 31.0)]), RECEIVED)
    assert res[2].check == "gross_range" and res[2].flag == FAIL
    assert res[3].check == "spike" and "median(20.0, 20.0)" in res[3].cause


# --------------------------------------------------------------------------- #
# Spike
# --------------------------------------------------------------------------- #


def test_spike_fires_with_the_cause_of_the_window(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 20.0), (2, 31.0)]), RECEIVED)
    assert [r.flag for r in res] == [PASS, PASS, SUSPECT]
    assert res[2].cause == "spike: |31.0 - median(20.0, 20.0)| = 11.0 > 10.0 u"


@pytest.mark.parametrize(
    ("value", "flag"), [(30.0, PASS), (30.01, SUSPECT), (50.0, SUSPECT), (50.01, FAIL), (9.99, SUSPECT)]
)
def test_spike_boundaries(tmp_path, value, flag):
    qc = make_qc(tmp_path, only("spike").replace("suspect: [10, 50]", "suspect: [0, 100]"))
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 20.0), (2, value)]), RECEIVED)
    assert res[2].flag == flag


def test_spike_skips_missing_values_and_other_statuses_in_its_window(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    readings = [R(0, 20.0), R(1, None), R(2, 45.0, status="01"), R(3, 20.0), R(4, 31.0)]
    res = qc.evaluate("ST1", readings, RECEIVED)
    assert res[4].check == "spike" and "median(20.0, 20.0)" in res[4].cause


def test_spike_needs_a_neighbour_within_max_gap(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    res = qc.evaluate("ST1", series([(0, 20.0), (61, 45.0)]), RECEIVED)  # 61 min > 3600 s
    assert [r.flag for r in res] == [PASS, PASS]


def test_spike_with_one_neighbour_uses_it(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 31.0)]), RECEIVED)
    assert res[1].cause == "spike: |31.0 - median(20.0)| = 11.0 > 10.0 u"


def test_spike_order_of_readings_in_the_batch_does_not_matter(tmp_path):
    readings = series([(0, 20.0), (1, 20.0), (2, 31.0), (3, 21.0), (4, 45.0)])
    a = make_qc(tmp_path, only("spike")).evaluate("ST1", readings, RECEIVED)
    shuffled = [readings[i] for i in (4, 2, 0, 3, 1)]
    b_res = make_qc(tmp_path, only("spike")).evaluate("ST1", shuffled, RECEIVED)  # a fresh state
    by_ts = {r.ts_ns: q for r, q in zip(shuffled, b_res)}
    assert [by_ts[r.ts_ns] for r in readings] == a
    assert [q.flag for q in a] == [PASS, PASS, SUSPECT, PASS, SUSPECT]


def test_a_level_shift_is_flagged_for_at_most_window_points(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 20.0), (2, 40.0), (3, 40.0), (4, 40.0)]), RECEIVED)
    assert [r.flag for r in res] == [PASS, PASS, SUSPECT, PASS, PASS]


def test_a_lone_spike_does_not_make_its_successor_a_spike_with_a_median_of_three(tmp_path):
    qc = make_qc(
        tmp_path, only("spike").replace("window: 2", "window: 3").replace("suspect: [10, 50]", "suspect: [0, 100]")
    )
    res = qc.evaluate("ST1", series([(0, 20.0), (1, 21.0), (2, 20.0), (3, 90.0), (4, 21.0), (5, 20.0)]), RECEIVED)
    assert [r.flag for r in res] == [PASS, PASS, PASS, FAIL, PASS, PASS]
    assert res[3].cause == "spike: |90.0 - median(20.0, 21.0, 20.0)| = 70.0 > 30.0 u"
    shift = make_qc(
        tmp_path, only("spike").replace("window: 2", "window: 3").replace("suspect: [10, 50]", "suspect: [0, 100]")
    )
    res = shift.evaluate("ST1", series([(0, 20.0), (1, 20.0), (2, 20.0), (3, 40.0), (4, 40.0), (5, 40.0)]), RECEIVED)
    assert [r.flag for r in res] == [PASS, PASS, PASS, SUSPECT, SUSPECT, PASS]


def test_spike_window_reaches_across_batches(tmp_path):
    qc = make_qc(tmp_path, only("spike"))
    assert flags(qc, [R(0, 20.0)]) == [PASS]
    assert flags(qc, [R(1, 20.0)]) == [PASS]
    (res,) = qc.evaluate("ST1", [R(2, 31.0)], RECEIVED)
    assert res.cause == "spike: |31.0 - median(20.0, 20.0)| = 11.0 > 10.0 u"


def test_series_are_separate_per_station_device_and_unit(tmp_path):
    qc = make_qc(tmp_path, only("spike").replace("    B:\n", "    TST2:\n      u: {spike: {suspect: 10}}\n    B:\n"))
    qc.evaluate("ST1", series([(0, 20.0), (1, 20.0)]), RECEIVED)
    assert flags(qc, [R(2, 45.0)], station="ST2") == [PASS]  # another station: no history
    assert flags(qc, [R(2, 45.0, device="d2")]) == [PASS]  # another device
    assert flags(qc, [R(2, 45.0)]) == [SUSPECT]


# --------------------------------------------------------------------------- #
# Rate of change
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("minutes", "value", "flag"),
    [
        (1, 26.0, PASS),  # 6 / 60 s = 0.1 /s: at the limit
        (1, 26.01, SUSPECT),
        (1, 14.0, PASS),  # falling at the limit
        (1, 13.9, SUSPECT),
        (10 / 60, 24.99, PASS),  # 0.5 /s but |dx| 4.99 < min_delta 5
        (10 / 60, 25.5, SUSPECT),
        (61, 99.0, PASS),  # beyond max_gap_s: not compared
    ],
)
def test_rate_of_change(tmp_path, minutes, value, flag):
    qc = make_qc(tmp_path, only("rate_of_change").replace("suspect: [10, 50]", "suspect: [0, 100]"))
    res = qc.evaluate("ST1", series([(0, 20.0), (minutes, value)]), RECEIVED)
    assert res[1].flag == flag
    if flag == SUSPECT:
        assert res[1].check == "rate_of_change" and "u/s > 0.1 u/s" in res[1].cause


def test_rate_of_change_is_never_more_than_suspect(tmp_path):
    qc = make_qc(tmp_path, only("rate_of_change").replace("suspect: [10, 50]", "suspect: [0, 100]"))
    res = qc.evaluate("ST1", series([(0, 1.0), (0.01, 99.0)]), RECEIVED)
    assert (res[1].flag, res[1].check) == (SUSPECT, "rate_of_change")


def test_rate_of_change_ignores_equal_timestamps(tmp_path):
    qc = make_qc(tmp_path, only("rate_of_change"))
    res = qc.evaluate("ST1", [R(0, 20.0), R(0, 45.0)], RECEIVED)
    assert "rate_of_change" not in res[1].checks


# --------------------------------------------------------------------------- #
# Flat line
# --------------------------------------------------------------------------- #


def test_flat_line_suspect_then_fail(tmp_path):
    qc = make_qc(tmp_path, only("flat_line"))
    res = qc.evaluate("ST1", series([(m, 20.0) for m in range(11)]), RECEIVED)
    got = [r.flag for r in res]
    assert got == [PASS] * 5 + [SUSPECT] * 5 + [FAIL]  # 300 s at minute 5, 600 s at minute 10
    assert res[5].cause == "flat_line: 6 values within 0.25 u (20.0 to 20.0) for 300.0 s >= 300.0 s"
    assert res[10].check == "flat_line" and "for 600.0 s >= 600.0 s" in res[10].cause


def test_flat_line_tolerance_boundary(tmp_path):
    qc = make_qc(tmp_path, only("flat_line"))
    within = qc.evaluate("ST1", series([(m, 20.0 + (0.25 if m % 2 else 0.0)) for m in range(6)]), RECEIVED)
    assert within[5].flag == SUSPECT
    qc2 = make_qc(tmp_path, only("flat_line"))
    beyond = qc2.evaluate("ST2", series([(m, 20.0 + (0.26 if m % 2 else 0.0)) for m in range(6)]), RECEIVED)
    assert [r.flag for r in beyond] == [PASS] * 6


def test_flat_line_run_survives_missing_values_but_not_a_change(tmp_path):
    qc = make_qc(tmp_path, only("flat_line"))
    readings = series([(0, 20.0), (1, 20.0), (2, None), (3, 20.0), (4, 20.0), (5, 20.0)])
    assert [r.flag for r in qc.evaluate("ST1", readings, RECEIVED)][-1] == SUSPECT
    qc2 = make_qc(tmp_path, only("flat_line"))
    changed = series([(0, 20.0), (1, 20.0), (2, 25.0), (3, 20.0), (4, 20.0), (5, 20.0)])
    assert [r.flag for r in qc2.evaluate("ST2", changed, RECEIVED)] == [PASS] * 6


def test_flat_line_needs_min_count_and_duration(tmp_path):
    qc = make_qc(tmp_path, only("flat_line"))
    res = qc.evaluate("ST1", series([(0, 20.0), (20, 20.0), (40, 20.0)]), RECEIVED)
    # two values 20 min apart are not yet a line; the third makes one lasting 40 min
    assert [r.flag for r in res] == [PASS, PASS, FAIL]


def test_flat_line_at_the_floor_is_exempt(tmp_path):
    text = (
        only("flat_line")
        .replace("flat_line: {tolerance: 0.25,", "flat_line: {floor: 0.0, tolerance: 0.25,")
        .replace("fail: [0, 100], suspect: [10, 50]", "fail: [0, 100]")
    )
    qc = make_qc(tmp_path, text)
    assert flags(qc, series([(m, 0.0) for m in range(11)])) == [PASS] * 11
    assert flags(qc, series([(m, 0.5) for m in range(11, 22)]))[-1] == FAIL


def test_flat_line_across_single_point_batches(tmp_path):
    qc = make_qc(tmp_path, only("flat_line"))
    got = [flags(qc, [R(m, 20.0)])[0] for m in range(11)]
    assert got == [PASS] * 5 + [SUSPECT] * 5 + [FAIL]


# --------------------------------------------------------------------------- #
# Consistency
# --------------------------------------------------------------------------- #


def test_consistency_flags_both_values(qc):
    res = qc.evaluate("ST1", [R(1, 10.1, parameter="A"), R(1, 10.0, parameter="B")], RECEIVED)
    assert [(r.flag, r.check) for r in res] == [(SUSPECT, "consistency")] * 2
    assert res[0].cause == "consistency: A 10.1 > B 10.0 u at the same time (allowed: B x 1.0 + 0.0)"


@pytest.mark.parametrize(
    "readings",
    [
        [R(1, 10.0, parameter="A"), R(1, 10.0, parameter="B")],  # equal: allowed
        [R(1, 11.0, parameter="A"), R(2, 10.0, parameter="B")],  # not at the same time
        [R(1, 11.0, parameter="A", unit="v"), R(1, 10.0, parameter="B")],  # other unit: not compared
        [R(1, 11.0, parameter="A", status="01"), R(1, 10.0, parameter="B")],  # not measuring
        [R(1, 11.0, parameter="A"), R(1, None, parameter="B")],
    ],
)
def test_consistency_quiet(qc, readings):
    assert all("consistency" not in r.checks for r in qc.evaluate("ST1", readings, RECEIVED))


def test_consistency_across_devices_and_with_tolerance(tmp_path):
    qc = make_qc(
        tmp_path,
        THRESHOLDS.replace("{lesser: A, greater: B}", "{lesser: A, greater: B, rel_tolerance: 0.1, abs_tolerance: 5}"),
    )
    ok = qc.evaluate(
        "ST1", [R(1, 16.0, parameter="A", device="bam25"), R(1, 10.0, parameter="B", device="bam10")], RECEIVED
    )
    assert [r.flag for r in ok] == [PASS, PASS]  # 16 = 10 x 1.1 + 5
    bad = qc.evaluate(
        "ST1", [R(2, 16.01, parameter="A", device="bam25"), R(2, 10.0, parameter="B", device="bam10")], RECEIVED
    )
    assert [r.flag for r in bad] == [SUSPECT, SUSPECT]


def test_default_rules_pm_and_nox(tmp_path):
    qc = QualityControl(ThresholdSource())  # shipped defaults only
    t = T0 + MIN
    readings = [
        Reading(t, "aqms", "PM2,5", 80.0, "ug/m3", "00"), Reading(t, "aqms", "PM10", 60.0, "ug/m3", "00"),
        Reading(t, "aqms", "NO2", 30.0, "ug/m3", "00"), Reading(t, "aqms", "NOx", 50.0, "ug/m3", "00"),
    ]  # fmt: skip
    res = qc.evaluate("ST1", readings, RECEIVED)
    assert [r.check for r in res] == ["consistency", "consistency", "", ""]
