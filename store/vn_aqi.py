"""VN_AQI as Quyết định 1459/QĐ-TCMT (12/11/2019) defines it: pure functions, no I/O.

The model (Bảng 2 breakpoints, Bảng 1 categories and colours, molar masses) is data, in
``vn_aqi_breakpoints.yaml`` beside this file, read once at import. The rules below follow
shared/reference/vn-regulations.md §5; where the decision is silent or inconsistent the choice
made here is marked **Choice** and is tested in tests/store/test_vn_aqi.py.

Inputs
    Hourly means in µg/m³ (CO too, as Bảng 2 gives it; convert with :func:`to_ugm3`), per
    parameter symbol (``"PM2,5"``, ``"PM10"``, ``"O3"``, ``"NO2"``, ``"SO2"``, ``"CO"``), keyed by
    the hour's END in UTC (int nanoseconds or an aware datetime, on the hour), each an
    :class:`HourlyMean` with a valid/invalid mark. Completeness and QC are decided upstream; only
    valid hours are used here and a result says which parameter lacked data and why.

Hourly AQI (§2.2.1)
    PM2,5 and PM10 through NowCast: c1..c12 are the hours ending at t, t-1h, ... t-11h;
    w* = Cmin/Cmax over the available ones, w = max(w*, 1/2); NowCast = Σ w^(i-1)·ci / Σ w^(i-1)
    over the available hours (a missing ci has weight 0); no NowCast unless at least 2 of c1, c2,
    c3 are available. **Choice**: the decision prints the w = 1/2 case without the division
    ((1/2)·c1 + ... + (1/2)^12·c12); with 12 hours present that equals the divided form times
    (1 - 2^-12), i.e. the same to 0.02 %, but with a missing hour it would fall by that hour's
    whole weight, so the divided form is used for every w. If every available value is 0 the
    NowCast is 0. O3 (1h scale), NO2, SO2 and CO use the hour's own mean.

Daily AQI (§2.2.2)
    The local day D (Asia/Ho_Chi_Minh) is "from 01:00 to 00:00 the next day": the 24 hours whose
    ENDS fall at 01:00..24:00 local, i.e. an hour ending at 00:00 local belongs to the day
    before. PM2,5/PM10: the mean of the day's valid hourly means. SO2, NO2, CO: the day's maximum
    hourly mean. O3: the larger sub-index of the day's maximum hourly mean (O3 1h scale) and
    of the day's maximum 8-hour mean (O3 8h scale); the 24 eight-hour means of the day end at
    each of its 24 hours (the first reaches 7 hours into the previous day, as the decision's
    example shows); the 8-hour part is dropped when that maximum exceeds 400 µg/m³ (strictly
    above; at 400 the 8h index is 300).
    **Choice** (the decision sets no minimum data for the daily values; the reference marks
    completeness UNCONFIRMED): the defaults of issue 13, configurable per parameter with
    :class:`DailyRules`: a daily value needs at least 18 of the day's 24 hours valid (so a day
    with 17 valid hours has no daily value for that parameter, and no daily AQI at all when
    that leaves no PM), an 8-hour mean needs 6 of its 8 hours, and the day's maximum 8-hour
    mean needs 18 of the day's 24 eight-hour means.

Sub-index, rounding, scale top
    Formula 1 interpolates linearly between breakpoints; Bảng 2 is contiguous, so the index is
    continuous in concentration. Bảng 2's last row reads "≥": a concentration at or above the
    top breakpoint has index 500 (**capped**, never extrapolated; ``above_scale`` says so).
    **Rounding choice: each sub-index is rounded UP to the next integer** (after discarding float
    noise below 1e-6), and the AQI is the largest rounded sub-index. The decision only says the
    AQI is "làm tròn thành số nguyên" and its own example cannot be reproduced by any single rule:
    it prints NO2 118.7 µg/m³ (59.35) as 60 in the hourly example but NO2 130.8 (65.4) as 65 in the
    daily one. Rounding up reproduces both printed AQIs (hourly 60, daily 110) and six of the
    seven printed sub-indices (daily NO2 becomes 66, not 65); rounding half up also reproduces six
    (hourly NO2 becomes 59) but then gives an hourly AQI of 59, not the printed 60. Rounding up
    is also the only rule under which the Bảng 1 category of the rounded index is always the
    band of the concentration itself: PM2,5 at 25.2 µg/m³ is above the "Tốt" breakpoint (25)
    and is shown as 51 "Trung bình", where half-up would show 50 "Tốt".

A result with no PM10 and no PM2,5 sub-index has no AQI (§2.1 b), whatever the gases say; its
sub-indices are still reported so a reader can see why. **Choice**: the dominant parameter is
the one with the largest unrounded sub-index, an exact tie going to the first in Bảng 2's column
order (Bảng 3 publishes one). A negative or non-finite hourly mean marked valid is refused with
:class:`AqiInputError`, not clamped: QC upstream should have marked it.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

import yaml

from vocabulary.local_time import VIETNAM
from vocabulary.parameters import REGULATION_SYMBOLS

MODEL_PATH = Path(__file__).resolve().parent / "vn_aqi_breakpoints.yaml"

#: The VN_AQI day is a local day (reference §5.4); Vietnam keeps UTC+7 all year.
LOCAL_ZONE = VIETNAM

HOUR_NS = 3_600_000_000_000
NOWCAST_HOURS = 12
#: CODATA 2018 exact value, J/(mol·K).
MOLAR_GAS_CONSTANT = 8.314462618
#: Decimals kept before rounding an index up, so float noise (50.000000000001) is not a step.
_ROUNDING_DECIMALS = 6

HourEnd = int | dt.datetime


class AqiInputError(ValueError):
    """An hourly series the calculator cannot use as given (naive time, off-hour key, bad value)."""


class UnitError(ValueError):
    """A unit the conversion does not know, or one that does not apply to the parameter."""


class HourlyMean(NamedTuple):
    """One hour's mean in µg/m³ and whether the averaging rules admitted it."""

    value: float | None
    valid: bool = True


@dataclass(frozen=True)
class Scale:
    """One column of Bảng 2."""

    name: str
    parameter: str
    breakpoints: tuple[float, ...]
    drop_above: float | None = None


@dataclass(frozen=True)
class Category:
    """One row of Bảng 1."""

    low: int
    high: int
    name_vi: str
    name_en: str
    colour_vi: str
    colour_en: str
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02X}{:02X}{:02X}".format(*self.rgb)

    @property
    def rgb_as_printed(self) -> str:
        """The decision's own spelling, "0;228;0"."""
        return ";".join(str(c) for c in self.rgb)


@dataclass(frozen=True)
class DailyRules:
    """Minimum data for the daily values (a choice: the decision sets none, see module doc)."""

    min_hours_per_day: int = 18
    min_hours_per_8h: int = 6
    min_8h_means_per_day: int = 18

    def __post_init__(self) -> None:
        for name, top in (("min_hours_per_day", 24), ("min_hours_per_8h", 8), ("min_8h_means_per_day", 24)):
            value = getattr(self, name)
            if not 1 <= value <= top:
                raise ValueError(f"DailyRules.{name} must be between 1 and {top}, got {value}")


@dataclass(frozen=True)
class SubIndex:
    """AQIx of one scale: the concentration used, the formula's value and its rounded index."""

    scale: str
    parameter: str
    concentration: float
    exact: float
    value: int
    above_scale: bool
    basis: str


@dataclass(frozen=True)
class AqiResult:
    """An hourly or daily VN_AQI with everything Bảng 3 asks to publish."""

    kind: Literal["hourly", "daily"]
    start_ns: int
    end_ns: int
    local_day: dt.date | None
    aqi: int | None
    category: Category | None
    dominant: str | None
    #: Per parameter, the sub-index that counts (for daily O3, the larger of its two scales).
    sub_indices: Mapping[str, SubIndex]
    #: Every scale computed, both O3 parts included.
    components: tuple[SubIndex, ...]
    #: Parameter or scale -> why it has no sub-index.
    missing: Mapping[str, str] = field(default_factory=dict)
    #: Scale -> why the decision drops it (O3 8h above 400 µg/m³).
    dropped: Mapping[str, str] = field(default_factory=dict)
    no_aqi_reason: str | None = None


# ------------------------------------------------------------------------------ the model
def _model_error(path: Path, message: str) -> ValueError:
    return ValueError(f"{path}: {message} (fix the file: it is the VN_AQI model, Bảng 1 and Bảng 2)")


def _load_model(
    path: Path,
) -> tuple[tuple[int, ...], dict[str, Scale], tuple[str, ...], tuple[Category, ...], dict[str, float], float]:
    try:
        return _read_model(path, yaml.safe_load(path.read_text(encoding="utf-8")))
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as exc:
        raise _model_error(path, f"unreadable model ({type(exc).__name__}: {exc})") from exc


def _read_model(
    path: Path, raw: dict
) -> tuple[tuple[int, ...], dict[str, Scale], tuple[str, ...], tuple[Category, ...], dict[str, float], float]:
    levels = tuple(int(v) for v in raw["index_levels"])
    if list(levels) != sorted(set(levels)) or levels[0] != 0:
        raise _model_error(path, "index_levels must rise strictly from 0")
    scales: dict[str, Scale] = {}
    for name, spec in raw["scales"].items():
        bps = tuple(float(v) for v in spec["breakpoints"])
        if spec["parameter"] not in REGULATION_SYMBOLS:
            raise _model_error(path, f"scale {name!r}: parameter {spec['parameter']!r} is not a regulation symbol")
        if list(bps) != sorted(set(bps)) or bps[0] != 0 or not 2 <= len(bps) <= len(levels):
            raise _model_error(path, f"scale {name!r}: breakpoints must rise strictly from 0, at most {len(levels)}")
        scales[name] = Scale(name, spec["parameter"], bps, spec.get("drop_above"))
    required = tuple(raw["required_any"])
    cats = tuple(
        Category(
            int(c["low"]),
            int(c["high"]),
            c["name_vi"],
            c["name_en"],
            c["colour_vi"],
            c["colour_en"],
            tuple(int(v) for v in c["rgb"]),
        )
        for c in raw["categories"]
    )
    expected_low = 0
    for cat in cats:
        if cat.low != expected_low or cat.high < cat.low or len(cat.rgb) != 3:
            raise _model_error(path, f"categories must be contiguous integer ranges from 0; {cat.name_en} is not")
        expected_low = cat.high + 1
    if expected_low - 1 != levels[-1]:
        raise _model_error(path, f"categories must end at the top index {levels[-1]}")
    conditions = raw["reference_conditions"]
    molar_volume_l = MOLAR_GAS_CONSTANT * float(conditions["temperature_k"]) / float(conditions["pressure_pa"]) * 1000
    molar = {k: float(v) for k, v in raw["molar_mass_g_per_mol"].items()}
    return levels, scales, required, cats, molar, molar_volume_l


INDEX_LEVELS, SCALES, REQUIRED_ANY, CATEGORIES, MOLAR_MASS, MOLAR_VOLUME_L = _load_model(MODEL_PATH)
TOP_INDEX = INDEX_LEVELS[-1]
#: The parameters VN_AQI uses, in the order of Bảng 2's columns.
PARAMETERS: tuple[str, ...] = tuple(dict.fromkeys(s.parameter for s in SCALES.values()))
NOWCAST_PARAMETERS: tuple[str, ...] = REQUIRED_ANY
#: The scale each parameter uses for an hourly mean (O3: the 1-hour scale, §2.2.1 b note).
HOURLY_SCALE: dict[str, str] = {"O3": "O3 1h", **{p: p for p in PARAMETERS if p in SCALES}}
_PARAMETER_ORDER = {p: i for i, p in enumerate(PARAMETERS)}


# ------------------------------------------------------------------------------ formula 1
def sub_index(scale: str, concentration: float) -> float:
    """Formula 1 on one Bảng 2 column, unrounded; 500 at or above the top breakpoint.

    Raises ValueError for an unknown scale, a negative or non-finite concentration, or one above
    a scale that stops short of 500 (O3 8h above 400 µg/m³, which the daily rule drops).
    """
    try:
        sc = SCALES[scale]
    except KeyError:
        raise ValueError(f"unknown VN_AQI scale {scale!r}; known: {', '.join(SCALES)}") from None
    c = float(concentration)
    if not math.isfinite(c) or c < 0:
        raise ValueError(f"{scale}: concentration must be a finite value >= 0 µg/m³, got {concentration!r}")
    bps = sc.breakpoints
    if c >= bps[-1]:
        if len(bps) < len(INDEX_LEVELS) and c > bps[-1]:
            raise ValueError(f"{scale}: {c} µg/m³ is above the scale's top {bps[-1]} (QĐ 1459 drops this part)")
        return float(INDEX_LEVELS[len(bps) - 1])
    i = next(k for k in range(len(bps) - 1) if c <= bps[k + 1])
    lo_c, hi_c, lo_i, hi_i = bps[i], bps[i + 1], INDEX_LEVELS[i], INDEX_LEVELS[i + 1]
    return (hi_i - lo_i) / (hi_c - lo_c) * (c - lo_c) + lo_i


def round_index(exact: float) -> int:
    """The rounding chosen for every sub-index: up to the next integer (see the module doc)."""
    return math.ceil(round(exact, _ROUNDING_DECIMALS))


def _sub_index(scale: str, concentration: float, basis: str) -> SubIndex:
    exact = sub_index(scale, concentration)
    sc = SCALES[scale]
    return SubIndex(
        scale, sc.parameter, float(concentration), exact, round_index(exact), concentration > sc.breakpoints[-1], basis
    )


def category(aqi: int) -> Category:
    """The Bảng 1 row of an integer AQI."""
    if isinstance(aqi, bool) or not isinstance(aqi, int):
        raise ValueError(f"category takes an integer AQI (round first with round_index), got {aqi!r}")
    for cat in CATEGORIES:
        if cat.low <= aqi <= cat.high:
            return cat
    raise ValueError(f"AQI {aqi} is outside Bảng 1 ({CATEGORIES[0].low}..{CATEGORIES[-1].high})")


# ------------------------------------------------------------------------------ NowCast
def _nowcast(latest_first: Sequence[float | None]) -> tuple[float, float, int] | None:
    if len(latest_first) > NOWCAST_HOURS:
        raise ValueError(f"NowCast takes at most {NOWCAST_HOURS} hourly means, got {len(latest_first)}")
    if sum(v is not None for v in latest_first[:3]) < 2:
        return None
    present = [(i, float(v)) for i, v in enumerate(latest_first) if v is not None]
    values = [v for _, v in present]
    c_max = max(values)
    if c_max == 0:
        return 0.0, 1.0, len(present)
    w = max(min(values) / c_max, 0.5)
    weights = [w**i for i, _ in present]
    return sum(wt * v for wt, (_, v) in zip(weights, present)) / sum(weights), w, len(present)


def nowcast(latest_first: Sequence[float | None]) -> float | None:
    """NowCast of up to 12 hourly means, c1 (the current hour) first, None for a missing hour.

    None when fewer than 2 of c1, c2, c3 are present ("không có dữ liệu").
    """
    result = _nowcast(latest_first)
    return None if result is None else result[0]


# ------------------------------------------------------------------------------ time
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def to_ns(hour_end: HourEnd) -> int:
    """An hour's end as UTC nanoseconds; datetimes must be aware."""
    if isinstance(hour_end, dt.datetime):
        if hour_end.tzinfo is None or hour_end.utcoffset() is None:
            raise AqiInputError(f"hour end {hour_end!r} has no time zone (give UTC, e.g. tzinfo=timezone.utc)")
        return (hour_end - _EPOCH) // dt.timedelta(microseconds=1) * 1000
    if isinstance(hour_end, bool) or not isinstance(hour_end, int):
        raise AqiInputError(f"hour end must be int nanoseconds or an aware datetime, got {hour_end!r}")
    return hour_end


def local_day_hour_ends(day: dt.date) -> tuple[int, ...]:
    """The 24 hour ends (UTC ns) of the VN_AQI day: 01:00 .. 24:00 local time."""
    midnight = dt.datetime(day.year, day.month, day.day, tzinfo=LOCAL_ZONE)
    first = to_ns(midnight) + HOUR_NS
    return tuple(first + k * HOUR_NS for k in range(24))


def local_day_of(hour_end: HourEnd) -> dt.date:
    """The VN_AQI day an hour belongs to: the local date of the hour's start."""
    start_ns = to_ns(hour_end) - HOUR_NS
    return (_EPOCH + dt.timedelta(microseconds=start_ns // 1000)).astimezone(LOCAL_ZONE).date()


# ------------------------------------------------------------------------------ inputs
HourlySeries = Mapping[HourEnd, HourlyMean | tuple[float | None, bool]]


def _valid_hours(parameter: str, series: HourlySeries) -> dict[int, float]:
    valid: dict[int, float] = {}
    for key, mean in series.items():
        end = to_ns(key)
        if end % HOUR_NS:
            raise AqiInputError(
                f"{parameter}: hour end {key!r} is not on the hour (hourly means are keyed by their end)"
            )
        if end in valid:
            raise AqiInputError(f"{parameter}: hour ending {key!r} given twice")
        value, ok = mean
        if not ok:
            continue
        if value is None or not math.isfinite(float(value)) or float(value) < 0:
            raise AqiInputError(
                f"{parameter}: hour ending {key!r} is marked valid with value {value!r} "
                "(a valid hourly mean is a finite value >= 0 µg/m³)"
            )
        valid[end] = float(value)
    return valid


def _prepare(series: Mapping[str, HourlySeries]) -> dict[str, dict[int, float]]:
    unknown = sorted(set(series) - set(PARAMETERS))
    if unknown:
        raise AqiInputError(
            f"not VN_AQI parameters: {', '.join(map(repr, unknown))}; "
            f"VN_AQI uses {', '.join(PARAMETERS)} (symbols as in vocabulary.parameters)"
        )
    return {p: _valid_hours(p, s) for p, s in series.items()}


# ------------------------------------------------------------------------------ combining
def _combine(
    kind: Literal["hourly", "daily"],
    start_ns: int,
    end_ns: int,
    local_day: dt.date | None,
    components: Iterable[SubIndex],
    missing: dict[str, str],
    dropped: dict[str, str],
) -> AqiResult:
    comps = tuple(components)
    best: dict[str, SubIndex] = {}
    for si in comps:
        if si.parameter not in best or si.exact > best[si.parameter].exact:
            best[si.parameter] = si
    sub = dict(sorted(best.items(), key=lambda kv: _PARAMETER_ORDER[kv[0]]))
    if not any(p in sub for p in REQUIRED_ANY):
        reason = f"no sub-index for {' or '.join(REQUIRED_ANY)}: QĐ 1459 §2.1 b computes no AQI without one"
        return AqiResult(kind, start_ns, end_ns, local_day, None, None, None, sub, comps, missing, dropped, reason)
    # Ties go to the first parameter in Bảng 2's column order: one dominant parameter is published.
    dominant = max(sub.values(), key=lambda si: (si.exact, -_PARAMETER_ORDER[si.parameter])).parameter
    aqi = sub[dominant].value
    return AqiResult(kind, start_ns, end_ns, local_day, aqi, category(aqi), dominant, sub, comps, missing, dropped)


def aqi_from_concentrations(
    concentrations: Mapping[str, float],
    *,
    kind: Literal["hourly", "daily"],
    start_ns: int,
    end_ns: int,
    local_day: dt.date | None = None,
    basis: Mapping[str, str] | None = None,
) -> AqiResult:
    """The AQI of ready-made Cx values keyed by Bảng 2 scale ("PM2,5", "O3 1h", "O3 8h", ...).

    For callers that hold their own averages: hourly PM values must already be NowCasts and
    daily ones 24-hour means. An O3 8h value above the scale is dropped, as the decision says.
    """
    components: list[SubIndex] = []
    dropped: dict[str, str] = {}
    for scale, c in concentrations.items():
        if scale not in SCALES:
            raise ValueError(f"unknown VN_AQI scale {scale!r}; known: {', '.join(SCALES)}")
        limit = SCALES[scale].drop_above
        if limit is not None and c > limit:
            dropped[scale] = f"{c:g} µg/m³ > {limit:g} µg/m³: QĐ 1459 §2.2.2 b drops this part"
            continue
        components.append(_sub_index(scale, c, (basis or {}).get(scale, kind)))
    return _combine(kind, start_ns, end_ns, local_day, components, {}, dropped)


def _measured(series: Mapping[str, HourlySeries], missing: dict[str, str]) -> list[tuple[str, dict[int, float]]]:
    """The valid hours of each measured parameter in Bảng 2's order; the others noted as missing."""
    hours = _prepare(series)
    for parameter in PARAMETERS:
        if parameter not in hours:
            missing[parameter] = "not measured"
    return [(p, hours[p]) for p in PARAMETERS if p in hours]


def hourly_aqi(series: Mapping[str, HourlySeries], hour_end: HourEnd) -> AqiResult:
    """The hourly AQI of the hour ending at ``hour_end`` (UTC)."""
    end = to_ns(hour_end)
    if end % HOUR_NS:
        raise AqiInputError(f"hour end {hour_end!r} is not on the hour")
    components: list[SubIndex] = []
    missing: dict[str, str] = {}
    for parameter, values in _measured(series, missing):
        if parameter in NOWCAST_PARAMETERS:
            window = [values.get(end - i * HOUR_NS) for i in range(NOWCAST_HOURS)]
            result = _nowcast(window)
            if result is None:
                have = sum(v is not None for v in window[:3])
                missing[parameter] = f"NowCast needs at least 2 of the 3 latest hours, {have} valid"
                continue
            value, w, n = result
            components.append(_sub_index(parameter, value, f"NowCast of {n} h, w={w:.4f}"))
        elif end in values:
            components.append(_sub_index(HOURLY_SCALE[parameter], values[end], "1-hour mean"))
        else:
            missing[parameter] = "no valid mean for this hour"
    return _combine("hourly", end - HOUR_NS, end, None, components, missing, {})


def _rules_for(rules: DailyRules | Mapping[str, DailyRules], parameter: str) -> DailyRules:
    if isinstance(rules, DailyRules):
        return rules
    return rules.get(parameter, DailyRules())


def eight_hour_means(values: Mapping[int, float], day: dt.date, min_hours: int) -> dict[int, float]:
    """The day's 8-hour means keyed by their end; each needs ``min_hours`` valid hours of its 8."""
    means: dict[int, float] = {}
    for end in local_day_hour_ends(day):
        window = [values[h] for h in range(end - 7 * HOUR_NS, end + 1, HOUR_NS) if h in values]
        if len(window) >= min_hours:
            means[end] = sum(window) / len(window)
    return means


def _daily_o3_8h(
    values: Mapping[int, float],
    day: dt.date,
    rule: DailyRules,
    components: list[SubIndex],
    missing: dict[str, str],
    dropped: dict[str, str],
) -> None:
    means = eight_hour_means(values, day, rule.min_hours_per_8h)
    if len(means) < rule.min_8h_means_per_day:
        missing["O3 8h"] = (
            f"{len(means)} of 24 eight-hour means valid (each needs {rule.min_hours_per_8h} "
            f"of 8 h), the rule needs {rule.min_8h_means_per_day}"
        )
        return
    top = max(means.values())
    limit = SCALES["O3 8h"].drop_above
    if limit is not None and top > limit:
        dropped["O3 8h"] = f"max 8-hour mean {top:g} µg/m³ > {limit:g} µg/m³: QĐ 1459 §2.2.2 b drops this part"
    else:
        components.append(_sub_index("O3 8h", top, f"max 8-hour mean of {len(means)}"))


def daily_aqi(
    series: Mapping[str, HourlySeries], day: dt.date, rules: DailyRules | Mapping[str, DailyRules] = DailyRules()
) -> AqiResult:
    """The daily AQI of the local day ``day`` (hours ending 01:00 .. 24:00 Asia/Ho_Chi_Minh)."""
    hour_ends = local_day_hour_ends(day)
    components: list[SubIndex] = []
    missing: dict[str, str] = {}
    dropped: dict[str, str] = {}
    for parameter, values in _measured(series, missing):
        rule = _rules_for(rules, parameter)
        day_values = [values[h] for h in hour_ends if h in values]
        is_pm = parameter in NOWCAST_PARAMETERS
        if len(day_values) >= rule.min_hours_per_day:
            if is_pm:
                si = _sub_index(parameter, sum(day_values) / len(day_values), f"24-hour mean of {len(day_values)} h")
            else:
                si = _sub_index(HOURLY_SCALE[parameter], max(day_values), f"max 1-hour mean of {len(day_values)} h")
            components.append(si)
        else:
            key = parameter if is_pm else HOURLY_SCALE[parameter]
            missing[key] = f"{len(day_values)} of 24 hours valid, the rule needs {rule.min_hours_per_day}"
        if parameter == "O3":
            _daily_o3_8h(values, day, rule, components, missing, dropped)
    return _combine("daily", hour_ends[0] - HOUR_NS, hour_ends[-1], day, components, missing, dropped)


# ------------------------------------------------------------------------------ units
_MASS_UNITS = {"ug/m3": 1.0, "ug/Nm3": 1.0, "mg/m3": 1000.0, "mg/Nm3": 1000.0}
_MIXING_UNITS = {"ppb": 1.0, "ppm": 1000.0}


def to_ugm3(value: float, unit: str, parameter: str) -> float:
    """A concentration in µg/m³ at QCVN 05's reference conditions (25 °C, 760 mmHg).

    Accepts µg/m³ and mg/m³ (also written ug/m3, μg/m³, and per Nm³, which is the same at these
    conditions), and ppb or ppm for the gases with a molar mass in the model (SO2, NO2, CO, O3):
    µg/m³ = ppb × M / Vm, Vm = R·T/P = 24.465 L/mol.
    """
    norm = unit.strip().replace("³", "3").replace("µ", "u").replace("μ", "u")
    v = float(value)
    if norm in _MASS_UNITS:
        return v * _MASS_UNITS[norm]
    if norm in _MIXING_UNITS:
        if parameter not in MOLAR_MASS:
            raise UnitError(
                f"{parameter}: {unit!r} is a gas mixing ratio; only {', '.join(MOLAR_MASS)} "
                "have a molar mass to convert it (report particulates in µg/m³ or mg/m³)"
            )
        return v * _MIXING_UNITS[norm] * MOLAR_MASS[parameter] / MOLAR_VOLUME_L
    known = ", ".join([*_MASS_UNITS, *_MIXING_UNITS])
    raise UnitError(f"{parameter}: unknown unit {unit!r}; VN_AQI converts from {known} (µg may be written ug)")
