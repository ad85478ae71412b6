"""Data-availability alerts on the real servers: readings through Mosquitto and the collector, hourly means
by the aggregator, then the monitor: a silent station, a device in error, a long calibration and hours
below the completeness rule open once each, close once when data come back, and reach MQTT on their
own retained topic (read with mosquitto_sub), apart from the pollution alerts."""

from __future__ import annotations

import subprocess
import time

import pytest

from analysis.aggregator import Aggregator
from analysis.availability import AvailabilityMonitor
from analysis.delivery import AlertDelivery
from analysis.settings import Settings, SettingsFile
from broker_bridge.alerts import AvailabilityAlert
from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.keys import write_new_key
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import alert_topic, availability_topic, data_topic
from collector.registry import add_station
from supervisor.process import wait_until
from tests.helpers import publish_all, require_tool, sql, unique_station, wait_for_count

M = 60_000_000_000
H = 60 * M


def reading(t: int, status: str = "00") -> Reading:
    return Reading(t, "an1", "PM10", 30.0 + (t // M) % 5, "ug/m3", status, "")


@pytest.mark.slow  # a collector, the aggregator and three polls of the monitor: ~15 s
def test_each_condition_opens_once_closes_once_and_reaches_its_own_topic(
    tmp_path, mosquitto_server, make_collector, warehouse
):
    mosquitto_sub = require_tool("mosquitto_sub", package="mosquitto-clients")
    registry = tmp_path / "registry.yaml"
    names = {k: unique_station(f"AV{k}") for k in ("silent", "error", "calib", "fine", "sparse")}
    keys = {}
    for sid in names.values():
        keys[sid] = write_new_key(tmp_path / f"{sid}.key")
        add_station(registry, sid, keys[sid].public_key, kind="ambient_air")
    collector = make_collector(mosquitto_server.port, registry, f"c-{names['fine']}")
    seqs = dict.fromkeys(names.values(), 0)

    def send(sid: str, readings: list[Reading]) -> None:
        seqs[sid] += 1
        body = BatchBody(sid, seqs[sid], time.time_ns(), tuple(readings), False)
        publish_all(mosquitto_server.port, data_topic(sid), [seal(body, keys[sid].key_id, keys[sid].private_key)])

    now = time.time_ns() // M * M
    send(names["silent"], [reading(now - k * M) for k in range(60, 29, -1)])  # nothing for the last 30 min
    send(names["error"], [reading(now - k * M, "02" if k <= 30 else "00") for k in range(40, 0, -1)])
    send(names["calib"], [reading(now - k * M, "01" if k <= 25 else "00") for k in range(40, 0, -1)])
    send(names["fine"], [reading(now - k * M) for k in range(40, 0, -1)])
    hour = now // H * H
    sparse = [reading(hour - h * H + m * M) for h in (3, 2, 1) for m in range(20)]  # 20 of 60: each hour invalid
    send(names["sparse"], sparse)
    total = 31 + 40 + 40 + 40 + 60
    stations = ", ".join(f"'{s}'" for s in names.values())
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station IN ({stations})", total)

    settings = Settings(
        SettingsFile.model_validate(
            {
                "availability": {"silent_after_s": 900, "device_error_after_s": 600, "calibration_after_s": 1200},
                "stations": {names["sparse"]: {"availability": {"silent_after_s": 3 * 3600}}},
            }
        )
    )
    aggregator = Aggregator(warehouse.pg_conninfo, warehouse.ilp_conf, settings, name=f"agg-{names['sparse']}")
    aggregator.start()
    wait_until(lambda: aggregator.poll_once().hours >= 3 or _hours(warehouse, names["sparse"]) >= 3, timeout=30)

    delivery = AlertDelivery(
        warehouse.pg_conninfo, warehouse.ilp_conf, broker=BrokerAddress("127.0.0.1", mosquitto_server.port)
    )
    monitor = AvailabilityMonitor(
        warehouse.pg_conninfo, warehouse.ilp_conf, settings, channels=delivery.channels, on_alerts=delivery.submit
    )
    monitor.start()
    mine = set(names.values())
    opened = [a for a in monitor.poll() if a.station in mine]
    got = {(a.station, a.condition, a.kind) for a in opened}
    assert got == {
        (names["silent"], "silent", "open"),
        (names["error"], "device_error", "open"),
        (names["calib"], "calibration_long", "open"),
        (names["sparse"], "incomplete", "open"),
    }
    by_condition = {a.condition: a for a in opened}
    assert by_condition["silent"].since_ns == now - 30 * M and by_condition["silent"].device == "*"
    assert by_condition["device_error"].since_ns == now - 30 * M  # the first 02 of the run
    assert by_condition["calibration_long"].since_ns == now - 25 * M
    assert by_condition["incomplete"].since_ns == hour - 2 * H  # the first invalid hour's END
    silent = by_condition["silent"]  # the minutes as the monitor saw them (it polls a little after `now`)
    assert silent.detail == f"no reading for {(silent.decided_ns - silent.since_ns) / 60e9:.0f} min (grace 15 min)"
    assert all(a.audience == "technician" for a in opened)
    assert [a for a in monitor.poll() if a.station in mine] == []  # nothing new: no second alert

    # Data come back for the silent station and the device in error.
    fresh = time.time_ns()
    send(names["silent"], [reading(fresh)])
    send(names["error"], [reading(fresh, "00")])
    wait_for_count(warehouse.pg_conninfo, f"SELECT count() FROM readings WHERE station IN ({stations})", total + 2)
    closed = [a for a in monitor.poll() if a.station in mine]
    assert {(a.station, a.condition, a.kind) for a in closed} == {
        (names["silent"], "silent", "close"),
        (names["error"], "device_error", "close"),
    }
    assert {a.at_ns for a in closed} == {fresh}  # closed by the reading that ended it
    states = dict(
        sql(
            warehouse.pg_conninfo,
            f"SELECT condition, state FROM availability_episodes WHERE station IN ({stations})"
            " LATEST ON ts PARTITION BY station, device, parameter, condition",
        )
    )
    assert states == {"silent": "closed", "device_error": "closed", "calibration_long": "open", "incomplete": "open"}
    rows = sql(
        warehouse.pg_conninfo,
        f"SELECT payload FROM alerts WHERE station IN ({stations}) AND audience = 'technician'",
    )
    assert sorted(AvailabilityAlert.parse(p.encode()).kind for (p,) in rows) == ["close"] * 2 + ["open"] * 4

    wait_until(lambda: (delivery.deliver_due() or True) and delivery.pending() == 0, timeout=20, what="delivered")
    retained = subprocess.run(
        [mosquitto_sub, "-p", str(mosquitto_server.port), "-t", availability_topic(names["silent"]), "-C", "1",
         "-W", "5", "-q", "1"],
        capture_output=True, timeout=15,
    )  # fmt: skip
    message = AvailabilityAlert.parse(retained.stdout.strip())
    assert (message.kind, message.condition, message.state) == ("close", "silent", "closed")
    pollution = subprocess.run(
        [mosquitto_sub, "-p", str(mosquitto_server.port), "-t", alert_topic(names["silent"]), "-C", "1", "-W", "2"],
        capture_output=True, timeout=15,
    )  # fmt: skip
    assert pollution.stdout == b""  # the pollution topic keeps its own retained message (none here)
    delivery.close()
    collector.stop()


def _hours(warehouse, sid: str) -> int:
    return sql(warehouse.pg_conninfo, "SELECT count() FROM hourly_means WHERE station = %s", (sid,))[0][0]
