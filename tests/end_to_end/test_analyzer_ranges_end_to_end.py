"""Issue 15: the analyzer's measuring range (its profile's ``range:``) travels in the agent's signed birth
to the collector, which fails a value outside it (flag 4, the cause naming the range and the profile)
while the operator's range stays suspect (flag 3); after a collector restart the stored birth still
decides. Real simulator, agent, Mosquitto, collector and QuestDB."""

from __future__ import annotations

import json

import paho.mqtt.client as mqtt
import pytest

from broker_bridge.topics import status_topic
from cli.processes import collector_process
from firmware_sim.analyzer import read_truth
from supervisor.process import wait_until
from tests.helpers import sql
from tests.station_rig import SimulatorThread, Station

# PM10 on demo-ambient-air has range [0, 1000]. The operator's fail span is widened to 5000 so only the
# profile can fail 1200; the windowed checks are off so a forced value is judged by gross_range alone.
THRESHOLDS = """\
qc:
  parameters:
    PM10:
      ug/m3:
        gross_range: {fail: [-10, 5000], suspect: [0, 600]}
        spike: off
        rate_of_change: off
    "PM2,5":
      ug/m3: {spike: off, rate_of_change: off}
  consistency:
    - {lesser: "PM2,5", greater: PM10, enabled: false}
"""
ANALYZER_CAUSE = "gross_range: 1200.0 ug/m3 outside the analyzer range [0.0, 1000.0] of profile demo-ambient-air"
OPERATOR_CAUSE = "gross_range: 800.0 ug/m3 outside the operator range [0.0, 600.0]"


@pytest.fixture
def station(tmp_path, mosquitto_server, warehouse):
    station = Station(tmp_path, "demo_air_01.yaml", mosquitto_server.port, warehouse, poll_s=0.5)
    yield station
    station.stop_all()


def start_collector(station: Station, tmp_path, name: str):
    thresholds = tmp_path / "qc.yaml"
    thresholds.write_text(THRESHOLDS)
    w = station.warehouse
    collector = collector_process(
        station.registry, station.broker, f"127.0.0.1:{w.http_port}", f"127.0.0.1:{w.pg_port}",
        tmp_path / f"{name}.log", client_id=f"c-{station.id}",
    )  # fmt: skip
    collector.argv += ["--qc-thresholds", str(thresholds)]
    station.start(collector)
    wait_until(
        lambda: "mqtt_connected" in collector.log_path.read_text(), timeout=20, what="collector up", process=collector
    )
    return collector


def log_events(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def forget_retained_birth(station: Station) -> None:
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"clear-{station.id}", protocol=mqtt.MQTTv5)
    host, port = station.broker.split(":")
    client.connect(host, int(port))
    client.loop_start()
    try:
        client.publish(status_topic(station.id), b"", qos=1, retain=True).wait_for_publish(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


def polls(station: Station) -> int:
    return sum(1 for t in read_truth(station.truth) if t.get("kind") == "status")


def serve(sim: SimulatorThread, station: Station, raw: float | None, n: int = 2) -> None:
    sim.do(sim.sim.force_raw, "aqms1", "PM10", raw)
    target = polls(station) + n
    wait_until(lambda: polls(station) >= target, timeout=30, what=f"{n} polls of PM10 = {raw}")


def pm10_rows(station: Station) -> dict[float, set[tuple]]:
    served = [t for t in read_truth(station.truth) if t.get("kind") == "value"]
    assert station.wait_stored(len(served), timeout=60) == len(served)
    rows = sql(
        station.warehouse.pg_conninfo,
        "SELECT value, qc_flag, qc_check, qc_cause FROM readings WHERE station = %s AND parameter = 'PM10'",
        (station.id,),
    )
    by_value: dict[float, set[tuple]] = {}
    for value, flag, check, cause in rows:
        by_value.setdefault(value, set()).add((flag, check, cause))
    return by_value


def birth_seen(station: Station) -> bool:
    rows = sql(
        station.warehouse.pg_conninfo,
        "SELECT count() FROM station_events WHERE station = %s AND payload LIKE %s",
        (station.id, '%"ranges":%'),
    )
    return rows[0][0] > 0


def test_outside_the_analyzers_range_fails_and_outside_the_operators_is_suspect(tmp_path, station):
    start_collector(station, tmp_path, "collector")
    with SimulatorThread(station.file, station.truth, station.ports) as sim:
        agent = station.agent()
        wait_until(lambda: birth_seen(station), timeout=30, what="the birth with ranges stored")
        serve(sim, station, 1200.0)
        serve(sim, station, 800.0)
        serve(sim, station, None, 1)
        agent.stop(timeout=20)  # drained
    by_value = pm10_rows(station)
    assert by_value[1200.0] == {(4, "gross_range", ANALYZER_CAUSE)}
    assert by_value[800.0] == {(3, "gross_range", OPERATOR_CAUSE)}
    normal = [flags for value, flags in by_value.items() if value < 600]
    assert normal and all(flag == 1 for flags in normal for flag, _, _ in flags)


@pytest.mark.slow  # restarts the collector
def test_the_ranges_survive_a_collector_restart(tmp_path, station):
    first = start_collector(station, tmp_path, "collector-1")
    with SimulatorThread(station.file, station.truth, station.ports) as sim:
        agent = station.agent()
        wait_until(lambda: birth_seen(station), timeout=30, what="the birth with ranges stored")
        first.stop(timeout=20)
        forget_retained_birth(station)  # as hours later, when the retained message is a status: no birth to resend
        second = start_collector(station, tmp_path, "collector-2")
        seeded = [e for e in log_events(second.log_path) if e.get("event") == "analyzer_ranges_seeded"]
        # Read back from station_events: this station's 6 ranges, and those of other tests' stations.
        assert len(seeded) == 1 and seeded[0]["stations"] >= 1 and seeded[0]["ranges"] >= 6, seeded
        serve(sim, station, 1200.0)
        serve(sim, station, None, 1)
        agent.stop(timeout=20)
    assert pm10_rows(station)[1200.0] == {(4, "gross_range", ANALYZER_CAUSE)}
