"""Operating the collector: Prometheus metrics, and a suspended QuestDB WAL table reported loudly."""

from __future__ import annotations

import threading
import time
import urllib.request

import pytest

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import data_topic
from collector.registry import add_station
from collector.service import Collector, CollectorConfig
from store.queries import suspended_wal_tables
from store.schema import ensure_schema
from supervisor.process import free_port, wait_until
from tests.helpers import publish_all, sql, unique_station


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


def rejects(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        line.split(" ")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("quantrac_rejects_total")
    }


def test_metrics_count_messages_readings_rejects_and_flags(tmp_path, make_mosquitto, make_collector):
    # $SYS every second (Mosquitto's default is 10 s): the broker's counters arrive without a long wait.
    mosquitto_server = make_mosquitto(tmp_path / "mosquitto", extra_conf="sys_interval 1")
    station_id = unique_station("OPS")
    key = write_new_key(tmp_path / "k.key")
    add_station(tmp_path / "r.yaml", station_id, key.public_key)
    port = free_port()
    make_collector(mosquitto_server.port, tmp_path / "r.yaml", f"c-{station_id}", metrics_port=port)
    now = time.time_ns() - 10**9
    body = BatchBody(
        station_id,
        1,
        time.time_ns(),
        (
            Reading(now, "d", "SO2", 20.0, "ug/m3", "00", ""),
            Reading(now, "d", "NO2", None, "ug/m3", "02", "no reply"),
        ),
    )
    publish_all(mosquitto_server.port, data_topic(station_id), [seal(body, key.key_id, key.private_key), b"garbage"])
    wait_until(
        lambda: metric(port, "quantrac_readings_written_total") == 2 and sum(rejects(port).values()) == 1,
        timeout=15,
        what="metrics updated",
    )
    assert metric(port, "quantrac_messages_received_total") == 2
    assert rejects(port) == {'quantrac_rejects_total{reason="undecodable"}': 1.0}
    assert metric(port, 'quantrac_qc_flags_total{check="device_status",flag="4"}') == 1
    assert metric(port, "quantrac_unacked_messages") == 0
    assert metric(port, "quantrac_flush_seconds_count") >= 1
    # The broker's own counters reach the collector's metrics ($SYS).
    wait_until(
        lambda: metric(port, 'quantrac_broker_clients_connected{broker="local"}') >= 1,
        timeout=15,
        what="the broker's $SYS counters in the collector's metrics",
    )
    assert metric(port, 'quantrac_broker_messages_dropped{broker="local"}') == 0


@pytest.mark.slow  # suspends a WAL table on a private QuestDB and waits for the report
def test_a_suspended_wal_table_is_detected_and_reported(tmp_path, mosquitto_server, make_questdb):
    # Private (suspending its tables disturbs no other test), in dev mode, where SUSPEND WAL is allowed.
    questdb = make_questdb(extra_conf="dev.mode.enabled=true")
    ensure_schema(questdb.endpoints.pg_conninfo)
    sql(questdb.endpoints.pg_conninfo, "ALTER TABLE readings SUSPEND WAL")
    assert [t.name for t in suspended_wal_tables(questdb.endpoints.pg_conninfo)] == ["readings"]
    station_id = unique_station("WAL")
    key = write_new_key(tmp_path / "k.key")
    add_station(tmp_path / "r.yaml", station_id, key.public_key)
    collector = Collector(
        CollectorConfig(
            broker=BrokerAddress("127.0.0.1", mosquitto_server.port),
            client_id="c-wal",
            registry_path=str(tmp_path / "r.yaml"),
            ilp_conf=questdb.endpoints.ilp_conf,
            pg_conninfo=questdb.endpoints.pg_conninfo,
            wal_check_interval_s=0.1,
        )
    )
    stop = threading.Event()
    collector.start()
    thread = threading.Thread(target=collector.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert collector.connected.wait(10)
        time.sleep(0.3)
        body = BatchBody(station_id, 1, time.time_ns(), (Reading(time.time_ns(), "d", "CO", 1.0, "ug/m3", "00", ""),))
        publish_all(mosquitto_server.port, data_topic(station_id), [seal(body, key.key_id, key.private_key)])
        wait_until(lambda: collector.metrics.suspended_tables._value.get() == 1, timeout=15, what="suspension reported")
        sql(questdb.endpoints.pg_conninfo, "ALTER TABLE readings RESUME WAL")
        wait_until(
            lambda: sql(questdb.endpoints.pg_conninfo, "SELECT count() FROM readings")[0][0] == 1,
            timeout=20,
            what="the row becomes visible after RESUME WAL",
        )
    finally:
        stop.set()
        thread.join(10)
        collector.stop()
