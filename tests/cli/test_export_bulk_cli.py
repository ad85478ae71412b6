"""`quantrac export csv|parquet`: the bulk downloads from the command line against the real QuestDB."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
from typer.testing import CliRunner

from cli.main import app
from store.bulk_export.layout import DAY_NS, LocalDay
from tests.helpers import unique_station
from tests.store.bulk_export.test_bulk_export import unique_province, write_metadata, write_readings

S = 1_000_000_000
FIRST, SECOND = LocalDay.parse("2023-12-01"), LocalDay.parse("2023-12-02")


def run(warehouse, *args: str):
    return CliRunner().invoke(app, ["export", *args, "--questdb-pg", f"{warehouse.host}:{warehouse.pg_port}"])


def test_export_csv_and_parquet_for_a_range_of_days(warehouse, tmp_path):
    station, province = unique_station("BXCLI"), unique_province("PC")
    write_readings(
        warehouse,
        [
            (station, FIRST.start_ns + 60 * S, "aq", "PM2,5", 10.0, "00", "", 1, ""),
            (station, SECOND.start_ns + 60 * S, "aq", "PM2,5", 11.0, "00", "", 1, ""),
            (station, SECOND.end_ns - S, "aq", "PM2,5", 12.0, "01", "", 2, ""),
        ],
    )
    write_metadata(warehouse, {station: province}, FIRST.start_ns - DAY_NS)
    out = tmp_path / "opendata"
    for fmt in ("csv", "parquet"):
        result = run(
            warehouse, fmt, "--from", str(FIRST), "--to", str(SECOND), "--province", province, "--out", str(out)
        )
        assert result.exit_code == 0, result.output
        assert f"{SECOND}: 1 {fmt} file, 2 rows, final" in result.output
    for day, rows in ((FIRST, 1), (SECOND, 2)):
        m = json.loads((out / str(day) / "manifest.json").read_text(encoding="utf-8"))
        assert {f["format"] for f in m["files"]} == {"csv", "parquet"} and not m["provisional"]
        for f in m["files"]:
            path = out / str(day) / f["path"]
            assert f["rows"] == rows and f["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        parquet = next(f for f in m["files"] if f["format"] == "parquet")
        assert pq.read_table(out / str(day) / parquet["path"]).column("parameter").to_pylist() == ["PM2,5"] * rows


def test_export_csv_refuses_unclear_days_with_one_line(warehouse, tmp_path):
    both = run(warehouse, "csv", "--day", "2023-12-01", "--from", "2023-12-01", "--to", "2023-12-02", "--out", "x")
    assert both.exit_code == 2 and "not both" in both.output
    backwards = run(warehouse, "csv", "--from", "2023-12-02", "--to", "2023-12-01", "--out", str(tmp_path))
    assert backwards.exit_code == 2 and "before" in backwards.output
    bad = run(warehouse, "parquet", "--day", "25/03/2026", "--out", str(tmp_path))
    assert bad.exit_code == 2 and "is not a day" in bad.output and "Traceback" not in bad.output
    assert not list(tmp_path.iterdir())
