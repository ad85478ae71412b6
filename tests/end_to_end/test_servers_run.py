"""`quantrac warehouse run` and `quantrac broker run`, started as a user (or systemd) would, carry a station's traffic.

Everything here is a separate process started from its command line: the broker's files from
`quantrac broker config`, Mosquitto through `quantrac broker run`, QuestDB through `quantrac
warehouse run`, then a simulated station, its agent and a collector logging in with the users
and password files `broker config` wrote.  SIGTERM stops both servers cleanly (exit 0, the
broker's database saved) and the warehouse started again on the same folder still holds the rows,
as does a copy taken between CHECKPOINT CREATE and RELEASE and restored with a `_restore` file.
"""

from __future__ import annotations

import getpass
import json
import shutil
import signal
import subprocess

import pytest

from broker_bridge.broker_config import DEFAULT_COLLECTOR_USER
from cli.processes import quantrac
from store.questdb_server import QuestDBEndpoints
from supervisor.process import ManagedProcess, free_ports, wait_until
from tests.helpers import require_tool, sql, wait_for_count
from tests.station_rig import Station


def _events(process: ManagedProcess) -> list[dict]:
    events = []
    for line in process.log_path.read_text().splitlines():
        if line.startswith("{"):
            events.append(json.loads(line))
    return events


def _wait_event(process: ManagedProcess, name: str, timeout: float) -> dict:
    def seen():
        return next((e for e in _events(process) if e["event"] == name), None)

    return wait_until(seen, timeout=timeout, interval=0.2, what=f"{process.name} logging {name}", process=process)


def _sigterm(process: ManagedProcess, timeout: float) -> int:
    process._popen.send_signal(signal.SIGTERM)  # the main process only, as systemd's KillMode=mixed does
    return process.wait(timeout)


@pytest.mark.slow
def test_warehouse_run_and_broker_run_carry_a_station_and_stop_cleanly(tmp_path):
    require_tool("mosquitto", package="mosquitto")
    http, pg, min_http, mqtt_port = free_ports(4)
    endpoints = QuestDBEndpoints("127.0.0.1", http, pg, min_http)
    station = Station(tmp_path, "demo_air_01.yaml", mqtt_port, endpoints)
    broker_dir = tmp_path / "broker"
    subprocess.run(
        quantrac("broker", "config", "--out", broker_dir, "--registry", station.registry,
                 "--listen", f"127.0.0.1:{mqtt_port}", "--data-dir", tmp_path / "broker-data",
                 "--log-file", tmp_path / "broker-log" / "mosquitto.log", "--run-as", getpass.getuser()),
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    broker = ManagedProcess(
        quantrac("broker", "run", "--config-dir", broker_dir), log_path=tmp_path / "broker-run.log", name="broker-run"
    ).start()
    warehouse_argv = quantrac(
        "warehouse", "run", "--data-dir", tmp_path / "qdb", "--http-port", str(http), "--pg-port", str(pg),
        "--min-http-port", str(min_http), "--heap", "512m",
    )  # fmt: skip
    warehouse = ManagedProcess(warehouse_argv, log_path=tmp_path / "warehouse-run.log", name="warehouse-run").start()
    started = [broker, warehouse]
    try:
        ready = _wait_event(broker, "broker_ready", 30)
        assert ready["listeners"] == [f"127.0.0.1:{mqtt_port}"]
        ready = _wait_event(warehouse, "warehouse_ready", 120)
        assert ready["schema"] == "ensured" and ready["pg"] == f"127.0.0.1:{pg}"
        conf = (tmp_path / "qdb" / "conf" / "server.conf").read_text()
        assert "line.auto.create.new.tables=false" in conf and f"http.net.bind.to=127.0.0.1:{http}" in conf

        station.sim()
        credentials = broker_dir / "credentials"
        agent = ManagedProcess(
            quantrac("agent", "run", station.file, "--key", station.key, "--broker", station.broker,
                     "--outbox", station.outbox, *(a for d, p in station.ports.items() for a in ("--port", f"{d}={p}")),
                     "--broker-user", station.id, "--broker-password-file", credentials / f"{station.id}.password"),
            log_path=tmp_path / "agent.log", name="agent",
        )  # fmt: skip
        collector = ManagedProcess(
            quantrac("collector", "run", "--registry", station.registry, "--broker", station.broker,
                     "--questdb", f"127.0.0.1:{http}", "--questdb-pg", f"127.0.0.1:{pg}",
                     "--client-id", DEFAULT_COLLECTOR_USER, "--broker-user", DEFAULT_COLLECTOR_USER,
                     "--broker-password-file", credentials / f"{DEFAULT_COLLECTOR_USER}.password"),
            log_path=tmp_path / "collector.log", name="collector",
        )  # fmt: skip
        started += [agent.start(), collector.start()]
        station.started += [agent, collector]
        stored = station.wait_stored(30, timeout=60)
        station.stop_all()  # sim, agent, collector
        stored = wait_for_count(
            endpoints.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", stored, params=(station.id,)
        )
        served = {(t["device"], t["parameter"]) for t in station.served_values()}
        assert {(row[1], row[2]) for row in station.stored()} <= served

        # docs/deployment.md's backup: CHECKPOINT CREATE, copy the root, CHECKPOINT RELEASE (QuestDB 9.3)
        sql(endpoints.pg_conninfo, "CHECKPOINT CREATE")
        shutil.copytree(tmp_path / "qdb", tmp_path / "backup", symlinks=True)
        sql(endpoints.pg_conninfo, "CHECKPOINT RELEASE")

        assert _sigterm(broker, 30) == 0, broker.log_path.read_text()
        assert _sigterm(warehouse, 120) == 0, warehouse.log_path.read_text()
        assert {"broker_stopped"} <= {e["event"] for e in _events(broker)}
        assert [e["exit_code"] for e in _events(warehouse) if e["event"] == "warehouse_stopped"] == [143]
        assert (tmp_path / "broker-data" / "mosquitto.db").is_file(), "Mosquitto did not save its database"

        again = ManagedProcess(warehouse_argv, log_path=tmp_path / "warehouse-again.log", name="warehouse-again")
        started.append(again.start())
        _wait_event(again, "warehouse_ready", 120)
        count = sql(endpoints.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", (station.id,))[0][0]
        assert count == stored
        assert _sigterm(again, 120) == 0

        (tmp_path / "backup" / "_restore").touch()  # the restore: the copy, a _restore file, a start
        restore_argv = [str(tmp_path / "backup") if a == str(tmp_path / "qdb") else a for a in warehouse_argv]
        restored = ManagedProcess(restore_argv, log_path=tmp_path / "warehouse-restored.log", name="restored")
        started.append(restored.start())
        _wait_event(restored, "warehouse_ready", 120)
        count = sql(endpoints.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", (station.id,))[0][0]
        assert count == stored and not (tmp_path / "backup" / "_restore").exists()
        assert _sigterm(restored, 120) == 0
    finally:
        station.stop_all()
        for process in reversed(started):
            process.stop(timeout=60)
