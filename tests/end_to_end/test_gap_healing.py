"""A broker that loses PUBACKed batches (SIGKILL before its autosave) leaves a gap; the warehouse asks the
station to re-send it from the 60 days it keeps, and the gap closes."""

from __future__ import annotations

import pytest

from supervisor.process import wait_until
from tests.helpers import sql
from tests.station_rig import Station


@pytest.mark.slow  # kills the broker, then waits for the re-send
def test_batches_lost_by_a_crashed_broker_are_re_sent_on_request(tmp_path, make_mosquitto, warehouse):
    # No autosave during the test: what the broker queues after its last clean save dies with a SIGKILL.
    broker = make_mosquitto(tmp_path / "mosquitto", autosave_interval=3600)
    station = Station(tmp_path, "demo_air_01.yaml", broker.port, warehouse, poll_s=0.5)
    try:
        station.sim()
        collector = station.collector()
        agent = station.agent()
        wait_until(lambda: station.stored(), timeout=30, what="first readings stored")
        broker.stop()  # a clean stop saves the collector's persistent session
        broker.start()
        wait_until(
            lambda: "mqtt_connected" in collector.log_path.read_text().split("mqtt_disconnected")[-1],
            timeout=60,
            what="collector back on the broker",
        )
        collector.stop()
        served = len(station.served_values())
        wait_until(
            lambda: len(station.served_values()) >= served + 6 * 8, timeout=30, what="batches queued for the collector"
        )
        broker.kill()  # the queued, already acknowledged batches are gone
        broker.start()
        station.collector()
        served = len(station.served_values())
        wait_until(lambda: len(station.served_values()) >= served + 6 * 8, timeout=60, what="polls after the crash")
        gaps = sql(
            warehouse.pg_conninfo,
            "SELECT first_missing, last_missing FROM sequence_gaps WHERE station = %s",
            (station.id,),
        )
        assert gaps, "the lost batches should have left a recorded gap"
        agent.stop(timeout=30)
        committed = station.outbox_readings()
        assert station.wait_stored(len(committed), timeout=60) == len(committed)
        stored = station.stored()
        assert sorted(r[:5] for r in stored) == sorted(committed)
        assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored)
        agent_log = "".join(p.read_text() for p in tmp_path.glob("*-agent.log"))
        assert "batches_resent_on_request" in agent_log
    finally:
        station.stop_all()
