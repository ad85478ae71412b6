"""Issue 4, collector side: key rotation, retired keys, replays, sequence reuse, gaps, disabled stations, liveness."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import paho.mqtt.client as mqtt
import pytest

from broker_bridge.envelope import BatchBody, Reading, seal, verify
from broker_bridge.keys import write_new_key
from broker_bridge.station_messages import Birth, Will, open_station_envelope, seal_station_message
from broker_bridge.topics import data_topic, status_topic
from collector.registry import add_station, retire_key, rotate_key, set_enabled
from store.queries import station_overview
from supervisor.process import wait_until
from tests.helpers import publish_all, sql, unique_station, wait_for_count


@pytest.fixture
def station(tmp_path):
    station_id = unique_station("TRUST")
    key = write_new_key(tmp_path / "keys" / "current.key")
    registry = tmp_path / "registry.yaml"
    add_station(registry, station_id, key.public_key)
    return station_id, key, registry


def sealed(station_id, key, seq, n=2, value=1.0):
    start = time.time_ns() - 10**9
    body = BatchBody(
        station_id,
        seq,
        time.time_ns(),
        tuple(Reading(start + seq * 10**6 + i, "dev1", "SO2", value + i, "ug/m3", "00", "") for i in range(n)),
    )
    return seal(body, key.key_id, key.private_key)


def rejects_of(warehouse, station_id):
    return sql(
        warehouse.pg_conninfo,
        "SELECT reason, detail FROM rejects WHERE claimed_station = %s ORDER BY ts",
        (station_id,),
    )


def readings_of(warehouse, station_id):
    return sql(warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", (station_id,))[0][0]


def test_rotation_accepts_current_and_next_key_during_overlap_then_never_the_old(
    tmp_path, station, mosquitto_server, make_collector, warehouse
):
    station_id, old_key, registry = station
    new_key = write_new_key(tmp_path / "keys" / "next.key")
    rotate_key(registry, station_id, new_key.public_key, overlap=timedelta(seconds=4))
    collector = make_collector(mosquitto_server.port, registry, f"c-{station_id}")
    publish_all(
        mosquitto_server.port, data_topic(station_id), [sealed(station_id, old_key, 1), sealed(station_id, new_key, 2)]
    )
    assert (
        wait_for_count(
            warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 4, params=(station_id,)
        )
        == 4
    )
    wait_until(
        lambda: time.time() > collector.registry.get(station_id).keys[old_key.key_id].not_after_ns / 1e9,
        timeout=10,
        what="end of the overlap",
    )
    publish_all(
        mosquitto_server.port, data_topic(station_id), [sealed(station_id, old_key, 3), sealed(station_id, new_key, 4)]
    )
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", 1, params=(station_id,)
    )
    assert (
        wait_for_count(
            warehouse.pg_conninfo, "SELECT count() FROM readings WHERE station = %s", 6, params=(station_id,)
        )
        == 6
    )
    [(reason, detail)] = rejects_of(warehouse, station_id)
    assert reason == "retired_key" and old_key.key_id in detail and "rotation overlap" in detail


def test_retired_key_and_disabled_station_are_rejected_with_reasons(
    station, mosquitto_server, make_collector, warehouse
):
    station_id, key, registry = station
    make_collector(mosquitto_server.port, registry, f"c-{station_id}")
    retire_key(registry, station_id, key.key_id)
    time.sleep(0.05)  # a distinct mtime for the registry reload
    publish_all(mosquitto_server.port, data_topic(station_id), [sealed(station_id, key, 1)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", 1, params=(station_id,)
    )
    set_enabled(registry, station_id, False)
    time.sleep(0.05)
    publish_all(mosquitto_server.port, data_topic(station_id), [sealed(station_id, key, 2)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", 2, params=(station_id,)
    )
    assert [r[0] for r in rejects_of(warehouse, station_id)] == ["retired_key", "disabled_station"]
    assert readings_of(warehouse, station_id) == 0


def test_redelivery_is_a_duplicate_but_an_old_replay_or_a_reused_seq_is_rejected(
    station, mosquitto_server, make_collector, warehouse
):
    station_id, key, registry = station
    # A short replay window stands in for "days later".
    collector = make_collector(mosquitto_server.port, registry, f"c-{station_id}", replay_window_days=2.0 / 86400)
    first = sealed(station_id, key, 1)
    publish_all(mosquitto_server.port, data_topic(station_id), [first])
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM batches WHERE station = %s", 1, params=(station_id,))
    publish_all(mosquitto_server.port, data_topic(station_id), [first])  # a redelivery: accepted, not rewritten
    wait_until(lambda: collector.stats.duplicates == 1, timeout=10, what="duplicate counted")
    time.sleep(2.5)
    publish_all(mosquitto_server.port, data_topic(station_id), [first, sealed(station_id, key, 1, value=99.0)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM rejects WHERE claimed_station = %s", 2, params=(station_id,)
    )
    assert [r[0] for r in rejects_of(warehouse, station_id)] == ["replayed", "sequence_reuse"]
    values = sql(warehouse.pg_conninfo, "SELECT value FROM readings WHERE station = %s ORDER BY value", (station_id,))
    assert values == [(1.0,), (2.0,)]  # the forged content under seq 1 never reached the readings


def test_a_gap_in_sequence_numbers_is_recorded_with_its_range(station, mosquitto_server, make_collector, warehouse):
    station_id, key, registry = station
    make_collector(mosquitto_server.port, registry, f"c-{station_id}")
    publish_all(mosquitto_server.port, data_topic(station_id), [sealed(station_id, key, s) for s in (1, 2, 6, 7)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM sequence_gaps WHERE station = %s", 1, params=(station_id,)
    )
    assert sql(
        warehouse.pg_conninfo, "SELECT first_missing, last_missing FROM sequence_gaps WHERE station = %s", (station_id,)
    ) == [(3, 5)]
    wait_for_count(warehouse.pg_conninfo, "SELECT count() FROM batches WHERE station = %s", 4, params=(station_id,))
    [overview] = [o for o in station_overview(warehouse.pg_conninfo) if o.station == station_id]
    assert overview.missing_batches == 3 and overview.readings == 8


def test_a_late_will_never_overrides_a_newer_birth(station, mosquitto_server, make_collector, warehouse):
    station_id, key, registry = station
    make_collector(mosquitto_server.port, registry, f"c-{station_id}")
    topic = status_topic(station_id)

    def status(state, session):
        message = Birth(station_id, session, None) if state == "online" else Will(station_id, session)
        return seal_station_message(message, key.key_id, key.private_key)

    # Birth of session 2 arrives before the will of session 1 (a broker noticing a dead socket late).
    publish_all(mosquitto_server.port, topic, [status("online", 1), status("online", 2), status("offline", 1)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM station_events WHERE station = %s", 3, params=(station_id,)
    )
    [overview] = [o for o in station_overview(warehouse.pg_conninfo) if o.station == station_id]
    assert (overview.state, overview.session) == ("online", 2)
    publish_all(mosquitto_server.port, topic, [status("offline", 2)])
    wait_for_count(
        warehouse.pg_conninfo, "SELECT count() FROM station_events WHERE station = %s", 4, params=(station_id,)
    )
    [overview] = [o for o in station_overview(warehouse.pg_conninfo) if o.station == station_id]
    assert (overview.state, overview.session) == ("offline", 2)


def test_agent_will_is_published_by_the_broker_when_the_agent_dies(tmp_path, mosquitto_server, warehouse):
    """The real agent's will and birth carry the same session number; SIGKILL makes the broker publish the will."""
    import yaml

    from cli.processes import agent_process, sim_process
    from station_profiles.loader import STATIONS_DIR
    from supervisor.process import free_port

    doc = yaml.safe_load((STATIONS_DIR / "demo_ww_01.yaml").read_text())
    station_id = unique_station("WILL")
    doc["station"]["id"], doc["poll_interval_s"] = station_id, 0.5
    station_file = tmp_path / "station.yaml"
    station_file.write_text(yaml.safe_dump(doc))
    ports = {d["id"]: free_port() for d in doc["devices"]}
    key_path = tmp_path / "k.key"
    signing = write_new_key(key_path)
    seen: list[dict] = []

    def signed_json(payload: bytes) -> dict:
        envelope = open_station_envelope(payload)
        assert envelope.key_id == signing.key_id
        verify(envelope, signing.public_key)  # the will too: signed by the agent when it armed it
        return json.loads(envelope.body)

    watcher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="watcher", protocol=mqtt.MQTTv5)
    watcher.on_message = lambda c, u, m: seen.append(signed_json(m.payload))
    watcher.connect("127.0.0.1", mosquitto_server.port)
    watcher.subscribe(status_topic(station_id), qos=1)
    watcher.loop_start()
    sim = sim_process(station_file, tmp_path / "truth.jsonl", tmp_path / "sim.log", ports).start()
    agent = agent_process(
        station_file,
        key_path,
        f"127.0.0.1:{mosquitto_server.port}",
        tmp_path / "o.sqlite",
        tmp_path / "agent.log",
        ports,
    ).start()
    try:
        wait_until(lambda: any(s["state"] == "online" for s in seen), timeout=20, what="birth", process=agent)
        agent.kill()
        wait_until(lambda: seen[-1]["state"] == "offline", timeout=20, what="will after SIGKILL")
        births = [s for s in seen if s["state"] == "online" and "profiles_sha256" in s]
        assert births and births[0]["session"] == seen[-1]["session"]
        assert births[0]["devices"] == [{"id": "wq1", "profile": "demo-wastewater", "transport": "modbus_tcp"}]
        assert "planned" not in seen[-1]
    finally:
        watcher.loop_stop()
        sim.stop()
