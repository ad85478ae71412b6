"""QCVN 19's stack limits are stated at a reference O2: a measured SO2 is corrected to it before it is compared,
C_ref = C x (21 - O2_ref) / (21 - O2), hour by hour, with the stack's own O2 hourly means, on the real QuestDB.
An hour without a valid O2 mean, or with a stack full of air (O2 >= 20 %), is not judged at all."""

from __future__ import annotations

import time

import pytest

from analysis.aggregator import Aggregator, o2_corrected
from analysis.settings import Settings, SettingsFile
from store.ilp_writer import ReadingColumns, WarehouseWriter, ilp_row
from store.schema import TOUCHED_HOURS
from tests.helpers import sql, unique_station

H = 3_600_000_000_000
M = 60_000_000_000


def test_the_correction_and_what_is_not_judged():
    values = {1: (180.0, 1), 2: (180.0, 1), 3: (180.0, 1), 4: (180.0, 1)}
    o2 = {1: (11.0, 1), 2: (5.0, 1), 4: (20.5, 1)}
    got = o2_corrected(values, o2, 7.0)
    assert got == {1: (pytest.approx(252.0), 1), 2: (pytest.approx(157.5), 1)}  # 180 x 14/10, 180 x 14/16


def test_only_an_o2_series_in_percent_corrects():
    from analysis.aggregator import _o2_of

    o2 = {("cems", "O2", "ppm"): {1: (70000.0, 1)}, ("zr", "O2", "% vol"): {1: (9.0, 1)}}
    assert _o2_of(o2, "cems", "O2") == {1: (9.0, 1)}  # the same device's ppm series is not used
    assert _o2_of({("cems", "O2", "ppm"): {1: (70000.0, 1)}}, "cems", "O2") == {}  # nothing to correct with


def write_hours(warehouse, sid: str, start: int, hours: list[tuple[float, float | None]]) -> None:
    """Per hour (SO2 mg/Nm3, O2 % or None for no O2 reading), a reading a minute, QC pass, then the commit's
    touched_hours rows."""
    rows = [
        (start + h * H + m * M, p, v)
        for h, (so2, o2) in enumerate(hours)
        for m in range(60)
        for p, v in (("SO2", so2), ("O2", o2))
        if v is not None
    ]
    n = len(rows)
    writer = WarehouseWriter(warehouse.ilp_conf)
    writer.write_reading_columns(
        ReadingColumns(
            station=[sid] * n, seq=[1] * n, historical=[False] * n, key_id=["k"] * n, received_ns=[time.time_ns()] * n,
            ts_ns=[t for t, _, _ in rows], device=["cems"] * n, parameter=[p for _, p, _ in rows],
            value=[v for _, _, v in rows], unit=["mg/Nm3" if p == "SO2" else "%" for _, p, _ in rows],
            status=["00"] * n, cause=[""] * n, qc_flag=[1] * n, qc_check=[""] * n, qc_cause=[""] * n,
            qc_checks=[""] * n,
        )
    )  # fmt: skip
    now = time.time_ns()
    writer.write_rows(
        TOUCHED_HOURS,
        [
            ilp_row(TOUCHED_HOURS, now + h, station=sid, hour_end=start + (h + 1) * H, readings=120)
            for h in range(len(hours))
        ],
    )  # fmt: skip
    writer.close()


def test_a_stack_is_judged_at_the_reference_o2(warehouse):
    sid = unique_station("O2R")
    start = (time.time_ns() // H - 12) * H
    # zone B: 200 mg/Nm3 at 7 % O2. 180 measured at 11 % O2 is 252 at the reference: exceeds; at 5 % O2 it
    # is 157.5: does not; an hour without O2 and an hour at 20.5 % O2 are not judged.
    write_hours(warehouse, sid, start, [(180, 5.0), (180, 11.0), (180, 11.0), (180, None), (180, 20.5), (180, 5.0)])
    settings = Settings(
        SettingsFile.model_validate({"stations": {sid: {"limits": [{"regulation": "qcvn_19_2024", "zone": "B"}]}}})
    )
    aggregator = Aggregator(warehouse.pg_conninfo, warehouse.ilp_conf, settings, name=f"agg-{sid}")
    aggregator.start()
    aggregator.poll_once()
    hourly = sql(warehouse.pg_conninfo, "SELECT parameter, count() FROM hourly_means WHERE station = %s", (sid,))
    assert sorted(hourly) == [("O2", 5), ("SO2", 6)]
    episodes = sql(
        warehouse.pg_conninfo,
        "SELECT ts::long, state, periods, peak, closed_at::long FROM exceedance_episodes WHERE station = %s",
        (sid,),
    )
    assert len(episodes) == 1
    opened, state, periods, peak, closed_at = episodes[0]
    assert opened == start + 2 * H and periods == 2 and peak == pytest.approx(252.0)
    # Hours 4 and 5 are not judged; hour 6 (157.5) is under 200 x 0.9: the episode closes there.
    assert state == "closed" and closed_at == start + 6 * H
    kinds = sorted(k for (k,) in sql(warehouse.pg_conninfo, "SELECT kind FROM alerts WHERE station = %s", (sid,)))
    assert kinds == ["close", "open"]

    # Without a reference O2 (a permit that states its limits as measured), 180 never exceeds 200.
    sid2 = unique_station("O2N")
    write_hours(warehouse, sid2, start, [(180, 11.0), (180, 11.0)])
    permit = {"regulation": "qcvn_19_2024", "zone": "B", "reference_o2": 11.0}  # its own reference: factor 1
    settings2 = Settings(SettingsFile.model_validate({"stations": {sid2: {"limits": [permit]}}}))
    Aggregator(warehouse.pg_conninfo, warehouse.ilp_conf, settings2, name=f"agg-{sid2}").poll_once()
    assert sql(warehouse.pg_conninfo, "SELECT count() FROM exceedance_episodes WHERE station = %s", (sid2,)) == [(0,)]
