"""hourly_columns (a month of hours as columns) equals hourly_mean hour by hour, every rule and class mix."""

from __future__ import annotations

import random

from analysis.averages import HOURLY_COLUMNS, AveragingRule, hourly_columns, hourly_mean
from store.analysis_queries import CLASS_NAMES, HOUR_NS, ClassStats, HourAggregate


def raw_row(rng: random.Random, station: str, parameter: str, start: int) -> tuple:
    """A row as store.analysis_queries.hour_aggregate_rows returns it (None where a class is empty)."""
    row: list = [station, "dev", parameter, rng.choice(["ug/m3", None]), start]
    classes = []
    for _ in CLASS_NAMES:
        n = rng.choice([0, 0, 1, 7, 45, 60])
        values = [rng.uniform(0, 100) for _ in range(n)]
        classes += [n or None, sum(values) if n else None, min(values, default=None), max(values, default=None)]
    cal, err, fail = (rng.choice([0, None, 3]) for _ in range(3))
    n_readings = sum(c or 0 for c in classes[0::4]) + (cal or 0) + (err or 0) + (fail or 0)
    return (*row, n_readings, cal, err, fail, *classes)


def as_aggregate(row: tuple) -> HourAggregate:
    """What store.analysis_queries.hour_aggregates builds from the same row."""
    station, device, parameter, unit, start, n, cal, err, fail, *cls = row
    classes = {
        name: ClassStats(int(cls[4 * i] or 0), float(cls[4 * i + 1] or 0.0), cls[4 * i + 2], cls[4 * i + 3])
        for i, name in enumerate(CLASS_NAMES)
    }
    return HourAggregate(
        station, device, parameter, unit or "", start + HOUR_NS, n, cal or 0, err or 0, fail or 0, classes
    )


def test_hourly_columns_equal_hourly_mean_for_every_rule_and_class_mix():
    rng = random.Random(13)
    rules = {
        ("A", "PM10"): AveragingRule(),
        ("A", "O3"): AveragingRule(admit_suspect=True),
        ("B", "PM10"): AveragingRule(admit_not_evaluated=False, interval_s=300),
        ("B", "O3"): AveragingRule(min_hour_coverage=0.5, admit_suspect=True, admit_not_evaluated=False),
    }
    rows = [raw_row(rng, s, p, h * HOUR_NS) for h in range(300) for s, p in rules]
    columns = hourly_columns(rows, lambda s, p: rules[s, p])
    assert set(columns) == set(HOURLY_COLUMNS) and all(len(c) == len(rows) for c in columns.values())
    valid = 0
    for i, row in enumerate(rows):
        m = hourly_mean(as_aggregate(row), rules[row[0], row[2]])
        expected = {
            "ts": m.ts, "station": m.station, "device": m.device, "parameter": m.parameter, "unit": m.unit,
            "mean": m.mean, "min": m.low, "max": m.high, "n_valid": m.n_valid, "n_expected": m.n_expected,
            "coverage": m.coverage, "valid": m.valid, "worst_flag": m.worst_flag, "rule": m.rule, **m.extra,
        }  # fmt: skip
        assert {name: columns[name][i] for name in HOURLY_COLUMNS} == expected, row
        valid += m.valid
    assert 0 < valid < len(rows)  # both outcomes were exercised
