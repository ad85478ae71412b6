"""`quantrac export tt10`: readings stored in the real QuestDB come out as the regulation's files,
one per cycle, that read back (with the codec) equal to what SQL gives."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker_bridge.tt10 import read_path, stamp_to_utc_ns
from cli.main import app
from store.ilp_writer import ReadingColumns, WarehouseWriter
from tests.helpers import sql, unique_station, wait_for_count

S = 1_000_000_000
E1 = stamp_to_utc_ns("20260325000500")  # a cycle end: 00:05 Vietnam time, 2026-03-24T17:05Z
E2 = E1 + 300 * S
ODD = 123_456_789  # sub-second part: TT10 writes whole seconds (truncated)

# (ts_ns, device, parameter, value, unit, status)
ROWS = [
    # cycle ending E1: PM10 mean of the 00 readings = (10 + 20 + 30) / 3 = 20; the 01 reading is left out
    (E1 - 240 * S + ODD, "aq", "PM10", 10.0, "ug/m3", "00"),
    (E1 - 180 * S + ODD, "aq", "PM10", 20.0, "ug/m3", "00"),
    (E1 - 120 * S + ODD, "aq", "PM10", 100.0, "ug/m3", "01"),
    (E1 + ODD, "aq", "PM10", 30.0, "ug/m3", "00"),  # 00:05:00.123 truncates to 00:05:00: still this cycle
    # pH without any 00 reading: 01 once, 02 twice -> the period is 02, no value
    (E1 - 240 * S, "wq", "pH", 7.0, "", "01"),
    (E1 - 180 * S, "wq", "pH", None, "", "02"),
    (E1 - 60 * S, "wq", "pH", None, "", "02"),
    # cycle ending E2: PM10 02, 02, 01, 01 -> a tie goes to the worse, 02
    (E1 + 60 * S, "aq", "PM10", None, "ug/m3", "02"),
    (E1 + 120 * S, "aq", "PM10", None, "ug/m3", "02"),
    (E1 + 180 * S, "aq", "PM10", 5.0, "ug/m3", "01"),
    (E1 + 240 * S, "aq", "PM10", 6.0, "ug/m3", "01"),
    # pH (7.1 + 7.35 + 7.4) / 3 = 7.2833...
    (E1 + 60 * S + ODD, "wq", "pH", 7.1, "", "00"),
    (E1 + 180 * S, "wq", "pH", 7.35, "", "00"),
    (E2, "wq", "pH", 7.4, "", "00"),
    # after E2: outside the export
    (E2 + S, "wq", "pH", 9.9, "", "00"),
]


@pytest.fixture(scope="module")
def stored(warehouse) -> str:
    station = unique_station("TT10X")
    n = len(ROWS)
    columns = ReadingColumns(
        station=[station] * n,
        seq=[1] * n,
        historical=[False] * n,
        key_id=["k"] * n,
        received_ns=[r[0] for r in ROWS],
        ts_ns=[r[0] for r in ROWS],
        device=[r[1] for r in ROWS],
        parameter=[r[2] for r in ROWS],
        value=[r[3] for r in ROWS],
        unit=[r[4] for r in ROWS],
        status=[r[5] for r in ROWS],
        cause=[""] * n,
    )
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_reading_columns(columns)
    finally:
        writer.close()
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station = '{station}'", n)
    return station


def export(warehouse, station: str, out: Path, *extra: str) -> list[Path]:
    result = CliRunner().invoke(
        app,
        [
            "export",
            "tt10",
            "--station",
            station,
            "--from",
            "2026-03-25T00:00:00+07:00",
            "--to",
            "2026-03-24T17:10:00Z",
            "--out",
            str(out),
            "--questdb-pg",
            f"{warehouse.host}:{warehouse.pg_port}",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    return sorted(out.iterdir())


def test_mean_files_are_hand_computed_means_with_the_period_status(warehouse, stored, tmp_path):
    files = export(warehouse, stored, tmp_path, "--prefix", "HN_BKHN_KHIKXQ")
    assert [f.name for f in files] == ["HN_BKHN_KHIKXQ_20260325000500.txt", "HN_BKHN_KHIKXQ_20260325001000.txt"]
    first, second = (read_path(f) for f in files)
    assert first.clean and second.clean
    got = [[(r.parameter, r.value, r.unit, r.stamp, r.status) for r in f.readings] for f in (first, second)]
    assert got[0] == [("PM10", 20.0, "ug/m3", "20260325000500", "00"), ("pH", None, "", "20260325000500", "02")]
    assert got[1][0] == ("PM10", None, "ug/m3", "20260325001000", "02")
    assert got[1][1][0] == "pH" and got[1][1][2:] == ("", "20260325001000", "00")
    assert got[1][1][1] == pytest.approx((7.1 + 7.35 + 7.4) / 3, rel=1e-15)
    assert files[0].read_bytes().endswith(b"\r\n") and not list(tmp_path.glob(".*"))


def test_mean_files_equal_what_sql_averages(warehouse, stored, tmp_path):
    files = export(warehouse, stored, tmp_path, "--cycle", "300s")
    for path in files:
        f = read_path(path)
        end = f.file_name.ts_ns
        averages = dict(
            sql(
                warehouse.pg_conninfo,
                "SELECT parameter, avg(value) FROM readings WHERE station = %s AND status = '00'"
                " AND ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS) GROUP BY parameter",
                (stored, end - 300 * S + S, end + S),
            )
        )
        means = {r.parameter: r.value for r in f.readings if r.status == "00"}
        assert means == pytest.approx(averages, rel=1e-12) and means


def test_each_files_hold_every_reading_as_sql_gives_it(warehouse, stored, tmp_path):
    files = export(warehouse, stored, tmp_path, "--mode", "each")
    read_back = [(r.parameter, r.value, r.unit, r.ts_ns, r.status) for f in map(read_path, files) for r in f.readings]
    rows = sql(
        warehouse.pg_conninfo,
        "SELECT parameter, value, unit, ts::long, status FROM readings WHERE station = %s"
        " AND ts >= cast(%s AS TIMESTAMP_NS) AND ts < cast(%s AS TIMESTAMP_NS) ORDER BY ts",
        (stored, E1 - 300 * S + S, E2 + S),
    )
    expected = [(p, v, u or "", ts - ts % S, st) for p, v, u, ts, st in rows]
    assert sorted(read_back, key=lambda r: (r[3], r[0])) == sorted(expected, key=lambda r: (r[3], r[0]))
    assert len(read_back) == len(ROWS) - 1  # the reading after --to is not exported


def test_bad_arguments_fail_with_a_reason(warehouse, stored, tmp_path):
    result = CliRunner().invoke(
        app,
        ["export", "tt10", "--station", stored, "--from", "1h", "--to", "0s", "--out", str(tmp_path), "--cycle", "7m"]
        + ["--questdb-pg", f"{warehouse.host}:{warehouse.pg_port}"],
    )
    assert result.exit_code == 2 and "must be a whole number of seconds dividing a day" in result.output
