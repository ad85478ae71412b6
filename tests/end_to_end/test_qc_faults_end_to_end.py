"""Issue 5: the simulator's faults (spike, calibration, device error, stuck sensor) travel through the
real agent, Mosquitto and collector and arrive in QuestDB with the expected flags, checks and causes."""

from __future__ import annotations

import pytest

from cli.processes import collector_process
from firmware_sim.analyzer import read_truth
from supervisor.process import wait_until
from tests.helpers import sql
from tests.station_rig import SimulatorThread, Station


@pytest.fixture
def station(tmp_path, mosquitto_server, warehouse):
    station = Station(tmp_path, "demo_air_01.yaml", mosquitto_server.port, warehouse, poll_s=1.0)
    yield station
    station.stop_all()


@pytest.mark.slow  # waits for the windowed checks (stuck sensor) on live polls
def test_simulator_faults_arrive_with_their_flags(tmp_path, station, warehouse):
    thresholds = tmp_path / "qc.yaml"  # a flat line within seconds instead of an hour, for the test
    thresholds.write_text(
        "qc:\n  parameters:\n    NO2:\n      ug/m3:\n        flat_line: {suspect_s: 4, fail_s: 8, min_count: 3}\n"
    )
    w = warehouse
    collector = collector_process(
        station.registry,
        station.broker,
        f"127.0.0.1:{w.http_port}",
        f"127.0.0.1:{w.pg_port}",
        tmp_path / "collector.log",
        client_id=f"c-{station.id}",
    )
    collector.argv += ["--qc-thresholds", str(thresholds)]
    station.start(collector)
    wait_until(
        lambda: "mqtt_connected" in collector.log_path.read_text(), timeout=20, what="collector up", process=collector
    )

    def served_polls() -> int:
        return sum(1 for t in read_truth(station.truth) if t.get("kind") == "status")

    def after(polls: int) -> None:
        target = served_polls() + polls
        wait_until(lambda: served_polls() >= target, timeout=30, what=f"{polls} more polls")

    with SimulatorThread(station.file, station.truth, station.ports) as sim:
        station.agent()
        after(6)  # a steady history first
        sim.do(sim.sim.set_fault, "aqms1", "spike", parameter="SO2", factor=40.0)
        after(1)
        sim.do(sim.sim.clear_fault, "aqms1", "spike")
        after(4)
        sim.do(sim.sim.set_fault, "aqms1", "calibration", which="zero")
        after(3)
        sim.do(sim.sim.clear_fault, "aqms1", "calibration")
        after(3)
        sim.do(sim.sim.set_fault, "aqms1", "device_error")
        after(2)
        sim.do(sim.sim.clear_fault, "aqms1", "device_error")
        after(2)
        sim.do(sim.sim.set_fault, "aqms1", "stuck", parameter="NO2")
        after(12)
        station.started[-1].stop(timeout=20)  # the agent, drained
    served = [t for t in read_truth(station.truth) if t.get("kind") == "value"]
    assert station.wait_stored(len(served), timeout=60) == len(served)
    rows = sql(
        w.pg_conninfo,
        "SELECT parameter, value, status, cause, qc_flag, qc_check, qc_checks, qc_cause FROM readings"
        " WHERE station = %s ORDER BY ts, parameter",
        (station.id,),
    )
    by_param: dict[str, list] = {}
    for row in rows:
        by_param.setdefault(row[0], []).append(row)
    truth_by_param: dict[str, list] = {}
    for t in sorted(served, key=lambda t: t["t_ns"]):
        truth_by_param.setdefault(t["parameter"], []).append(t)
    faults_seen = {"spike": 0, "calibration": 0, "device_error": 0, "stuck_failed": 0}
    for parameter, stored in by_param.items():
        for row, truth in zip(stored, truth_by_param[parameter]):
            _, value, status, cause, flag, check, checks, qc_cause = row
            assert value == truth["value"] and status == truth["status"]
            fault = truth.get("fault", "")
            if "calibration" in fault:
                assert (status, flag, check) == ("01", 4, "device_status") and "calibration" in qc_cause
                faults_seen["calibration"] += 1
            elif "device_error" in fault:
                assert (status, flag, check) == ("02", 4, "device_status")
                faults_seen["device_error"] += 1
            elif "spike" in fault and parameter == "SO2":
                assert flag in (3, 4) and "spike" in (checks or ""), row
                faults_seen["spike"] += 1
            elif "stuck" in fault and flag == 4:
                assert check == "flat_line" and "flat" in qc_cause
                faults_seen["stuck_failed"] += 1
    assert faults_seen["spike"] == 1, faults_seen
    assert faults_seen["calibration"] >= 6 * 2 and faults_seen["device_error"] >= 6 * 1, faults_seen
    assert faults_seen["stuck_failed"] >= 1, faults_seen
