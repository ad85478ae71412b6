"""broker_health against a real Mosquitto whose queue limit is reached: the drop is seen and said."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
from structlog.testing import capture_logs

from broker_bridge import session
from broker_bridge.broker_health import DROPPED, BrokerHealth
from supervisor import wait_until


def test_dropped_messages_become_a_gauge_and_a_warning(make_mosquitto, tmp_path) -> None:
    broker = make_mosquitto(tmp_path / "mosquitto", max_queued_messages=5, extra_conf="sys_interval 1\n")
    address = session.BrokerAddress("127.0.0.1", broker.port)

    # A persistent session that goes away: its queue fills past the limit of 5.
    away = session.new_client("away-collector")
    connected = threading.Event()
    away.on_connect = lambda c, u, f, rc, p: (c.subscribe("quantrac/v1/+/data", qos=1), connected.set())
    session.connect_async(away, address, session.connect_properties())
    away.loop_start()
    assert connected.wait(10)
    time.sleep(0.3)
    away.disconnect()
    away.loop_stop()

    health = BrokerHealth(broker="province")
    watcher = session.new_client("health-watcher", manual_ack=True)
    health.attach(watcher)
    watcher.on_connect = lambda c, u, f, rc, p: health.subscribe(c)
    with capture_logs() as logs:
        session.connect_async(watcher, address, session.connect_properties(60))
        watcher.loop_start()
        try:
            wait_until(lambda: DROPPED in health.values, timeout=15, what="the first $SYS dropped count")
            before = health.values[DROPPED]
            publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            publisher.connect("127.0.0.1", broker.port)
            publisher.loop_start()
            for i in range(20):
                publisher.publish("quantrac/v1/HN_AIR_001/data", f"batch {i}".encode(), qos=1).wait_for_publish(5)
            publisher.disconnect()
            publisher.loop_stop()
            wait_until(lambda: health.values[DROPPED] >= before + 15, timeout=15, what="the drops to be counted")
        finally:
            watcher.disconnect()
            watcher.loop_stop()
    assert health.registry.get_sample_value("quantrac_broker_messages_dropped", {"broker": "province"}) >= before + 15
    assert health.registry.get_sample_value("quantrac_broker_clients_connected", {"broker": "province"}) is not None
    assert health.registry.get_sample_value("quantrac_broker_stored_messages", {"broker": "province"}) >= 5
    warnings = [e for e in logs if e["event"] == "broker_dropped_messages"]
    assert warnings and warnings[-1]["dropped_total"] >= before + 15 and warnings[-1]["broker"] == "province"
    assert health.observe("$SYS/broker/heap/current", b"not a number") is False
