"""The relay and national receipts: the relay's outboxes learn what the national warehouse committed
(verified with the national collector's key), and with ``pass_receipts`` the station's own agent,
which has no province collector, learns it too, through the province broker."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from cli.processes import collector_process, relay_process
from collector.registry import set_province
from supervisor.process import wait_until
from tests.station_rig import Station

PROVINCE = "province-RX"


def receipted(outbox: Path) -> tuple[int, int]:
    """(PUBACKed batches, of them receipted) in an outbox, read beside its running owner."""
    with sqlite3.connect(outbox) as db:
        return db.execute("SELECT count(acked_ns), count(receipted_ns) FROM batches").fetchone()


@pytest.mark.slow  # two brokers, a collector, the relay, a simulator and an agent as processes (~13 s)
def test_national_receipts_reach_the_relay_and_the_agent(tmp_path, make_mosquitto, warehouse):
    province_broker = make_mosquitto(tmp_path / "province-mosquitto")
    national_broker = make_mosquitto(tmp_path / "national-mosquitto")
    station = Station(tmp_path, "demo_air_01.yaml", province_broker.port, warehouse, poll_s=0.5, receipts=True)
    set_province(station.registry, station.id, PROVINCE)
    relay_file = tmp_path / "relay.yaml"
    relay_file.write_text(yaml.safe_dump({
        "stations": [station.id],
        "province": {"broker": f"127.0.0.1:{province_broker.port}"},
        "national": {"broker": f"127.0.0.1:{national_broker.port}"},
        "outbox_dir": str(tmp_path / "relay"),
        "receipt_keys": [str(station.collector_key.with_suffix(".pub"))],
        "pass_receipts": True,
    }))  # fmt: skip
    try:
        # Only a national collector: the agent's receipts can come from nowhere but national.
        national = station.start(
            collector_process(
                station.registry,
                f"127.0.0.1:{national_broker.port}",
                f"127.0.0.1:{warehouse.http_port}",
                f"127.0.0.1:{warehouse.pg_port}",
                tmp_path / "national-collector.log",
                client_id=f"national-{station.id}",
                key=station.collector_key,
            )
        )
        wait_until(lambda: "mqtt_connected" in national.log_path.read_text(), timeout=20, what="national collector")
        relay = station.start(relay_process(relay_file, tmp_path / "relay.log"))
        wait_until(lambda: relay.log_path.read_text().count("relay_connected") >= 2, timeout=30, what="relay")
        station.sim()
        agent = station.agent()
        wait_until(lambda: receipted(station.outbox)[1] >= 10, timeout=60, what="receipts at the agent")
        relay_outbox = tmp_path / "relay" / f"{station.id}.sqlite"
        wait_until(lambda: receipted(relay_outbox)[1] >= 10, timeout=30, what="receipts at the relay")
        agent.stop(timeout=30)
        wait_until(
            lambda: receipted(relay_outbox)[1] == receipted(station.outbox)[0],
            timeout=30,
            what="every batch the agent sent receipted at the relay",
        )
        # The agent, stopped, cannot apply the last receipts; every batch it had receipted is at national.
        acked, covered = receipted(station.outbox)
        assert covered >= 10 and covered <= acked
        committed = station.outbox_readings()
        assert station.wait_stored(len(committed), timeout=60) == len(committed)
        logs = relay.log_path.read_text() + "".join(p.read_text() for p in tmp_path.glob("*-agent.log"))
        assert "receipt_ignored" not in logs and "Traceback" not in logs
    finally:
        station.stop_all()
