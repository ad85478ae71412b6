"""The publisher against the real broker: a batch counts as sent only when a collector's session can receive it."""

from __future__ import annotations

import json
import time

from structlog.testing import capture_logs

from broker_bridge import session
from broker_bridge.envelope import Reading
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_subscription
from edge_agent.outbox import Outbox
from edge_agent.publisher import BatchPublisher
from supervisor.process import wait_until
from tests.station_rig import make_station  # noqa: F401 (a fixture)


def pump_until(publisher, predicate, timeout, what):
    def step():
        publisher.pump()
        return predicate()

    wait_until(step, timeout=timeout, interval=0.05, what=what)


def test_a_batch_no_collector_could_receive_stays_unsent_and_is_retried(tmp_path, mosquitto_server):
    key = write_new_key(tmp_path / "k.key")
    outbox = Outbox(tmp_path / "o.sqlite", "PUB_1")
    outbox.append([Reading(time.time_ns(), "d1", "CO", 1.0, "ug/m3", "00", "")])
    publisher = BatchPublisher(
        outbox, key, session.BrokerAddress("127.0.0.1", mosquitto_server.port), unheard_retry_s=1.0
    )
    publisher.start()
    try:
        assert publisher.connected.wait(10)
        pump_until(publisher, lambda: bool(publisher._retry_due), 10, "PUBACK 0x10")
        assert outbox.counts()["unacked_batches"] == 1  # the broker dropped it: not delivered
        received = []
        collector = session.new_client("collector-late", manual_ack=False)
        collector.on_message = lambda c, u, m: received.append(m.payload)
        collector.connect(
            "127.0.0.1", mosquitto_server.port, clean_start=False, properties=session.connect_properties()
        )
        collector.subscribe(data_subscription(), qos=1)
        collector.loop_start()
        time.sleep(0.5)
        pump_until(publisher, lambda: outbox.counts()["unacked_batches"] == 0, 15, "the retried batch acknowledged")
        wait_until(lambda: received, timeout=5, what="the collector got the batch")
        assert received[0] == outbox.batches_between(1, 1)[0].payload
        collector.loop_stop()
        collector.disconnect()
    finally:
        publisher.stop()
        outbox.close()


def test_a_planned_stop_logs_at_info_and_only_an_unexpected_disconnect_warns(tmp_path, mosquitto_server):
    key = write_new_key(tmp_path / "k.key")
    outbox = Outbox(tmp_path / "o.sqlite", "PUB_2")
    publisher = BatchPublisher(outbox, key, session.BrokerAddress("127.0.0.1", mosquitto_server.port))
    with capture_logs() as logs:
        publisher.start()
        try:
            assert publisher.connected.wait(10)
            # Unexpected: another client takes the agent's session over, the broker drops this connection.
            usurper = session.new_client("quantrac-agent-PUB_2", manual_ack=False)
            usurper.connect("127.0.0.1", mosquitto_server.port, properties=session.connect_properties())
            usurper.loop_start()
            wait_until(lambda: any(e["event"] == "mqtt_disconnected" for e in logs), timeout=10, what="taken over")
            session.disconnect_and_stop(usurper)
            wait_until(publisher.connected.is_set, timeout=30, what="the agent connected again")
        finally:
            publisher.stop()
            outbox.close()
    dropped = [e for e in logs if e["event"] == "mqtt_disconnected"]
    planned = [e for e in logs if e["event"] == "mqtt_disconnected_planned"]
    assert dropped and all(e["log_level"] == "warning" and e["station"] == "PUB_2" for e in dropped)
    assert len(planned) == 1 and planned[0]["log_level"] == "info" and planned[0]["station"] == "PUB_2"
    assert logs.index(planned[0]) > logs.index(dropped[-1])  # the stop's own disconnect is not a warning


def test_sigterm_stops_the_agent_with_an_info_line_not_a_warning(make_station):
    station = make_station()
    station.collector()  # so the agent's drain at stop is quick: its batches are taken
    station.sim()
    agent = station.agent()
    wait_until(
        lambda: "mqtt_connected" in agent.log_path.read_text(), timeout=20, what="agent connected", process=agent
    )
    agent.stop(timeout=20)  # SIGTERM
    events = [json.loads(line) for line in agent.log_path.read_text().splitlines() if line.startswith("{")]
    names = [(e["event"], e["level"]) for e in events if e["event"].startswith("mqtt_disconnected")]
    assert names == [("mqtt_disconnected_planned", "info")], names
