"""A simulated station wired to the real broker and warehouse, each process startable on its own."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest
import yaml

from broker_bridge.envelope import decode_body, open_envelope
from broker_bridge.keys import write_new_key
from cli.processes import agent_process, collector_process, sim_process
from collector.registry import add_station
from firmware_sim.analyzer import read_truth
from firmware_sim.station import StationSimulator
from station_profiles.loader import STATIONS_DIR, load_station
from supervisor.process import free_port, wait_until
from tests.helpers import sql, unique_station, wait_for_count

POLL_S = 0.5


class Station:
    """One simulated station wired to the real broker and warehouse, each process startable on its own."""

    def __init__(
        self,
        tmp: Path,
        template: str,
        broker_port: int,
        warehouse,
        poll_s: float = POLL_S,
        receipts: bool = False,
        receipt_timeout_s: float | None = None,
        resend_retry_s: float | None = None,
        live_batch_s: float | None = None,
    ) -> None:
        doc = yaml.safe_load((STATIONS_DIR / template).read_text())
        self.id = unique_station(doc["station"]["id"])
        doc["station"]["id"] = self.id
        doc["poll_interval_s"] = poll_s
        if live_batch_s is not None:
            doc["live_batch_s"] = live_batch_s
        self.tmp = tmp
        self.file = tmp / f"{self.id}.yaml"
        self.file.write_text(yaml.safe_dump(doc))
        self.ports = {d["id"]: free_port() for d in doc["devices"]}
        self.key = tmp / "keys" / f"{self.id}.key"
        self.registry = tmp / "registry.yaml"
        add_station(self.registry, self.id, write_new_key(self.key).public_key)
        # The collector's own key signs receipts; the agent trusts its public half.
        self.collector_key = tmp / "keys" / "collector.key" if receipts else None
        if self.collector_key is not None and not self.collector_key.exists():
            write_new_key(self.collector_key)
        self.receipt_timeout_s, self.resend_retry_s = receipt_timeout_s, resend_retry_s
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
        wait_until(
            lambda: "sim.listening" in process.log_path.read_text(),
            timeout=20,
            what="simulator listening",
            process=process,
        )
        return process

    def agent(self):
        keys = (self.collector_key.with_suffix(".pub"),) if self.collector_key is not None else ()
        return self.start(
            agent_process(
                self.file, self.key, self.broker, self.outbox, self._log("agent"), self.ports,
                collector_keys=keys, receipt_timeout_s=self.receipt_timeout_s,
            )
        )  # fmt: skip

    def collector(self, client_id: str | None = None, share_group: str | None = None):
        w = self.warehouse
        process = self.start(
            collector_process(
                self.registry,
                self.broker,
                f"127.0.0.1:{w.http_port}",
                f"127.0.0.1:{w.pg_port}",
                self._log("collector"),
                client_id=client_id or f"collector-{self.id}",
                share_group=share_group,
                key=self.collector_key,
                resend_retry_s=self.resend_retry_s,
            )
        )
        wait_until(
            lambda: "mqtt_connected" in process.log_path.read_text(),
            timeout=20,
            what="collector connected",
            process=process,
        )
        return process

    def stop_all(self):
        for process in reversed(self.started):
            process.stop(timeout=15)

    def served_values(self) -> list[dict]:
        return [t for t in read_truth(self.truth) if t["kind"] == "value"]

    def stored(self) -> list[tuple]:
        return sql(
            self.warehouse.pg_conninfo,
            "SELECT ts::long, device, parameter, value, status, seq, historical FROM readings WHERE station = %s"
            " ORDER BY ts, parameter",
            (self.id,),
        )

    def wait_stored(self, expected: int, timeout: float = 60) -> int:
        return wait_for_count(
            self.warehouse.pg_conninfo,
            "SELECT count() FROM readings WHERE station = %s",
            expected,
            timeout=timeout,
            params=(self.id,),
        )

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


class SimulatorThread:
    """The station simulator in its own event loop, so the test can switch faults while the agent polls."""

    def __init__(self, station_file, truth, ports) -> None:
        self.sim = StationSimulator(load_station(station_file).with_port_overrides(ports), truth)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> SimulatorThread:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def do(self, fn, *args, **kwargs):
        async def call():
            return fn(*args, **kwargs)

        return asyncio.run_coroutine_threadsafe(call(), self.loop).result(5)


@pytest.fixture
def make_station(tmp_path, mosquitto_server, warehouse):
    stations = []

    def make(template: str = "demo_air_01.yaml", **kwargs) -> Station:
        station = Station(tmp_path, template, mosquitto_server.port, warehouse, **kwargs)
        stations.append(station)
        return station

    yield make
    for station in stations:
        station.stop_all()
