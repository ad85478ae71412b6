"""Two collectors sharing the stream (a share group: the status topic is shared too): the one that did
not receive a station's birth learns its analyzer ranges from the warehouse, with the ledger refresh."""

from __future__ import annotations

import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker_bridge.envelope import BatchBody, Reading, seal
from broker_bridge.station_messages import (
    Birth,
    DeviceDescription,
    MeasuringRange,
    StationDescription,
    seal_station_message,
)
from broker_bridge.topics import data_topic, status_topic
from collector.registry import add_station
from supervisor.process import wait_until
from tests.helpers import publish_all, unique_station


def test_every_member_of_a_share_group_learns_a_birth_only_one_received(tmp_path, mosquitto_server, make_collector):
    station = unique_station("SHARED_RANGES")
    key = Ed25519PrivateKey.generate()
    registry = tmp_path / "registry.yaml"
    kid = add_station(registry, station, key.public_key())
    members = [
        make_collector(mosquitto_server.port, registry, f"c{i}-{station}", share_group="g", ledger_refresh_s=0.5)
        for i in (1, 2)
    ]
    description = StationDescription(
        "shared", "ambient_air", (DeviceDescription("a1", "vendor-x", "modbus_tcp"),), "0" * 64,
        (MeasuringRange("a1", "PM10", "ug/m3", 0.0, 800.0, "vendor-x"),),
    )  # fmt: skip
    birth = Birth(station, 3_000_001, time.time_ns(), description)
    publish_all(mosquitto_server.port, status_topic(station), [seal_station_message(birth, kid, key)])
    wanted = {(station, "a1", "PM10", "ug/m3"): (0.0, 800.0, "vendor-x")}
    seq = 0

    def both_know() -> bool:
        nonlocal seq  # data keeps both members flushing, and a settled flush refreshes from the ledger
        seq += 1
        now = time.time_ns()
        body = BatchBody(station, seq, now, (Reading(now, "a1", "PM10", 40.0, "ug/m3", "00"),))
        publish_all(mosquitto_server.port, data_topic(station), [seal(body, kid, key)])
        # Only this station's: the session's warehouse holds other tests' births, which every member seeds at start.
        return all(
            {k: v for k, v in dict(m.analyzer_ranges.current()).items() if k[0] == station} == wanted for m in members
        )

    wait_until(both_know, timeout=30, interval=0.3, what="both members know the birth's ranges")
