"""A batch the broker acknowledged and then lost reaches the warehouse anyway: the station keeps it
until the warehouse's signed receipt covers it, and sends it again when none did in time."""

from __future__ import annotations

import sqlite3

import pytest

from supervisor.process import wait_until
from tests.station_rig import Station


def outbox_batches(station: Station) -> list[tuple[int, int | None, int | None]]:
    with sqlite3.connect(station.outbox) as db:
        return db.execute("SELECT seq, acked_ns, receipted_ns FROM batches ORDER BY seq").fetchall()


@pytest.mark.slow  # two broker restarts and a receipt time-out
def test_a_batch_lost_by_the_broker_after_its_puback_arrives_through_the_receipt_timeout(
    tmp_path, make_mosquitto, warehouse
):
    # No autosave during the test: what the broker queues after its last clean save dies with a SIGKILL.
    broker = make_mosquitto(tmp_path / "mosquitto", autosave_interval=3600)
    station = Station(
        tmp_path, "demo_air_01.yaml", broker.port, warehouse, poll_s=0.5, receipts=True, receipt_timeout_s=2.0
    )
    try:
        station.sim()
        collector = station.collector()
        agent = station.agent()
        wait_until(lambda: station.stored(), timeout=30, what="first readings stored")
        wait_until(
            lambda: any(r for _, _, r in outbox_batches(station)), timeout=30, what="a first receipt at the station"
        )
        broker.stop()  # a clean stop saves the collector's persistent session
        broker.start()
        wait_until(
            lambda: "mqtt_connected" in collector.log_path.read_text().split("mqtt_disconnected")[-1],
            timeout=60,
            what="collector back on the broker",
        )
        collector.stop()  # its session stays: the broker queues the station's batches for it, and PUBACKs them
        served = len(station.served_values())
        wait_until(
            lambda: len(station.served_values()) >= served + 6 * 8, timeout=30, what="batches queued for the collector"
        )
        agent.stop(timeout=30)  # drains: every batch PUBACKed
        broker.kill()  # within a second of the last PUBACK: the queued batches are gone
        lost = [seq for seq, acked, receipted in outbox_batches(station) if receipted is None]
        assert lost and all(acked for seq, acked, _ in outbox_batches(station) if seq in lost)
        broker.start()
        # A share group turns gap tracking off: only the receipts can bring these batches back.
        station.collector(client_id=f"collector2-{station.id}", share_group="receipts")
        agent = station.agent()
        wait_until(
            lambda: all(r for seq, _, r in outbox_batches(station) if seq in lost),
            timeout=90,
            what="the lost batches receipted",
        )
        agent.stop(timeout=30)
        committed = station.outbox_readings()
        assert station.wait_stored(len(committed), timeout=60) == len(committed)
        stored = station.stored()
        assert sorted(r[:5] for r in stored) == sorted(committed)
        assert len({(r[0], r[1], r[2]) for r in stored}) == len(stored)
        lost_seqs = {r[5] for r in stored} & set(lost)
        assert lost_seqs == set(lost), "every lost batch's readings are in the warehouse"
        agent_log = "".join(p.read_text() for p in tmp_path.glob("*-agent.log"))
        assert "batches_resent_without_receipt" in agent_log
        assert "batches_resent_on_request" not in agent_log
    finally:
        station.stop_all()
