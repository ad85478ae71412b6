"""The collector against the real Mosquitto and QuestDB: DEDUP, rejects with reasons, restarts."""

from __future__ import annotations

import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import key_id, write_new_key
from broker_bridge.topics import data_topic
from cli.processes import collector_process
from collector.registry import add_station
from supervisor.process import wait_until
from tests.helpers import publish_all, sql, unique_station, wait_for_count, wal_applied


@pytest.fixture
def station(tmp_path):
    station_id = unique_station("COL")
    key = write_new_key(tmp_path / "keys" / f"{station_id}.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station_id, key.public_key)
    return station_id, key, registry


@pytest.fixture
def collector(mosquitto_server, station, make_collector):
    return make_collector(mosquitto_server.port, station[2], f"collector-{station[0]}")


def batch(station_id, seq, n, start_ns, device="dev1"):
    return BatchBody(
        station_id,
        seq,
        time.time_ns(),
        tuple(Reading(start_ns + i * 1000, device, "PM10", 10.0 + i, "ug/m3", "00", "") for i in range(n)),
    )


def count(endpoints, station_id):
    return f"SELECT count() FROM readings WHERE station = '{station_id}'"


def test_same_batch_twice_leaves_n_rows(collector, station, warehouse, mosquitto_server):
    station_id, key, _ = station
    payload = seal(batch(station_id, 1, 25, time.time_ns()), key.key_id, key.private_key)
    publish_all(mosquitto_server.port, data_topic(station_id), [payload, payload])
    wait_until(
        lambda: collector.stats.messages >= 2 and collector.stats.flushes >= 1, timeout=15, what="both copies handled"
    )
    assert wait_for_count(warehouse.pg_conninfo, count(warehouse, station_id), 25) == 25
    rows = sql(
        warehouse.pg_conninfo,
        f"SELECT value, status, seq, key_id FROM readings WHERE station='{station_id}' ORDER BY ts",
    )
    assert [r[0] for r in rows] == [10.0 + i for i in range(25)]
    assert {(r[1], r[2], r[3]) for r in rows} == {("00", 1, key.key_id)}


def forged_payloads(station_id, key, other_station_id):
    start = time.time_ns()
    good = seal(batch(station_id, 1, 3, start), key.key_id, key.private_key)
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    stranger = Ed25519PrivateKey.generate()
    wrong_key = seal(batch(station_id, 2, 3, start + 10**6), key_id(stranger.public_key()), stranger)
    # Signed by the station's real key, but claiming another station inside the body.
    mismatch = seal(batch(other_station_id, 3, 3, start + 2 * 10**6), key.key_id, key.private_key)
    return {"bad_signature": bytes(flipped), "unknown_key": wrong_key, "topic_mismatch": mismatch}


@pytest.mark.parametrize("reason", ["bad_signature", "unknown_key", "topic_mismatch"])
def test_forged_batches_add_no_reading_and_one_reject(collector, station, warehouse, mosquitto_server, reason):
    station_id, key, _ = station
    payload = forged_payloads(station_id, key, unique_station("OTHER"))[reason]
    publish_all(mosquitto_server.port, data_topic(station_id), [payload])
    rejects = f"SELECT count() FROM rejects WHERE claimed_station = '{station_id}'"
    assert wait_for_count(warehouse.pg_conninfo, rejects, 1) == 1
    row = sql(
        warehouse.pg_conninfo, f"SELECT reason, detail, topic FROM rejects WHERE claimed_station = '{station_id}'"
    )[0]
    assert row[0] == reason and row[1] and row[2] == data_topic(station_id)
    assert wal_applied(warehouse.pg_conninfo)
    assert sql(warehouse.pg_conninfo, count(warehouse, station_id))[0][0] == 0


def test_unknown_station_is_rejected(collector, warehouse, mosquitto_server):
    stranger_id = unique_station("NOBODY")
    stranger = Ed25519PrivateKey.generate()
    payload = seal(batch(stranger_id, 1, 2, time.time_ns()), key_id(stranger.public_key()), stranger)
    publish_all(mosquitto_server.port, data_topic(stranger_id), [payload, b"not msgpack at all \xc1"])
    rejects = f"SELECT reason FROM rejects WHERE claimed_station = '{stranger_id}' ORDER BY reason"
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM rejects WHERE claimed_station = '{stranger_id}'", 2)
    # An unknown station's payload is not even parsed.
    assert [r[0] for r in sql(warehouse.pg_conninfo, rejects)] == ["unknown_station", "unknown_station"]


@pytest.mark.slow  # stops a collector process and starts another
def test_collector_restart_loses_nothing(mosquitto_server, warehouse, station, tmp_path):
    """SIGKILL the collector while batches keep coming: its persistent session holds them for the next one."""
    station_id, key, registry = station
    broker = f"127.0.0.1:{mosquitto_server.port}"
    http = f"127.0.0.1:{warehouse.http_port}"
    pg = f"127.0.0.1:{warehouse.pg_port}"

    def start_collector(log_name):
        return collector_process(registry, broker, http, pg, tmp_path / log_name, client_id=f"c-{station_id}").start()

    collector = start_collector("collector-1.log")
    start = time.time_ns()
    payloads = [
        seal(batch(station_id, seq, 10, start + seq * 10**8), key.key_id, key.private_key) for seq in range(1, 61)
    ]
    # The first connect creates the persistent session; wait for it before publishing.
    wait_until(
        lambda: "mqtt_connected" in (tmp_path / "collector-1.log").read_text(), timeout=20, what="collector connected"
    )
    publish_all(mosquitto_server.port, data_topic(station_id), payloads[:20])
    collector.kill()
    publish_all(mosquitto_server.port, data_topic(station_id), payloads[20:40])  # queued by the broker meanwhile
    collector = start_collector("collector-2.log")
    publish_all(mosquitto_server.port, data_topic(station_id), payloads[40:])
    try:
        assert wait_for_count(warehouse.pg_conninfo, count(warehouse, station_id), 600, timeout=60) == 600
        distinct = sql(
            warehouse.pg_conninfo, f"SELECT count_distinct(seq) FROM readings WHERE station = '{station_id}'"
        )
        assert distinct[0][0] == 60
    finally:
        collector.stop()
