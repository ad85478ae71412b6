"""VN_AQI (QĐ 1459/QĐ-TCMT): the decision's worked examples and a hand-computed case per rule.

Expected values are worked out by hand in the comments, never by calling the code under test;
local times are built here with a fixed UTC+7 offset, independently of the module's zone.
"""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from store import vn_aqi
from store.vn_aqi import (
    AqiInputError,
    DailyRules,
    HourlyMean,
    UnitError,
    aqi_from_concentrations,
    category,
    daily_aqi,
    eight_hour_means,
    hourly_aqi,
    local_day_hour_ends,
    local_day_of,
    nowcast,
    round_index,
    sub_index,
    to_ugm3,
)

UTC7 = dt.timezone(dt.timedelta(hours=7))
H = 3_600_000_000_000
DAY = dt.date(2025, 3, 10)


def local_ns(day: dt.date, hour: int) -> int:
    """UTC ns of ``hour``:00 local on ``day`` (hour 24 is the next midnight)."""
    t = dt.datetime(day.year, day.month, day.day, tzinfo=UTC7) + dt.timedelta(hours=hour)
    return int(t.timestamp()) * 1_000_000_000


def day_series(values: list[float | None], day: dt.date = DAY) -> dict[int, HourlyMean]:
    """24 hours of ``day`` (ends 01:00..24:00 local); None marks an invalid hour."""
    assert len(values) == 24
    return {local_ns(day, h + 1): HourlyMean(v, v is not None) for h, v in enumerate(values)}


def hours_ending(end: int, latest_first: list[float | None]) -> dict[int, HourlyMean]:
    return {end - i * H: HourlyMean(v, v is not None) for i, v in enumerate(latest_first)}


# ------------------------------------------------------------------ the decision's examples (§2.3)
# PM2,5 hourly means 09:00 .. 20:00 as printed in §2.3 a.
NOWCAST_EXAMPLE = [26.9, 24.7, 20.5, 23.5, 19.5, 16.5, 19.0, 16.5, 20.3, 22.4, 19.6, 20.6]


def test_worked_example_nowcast_is_20_3():
    latest_first = NOWCAST_EXAMPLE[::-1]  # c1 = 20:00 = 20.6
    # w* = 16.5 / 26.9 = 0.613 > 1/2, so w = w*; the decision prints 20.3.
    assert round(nowcast(latest_first), 1) == 20.3


def test_worked_example_hourly_is_60_with_rounding_up():
    result = aqi_from_concentrations({"O3 1h": 136.1, "NO2": 118.7, "PM2,5": 20.3}, kind="hourly", start_ns=0, end_ns=H)
    # O3 50/160 × 136.1 = 42.53 -> 43; NO2 50 + 0.5 × 18.7 = 59.35 -> 60 (printed 60);
    # PM2,5 2 × 20.3 = 40.6 -> 41.
    assert {p: s.value for p, s in result.sub_indices.items()} == {"O3": 43, "NO2": 60, "PM2,5": 41}
    assert result.sub_indices["NO2"].exact == pytest.approx(59.35)
    assert (result.aqi, result.dominant, result.category.name_vi) == (60, "NO2", "Trung bình")


def test_worked_example_hourly_from_hourly_series():
    end = local_ns(DAY, 20)
    series = {
        "PM2,5": hours_ending(end, NOWCAST_EXAMPLE[::-1]),
        "O3": {end: HourlyMean(136.1, True)},
        "NO2": {end: HourlyMean(118.7, True)},
    }
    result = hourly_aqi(series, end)
    pm = result.sub_indices["PM2,5"]
    assert round(pm.concentration, 1) == 20.3 and pm.value == 41
    assert result.aqi == 60 and result.dominant == "NO2"
    assert set(result.missing) == {"CO", "SO2", "PM10"}


def test_worked_example_daily_is_110():
    result = aqi_from_concentrations(
        {"O3 8h": 89.3, "O3 1h": 114.6, "NO2": 130.8, "PM2,5": 55.7},
        kind="daily",
        start_ns=0,
        end_ns=24 * H,
        local_day=DAY,
    )
    parts = {c.scale: c.value for c in result.components}
    # O3 8h 0.5 × 89.3 = 44.65 -> 45; O3 1h 50/160 × 114.6 = 35.8 -> 36;
    # NO2 50 + 0.5 × 30.8 = 65.4 -> 66 (the decision prints 65: its examples disagree, module doc);
    # PM2,5 100 + 50/30 × 5.7 = 109.5 -> 110.
    assert parts == {"O3 8h": 45, "O3 1h": 36, "NO2": 66, "PM2,5": 110}
    assert result.sub_indices["O3"].scale == "O3 8h"
    assert (result.aqi, result.dominant, result.category.name_en) == (110, "PM2,5", "Poor")


# O3 hourly means of §2.2.2 a, 18:00 of the day before to 00:00 at the end of the day.
O3_EXAMPLE = [
    15.7,
    14.2,
    17.7,
    18.9,
    19.3,
    15.7,
    19.7,
    22.6,
    27.1,
    29.0,
    31.9,
    25.3,
    34.7,
    35.2,
    41.6,
    45.7,
    49.2,
    55.8,
    69.6,
    78.3,
    91.5,
    97.7,
    81.2,
    71.8,
    43.5,
    34.3,
    21.5,
    20.5,
    19.4,
    20.4,
    21.3,
]
O3_EXAMPLE_8H = [
    18.0,
    19.4,
    21.2,
    23.0,
    23.8,
    25.8,
    28.2,
    30.9,
    33.8,
    36.6,
    39.9,
    44.7,
    51.3,
    58.4,
    66.2,
    71.1,
    74.4,
    73.7,
    71.0,
    65.0,
    57.8,
    48.7,
    39.1,
    31.6,
]


def o3_example_series() -> dict[int, HourlyMean]:
    first_end = local_ns(DAY, 1) - 7 * H  # 18:00 the day before
    return {first_end + i * H: HourlyMean(v, True) for i, v in enumerate(O3_EXAMPLE)}


def test_worked_example_eight_hour_means():
    values = {k: m.value for k, m in o3_example_series().items()}
    means = eight_hour_means(values, DAY, min_hours=8)
    assert list(means) == list(local_day_hour_ends(DAY))
    # All 24 agree to the printed decimal but one: ending 12:00, 357.1 / 8 = 44.6375, printed 44.7
    # (the decision presumably averaged unrounded hourly values; each is printed to ±0.05).
    printed_differs = [i for i, (m, p) in enumerate(zip(means.values(), O3_EXAMPLE_8H)) if round(m, 1) != p]
    assert printed_differs == [11] and list(means.values())[11] == pytest.approx(44.6375)
    assert all(abs(m - p) <= 0.0625 + 1e-9 for m, p in zip(means.values(), O3_EXAMPLE_8H))
    # The largest: hours ending 10:00..17:00, 595.1 / 8 = 74.3875, printed 74.4.
    assert max(means.values()) == pytest.approx(74.3875)


def test_worked_example_o3_daily_uses_the_larger_scale():
    result = daily_aqi({"O3": o3_example_series()}, DAY)
    o3 = {c.scale: c for c in result.components}
    # 1h: 50/160 × 97.7 = 30.53 -> 31; 8h: 0.5 × 74.3875 = 37.19 -> 38.
    assert (o3["O3 1h"].value, o3["O3 8h"].value) == (31, 38)
    assert result.sub_indices["O3"].scale == "O3 8h"
    assert result.aqi is None and "PM10 or PM2,5" in result.no_aqi_reason


# ------------------------------------------------------------------ NowCast rules
def test_nowcast_with_missing_hours_gives_them_no_weight():
    # Present: c1 = 30, c3 = 20, c4 = 10. w* = 10/30 -> floored to 1/2.
    # (30 + 0.25 × 20 + 0.125 × 10) / (1 + 0.25 + 0.125) = 36.25 / 1.375 = 26.3636...
    assert nowcast([30, None, 20, 10, None]) == pytest.approx(36.25 / 1.375)


def test_nowcast_weight_is_floored_at_one_half():
    # w* = 10/40 = 0.25 -> w = 0.5: (10 + 0.5 × 40) / 1.5 = 20 (w = 0.25 would give 16).
    assert nowcast([10, 40]) == pytest.approx(20.0)


def test_nowcast_weight_above_one_half_is_used_as_is():
    # w* = 20/30 = 2/3: (20 + 2/3 × 30 + 4/9 × 24) / (1 + 2/3 + 4/9) = (152/3) / (19/9) = 24.
    assert nowcast([20, 30, 24]) == pytest.approx(24.0)


def test_nowcast_one_half_divides_even_where_the_decision_prints_no_division():
    values = [100.0] + [10.0] * 11  # w* = 0.1 -> 1/2, all 12 hours present
    printed_form = 0.5 * 100 + sum(0.5**i * 10 for i in range(2, 13))  # 54.9976
    divided = (100 + 10 * (1 - 2**-11)) / (2 - 2**-11)  # 55.0110
    assert nowcast(values) == pytest.approx(divided)
    assert nowcast(values) == pytest.approx(printed_form / (1 - 2**-12))


@pytest.mark.parametrize("latest_first", [[10, None, None, 20, 20, 20], [None, None, 10, 10, 10], [None, 5], []])
def test_nowcast_needs_two_of_the_three_latest_hours(latest_first):
    assert nowcast(latest_first) is None


def test_nowcast_two_of_three_is_enough():
    assert nowcast([None, 10, 10]) == pytest.approx(10.0)
    assert nowcast([12, None, 12, 50]) is not None


def test_nowcast_of_zeros_is_zero_and_of_too_many_hours_an_error():
    assert nowcast([0, 0, 0]) == 0.0
    with pytest.raises(ValueError, match="at most 12"):
        nowcast([1.0] * 13)


def test_hourly_without_nowcast_and_no_pm10_has_no_aqi():
    end = local_ns(DAY, 12)
    series = {
        "PM2,5": hours_ending(end, [10, None, None, 30, 30]),  # only 1 of c1..c3
        "NO2": {end: HourlyMean(150.0, True)},
    }
    result = hourly_aqi(series, end)
    assert result.aqi is None and result.category is None and result.dominant is None
    assert "2 of the 3 latest hours, 1 valid" in result.missing["PM2,5"]
    assert result.sub_indices["NO2"].value == 75  # still reported: 50 + 0.5 × 50


def test_hourly_ignores_invalid_hours_and_older_than_twelve():
    end = local_ns(DAY, 12)
    pm = hours_ending(end, [20, 20] + [None] * 10 + [400])  # the 13th hour is outside the window
    pm[end - H] = HourlyMean(999.0, False)  # c2 invalid: its value must not count
    pm[end - 2 * H] = HourlyMean(20.0, True)
    result = hourly_aqi({"PM10": pm}, end)
    # c1 = 20, c3 = 20 -> NowCast 20; PM10 50/50 × 20 = 20.
    assert result.sub_indices["PM10"].concentration == pytest.approx(20.0)
    assert result.aqi == 20 and result.category.name_en == "Good"


def test_hourly_gas_needs_its_own_hour():
    end = local_ns(DAY, 12)
    series = {
        "PM10": hours_ending(end, [60, 60, 60]),
        "SO2": {end - H: HourlyMean(500.0, True), end: HourlyMean(None, False)},
    }
    result = hourly_aqi(series, end)
    assert result.missing["SO2"] == "no valid mean for this hour"
    assert result.aqi == 55  # PM10: 50 + 50/100 × 10


def test_no_pm_means_no_aqi_even_with_high_gases():
    result = aqi_from_concentrations({"SO2": 2000.0, "CO": 100000.0}, kind="hourly", start_ns=0, end_ns=H)
    assert result.aqi is None and result.sub_indices["SO2"].value == 380


def test_datetime_and_ns_keys_agree():
    end = dt.datetime(2025, 3, 10, 5, tzinfo=dt.UTC)
    by_dt = hourly_aqi({"PM2,5": {end: HourlyMean(30.0), end - dt.timedelta(hours=1): HourlyMean(30.0)}}, end)
    end_ns = int(end.timestamp()) * 1_000_000_000
    by_ns = hourly_aqi({"PM2,5": {end_ns: (30.0, True), end_ns - H: (30.0, True)}}, end_ns)
    assert by_dt.aqi == by_ns.aqi == 60 and by_dt.end_ns == end_ns


# ------------------------------------------------------------------ the local day
def test_local_day_is_hours_ending_0100_to_2400_local():
    ends = local_day_hour_ends(DAY)
    assert len(ends) == 24
    assert ends[0] == int(dt.datetime(2025, 3, 9, 18, tzinfo=dt.UTC).timestamp()) * 10**9
    assert ends[-1] == int(dt.datetime(2025, 3, 10, 17, tzinfo=dt.UTC).timestamp()) * 10**9
    assert local_day_of(local_ns(DAY, 24)) == DAY  # 00:00 local on the 11th
    assert local_day_of(local_ns(DAY, 25)) == DAY + dt.timedelta(1)  # 01:00 local on the 11th
    assert local_day_of(local_ns(DAY, 0)) == DAY - dt.timedelta(1)  # 00:00 local on the 10th


def test_daily_day_boundary_at_0100_local():
    series = day_series([20.0] * 23 + [116.0])  # the hour ending 00:00 on the 11th
    series[local_ns(DAY, 0)] = HourlyMean(500.0, True)  # ends 00:00 on the 10th: the day before
    series[local_ns(DAY, 25)] = HourlyMean(500.0, True)  # ends 01:00 on the 11th: the day after
    result = daily_aqi({"PM2,5": series}, DAY)
    # (23 × 20 + 116) / 24 = 576 / 24 = 24 -> 2 × 24 = 48.
    assert result.sub_indices["PM2,5"].concentration == pytest.approx(24.0)
    assert result.aqi == 48
    assert (result.start_ns, result.end_ns) == (local_ns(DAY, 0), local_ns(DAY, 24))


def test_daily_with_17_valid_hours_has_no_value_and_18_has_one():
    seventeen = day_series([40.0] * 17 + [None] * 7)
    result = daily_aqi({"PM2,5": seventeen, "NO2": day_series([150.0] * 24)}, DAY)
    assert result.aqi is None
    assert result.missing["PM2,5"] == "17 of 24 hours valid, the rule needs 18"
    assert result.sub_indices["NO2"].value == 75

    eighteen = day_series([40.0] * 18 + [None] * 6)
    assert daily_aqi({"PM2,5": eighteen}, DAY).aqi == 80  # 50 + 50/25 × (40 - 25)


def test_daily_with_17_valid_gas_hours_drops_only_that_gas():
    result = daily_aqi({"PM10": day_series([100.0] * 24), "NO2": day_series([300.0] * 17 + [None] * 7)}, DAY)
    assert "17 of 24" in result.missing["NO2"]
    assert result.aqi == 75 and result.dominant == "PM10"  # 50 + 0.5 × 50


def test_daily_minimum_is_configurable_per_parameter():
    seventeen = day_series([40.0] * 17 + [None] * 7)
    assert daily_aqi({"PM2,5": seventeen}, DAY, DailyRules(min_hours_per_day=17)).aqi == 80
    per_parameter = {"PM2,5": DailyRules(min_hours_per_day=12)}
    result = daily_aqi({"PM2,5": seventeen, "SO2": day_series([100.0] * 17 + [None] * 7)}, DAY, per_parameter)
    assert result.aqi == 80 and "SO2" in result.missing  # SO2 keeps the default 18
    with pytest.raises(ValueError, match="min_hours_per_day"):
        DailyRules(min_hours_per_day=25)


def test_daily_pm_mean_and_gas_maximum():
    pm10 = day_series([10.0, 20.0, 30.0, 40.0] * 6)  # mean 25 -> 25
    no2 = day_series([50.0] * 10 + [130.8] + [80.0] * 13)  # max 130.8 -> 65.4 -> 66
    co = day_series([None] * 3 + [12000.0] * 21)  # max 12000 -> 50 + 50/20000 × 2000 = 55
    result = daily_aqi({"PM10": pm10, "NO2": no2, "CO": co}, DAY)
    assert {p: s.value for p, s in result.sub_indices.items()} == {"CO": 55, "NO2": 66, "PM10": 25}
    assert result.aqi == 66 and result.dominant == "NO2"


def o3_flat(value: float) -> dict[int, HourlyMean]:
    """O3 at ``value`` from 7 hours before the day to its end: every 8-hour mean is ``value``."""
    first = local_ns(DAY, 1) - 7 * H
    return {first + i * H: HourlyMean(value, True) for i in range(31)}


def test_daily_o3_8h_part_dropped_above_400():
    result = daily_aqi({"O3": o3_flat(450.0), "PM2,5": day_series([20.0] * 24)}, DAY)
    assert "O3 8h" in result.dropped and "O3 8h" not in {c.scale for c in result.components}
    # Only the 1h scale: 200 + 100/400 × 50 = 212.5 -> 213.
    assert result.sub_indices["O3"].scale == "O3 1h" and result.aqi == 213 and result.dominant == "O3"
    assert result.category.name_vi == "Rất xấu"


def test_daily_o3_8h_at_exactly_400_is_kept():
    result = daily_aqi({"O3": o3_flat(400.0), "PM2,5": day_series([20.0] * 24)}, DAY)
    # 8h: 400 is the scale's top, index 300; 1h: 400 -> 200.
    assert not result.dropped and result.sub_indices["O3"].scale == "O3 8h" and result.aqi == 300
    dropped_too = aqi_from_concentrations(
        {"O3 8h": 400.5, "O3 1h": 300.0, "PM10": 10.0}, kind="daily", start_ns=0, end_ns=24 * H
    )
    assert "O3 8h" in dropped_too.dropped and dropped_too.aqi == 150


def test_eight_hour_mean_needs_six_of_eight_hours():
    end = local_ns(DAY, 10)
    values = {end - i * H: 80.0 for i in range(8)}
    del values[end - H], values[end - 3 * H]  # 6 of 8 left
    assert eight_hour_means(values, DAY, min_hours=6)[end] == pytest.approx(80.0)
    del values[end - 5 * H]  # 5 of 8
    assert end not in eight_hour_means(values, DAY, min_hours=6)


def test_daily_o3_without_enough_8h_means_uses_the_1h_scale():
    hours = [None] * 7 + [150.0] * 17  # 17 O3 hours: no 1h max either
    result = daily_aqi({"O3": day_series(hours), "PM10": day_series([10.0] * 24)}, DAY)
    assert "O3 1h" in result.missing and "O3 8h" in result.missing and "O3" not in result.sub_indices
    hours = [None] * 6 + [150.0] * 18  # 18 hours valid; 8h means ending 06..24h
    result = daily_aqi({"O3": day_series(hours), "PM10": day_series([10.0] * 24)}, DAY)
    # 8h means: ending 12:00 .. 24:00 have 6+ hours: 13 of 24 < 18 -> no 8h part.
    assert "13 of 24 eight-hour means" in result.missing["O3 8h"]
    assert result.sub_indices["O3"].scale == "O3 1h" and result.sub_indices["O3"].value == 47  # 50/160 × 150


# ------------------------------------------------------------------ sub-index, categories, scale top
@pytest.mark.parametrize(
    ("aqi", "name_en"),
    [
        (0, "Good"),
        (50, "Good"),
        (51, "Moderate"),
        (100, "Moderate"),
        (101, "Poor"),
        (150, "Poor"),
        (151, "Bad"),
        (200, "Bad"),
        (201, "Very bad"),
        (300, "Very bad"),
        (301, "Hazardous"),
        (500, "Hazardous"),
    ],
)
def test_category_boundaries(aqi, name_en):
    assert category(aqi).name_en == name_en


def test_category_colours_as_printed():
    assert [(c.name_vi, c.colour_vi, c.rgb_as_printed, c.hex) for c in vn_aqi.CATEGORIES] == [
        ("Tốt", "Xanh", "0;228;0", "#00E400"),
        ("Trung bình", "Vàng", "255;255;0", "#FFFF00"),
        ("Kém", "Da cam", "255;126;0", "#FF7E00"),
        ("Xấu", "Đỏ", "255;0;0", "#FF0000"),
        ("Rất xấu", "Tím", "143;63;151", "#8F3F97"),
        ("Nguy hại", "Nâu", "126;0;35", "#7E0023"),
    ]


@pytest.mark.parametrize("bad", [-1, 501, 50.5, True])
def test_category_refuses_what_is_not_an_index(bad):
    with pytest.raises(ValueError):
        category(bad)


@pytest.mark.parametrize(
    ("concentration", "aqi", "name_en"),
    [
        (25.0, 50, "Good"),
        (25.2, 51, "Moderate"),
        (50.0, 100, "Moderate"),
        (50.1, 101, "Poor"),
        (80.0, 150, "Poor"),
        (80.5, 151, "Bad"),
        (150.0, 200, "Bad"),
        (150.5, 201, "Very bad"),
        (250.0, 300, "Very bad"),
        (250.5, 301, "Hazardous"),
    ],
)
def test_pm25_concentration_boundaries(concentration, aqi, name_en):
    result = aqi_from_concentrations({"PM2,5": concentration}, kind="daily", start_ns=0, end_ns=24 * H)
    assert (result.aqi, result.category.name_en) == (aqi, name_en)


def test_every_breakpoint_gives_its_level():
    for name, scale in vn_aqi.SCALES.items():
        for bp, level in zip(scale.breakpoints, vn_aqi.INDEX_LEVELS):
            assert sub_index(name, bp) == level, (name, bp)


def test_above_the_top_breakpoint_is_capped_at_500():
    assert sub_index("PM2,5", 425.0) == pytest.approx(450.0)  # 400 + 100/150 × 75
    assert sub_index("PM2,5", 900.0) == 500.0
    result = aqi_from_concentrations({"PM2,5": 900.0}, kind="hourly", start_ns=0, end_ns=H)
    assert result.aqi == 500 and result.sub_indices["PM2,5"].above_scale
    assert (
        not aqi_from_concentrations({"PM2,5": 500.0}, kind="hourly", start_ns=0, end_ns=H)
        .sub_indices["PM2,5"]
        .above_scale
    )
    assert sub_index("CO", 150000.0) == 500.0
    with pytest.raises(ValueError, match="above the scale's top"):
        sub_index("O3 8h", 400.1)


@pytest.mark.parametrize(("scale", "value"), [("PM2.5", 10.0), ("PM2,5", -0.1), ("PM2,5", math.nan)])
def test_sub_index_refuses_bad_input(scale, value):
    with pytest.raises(ValueError):
        sub_index(scale, value)


def test_rounding_is_up_without_float_noise():
    assert round_index(59.35) == 60 and round_index(65.4) == 66 and round_index(109.5) == 110
    assert round_index(50.0) == 50 and round_index(50.0 + 1e-12) == 50 and round_index(0.0) == 0
    assert round_index(0.3 * 3 / 0.9 * 50) == 50  # 50.00000000000001 in floats


# ------------------------------------------------------------------ input checks
def test_input_errors_are_clear():
    end = local_ns(DAY, 5)
    with pytest.raises(AqiInputError, match="no time zone"):
        hourly_aqi({"PM10": {dt.datetime(2025, 3, 10, 5): HourlyMean(1.0)}}, end)
    with pytest.raises(AqiInputError, match="not on the hour"):
        hourly_aqi({"PM10": {end + 1: HourlyMean(1.0)}}, end)
    with pytest.raises(AqiInputError, match="marked valid"):
        hourly_aqi({"PM10": {end: HourlyMean(None, True)}}, end)
    with pytest.raises(AqiInputError, match="marked valid"):
        daily_aqi({"PM10": {end: HourlyMean(-3.0, True)}}, DAY)
    with pytest.raises(AqiInputError, match="'PM2.5'"):
        hourly_aqi({"PM2.5": {end: HourlyMean(1.0)}}, end)
    with pytest.raises(AqiInputError, match="given twice"):
        hourly_aqi(
            {"PM10": {end: HourlyMean(1.0), dt.datetime.fromtimestamp(end / 1e9, dt.UTC): HourlyMean(2.0)}},
            end,
        )


def test_the_model_file_is_checked(tmp_path: Path):
    text = vn_aqi.MODEL_PATH.read_text(encoding="utf-8").replace("[0, 25, 50, 80,", "[0, 25, 20, 80,")
    broken = tmp_path / "model.yaml"
    broken.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=r"model\.yaml: scale 'PM2,5': breakpoints must rise"):
        vn_aqi._load_model(broken)
    broken.write_text(text.replace("index_levels:", "levels:"), encoding="utf-8")
    with pytest.raises(ValueError, match=r"model\.yaml: unreadable model \(KeyError: 'index_levels'\)"):
        vn_aqi._load_model(broken)


def test_parameters_are_the_regulation_symbols():
    from vocabulary.parameters import REGULATION_SYMBOLS

    assert set(vn_aqi.PARAMETERS) == {"O3", "CO", "SO2", "NO2", "PM10", "PM2,5"} <= set(REGULATION_SYMBOLS)


def test_dominant_tie_goes_to_the_first_column_of_bang_2():
    result = aqi_from_concentrations({"PM2,5": 25.0, "PM10": 50.0}, kind="daily", start_ns=0, end_ns=24 * H)
    assert result.aqi == 50 and result.dominant == "PM10"


# ------------------------------------------------------------------ unit conversion
# Vm = R·T/P = 8.314462618 × 298.15 / 101325 = 0.0244654 m³/mol = 24.4654 L/mol (25 °C, 760 mmHg).
@pytest.mark.parametrize(
    ("value", "unit", "parameter", "expected"),
    [
        (100, "ppb", "SO2", 261.83),  # 100 × 64.058 / 24.4654
        (1, "ppm", "NO2", 1880.41),  # 1000 × 46.005 / 24.4654
        (1, "ppm", "CO", 1144.88),  # 1000 × 28.010 / 24.4654
        (50, "ppb", "O3", 98.09),  # 50 × 47.997 / 24.4654
        (1.5, "mg/m3", "CO", 1500.0),
        (2.0, "mg/Nm³", "SO2", 2000.0),
        (12.5, "µg/m³", "PM2,5", 12.5),  # micro sign
        (12.5, "μg/m3", "PM10", 12.5),  # Greek mu
        (12.5, "ug/m3", "PM10", 12.5),
    ],
)
def test_unit_conversion(value, unit, parameter, expected):
    assert to_ugm3(value, unit, parameter) == pytest.approx(expected, abs=0.01)


def test_unknown_or_inapplicable_units_are_refused():
    with pytest.raises(UnitError, match="unknown unit 'ppt'.*ppb, ppm"):
        to_ugm3(1.0, "ppt", "NO2")
    with pytest.raises(UnitError, match="PM10: 'ppb' is a gas mixing ratio"):
        to_ugm3(1.0, "ppb", "PM10")


# ------------------------------------------------------------------ properties
SCALE_NAMES = sorted(vn_aqi.SCALES)


def scale_top(name: str) -> float:
    bps = vn_aqi.SCALES[name].breakpoints
    return bps[-1] if vn_aqi.SCALES[name].drop_above is not None else bps[-1] * 1.5


@st.composite
def scale_and_two(draw):
    name = draw(st.sampled_from(SCALE_NAMES))
    a, b = sorted(draw(st.floats(0, scale_top(name))) for _ in range(2))
    return name, a, b


@given(scale_and_two())
def test_sub_index_is_monotonic_and_continuous(case):
    name, a, b = case
    lo, hi = sub_index(name, a), sub_index(name, b)
    assert lo <= hi
    bps, levels = vn_aqi.SCALES[name].breakpoints, vn_aqi.INDEX_LEVELS
    steepest = max((levels[i + 1] - levels[i]) / (bps[i + 1] - bps[i]) for i in range(len(bps) - 1))
    assert hi - lo <= steepest * (b - a) + 1e-9


@given(st.sampled_from(SCALE_NAMES), st.data())
def test_rounded_category_is_the_concentration_band(name, data):
    bps = vn_aqi.SCALES[name].breakpoints
    c = data.draw(st.floats(0, scale_top(name)))
    assume(all(abs(c - bp) > 1e-4 for bp in bps[1:]))  # within rounding of a breakpoint either side is fair
    # The band (BPi, BPi+1] of the concentration, named by Bảng 1 through its upper index level.
    band = next((i for i in range(len(bps) - 1) if c <= bps[i + 1]), len(bps) - 2)
    band_category = category(vn_aqi.INDEX_LEVELS[band + 1] if c <= bps[-1] else 500)
    assert category(round_index(sub_index(name, c))) == band_category


@given(st.lists(st.one_of(st.none(), st.floats(0, 1000)), min_size=0, max_size=12))
def test_nowcast_lies_within_the_hours_it_uses(latest_first):
    value = nowcast(latest_first)
    present = [v for v in latest_first if v is not None]
    if sum(v is not None for v in latest_first[:3]) < 2:
        assert value is None
    else:
        assert min(present) - 1e-9 <= value <= max(present) + 1e-9


@given(st.dictionaries(st.sampled_from(SCALE_NAMES), st.floats(0, 399.0), min_size=1))
def test_aqi_is_the_largest_rounded_sub_index(concentrations):
    result = aqi_from_concentrations(concentrations, kind="daily", start_ns=0, end_ns=24 * H)
    values = [sub_index(s, c) for s, c in concentrations.items()]
    if not {"PM10", "PM2,5"} & set(concentrations):
        assert result.aqi is None
    else:
        assert result.aqi == round_index(max(values))
        assert result.sub_indices[result.dominant].value == result.aqi
