"""Every collector exit is a bug: a QuestDB that is down is waited for, at start and mid-stream, and a
batch that arrives meanwhile is held, never turned into a reject (real collector process, real QuestDB)."""

from __future__ import annotations

import time

import pytest

from broker_bridge.envelope import seal
from broker_bridge.keys import write_new_key
from broker_bridge.topics import data_topic
from cli.processes import collector_process
from collector.registry import add_station
from store.schema import ensure_schema
from supervisor.process import wait_until
from tests.collector.test_collector import batch
from tests.helpers import publish_all, sql, unique_station, wait_for_count

pytestmark = pytest.mark.slow  # QuestDB restarts (about 10 s each)


@pytest.fixture
def station(tmp_path):
    station_id = unique_station("SURV")
    key = write_new_key(tmp_path / "keys" / f"{station_id}.key")
    add_station(tmp_path / "registry.yaml", station_id, key.public_key)
    return station_id, key, tmp_path / "registry.yaml"


def start_collector(tmp_path, registry, broker_port, questdb, log_name, client_id):
    e = questdb.endpoints
    return collector_process(
        registry, f"127.0.0.1:{broker_port}", f"127.0.0.1:{e.http_port}", f"127.0.0.1:{e.pg_port}",
        tmp_path / log_name, client_id=client_id,
    ).start()  # fmt: skip


def readings_of(conninfo, station_id, seq=None):
    where = f"station = '{station_id}'" + (f" AND seq = {seq}" if seq is not None else "")
    return f"SELECT count() FROM readings WHERE {where}"


def test_a_gap_filled_while_questdb_is_down_is_held_and_stored_not_rejected(
    make_questdb, mosquitto_server, station, tmp_path
):
    """Seq 4 arrives after 5, so it is looked up in the ledger over PostgreSQL: while QuestDB is down that lookup
    must hold the message (WarehouseUnavailable), not store an internal_error reject and acknowledge it."""
    station_id, key, registry = station
    questdb = make_questdb()
    conninfo = questdb.endpoints.pg_conninfo
    ensure_schema(conninfo)
    collector = start_collector(tmp_path, registry, mosquitto_server.port, questdb, "collector.log", f"s-{station_id}")
    try:
        wait_until(lambda: "mqtt_connected" in collector.log_path.read_text(), timeout=30, what="collector connected")
        start = time.time_ns()
        payloads = {
            s: seal(batch(station_id, s, 10, start + s * 10**8), key.key_id, key.private_key) for s in range(1, 6)
        }
        publish_all(mosquitto_server.port, data_topic(station_id), [payloads[s] for s in (1, 2, 3, 5)])
        assert wait_for_count(conninfo, readings_of(conninfo, station_id), 40, timeout=30) == 40
        questdb.kill()
        publish_all(mosquitto_server.port, data_topic(station_id), [payloads[4]])
        wait_until(
            lambda: "warehouse_unavailable" in collector.log_path.read_text(), timeout=30, what="the outage noticed"
        )
        time.sleep(2)
        questdb.start()
        assert wait_for_count(conninfo, readings_of(conninfo, station_id, 4), 10, timeout=60) == 10
        assert collector.running, "the collector must survive the outage"
        rejects = sql(conninfo, f"SELECT reason FROM rejects WHERE claimed_station = '{station_id}'")
        assert rejects == []
        assert "message_breaks_flush" not in collector.log_path.read_text()
    finally:
        collector.stop()


def test_a_collector_started_while_questdb_is_down_waits_for_it(make_questdb, mosquitto_server, station, tmp_path):
    station_id, key, registry = station
    questdb = make_questdb()
    conninfo = questdb.endpoints.pg_conninfo
    questdb.stop()
    collector = start_collector(tmp_path, registry, mosquitto_server.port, questdb, "collector.log", f"w-{station_id}")
    try:
        wait_until(
            lambda: "warehouse_unavailable_at_start" in collector.log_path.read_text(),
            timeout=30,
            what="the collector waiting for QuestDB",
        )
        time.sleep(3)
        assert collector.running, f"the collector exited: {collector.log_path.read_text()[-2000:]}"
        questdb.start()
        wait_until(lambda: "mqtt_connected" in collector.log_path.read_text(), timeout=60, what="collector connected")
        publish_all(
            mosquitto_server.port,
            data_topic(station_id),
            [seal(batch(station_id, 1, 10, time.time_ns()), key.key_id, key.private_key)],
        )
        assert wait_for_count(conninfo, readings_of(conninfo, station_id), 10, timeout=60) == 10
        assert "Traceback" not in collector.log_path.read_text()
    finally:
        collector.stop()
