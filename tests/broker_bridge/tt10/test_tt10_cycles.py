"""A cycle's readings, its mean and the period's status (broker_bridge/tt10/cycles.py), hand-computed."""

from __future__ import annotations

import pytest

from broker_bridge.envelope import Reading
from broker_bridge.tt10 import Tt10WriteError, read_file, stamp_to_utc_ns
from broker_bridge.tt10.cycles import (
    check_cycle,
    cycle_end,
    cycle_ends,
    cycle_file,
    cycle_window,
    period_status,
    split_cycles,
)

S = 1_000_000_000
E = stamp_to_utc_ns("20260325000500")


def r(offset_ns: int, parameter: str, value: float | None, status: str = "00", device: str = "d1") -> Reading:
    return Reading(E + offset_ns, device, parameter, value, "mg/L", status)


def test_a_cycle_holds_the_seconds_after_its_start_up_to_its_end():
    assert cycle_end(E, 300) == E
    assert cycle_end(E + S - 1, 300) == E  # 00:05:00.999 truncates to 00:05:00
    assert cycle_end(E + S, 300) == E + 300 * S
    assert cycle_end(E - 299 * S, 300) == E and cycle_end(E - 300 * S, 300) == E - 300 * S
    assert cycle_window(E, 300) == (E - 299 * S, E + S)
    assert list(cycle_ends(E - 300 * S, E + 300 * S, 300)) == [E, E + 300 * S]
    assert list(cycle_ends(E, E, 300)) == []
    with pytest.raises(ValueError, match="dividing a day"):
        check_cycle(420)


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (["02", "00", "01"], "00"),
        (["01", "01", "02"], "01"),
        (["01", "02", "02"], "02"),
        (["01", "02"], "02"),  # a tie goes to the worse
        (["01"], "01"),
    ],
)
def test_the_period_status(statuses, expected):
    assert period_status(statuses) == expected


def test_the_mean_of_the_00_readings_reads_back_from_the_file():
    readings = [
        r(-200 * S, "COD", 10.0),
        r(-100 * S, "COD", 13.0),
        r(-50 * S, "COD", 99.0, "01"),  # not a measurement: out of the mean
        r(-10 * S, "COD", 14.5),
        r(-100 * S, "TSS", None, "02"),
        r(-60 * S, "TSS", 3.0, "01"),
        r(-30 * S, "TSS", None, "02"),
    ]
    f = cycle_file("HN_BKHN_NT01", E, readings, mode="mean")
    assert f.name == "HN_BKHN_NT01_20260325000500.txt"
    back = read_file(f.content, f.name)
    assert back.clean and back.complete
    assert [(x.parameter, x.value, x.unit, x.stamp, x.status) for x in back.readings] == [
        ("COD", 12.5, "mg/L", "20260325000500", "00"),  # (10 + 13 + 14.5) / 3
        ("TSS", None, "mg/L", "20260325000500", "02"),
    ]


def test_each_writes_every_reading_at_its_second():
    readings = [r(-3 * S + 5, "COD", 1.0), r(-3 * S + 9, "COD", 2.0), r(-2 * S, "COD", None, "02"), r(0, "pH", 7.0)]
    back = read_file(cycle_file("X_Y_Z", E, readings, mode="each").content)
    assert [(x.parameter, x.value, x.ts_ns, x.status) for x in back.readings] == [
        ("COD", 1.0, E - 3 * S, "00"),  # the second reading in the same second is left out
        ("COD", None, E - 2 * S, "02"),
        ("pH", 7.0, E, "00"),
    ]


def test_one_parameter_from_two_devices_is_refused():
    with pytest.raises(Tt10WriteError, match="devices d1 and d2"):
        cycle_file("X_Y_Z", E, [r(0, "COD", 1.0), r(0, "COD", 2.0, device="d2")])


def test_split_cycles_orders_by_end():
    cycles = split_cycles([r(S, "COD", 1.0), r(0, "COD", 2.0), r(-400 * S, "COD", 3.0)], 300)
    assert list(cycles) == [E - 300 * S, E, E + 300 * S]
