"""The averaging rules as pure functions: hourly, 8-hour and daily means with their completeness.

Which readings go into a mean
    Status ``00`` (measuring) with a value, and a QC flag the rule admits: 1 pass always, 2 not
    evaluated by default (no control examined it: a parameter without thresholds must still get
    means), 3 suspect **not** by default (a suspect value is the controls saying "do not trust this
    without a look", and QĐ 1459 §2.1 a asks for erroneous values removed before any index; admit it
    per parameter with ``admit_suspect: true``). Never 01 calibrating, 02 device error, 4 fail or
    9 missing. Each of them is counted in its own column, so a consumer sees why an hour fell short.

Completeness (the reference marks the Vietnamese minimum UNCONFIRMED; these are the defaults of
issue 13, configurable per parameter, see analysis/README.md)
    hour: valid readings / expected readings >= 75 % (EEA: 45 of 60 minutes); expected =
    3600 s / the station's logging interval for the parameter. 24 h: >= 18 valid hours of the local
    day's 24 (EPA/AirNow for PM2.5; QĐ 1459's day is 01:00..24:00 local). 8 h: >= 6 valid hours of 8.
    A mean below its rule is stored with its coverage and ``valid = false``, never published as valid.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from store.analysis_queries import CLASS_NAMES, HOUR_NS, DayAggregate, HourAggregate
from vocabulary.qc_flags import NOT_EVALUATED, PASS, SUSPECT

#: Which QC class carries which flag, and how bad it is (the worst wins: 3 > 1 > 2, as collector/qc).
CLASS_FLAGS = {"pass": PASS, "not_evaluated": NOT_EVALUATED, "suspect": SUSPECT}
_FLAG_RANK = {NOT_EVALUATED: 0, PASS: 1, SUSPECT: 2}


@dataclass(frozen=True)
class AveragingRule:
    """The rules of one parameter (analysis/settings.py reads them from YAML)."""

    interval_s: float = 60.0
    min_hour_coverage: float = 0.75
    admit_not_evaluated: bool = True
    admit_suspect: bool = False
    min_hours_per_day: int = 18
    min_hours_per_8h: int = 6

    @property
    def expected_per_hour(self) -> int:
        return max(1, round(3600 / self.interval_s))

    def admitted(self) -> tuple[str, ...]:
        return (
            ("pass",)
            + (("not_evaluated",) if self.admit_not_evaluated else ())
            + (("suspect",) if self.admit_suspect else ())
        )

    def hour_rule(self) -> str:
        flags = ",".join(str(CLASS_FLAGS[c]) for c in self.admitted())
        return f">={self.min_hour_coverage:.0%} of {self.expected_per_hour}; status 00, qc {flags}"


@dataclass(frozen=True, slots=True)
class Mean:
    """One row of hourly_means / eight_hour_means / daily_means (period labelled by its end, UTC ns)."""

    ts: int
    station: str
    device: str
    parameter: str
    unit: str
    mean: float | None
    low: float | None
    high: float | None
    n_valid: int
    n_expected: int
    valid: bool
    worst_flag: int | None
    rule: str
    extra: Mapping[str, object] | None = None

    @property
    def coverage(self) -> float:
        return self.n_valid / self.n_expected if self.n_expected else 0.0


def hourly_mean(agg: HourAggregate, rule: AveragingRule) -> Mean:
    """The hour's mean of the admitted readings, its coverage and validity."""
    n = total = 0.0
    low = high = None
    worst = None
    for name in rule.admitted():
        stats = agg.classes[name]
        if not stats.n:
            continue
        n += stats.n
        total += stats.total
        low = stats.low if low is None else min(low, stats.low)
        high = stats.high if high is None else max(high, stats.high)
        flag = CLASS_FLAGS[name]
        if worst is None or _FLAG_RANK[flag] > _FLAG_RANK[worst]:
            worst = flag
    expected = rule.expected_per_hour
    n_valid = int(n)
    return Mean(
        agg.hour_end,
        agg.station,
        agg.device,
        agg.parameter,
        agg.unit,
        total / n_valid if n_valid else None,
        low,
        high,
        n_valid,
        expected,
        n_valid > 0 and n_valid / expected >= rule.min_hour_coverage - 1e-12,
        worst,
        rule.hour_rule(),
        {
            "n_readings": agg.n_readings,
            "n_calibrating": agg.n_calibrating,
            "n_device_error": agg.n_device_error,
            "n_qc_fail": agg.n_qc_fail,
            "n_suspect": 0 if rule.admit_suspect else agg.classes["suspect"].n,
        },
    )


#: The columns of ``hourly_columns`` (hourly_means' columns but ``computed_at``).
HOURLY_COLUMNS = (
    "ts", "station", "device", "parameter", "unit", "mean", "min", "max", "n_valid", "n_expected", "coverage",
    "valid", "worst_flag", "rule", "n_readings", "n_calibrating", "n_device_error", "n_qc_fail", "n_suspect",
)  # fmt: skip


_SUSPECT_N = 9 + 4 * CLASS_NAMES.index("suspect")


def hourly_columns(rows: Sequence[tuple], rule_of: Callable[[str, str], AveragingRule]) -> dict[str, list]:
    """``hourly_mean`` of many hours at once, as the columns of hourly_means (``HOURLY_COLUMNS``; None is
    NULL): ``rows`` are store.analysis_queries.hour_aggregate_rows' rows, ``rule_of(station, parameter)``
    the rule. The same arithmetic in the same order as ``hourly_mean``, without an object per hour (a
    month's backlog of one station is 21,600 hours); tests/analysis/test_averages.py holds them equal."""
    out: dict[str, list] = {name: [] for name in HOURLY_COLUMNS}
    cols = [out[name] for name in HOURLY_COLUMNS]
    plans: dict[tuple[str, str], tuple] = {}
    for row in rows:
        station, device, parameter, unit, start, n_readings, cal, err, fail = row[:9]
        plan = plans.get((station, parameter))
        if plan is None:
            rule = rule_of(station, parameter)
            admitted = tuple(
                (9 + 4 * CLASS_NAMES.index(c), CLASS_FLAGS[c], _FLAG_RANK[CLASS_FLAGS[c]]) for c in rule.admitted()
            )
            plan = plans[station, parameter] = (admitted, rule.expected_per_hour, rule.min_hour_coverage - 1e-12,
                                                rule.hour_rule(), rule.admit_suspect)  # fmt: skip
        admitted, expected, threshold, rule_text, admit_suspect = plan
        n = 0
        total = 0.0
        low = high = worst = None
        rank = -1
        for i, flag, flag_rank in admitted:
            count = int(row[i] or 0)
            if not count:
                continue
            n += count
            total += float(row[i + 1] or 0.0)
            lo, hi = row[i + 2], row[i + 3]
            low = lo if low is None else min(low, lo)
            high = hi if high is None else max(high, hi)
            if flag_rank > rank:
                worst, rank = flag, flag_rank
        n_suspect = 0 if admit_suspect else int(row[_SUSPECT_N] or 0)
        for col, value in zip(
            cols,
            (start + HOUR_NS, station, device, parameter, unit or "", total / n if n else None, low, high, n,
             expected, n / expected if expected else 0.0, n > 0 and n / expected >= threshold, worst, rule_text,
             n_readings, cal or 0, err or 0, fail or 0, n_suspect),
            strict=True,
        ):  # fmt: skip
            col.append(value)
    return out


def daily_mean(agg: DayAggregate, day_end: int, local_day: str, rule: AveragingRule) -> Mean:
    """The local day's mean of its valid hourly means (at least ``min_hours_per_day`` of 24)."""
    return Mean(
        day_end,
        agg.station,
        agg.device,
        agg.parameter,
        agg.unit,
        agg.mean if agg.n_valid else None,
        agg.low,
        agg.high,
        agg.n_valid,
        24,
        agg.n_valid >= rule.min_hours_per_day,
        agg.worst_flag,
        f">={rule.min_hours_per_day} of 24 valid hours (01:00-24:00 local)",
        {"local_day": local_day, "max_hourly": agg.high},
    )


def eight_hour_mean(
    station: str,
    device: str,
    parameter: str,
    unit: str,
    end: int,
    hours: Mapping[int, tuple[float, int | None]],
    rule: AveragingRule,
) -> Mean:
    """The mean of the valid hourly means ending end-7h..end (``hours``: hour end -> (mean, worst flag))."""
    window = [hours[h] for h in range(end - 7 * HOUR_NS, end + 1, HOUR_NS) if h in hours]
    values = [v for v, _ in window]
    flags = [f for _, f in window if f is not None]
    return Mean(
        end,
        station,
        device,
        parameter,
        unit,
        math.fsum(values) / len(values) if values else None,
        min(values) if values else None,
        max(values) if values else None,
        len(values),
        8,
        len(values) >= rule.min_hours_per_8h,
        max(flags, key=lambda f: _FLAG_RANK.get(f, 0)) if flags else None,
        f">={rule.min_hours_per_8h} of 8 valid hours",
    )


def affected_eight_hour_ends(hour_ends: Sequence[int]) -> list[int]:
    """The 8-hour windows an hour is part of end at that hour and the 7 after it."""
    return sorted({h + k * HOUR_NS for h in hour_ends for k in range(8)})
