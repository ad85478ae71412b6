"""A technician's own analyzer models, kept outside the package, commissioned as a technician would:
`quantrac profile new --from-csv` drafts both profiles from register map tables; the station file
names one by path (relative to the station file) and the other by name, found with --profiles-dir;
`quantrac agent doctor`, `quantrac sim run` and `quantrac agent run` (all subprocesses) read the same
station file, and QuestDB ends up holding exactly the values the simulator served.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from broker_bridge.keys import write_new_key
from cli.main import app
from cli.processes import agent_process, collector_process, quantrac, sim_process
from collector.registry import add_station
from firmware_sim.analyzer import read_truth
from store.schema import ensure_schema
from supervisor.process import free_port, wait_until
from tests.helpers import sql, unique_station, wait_for_count

DUST_MAP = """\
Register,Description,Data Type,Byte Order,Scale Factor,Units,Parameter
30001,Dust concentration,REAL,CDAB,1,mg/Nm3,PM
30003,Flue gas temperature,INT,,0.1,oC,Temp
30004,Status word,UINT,,,,
30005,Flow,UDINT,word swap,1/10,m3/h,Flow
"""
GAS_MAP = """\
Addr;Type;Word order;Multiplier;Unit;Symbol;Table;Range
0;float32;ABCD;1;mg/Nm3;SO2;holding;0..2000
2;uint16;;0,1;%;O2;holding;0..25
"""

STATION = """\
station: {{id: {station_id}, name: "own profiles", kind: stack_emission}}
poll_interval_s: 0.5
devices:
  - id: dust
    profile: ../models/acme-dust.yaml
    transport: modbus_tcp
    host: 127.0.0.1
    port: {dust_port}
  - id: gas
    profile: acme-gas
    transport: modbus_tcp
    host: 127.0.0.1
    port: {gas_port}
"""


@pytest.fixture(scope="module")
def warehouse(questdb_server):
    ensure_schema(questdb_server.endpoints.pg_conninfo)
    return questdb_server.endpoints


REPO = Path(__file__).resolve().parents[2]


def _quantrac(*args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    """A quantrac command as a technician runs it, from ``cwd`` (this checkout's code wherever that is)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    return subprocess.run(quantrac(*args), cwd=cwd, env=env, capture_output=True, text=True, timeout=60, check=False)


def test_a_station_with_profiles_outside_the_package_by_path_and_by_search_path(
    tmp_path: Path, mosquitto_server, warehouse
) -> None:
    models, lib, site = tmp_path / "models", tmp_path / "lib", tmp_path / "site"
    site.mkdir()
    (tmp_path / "dust.csv").write_text(DUST_MAP)
    (tmp_path / "gas.csv").write_text(GAS_MAP)
    for csv_name, out in (("dust.csv", models / "acme-dust.yaml"), ("gas.csv", lib / "acme-gas.yaml")):
        drafted = CliRunner().invoke(app, ["profile", "new", "--from-csv", str(tmp_path / csv_name), "--out", str(out)])
        assert drafted.exit_code == 0, drafted.output
        checked = CliRunner().invoke(app, ["profile", "check", str(out)])
        assert checked.exit_code == 0 and ": OK" in checked.output, checked.output
    station_id = unique_station("OWNPROF")
    station_file = site / "station.yaml"
    station_file.write_text(STATION.format(station_id=station_id, dust_port=free_port(), gas_port=free_port()))

    # Run from elsewhere (the relative path is the station file's, not the working directory's).
    refused = _quantrac("agent", "doctor", station_file, cwd=tmp_path)
    assert refused.returncode == 2
    assert "site/station.yaml:10: devices[1].profile: no analyzer profile 'acme-gas' in site, " in refused.stderr
    assert "--profiles-dir" in refused.stderr

    key = tmp_path / "keys" / f"{station_id}.key"
    registry = tmp_path / "registry.yaml"
    add_station(registry, station_id, write_new_key(key).public_key)
    truth = tmp_path / "truth.jsonl"
    broker = f"127.0.0.1:{mosquitto_server.port}"
    started = []
    try:
        sim = sim_process(station_file, truth, tmp_path / "sim.log", profiles_dirs=(lib,))
        started.append(sim.start())
        collector = collector_process(
            registry,
            broker,
            f"127.0.0.1:{warehouse.http_port}",
            f"127.0.0.1:{warehouse.pg_port}",
            tmp_path / "collector.log",
            client_id=f"collector-{station_id}",
        )
        started.append(collector.start())
        wait_until(lambda: "sim.ready" in sim.log_path.read_text(), timeout=20, what="simulator ready", process=sim)

        doctor = _quantrac("agent", "doctor", station_file, "--profiles-dir", lib, cwd=tmp_path)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        out = doctor.stdout
        assert "acme-dust  models/acme-dust.yaml  (dust)" in out  # shown relative to where it was run
        assert "acme-gas   lib/acme-gas.yaml  (gas)" in out
        assert "== dust (" in out and "== gas (" in out and "PROBLEM" not in out
        assert "Flow " in out and " m3/h " in out

        wait_until(
            lambda: "mqtt_connected" in collector.log_path.read_text(),
            timeout=20,
            what="collector connected",
            process=collector,
        )
        agent = agent_process(  # started from the repository, the profile path still the station file's
            station_file, key, broker, tmp_path / "outbox.sqlite", tmp_path / "agent.log", profiles_dirs=(lib,)
        )
        started.append(agent.start())

        probed = len(read_truth(truth))  # what the doctor was served never reaches QuestDB

        def served() -> list[dict]:
            return [t for t in read_truth(truth)[probed:] if t["kind"] == "value"]

        wait_until(
            lambda: len({(t["device"], t["parameter"]) for t in served()}) == 5 and len(served()) >= 5 * 4,
            timeout=30,
            what="a few polls of both devices",
            process=agent,
        )
        assert agent.stop(timeout=20) == 0  # graceful: finishes the cycle, drains the outbox
        events = [json.loads(line) for line in agent.log_path.read_text().splitlines() if line.startswith("{")]
        resolved = {e["device"]: (e["profile"], e["file"]) for e in events if e["event"] == "profile_resolved"}
        assert resolved == {
            "dust": ("acme-dust", str(models / "acme-dust.yaml")),
            "gas": ("acme-gas", str(lib / "acme-gas.yaml")),
        }
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
            "SELECT ts::long, device, parameter, value, status FROM readings WHERE station = %s"
            " ORDER BY device, parameter, ts",
            (station_id,),
        )
        by_served = sorted(values, key=lambda t: (t["device"], t["parameter"], t["t_ns"]))
        assert [(r[1], r[2], r[3], r[4]) for r in stored] == [
            (t["device"], t["parameter"], t["value"], t["status"]) for t in by_served
        ]
        assert {(r[1], r[2]) for r in stored} == {
            ("dust", "PM"),
            ("dust", "Temp"),
            ("dust", "Flow"),
            ("gas", "SO2"),
            ("gas", "O2"),
        }
    finally:
        for process in reversed(started):
            process.stop(timeout=15)
