"""The averaging rules on hand-computed series: admission by status and flag, coverage, 75 %, 18 of 24, 6 of 8."""

from __future__ import annotations

import pytest

from analysis.averages import AveragingRule, affected_eight_hour_ends, daily_mean, eight_hour_mean, hourly_mean
from store.analysis_queries import HOUR_NS, ClassStats, DayAggregate, HourAggregate


def agg(passed=(), not_evaluated=(), suspect=(), cal=0, err=0, fail=0):
    def stats(values):
        return ClassStats(len(values), float(sum(values)), min(values, default=None), max(values, default=None))

    classes = {"pass": stats(passed), "not_evaluated": stats(not_evaluated), "suspect": stats(suspect)}
    n = len(passed) + len(not_evaluated) + len(suspect) + cal + err + fail
    return HourAggregate("S", "d", "PM10", "ug/m3", 10 * HOUR_NS, n, cal, err, fail, classes)


def test_an_hour_of_45_pass_readings_is_valid_at_75_percent():
    m = hourly_mean(agg(passed=[10.0] * 40 + [20.0] * 5, cal=15), AveragingRule())
    assert (m.n_valid, m.n_expected, m.valid) == (45, 60, True)
    assert m.mean == pytest.approx((400 + 100) / 45) and (m.low, m.high) == (10.0, 20.0)
    assert m.coverage == 0.75 and m.extra["n_calibrating"] == 15 and m.worst_flag == 1


def test_44_valid_readings_are_not_enough_and_calibration_errors_and_fails_never_count():
    m = hourly_mean(agg(passed=[10.0] * 44, cal=6, err=5, fail=5), AveragingRule())
    assert (m.n_valid, m.valid) == (44, False) and m.mean == 10.0  # stored with its coverage, marked invalid
    assert m.coverage == pytest.approx(44 / 60)


def test_suspect_is_left_out_by_default_and_admitted_on_request():
    a = agg(passed=[10.0] * 50, suspect=[70.0] * 10)
    default = hourly_mean(a, AveragingRule())
    assert (default.n_valid, default.mean, default.extra["n_suspect"], default.worst_flag) == (50, 10.0, 10, 1)
    admitted = hourly_mean(a, AveragingRule(admit_suspect=True))
    assert (admitted.n_valid, admitted.mean, admitted.worst_flag) == (60, 20.0, 3)


def test_not_evaluated_is_admitted_unless_the_rule_says_no():
    a = agg(not_evaluated=[5.0] * 50)
    assert hourly_mean(a, AveragingRule()).valid
    assert hourly_mean(a, AveragingRule()).worst_flag == 2
    strict = hourly_mean(a, AveragingRule(admit_not_evaluated=False))
    assert (strict.n_valid, strict.mean, strict.valid) == (0, None, False)


def test_expected_readings_follow_the_logging_interval():
    # a 5-minute analyzer: 12 expected, 9 valid is 75 %
    m = hourly_mean(agg(passed=[1.0] * 9), AveragingRule(interval_s=300))
    assert (m.n_expected, m.valid) == (12, True)
    assert not hourly_mean(agg(passed=[1.0] * 8), AveragingRule(interval_s=300)).valid


def test_a_day_with_17_valid_hours_is_not_valid_and_18_is():
    day17 = DayAggregate("S", "d", "PM10", "ug/m3", 17, 30.0, 10.0, 50.0, 1)
    day18 = DayAggregate("S", "d", "PM10", "ug/m3", 18, 30.0, 10.0, 50.0, 1)
    assert not daily_mean(day17, 0, "2026-01-01", AveragingRule()).valid
    m = daily_mean(day18, 0, "2026-01-01", AveragingRule())
    assert m.valid and m.coverage == 0.75 and m.extra["max_hourly"] == 50.0


def test_eight_hour_mean_needs_6_of_8_hours():
    end = 100 * HOUR_NS
    six = {end - k * HOUR_NS: (float(10 * k), 1) for k in range(6)}  # 0, 10, .. 50 ending end..end-5h
    m = eight_hour_mean("S", "d", "O3", "ug/m3", end, six, AveragingRule())
    assert m.valid and m.mean == 25.0 and m.n_valid == 6
    five = {h: v for h, v in six.items() if h != end}
    assert not eight_hour_mean("S", "d", "O3", "ug/m3", end, five, AveragingRule()).valid
    outside = {**five, end - 8 * HOUR_NS: (1000.0, 1)}  # the hour before the window is not in it
    assert eight_hour_mean("S", "d", "O3", "ug/m3", end, outside, AveragingRule()).mean == 30.0


def test_an_hour_is_part_of_the_eight_hour_windows_ending_there_and_seven_after():
    assert affected_eight_hour_ends([5 * HOUR_NS]) == [h * HOUR_NS for h in range(5, 13)]
