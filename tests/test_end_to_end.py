"""The whole path on real servers: simulated analyzer -> agent -> Mosquitto -> collector -> QuestDB.

The simulator logs every value it served; QuestDB must end up holding
exactly those readings (same values, status codes and timestamps), each once,
also when the collector is SIGKILLed mid-stream and when the broker is down
while the agent is killed.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from broker_bridge.envelope import decode_body, open_envelope
from broker_bridge.keys import write_new_key
from cli.processes import agent_process, collector_process, sim_process
from collector.registry import add_station
from firmware_sim.modbus_tcp import read_truth
from station_profiles.loader import STATIONS_DIR
from supervisor.process import free_port, wait_until
from tests.helpers import sql, unique_station, wait_for_count

POLL_S = 0.5


class Station:
    """One simulated station wired to the real broker and warehouse, each process startable on its own."""

    def __init__(self, tmp: Path, template: str, broker_port: int, warehouse) -> None:
        doc = yaml.safe_load((STATIONS_DIR / template).read_text())
        self.id = unique_station(doc["station"]["id"])
        doc["station"]["id"] = self.id
        doc["poll_interval_s"] = POLL_S
        self.tmp = tmp
        self.file = tmp / f"{self.id}.yaml"
        self.file.write_text(yaml.safe_dump(doc))
        self.ports = {d["id"]: free_port() for d in doc["devices"]}
        self.key = tmp / "keys" / f"{self.id}.key"
        self.registry = tmp / "registry.yaml"
        add_station(self.registry, self.id, write_new_key(self.key).public_key)
        self.truth = tmp / "truth.jsonl"
        self.outbox = tmp / "outbox.sqlite"
        self.broker = f"127.0.0.1:{broker_port}"
        self.warehouse = warehouse
        self.started = []
        self._n = 0

    def _log(self, name: str) -> Path:
        self._n += 1
        return self.tmp / f"{self._n:02d}-{name}.log"

    def start(self, process):
        self.started.append(process)
        return process.start()

    def sim(self):
        process = self.start(sim_process(self.file, self.truth, self._log("sim"), self.ports))
        wait_until(lambda: "sim.listening" in process.log_path.read_text(), timeout=20, what="simulator listening", process=process)
        return process

    def agent(self):
        return self.start(agent_process(self.file, self.key, self.broker, self.outbox, self._log("agent"), self.ports))

    def collector(self):
        w = self.warehouse
        process = self.start(
            collector_process(self.registry, self.broker, f"127.0.0.1:{w.http_port}", f"127.0.0.1:{w.pg_port}",
                              self._log("collector"), client_id=f"collector-{self.id}")
        )
        wait_until(lambda: "mqtt_connected" in process.log_path.read_text(), timeout=20, what="collector connected", process=process)
        return process

    def stop_all(self):
        for process in reversed(self.started):
            process.stop(timeout=15)

    def served_values(self) -> list[dict]:
        return [t for t in read_truth(self.truth) if t["kind"] == "value"]

    def stored(self) -> list[tuple]:
        return sql(
            self.warehouse.pg_conninfo,
            "SELECT ts::long, device, parameter, value, status, seq FROM readings WHERE station = %s ORDER BY ts, parameter",
            (self.id,),
        )

    def wait_stored(self, expected: int, timeout: float = 60) -> int:
        return wait_for_count(self.warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", expected,
                              timeout=timeout, params=(self.id,))

    def outbox_readings(self) -> list[tuple]:
        with sqlite3.connect(self.outbox) as db:
            staged = db.execute("SELECT count(*) FROM staged").fetchone()[0]
            unacked = db.execute("SELECT count(*) FROM batches WHERE acked_ns IS NULL").fetchone()[0]
            payloads = [row[0] for row in db.execute("SELECT payload FROM batches ORDER BY seq")]
        assert (staged, unacked) == (0, 0), "agent stopped with readings not yet acknowledged"
        return [
            (r.ts_ns, r.device, r.parameter, r.value, r.status)
            for p in payloads
            for r in decode_body(open_envelope(p).body).readings
        ]


@pytest.fixture
def make_station(tmp_path, mosquitto_server, warehouse):
    stations = []

    def make(template: str = "demo_air_01.yaml") -> Station:
        station = Station(tmp_path, template, mosquitto_server.port, warehouse)
        stations.append(station)
        return station

    yield make
    for station in stations:
        station.stop_all()


def assert_matches_truth(stored: list[tuple], served: list[dict]) -> None:
    """Pair the k-th stored and k-th served value of each parameter: same value and status, timestamps in the request window."""
    by_param_stored: dict[str, list[tuple]] = {}
    for row in stored:
        by_param_stored.setdefault(row[2], []).append(row)
    by_param_served: dict[str, list[dict]] = {}
    for t in served:
        by_param_served.setdefault(t["parameter"], []).append(t)
    assert sorted(by_param_stored) == sorted(by_param_served)
    for parameter, rows in by_param_stored.items():
        truth = by_param_served[parameter]
        assert len(rows) == len(truth), parameter
        for row, t in zip(rows, sorted(truth, key=lambda t: t["t_ns"])):
            ts_ns, device, _, value, status, _ = row
            assert (device, value, status) == (t["device"], t["value"], t["status"])
            # The agent stamps a reading when it sends the request; the simulator logs when it serves it.
            assert 0 <= t["t_ns"] - ts_ns < 500_000_000


def test_every_served_value_arrives_exactly_once_across_a_collector_crash(make_station):
    station = make_station("demo_air_01.yaml")
    station.sim()
    collector = station.collector()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 24, timeout=30, what="a few polls served")
    collector.kill()  # SIGKILL: no chance to ack what it holds
    time.sleep(1.5)  # the agent keeps publishing into the collector's persistent session
    station.collector()
    wait_until(lambda: len(station.served_values()) >= 60, timeout=30, what="more polls served")
    agent.stop(timeout=20)  # graceful: finishes its cycle and drains
    served = station.served_values()
    assert station.wait_stored(len(served)) == len(served)
    stored = station.stored()
    assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored)
    assert_matches_truth(stored, served)
    assert [r[:5] for r in sorted(stored)] == sorted(station.outbox_readings())


def test_agent_resumes_from_its_outbox_after_sigkill_while_the_broker_was_down(make_station, mosquitto_server):
    station = make_station("demo_stack_01.yaml")
    station.sim()
    station.collector()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 14, timeout=30, what="first polls served")
    mosquitto_server.stop()
    wait_until(lambda: len(station.served_values()) >= 56, timeout=30, what="polls served while the broker is down")
    agent.kill()  # what it committed is in the outbox, unacknowledged
    mosquitto_server.start()
    agent = station.agent()
    wait_until(lambda: len(station.served_values()) >= 84, timeout=30, what="polls after the restart")
    agent.stop(timeout=30)
    served = station.served_values()
    committed = station.outbox_readings()
    assert station.wait_stored(len(committed)) == len(committed)
    stored = station.stored()
    assert sorted(r[:5] for r in stored) == sorted(committed)
    # SIGKILL can lose at most the poll cycle in flight: values served but not yet committed.
    values_per_poll = len({t["parameter"] for t in served})
    assert 0 <= len(served) - len(stored) <= values_per_poll
    served_keys = {(t["parameter"], t["value"], t["status"]) for t in served}
    assert all((r[2], r[3], r[4]) in served_keys for r in stored)
    seqs = sorted({r[5] for r in stored})
    assert seqs == list(range(1, len(seqs) + 1)), "batch sequence numbers have a gap or went back"
