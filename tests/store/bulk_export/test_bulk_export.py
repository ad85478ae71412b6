"""Bulk downloads against the real QuestDB: readings written with store's ILP writer come out as daily files
per province and parameter whose rows equal what SQL gives for the same rows, with a manifest whose sha256
sums and row counts are the files', provisional until the day settles, replaced whole on re-export."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from store.bulk_export.export import export_day
from store.bulk_export.layout import DAY_NS, LocalDay
from store.ilp_writer import ReadingColumns, WarehouseWriter, ilp_row
from store.schema import SEQUENCE_GAPS, STATION_METADATA, TABLES, ensure_schema
from tests.helpers import sql, unique_station, wait_for_count

S = 1_000_000_000
COLUMNS = "ts::long, station, device, parameter, value, unit, status, cause, qc_flag, qc_check, qc_cause, qc_checks"
COLUMNS += ", source, file_sha256"


def unique_province(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:6].upper()}"


def write_readings(warehouse, rows: list[tuple]) -> None:
    """rows: (station, ts_ns, device, parameter, value, status, cause, qc_flag, qc_cause)."""
    n = len(rows)
    columns = ReadingColumns(
        station=[r[0] for r in rows],
        seq=[1] * n,
        historical=[False] * n,
        key_id=["k"] * n,
        received_ns=[r[1] for r in rows],
        ts_ns=[r[1] for r in rows],
        device=[r[2] for r in rows],
        parameter=[r[3] for r in rows],
        value=[r[4] for r in rows],
        unit=["ug/m3"] * n,
        status=[r[5] for r in rows],
        cause=[r[6] for r in rows],
        qc_flag=[r[7] for r in rows],
        qc_check=["range" if r[7] == 4 else "" for r in rows],
        qc_cause=[r[8] for r in rows],
        qc_checks=["range" if r[7] == 4 else "" for r in rows],
    )
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_reading_columns(columns)
    finally:
        writer.close()
    stations = sorted({r[0] for r in rows})
    marks = ", ".join(f"'{s}'" for s in stations)
    total = sql(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station IN ({marks})")[0][0]
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station IN ({marks})", total)


def write_metadata(warehouse, provinces: dict[str, str | None], ts_ns: int) -> None:
    rows = [
        ilp_row(STATION_METADATA, ts_ns, station=s, name=f"Trạm {s}", province_code=p, kind="ambient_air")
        if p is not None
        else ilp_row(STATION_METADATA, ts_ns, station=s, name=f"Trạm {s}", kind="ambient_air")
        for s, p in provinces.items()
    ]
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_rows(STATION_METADATA, rows)
    finally:
        writer.close()
    marks = ", ".join(f"'{s}'" for s in provinces)
    wait_for_count(
        warehouse.pg_conninfo,
        f"SELECT count() FROM station_metadata WHERE station IN ({marks}) AND ts = cast({ts_ns} AS TIMESTAMP_NS)",
        len(rows),
    )


def write_gap(warehouse, station: str, seen_ns: int, state: str) -> None:
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        row = ilp_row(SEQUENCE_GAPS, seen_ns, station=station, first_missing=7, last_missing=9, state=state)
        writer.write_rows(SEQUENCE_GAPS, [row])
    finally:
        writer.close()
    wait_for_count(
        warehouse.pg_conninfo,
        "SELECT count() FROM sequence_gaps WHERE station = %s AND state = %s",
        1,
        params=(station, state),
    )


def parse_utc(text: str) -> int:
    assert text.endswith("Z") and len(text.split(".")[1]) == 10, text
    whole, fraction = text[:-1].split(".")
    return int(datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()) * S + int(fraction)


def parse_local(text: str) -> int:
    assert text.endswith("+07:00"), text
    whole, fraction = text[: -len("+07:00")].split(".")
    return int(datetime.fromisoformat(whole + "+07:00").timestamp()) * S + int(fraction)


def text(value):
    return "" if value is None else value


def sql_rows(warehouse, parameter: str, stations: list[str], day: LocalDay) -> list[tuple]:
    """What SQL gives for the same rows, as the files must hold them (NULL text empty, NULL source agent)."""
    marks = ", ".join(["%s"] * len(stations))
    rows = sql(
        warehouse.pg_conninfo,
        f"SELECT {COLUMNS} FROM readings WHERE parameter = %s AND station IN ({marks})"
        " AND ts >= %s::timestamp_ns AND ts < %s::timestamp_ns",
        (parameter, *stations, day.start_ns, day.end_ns),
    )
    return sorted(
        (ts, st, dev, par, val, text(unit), text(status), text(cause), qc, text(chk), text(qcc), text(chks))
        + (source or "agent", text(sha))
        for ts, st, dev, par, val, unit, status, cause, qc, chk, qcc, chks, source, sha in rows
    )


def csv_rows(path: Path, province: str) -> list[tuple]:
    with path.open(newline="", encoding="utf-8") as handle:
        records = list(csv.DictReader(handle))
    got = []
    for r in records:
        ts = parse_utc(r["ts_utc"])
        assert parse_local(r["ts_local"]) == ts
        assert r["province"] == province
        got.append(
            (ts, r["station"], r["device"], r["parameter"], float(r["value"]) if r["value"] else None)
            + (r["unit"], r["status"], r["cause"], int(r["qc_flag"]) if r["qc_flag"] else None)
            + (r["qc_check"], r["qc_cause"], r["qc_checks"], r["source"], r["file_sha256"])
        )
    return got


def parquet_rows(path: Path, province: str) -> list[tuple]:
    table = pq.read_table(path)
    assert str(table.schema.field("ts_utc").type) == "timestamp[ns, tz=UTC]"
    assert str(table.schema.field("ts_local").type) == "timestamp[ns, tz=+07:00]"
    columns = {name: table.column(name) for name in table.column_names}
    ts = columns["ts_utc"].cast("int64").to_pylist()
    assert columns["ts_local"].cast("int64").to_pylist() == ts  # the same instant, shown in +07:00
    assert set(columns["province"].to_pylist()) <= {province}
    names = ["station", "device", "parameter", "value", "unit", "status", "cause", "qc_flag", "qc_check"]
    names += ["qc_cause", "qc_checks", "source", "file_sha256"]
    values = [columns[n].to_pylist() for n in names]
    return [
        (t, st, dev, par, val, text(unit), text(status), text(cause), qc, text(chk), text(qcc), text(chks))
        + (source, text(sha))
        for t, (st, dev, par, val, unit, status, cause, qc, chk, qcc, chks, source, sha) in zip(ts, zip(*values))
    ]


def manifest(out: Path, day: LocalDay) -> dict:
    return json.loads((out / str(day) / "manifest.json").read_text(encoding="utf-8"))


DAY = LocalDay.parse("2023-11-07")  # 2023-11-06T17:00Z .. 2023-11-07T17:00Z
AFTER_SETTLE = DAY.end_ns + 61 * DAY_NS
CAUSE = 'hiệu chuẩn, "zero"\nrồi span'  # a comma, quotes, a line break and Vietnamese: CSV must quote it


@pytest.fixture(scope="module")
def day_data(warehouse):
    """Two provinces and a station without one, PM2,5 / PM10 / SO2, readings at and just outside the day's edges."""
    a1, a2, b1, u1 = (unique_station(p) for p in ("BXA1", "BXA2", "BXB1", "BXU1"))
    p1, p2 = unique_province("P1"), unique_province("P2")
    start, end = DAY.start_ns, DAY.end_ns
    rows = [
        (a1, start, "aq", "PM2,5", 12.5, "00", "", 1, ""),  # the day's first instant: in
        (a1, start + 60 * S + 123_456_789, "aq", "PM2,5", None, "02", "lỗi thiết bị", 9, "no value"),
        (a1, start + 120 * S, "aq", "PM2,5", 0.1 + 0.2, "01", CAUSE, 2, ""),
        (a1, end - 1, "aq", "PM2,5", 14.0, "00", "", 4, "above 1000"),  # the day's last nanosecond: in
        (a1, end, "aq", "PM2,5", 99.0, "00", "", 1, ""),  # the next day's first instant: out
        (a1, start - 1, "aq", "PM2,5", 98.0, "00", "", 1, ""),  # the day before: out
        (a1, start + 300 * S, "aq", "PM10", 30.0, "00", "", 1, ""),
        (a2, start + 60 * S, "aq2", "PM2,5", 20.0, "00", "", 1, ""),
        (a2, start + 60 * S, "aq", "PM2,5", 21.0, "00", "", 1, ""),  # same time, another device
        (b1, start + 3600 * S, "gas", "SO2", 5.5, "00", "", 1, ""),
        (b1, start + 7200 * S, "aq", "PM2,5", 7.0, "00", "", 1, ""),
        (u1, start + 3600 * S, "aq", "PM2,5", 8.0, "00", "", 1, ""),
    ]
    write_readings(warehouse, rows)
    write_metadata(warehouse, {a1: "OLD", a2: p1}, start - 10 * DAY_NS)  # an older row: the newest counts
    write_metadata(warehouse, {a1: p1, b1: p2}, start - DAY_NS)
    return {"a1": a1, "a2": a2, "b1": b1, "u1": u1, "p1": p1, "p2": p2}


def scope(d):
    return [d["p1"], d["p2"], "unknown"]


def files_of(out: Path, day: LocalDay, provinces) -> dict[tuple[str, str], dict]:
    return {(f["province"], f["parameter"]): f for f in manifest(out, day)["files"] if f["province"] in provinces}


def test_csv_files_hold_the_rows_sql_gives_with_times_in_utc_and_local(warehouse, day_data, tmp_path):
    d = day_data
    result = export_day(warehouse.pg_conninfo, DAY, tmp_path, "csv", provinces=scope(d), now_ns=AFTER_SETTLE)
    files = files_of(tmp_path, DAY, scope(d))
    assert {(p, par) for p, par in files if p != "unknown"} == {
        (d["p1"], "PM2,5"),
        (d["p1"], "PM10"),
        (d["p2"], "PM2,5"),
        (d["p2"], "SO2"),
    }
    assert files[(d["p1"], "PM2,5")]["stations"] == sorted([d["a1"], d["a2"]])
    assert d["u1"] in files[("unknown", "PM2,5")]["stations"]
    for (province, parameter), entry in files.items():
        got = csv_rows(tmp_path / str(DAY) / entry["path"], province)
        assert sorted(got) == sql_rows(warehouse, parameter, entry["stations"], DAY)
        assert entry["rows"] == len(got) and entry["day"] == str(DAY) and entry["format"] == "csv"
    a1_pm25 = [r for r in csv_rows(tmp_path / str(DAY) / files[(d["p1"], "PM2,5")]["path"], d["p1"]) if r[1] == d["a1"]]
    assert [r[0] for r in a1_pm25] == [
        DAY.start_ns,
        DAY.start_ns + 60 * S + 123_456_789,
        DAY.start_ns + 120 * S,
        DAY.end_ns - 1,
    ]  # both edges' outside rows left out; oldest first
    assert a1_pm25[1][4] is None and a1_pm25[1][6:9] == ("02", "lỗi thiết bị", 9)
    assert a1_pm25[2][4] == 0.1 + 0.2 and a1_pm25[2][7] == CAUSE  # the double exactly, the text intact
    assert a1_pm25[3][8:11] == (4, "range", "above 1000")
    assert result.unknown_stations and d["u1"] in result.unknown_stations
    m = manifest(tmp_path, DAY)
    assert d["u1"] in m["unknown_province"]["stations"] and "station_metadata" in m["unknown_province"]["why"]
    assert (
        m["start_utc"] == "2023-11-06T17:00:00.000000000Z" and m["start_local"] == "2023-11-07T00:00:00.000000000+07:00"
    )


def test_parquet_files_hold_the_rows_sql_gives(warehouse, day_data, tmp_path):
    d = day_data
    export_day(warehouse.pg_conninfo, DAY, tmp_path, "parquet", provinces=scope(d), now_ns=AFTER_SETTLE)
    files = files_of(tmp_path, DAY, scope(d))
    assert len(files) >= 5
    for (province, parameter), entry in files.items():
        assert entry["path"].endswith(".parquet")
        got = parquet_rows(tmp_path / str(DAY) / entry["path"], province)
        assert sorted(got) == sql_rows(warehouse, parameter, entry["stations"], DAY)
        assert entry["rows"] == len(got)


def test_manifest_sha256_and_sizes_are_the_files(warehouse, day_data, tmp_path):
    d = day_data
    for fmt in ("csv", "parquet"):
        export_day(warehouse.pg_conninfo, DAY, tmp_path, fmt, provinces=scope(d), now_ns=AFTER_SETTLE)
    m = manifest(tmp_path, DAY)
    listed = {f["path"] for f in m["files"]}
    on_disk = {p.name for p in (tmp_path / str(DAY)).iterdir()} - {"manifest.json"}
    assert listed == on_disk and {f["format"] for f in m["files"]} == {"csv", "parquet"}
    for f in m["files"]:
        data = (tmp_path / str(DAY) / f["path"]).read_bytes()
        assert f["sha256"] == hashlib.sha256(data).hexdigest() and f["bytes"] == len(data)
    for f in (f for f in m["files"] if f["format"] == "csv"):
        lines = (tmp_path / str(DAY) / f["path"]).read_bytes().count(b"\r\n")
        assert lines == f["rows"] + 1  # the header, every row (the cause's own line break is a bare LF)
    assert not list(tmp_path.rglob(".*.partial")) and not list(tmp_path.glob(".*.link"))


def test_a_comma_in_the_parameter_is_kept_in_the_file_name_and_quoted_in_the_csv(warehouse, day_data, tmp_path):
    d = day_data
    export_day(
        warehouse.pg_conninfo, DAY, tmp_path, "csv", provinces=[d["p2"]], parameters=["PM2,5"], now_ns=AFTER_SETTLE
    )
    (entry,) = manifest(tmp_path, DAY)["files"]
    assert entry["path"] == f"readings_{DAY}_{d['p2']}_PM2,5.csv" and entry["parameter"] == "PM2,5"
    raw = (tmp_path / str(DAY) / entry["path"]).read_text(encoding="utf-8")
    assert f',{d["b1"]},aq,"PM2,5",7.0,' in raw  # quoted, so the comma is no column break
    (row,) = csv.DictReader(io.StringIO(raw, newline=""))
    assert row["parameter"] == "PM2,5" and row["station"] == d["b1"] and float(row["value"]) == 7.0


def test_a_day_is_provisional_until_it_settles_and_then_final(warehouse, day_data, tmp_path):
    d = day_data
    early = export_day(
        warehouse.pg_conninfo, DAY, tmp_path, "csv", provinces=[d["p1"]], now_ns=DAY.end_ns + 59 * DAY_NS
    )
    m = manifest(tmp_path, DAY)
    assert early.provisional and m["provisional"] and all(f["provisional"] for f in m["files"])
    assert all("settle period" in f["provisional_reasons"][0] for f in m["files"])
    assert m["final_after_utc"] == "2024-01-06T17:00:00.000000000Z"  # 60 days after 24:00 local
    late = export_day(warehouse.pg_conninfo, DAY, tmp_path, "csv", provinces=[d["p1"]], now_ns=AFTER_SETTLE)
    m = manifest(tmp_path, DAY)
    assert not late.provisional and not m["provisional"]
    assert all(not f["provisional"] and f["provisional_reasons"] == [] for f in m["files"])
    assert late.generation == early.generation + 1 and m["generation"] == late.generation
    short = export_day(
        warehouse.pg_conninfo, DAY, tmp_path, "csv", provinces=[d["p1"]], settle_days=1, now_ns=DAY.end_ns + 2 * DAY_NS
    )
    assert not short.provisional  # the settle period is configurable


def test_an_open_gap_keeps_its_station_s_files_provisional_after_the_settle_period(warehouse, tmp_path):
    day = LocalDay.parse("2023-11-09")
    gapped, clean = unique_station("BXG"), unique_station("BXC")
    province = unique_province("PG")
    write_readings(
        warehouse,
        [(s, day.start_ns + 600 * S, "aq", "PM10", 1.0, "00", "", 1, "") for s in (gapped, clean)]
        + [(clean, day.start_ns + 600 * S, "aq", "O3", 2.0, "00", "", 1, "")],
    )
    write_metadata(warehouse, {gapped: province, clean: province}, day.start_ns - DAY_NS)
    seen = day.start_ns + 3600 * S
    write_gap(warehouse, gapped, seen, "open")
    after = day.end_ns + 61 * DAY_NS
    result = export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[province], now_ns=after)
    files = files_of(tmp_path, day, [province])
    assert result.provisional and manifest(tmp_path, day)["provisional"]
    assert files[(province, "PM10")]["provisional"] and gapped in files[(province, "PM10")]["provisional_reasons"][0]
    assert not files[(province, "O3")]["provisional"]  # only the clean station's: final
    write_gap(warehouse, gapped, seen, "filled")  # the same gap row, now filled
    result = export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[province], now_ns=after)
    assert not result.provisional and not any(f["provisional"] for f in manifest(tmp_path, day)["files"])


def test_a_re_export_replaces_the_day_s_files_and_manifest_in_one_swap(warehouse, tmp_path):
    day = LocalDay.parse("2023-11-08")
    a, b = unique_station("BXR"), unique_station("BXS")
    pa_, pb = unique_province("PA"), unique_province("PB")
    write_readings(
        warehouse,
        [
            (a, day.start_ns + 60 * S, "aq", "PM10", 1.0, "00", "", 1, ""),
            (b, day.start_ns + 60 * S, "aq", "PM10", 2.0, "00", "", 1, ""),
        ],
    )
    write_metadata(warehouse, {a: pa_, b: pb}, day.start_ns - DAY_NS)
    now = day.end_ns + DAY_NS  # provisional
    export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[pa_, pb], now_ns=now)
    first = files_of(tmp_path, day, [pa_, pb])
    b_inode = (tmp_path / str(day) / first[(pb, "PM10")]["path"]).stat().st_ino
    old_target = os.readlink(tmp_path / str(day))

    write_readings(warehouse, [(a, day.start_ns + 120 * S, "aq", "PM10", 3.0, "00", "", 1, "")])  # a late reading
    result = export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[pa_], now_ns=now + S)
    second = files_of(tmp_path, day, [pa_, pb])
    entry = second[(pa_, "PM10")]
    path = tmp_path / str(day) / entry["path"]
    assert entry["rows"] == first[(pa_, "PM10")]["rows"] + 1 == 2
    assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest() != first[(pa_, "PM10")]["sha256"]
    assert sorted(csv_rows(path, pa_)) == sql_rows(warehouse, "PM10", [a], day)
    assert "supersedes" not in entry and result.revised_final == []  # provisional: replaced as agreed
    # the province not asked for is carried over untouched: the same file (inode), the same entry
    assert second[(pb, "PM10")] == first[(pb, "PM10")] and result.kept == 1
    assert (tmp_path / str(day) / first[(pb, "PM10")]["path"]).stat().st_ino == b_inode
    # the link moved to a new generation; the previous one stays for a reader in the middle of it
    assert os.readlink(tmp_path / str(day)) != old_target and (tmp_path / old_target).is_dir()
    export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[pa_], now_ns=now + 2 * S)
    assert not (tmp_path / old_target).exists()  # two generations back: removed
    assert len(list((tmp_path / ".versions" / str(day)).iterdir())) == 2


def test_a_final_file_that_changes_says_what_it_supersedes(warehouse, tmp_path):
    day = LocalDay.parse("2023-11-10")
    station, province = unique_station("BXF"), unique_province("PF")
    write_readings(warehouse, [(station, day.start_ns + 60 * S, "aq", "PM10", 1.0, "00", "", 1, "")])
    write_metadata(warehouse, {station: province}, day.start_ns - DAY_NS)
    after = day.end_ns + 61 * DAY_NS
    export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[province], now_ns=after)
    (before,) = manifest(tmp_path, day)["files"]
    same = export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[province], now_ns=after + S)
    assert same.revised_final == [] and manifest(tmp_path, day)["files"][0]["sha256"] == before["sha256"]
    write_readings(warehouse, [(station, day.start_ns + 120 * S, "aq", "PM10", 2.0, "00", "", 1, "")])  # beyond 60 d
    changed = export_day(warehouse.pg_conninfo, day, tmp_path, "csv", provinces=[province], now_ns=after + 2 * S)
    (entry,) = manifest(tmp_path, day)["files"]
    assert changed.revised_final == [entry["path"]] and entry["rows"] == 2
    assert entry["supersedes"] == {"sha256": before["sha256"], "rows": 1, "exported_at_utc": before["exported_at_utc"]}


def test_an_empty_day_has_a_manifest_with_no_files(warehouse, tmp_path):
    day = LocalDay.parse("1999-01-01")
    result = export_day(warehouse.pg_conninfo, day, tmp_path, "parquet", now_ns=day.end_ns + 61 * DAY_NS)
    m = manifest(tmp_path, day)
    assert result.written == [] and m["files"] == [] and not m["provisional"] and "unknown_province" not in m
    assert sorted(p.name for p in (tmp_path / str(day)).iterdir()) == ["manifest.json"]
    recent = export_day(warehouse.pg_conninfo, day, tmp_path, "parquet", now_ns=day.end_ns)
    assert recent.provisional and manifest(tmp_path, day)["provisional"]  # nothing yet, but a backlog may come


def test_a_warehouse_without_station_metadata_puts_every_station_under_unknown(make_questdb, tmp_path):
    server = make_questdb(tmp_path / "old-qdb")
    old = server.endpoints
    ensure_schema(old.pg_conninfo, tuple(t for t in TABLES if t is not STATION_METADATA))
    day = LocalDay.parse("2023-11-07")
    station = unique_station("BXO")
    write_readings(old, [(station, day.start_ns + S, "aq", "PM2,5", 4.0, "00", "", 1, "")])
    result = export_day(old.pg_conninfo, day, tmp_path / "out", "csv", now_ns=day.end_ns + DAY_NS)
    m = manifest(tmp_path / "out", day)
    (entry,) = m["files"]
    assert entry["province"] == "unknown" and entry["path"] == f"readings_{day}_unknown_PM2,5.csv"
    assert result.unknown_stations == [station] and m["unknown_province"]["stations"] == [station]
    assert sorted(csv_rows(tmp_path / "out" / str(day) / entry["path"], "unknown")) == sql_rows(
        old, "PM2,5", [station], day
    )
