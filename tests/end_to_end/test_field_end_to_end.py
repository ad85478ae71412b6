"""Field transports end to end on the real servers: `quantrac sim run` serving a Modbus RTU bus
(two slaves on one pseudo-terminal) and a serial ASCII instrument (the BAM-1020 query output)
-> `quantrac agent run` -> Mosquitto -> `quantrac collector run` -> QuestDB.

The simulator creates the serial ports at the paths the station file names (symlinks to its
ptys), and the agent, started with the same station file, opens them there. QuestDB must end
up holding exactly the values the simulator logged as served: value, status and cause, each
once, stamped within the request window.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from broker_bridge.keys import write_new_key
from cli.processes import agent_process, collector_process, sim_process
from collector.registry import add_station
from firmware_sim.analyzer import read_truth
from store.schema import ensure_schema
from supervisor.process import wait_until
from tests.field_rig import ascii_device, rtu, write_station
from tests.helpers import sql, unique_station, wait_for_count


@pytest.fixture(scope="module")
def warehouse(questdb_server):
    ensure_schema(questdb_server.endpoints.pg_conninfo)
    return questdb_server.endpoints


def test_rtu_bus_and_serial_ascii_station_arrives_in_questdb_as_served(
    tmp_path: Path, mosquitto_server, warehouse
) -> None:
    station_id = unique_station("FIELD")
    bus = tmp_path / "serial" / "rs485-0"
    bam = tmp_path / "serial" / "bam"
    station_file = write_station(
        tmp_path,
        [
            rtu("t400", "teledyne-t400", 1, bus, baud=9600, timeout_s=0.5),
            rtu("odo", "xylem-odo-rtu", 2, bus, baud=9600, timeout_s=0.5, turnaround_delay_s=0.005),
            ascii_device("bam", "metone-bam-1020", bam, timeout_s=0.5),
        ],
        station_id=station_id,
        poll_interval_s=0.5,
    )
    key = tmp_path / "keys" / f"{station_id}.key"
    registry = tmp_path / "registry.yaml"
    add_station(registry, station_id, write_new_key(key).public_key)
    truth = tmp_path / "truth.jsonl"
    broker = f"127.0.0.1:{mosquitto_server.port}"
    started = []
    try:
        sim = sim_process(station_file, truth, tmp_path / "sim.log")
        started.append(sim.start())
        wait_until(lambda: "sim.ready" in sim.log_path.read_text(), timeout=20, what="simulator ready", process=sim)
        assert bus.is_symlink() and str(bus.resolve()).startswith("/dev/pts/")
        collector = collector_process(
            registry,
            broker,
            f"127.0.0.1:{warehouse.http_port}",
            f"127.0.0.1:{warehouse.pg_port}",
            tmp_path / "collector.log",
            client_id=f"collector-{station_id}",
        )
        started.append(collector.start())
        wait_until(
            lambda: "mqtt_connected" in collector.log_path.read_text(),
            timeout=20,
            what="collector connected",
            process=collector,
        )
        agent = agent_process(station_file, key, broker, tmp_path / "outbox.sqlite", tmp_path / "agent.log")
        started.append(agent.start())

        def served() -> list[dict]:
            return [t for t in read_truth(truth) if t["kind"] == "value"] if truth.exists() else []

        wait_until(
            lambda: len({t["device"] for t in served()}) == 3 and len(served()) >= 4 * 4,
            timeout=30,
            what="a few polls of every device",
            process=agent,
        )
        assert agent.stop(timeout=20) == 0  # graceful: finishes the cycle, drains the outbox
        values = served()
        count = wait_for_count(
            warehouse.pg_conninfo,
            "SELECT count() FROM readings WHERE station = %s",
            len(values),
            timeout=60,
            params=(station_id,),
        )
        assert count == len(values)
        stored = sql(
            warehouse.pg_conninfo,
            "SELECT ts::long, device, parameter, value, status, cause FROM readings"
            " WHERE station = %s ORDER BY ts, device, parameter",
            (station_id,),
        )
        assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored)
        by_stored: dict[tuple[str, str], list[tuple]] = {}
        for row in stored:
            by_stored.setdefault((row[1], row[2]), []).append(row)
        by_served: dict[tuple[str, str], list[dict]] = {}
        for t in sorted(values, key=lambda t: t["t_ns"]):
            by_served.setdefault((t["device"], t["parameter"]), []).append(t)
        assert (
            sorted(by_stored) == sorted(by_served) == [("bam", "PM10"), ("odo", "DO"), ("odo", "Temp"), ("t400", "O3")]
        )
        for key_, rows in by_stored.items():
            truth_rows = by_served[key_]
            assert len(rows) == len(truth_rows), key_
            for (ts, _device, _parameter, value, status, cause), t in zip(rows, truth_rows):
                assert (value, status, cause or "") == (t["value"], t["status"], t["cause"]), (key_, t)
                assert 0 <= t["t_ns"] - ts < 500_000_000  # stamped before the request, served after
        agent_log = agent.log_path.read_text()
        assert "serial.opened" in agent_log and '"port": "' + str(bus) in agent_log
    finally:
        for process in reversed(started):
            process.stop(timeout=15)
    assert not bus.exists()  # the simulator removed its ports on SIGTERM
