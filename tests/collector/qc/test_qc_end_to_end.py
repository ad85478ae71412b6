"""Measurement controls through the real collector into QuestDB: flags, the deciding check and its cause,
a thresholds file applied without a restart, and the windowed checks' history rebuilt after a restart."""

from __future__ import annotations

import time

import pytest

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from collector.registry import add_station
from tests.helpers import publish_all, sql, unique_station, wait_for_count

MINUTE = 60 * 10**9


@pytest.fixture
def station(tmp_path):
    station_id = unique_station("QC")
    key = write_new_key(tmp_path / "k.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station_id, key.public_key)
    return station_id, key, registry


def send(port, station_id, key, seq, readings):
    body = BatchBody(station_id, seq, time.time_ns(), tuple(readings))
    publish_all(port, data_topic(station_id), [seal(body, key.key_id, key.private_key)])


def so2(ts, value, status="00", cause=""):
    return Reading(ts, "gas1", "SO2", value, "ug/m3", status, cause)


def flags(warehouse, station_id, parameter="SO2"):
    return sql(
        warehouse.pg_conninfo,
        "SELECT ts::long, value, qc_flag, qc_check, qc_cause, qc_checks FROM readings"
        " WHERE station = %s AND parameter = %s ORDER BY ts",
        (station_id, parameter),
    )


def test_faults_arrive_flagged_with_their_check_and_cause(
    tmp_path, station, mosquitto_server, make_collector, warehouse
):
    station_id, key, registry = station
    thresholds = tmp_path / "qc.yaml"
    thresholds.write_text(
        "qc:\n  parameters:\n    SO2:\n      ug/m3:\n        flat_line: {suspect_s: 240, fail_s: 480}\n"
    )
    make_collector(mosquitto_server.port, registry, f"c-{station_id}", qc_thresholds_path=str(thresholds))
    t0 = time.time_ns() - 40 * MINUTE
    normal = [so2(t0 + i * MINUTE, v) for i, v in enumerate([20.0, 21.0, 22.0, 21.0, 20.0, 22.0])]
    spike = so2(t0 + 6 * MINUTE, 300.0)
    calibrating = so2(t0 + 8 * MINUTE, 50.0, "01", "zero calibration")
    error = so2(t0 + 9 * MINUTE, None, "02", "no reply: timeout after 1.0 s")
    stuck = [so2(t0 + (10 + i) * MINUTE, 35.0) for i in range(11)]
    pm_t = t0 + 5 * MINUTE
    pm = [
        Reading(pm_t, "dust1", "PM2,5", 60.0, "ug/m3", "00", ""),
        Reading(pm_t, "dust1", "PM10", 40.0, "ug/m3", "00", ""),
    ]
    send(mosquitto_server.port, station_id, key, 1, normal + [spike] + pm)
    send(mosquitto_server.port, station_id, key, 2, [so2(t0 + 7 * MINUTE, 21.0), calibrating, error] + stuck)
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 23, params=(station_id,))
    rows = {r[0]: r for r in flags(warehouse, station_id)}
    assert all(rows[r.ts_ns][2] == 1 for r in normal[3:]), "steady values pass"
    assert rows[spike.ts_ns][2:4] == (4, "spike") and "spike" in rows[spike.ts_ns][4]
    assert rows[calibrating.ts_ns][2:4] == (4, "device_status") and "calibrat" in rows[calibrating.ts_ns][4]
    assert rows[error.ts_ns][2:4] == (4, "device_status") and rows[error.ts_ns][1] is None
    stuck_flags = [rows[r.ts_ns][2] for r in stuck]
    assert stuck_flags[:4] == [1, 1, 1, 1]
    assert 3 in stuck_flags and stuck_flags[-1] == 4, f"flat line should go suspect then fail: {stuck_flags}"
    assert rows[stuck[-1].ts_ns][3] == "flat_line"
    pm_rows = sql(
        warehouse.pg_conninfo,
        "SELECT parameter, qc_flag, qc_check FROM readings WHERE station = %s AND device = 'dust1'",
        (station_id,),
    )
    assert sorted(pm_rows) == [("PM10", 3, "consistency"), ("PM2,5", 3, "consistency")]


@pytest.mark.slow  # restarts the collector (~6 s)
def test_thresholds_change_without_restart_and_history_survives_a_restart(
    tmp_path, station, mosquitto_server, make_collector, warehouse
):
    station_id, key, registry = station
    thresholds = tmp_path / "qc.yaml"
    thresholds.write_text(
        "qc:\n  parameters:\n    SO2:\n      ug/m3:\n        gross_range: {fail: [-10, 2620], suspect: [0, 1600]}\n"
    )
    collector = make_collector(mosquitto_server.port, registry, f"c1-{station_id}", qc_thresholds_path=str(thresholds))
    t0 = time.time_ns() - 30 * MINUTE
    send(mosquitto_server.port, station_id, key, 1, [so2(t0 + i * MINUTE, 20.0 + i % 2) for i in range(5)])
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 5, params=(station_id,))
    thresholds.write_text(
        "qc:\n  parameters:\n    SO2:\n      ug/m3:\n        gross_range: {fail: [-10, 2620], suspect: [0, 15]}\n"
    )
    send(mosquitto_server.port, station_id, key, 2, [so2(t0 + 5 * MINUTE, 21.0)])
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 6, params=(station_id,))
    assert flags(warehouse, station_id)[-1][2:4] == (3, "gross_range"), "the edited file applies at once"
    # A new collector process rebuilds the series history from QuestDB, so a
    # spike right after a restart is still judged against its predecessors.
    collector.stop()
    make_collector(mosquitto_server.port, registry, f"c2-{station_id}")
    send(mosquitto_server.port, station_id, key, 3, [so2(t0 + 6 * MINUTE, 400.0)])
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 7, params=(station_id,))
    last = flags(warehouse, station_id)[-1]
    assert last[2:4] == (4, "spike"), f"after a restart the spike check still has its history: {last}"
