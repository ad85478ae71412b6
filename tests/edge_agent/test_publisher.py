"""The publisher against the real broker: a batch counts as sent only when a collector's session can receive it."""

from __future__ import annotations

import time

from broker_bridge import session
from broker_bridge.envelope import Reading
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_subscription
from edge_agent.outbox import Outbox
from edge_agent.publisher import BatchPublisher
from supervisor.process import wait_until


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
