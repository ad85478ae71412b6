"""The column writer stores exactly what it is given: nanosecond times, NULLs where nothing was
given, QC texts only where a check said something (real QuestDB)."""

from __future__ import annotations

import numpy as np

from store.ilp_writer import ReadingColumns, WarehouseWriter
from tests.helpers import sql, unique_station, wait_for_count

T0 = 1_763_700_000_123_456_789  # odd nanoseconds: a microsecond writer would lose them


def columns(station: str, qc: bool) -> ReadingColumns:
    return ReadingColumns(
        station=[station] * 3,
        seq=np.array([7, 7, 8], dtype=np.int64),
        historical=np.array([False, True, False]),
        key_id=["k1", "k1", "k2"],
        received_ns=[T0 + 5, T0 + 6, T0 + 7],
        ts_ns=[T0, T0 + 1, T0 + 2],
        device=["dev", "dev", "dev2"],
        parameter=["PM10", "PM2,5", "pH"],
        value=[12.5, None, -0.0],
        unit=["ug/m3", "ug/m3", "-"],
        status=["00", "02", "01"],
        cause=["", "no reply: timeout after 1.0 s", "zero calibration"],
        qc_flag=[1, 4, 4] if qc else None,
        qc_check=["", "device_status", "device_status"] if qc else (),
        qc_cause=["", "status 02", "status 01"] if qc else (),
        qc_checks=["", "device_status,missing", "device_status"] if qc else (),
    )


def stored(pg: str, station: str) -> list[tuple]:
    return sql(
        pg,
        "SELECT cast(ts AS LONG), device, parameter, value, unit, status, cause, seq, historical, key_id,"
        " cast(received_at AS LONG), qc_flag, qc_check, qc_cause, qc_checks"
        f" FROM readings WHERE station = '{station}' ORDER BY ts",
    )


def test_columns_round_trip_exactly(warehouse):
    station = unique_station("COLS")
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        assert writer.write_reading_columns(columns(station, qc=True)) == 3
    finally:
        writer.close()
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station = '{station}'", 3)
    assert stored(warehouse.pg_conninfo, station) == [
        (T0, "dev", "PM10", 12.5, "ug/m3", "00", "", 7, False, "k1", T0 + 5, 1, None, None, None),
        (
            T0 + 1,
            "dev",
            "PM2,5",
            None,
            "ug/m3",
            "02",
            "no reply: timeout after 1.0 s",
            7,
            True,
            "k1",
            T0 + 6,
            4,
            "device_status",
            "status 02",
            "device_status,missing",
        ),
        (
            T0 + 2,
            "dev2",
            "pH",
            -0.0,
            "-",
            "01",
            "zero calibration",
            8,
            False,
            "k2",
            T0 + 7,
            4,
            "device_status",
            "status 01",
            "device_status",
        ),
    ]


def test_without_measurement_controls_the_qc_columns_stay_null(warehouse):
    station = unique_station("COLS")
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        assert writer.write_reading_columns(columns(station, qc=False)) == 3
        assert writer.write_reading_columns(ReadingColumns(*([[]] * 12))) == 0  # nothing to write, no request
    finally:
        writer.close()
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station = '{station}'", 3)
    # BYTE has no NULL in QuestDB: an absent qc_flag reads 0, which is no QARTOD flag (1-4, 9).
    assert [row[11:] for row in stored(warehouse.pg_conninfo, station)] == [(0, None, None, None)] * 3


def test_provenance_columns_agent_by_default_and_a_files_hash_where_given(warehouse):
    from dataclasses import replace

    agent, converted = unique_station("ILPSRC"), unique_station("ILPSRC")
    writer = WarehouseWriter(warehouse.ilp_conf)
    try:
        writer.write_reading_columns(columns(agent, qc=False))
        sha = "cd" * 32
        tt10 = replace(columns(converted, qc=False), source=["tt10"] * 3, file_sha256=[sha] * 3)
        writer.write_reading_columns(tt10)
    finally:
        writer.close()
    pg = warehouse.pg_conninfo
    for station, expected in ((agent, ("agent", None)), (converted, ("tt10", "cd" * 32))):
        wait_for_count(pg, f"SELECT count() FROM readings WHERE station = '{station}'", 3)
        rows = sql(pg, f"SELECT DISTINCT source, file_sha256 FROM readings WHERE station = '{station}'")
        assert rows == [expected]
