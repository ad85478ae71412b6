"""The TT10 sink SIGKILLed mid-stream and restarted: every file handed over reaches QuestDB exactly once.

A subprocess runs the sink (tests/broker_bridge/tt10/ingest_feeder.py) and feeds it generated files
of several stations; it is killed twice while feeding, publishing and confirming, and restarted on the
same directory. The audit: every reading of every file in QuestDB with its value, every file in
exactly one batch (the warehouse's batch ledger: one batch per file, no file sealed twice), no rejects.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from broker_bridge.keys import write_new_key
from collector.registry import add_station, bind_bridge
from supervisor.process import ManagedProcess, wait_until
from tests.broker_bridge.tt10.ingest_feeder import PARAMETERS, files, station_ids
from tests.helpers import sql, wait_for_count

STATIONS, CYCLES = 5, 24


@pytest.mark.slow  # two SIGKILLs and restarts of a subprocess, about 35 s
def test_sink_killed_mid_stream_loses_and_duplicates_nothing(tmp_path: Path, mosquitto_server, make_collector):
    prefix = f"TTK{uuid.uuid4().hex[:6]}"
    root = tmp_path / "bridge"
    root.mkdir()
    key = write_new_key(root / "bridge.key")  # the feeder loads it
    registry = tmp_path / "registry.yaml"
    stations = station_ids(prefix, STATIONS)
    for station in stations:
        add_station(registry, station, write_new_key(tmp_path / f"{station}.key").public_key)
    bind_bridge(registry, "tt10-kill", key.public_key, stations)
    collector = make_collector(mosquitto_server.port, registry, f"collector-{prefix}")
    base_ns = (time.time_ns() // (300 * 10**9) - CYCLES) * 300 * 10**9
    feeder_args = (root, mosquitto_server.port, base_ns, prefix, STATIONS, CYCLES)
    argv = [sys.executable, "-m", "tests.broker_bridge.tt10.ingest_feeder", *map(str, feeder_args)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    feeder = ManagedProcess(argv, log_path=tmp_path / "feeder.log", env=env, name="tt10-feeder")
    log = root / "taken.log"
    total = STATIONS * CYCLES

    def taken() -> int:
        return len(log.read_text().split()) if log.exists() else 0

    for kill_after in (total // 3, 2 * total // 3):
        feeder.start()
        wait_until(lambda n=kill_after: taken() >= n or None, timeout=60, what=f"{kill_after} files taken")
        assert feeder.kill() == -9
    feeder.start()
    try:
        wait_until(lambda: taken() >= total or None, timeout=90, what="every file taken")
        pg = collector.config.pg_conninfo
        expected = {
            (station, ts_of(data), parameter): value
            for station, _, data in files(base_ns, prefix, STATIONS, CYCLES)
            for parameter, value in parse(data)
        }
        in_list = ", ".join(f"'{s}'" for s in stations)
        wait_for_count(pg, f"SELECT count() FROM readings WHERE station IN ({in_list})", len(expected), timeout=90)
        rows = sql(pg, f"SELECT station, cast(ts AS LONG), parameter, value, source FROM readings"
                       f" WHERE station IN ({in_list})")  # fmt: skip
        assert len(rows) == len(expected) == total * len(PARAMETERS)
        assert {(s, ts, p): v for s, ts, p, v, _ in rows} == expected
        assert {r[4] for r in rows} == {"tt10"}
        batches = sql(pg, f"SELECT station, count(), sum(readings) FROM batches WHERE station IN ({in_list})"
                          " GROUP BY station ORDER BY station")  # fmt: skip
        assert batches == [(s, CYCLES, CYCLES * len(PARAMETERS)) for s in stations]  # each file sealed once
        assert sql(pg, f"SELECT count() FROM rejects WHERE claimed_station IN ({in_list})") == [(0,)]
    finally:
        feeder.kill()


def parse(data: bytes) -> list[tuple[str, float]]:
    return [(line.split("\t")[0], float(line.split("\t")[1])) for line in data.decode().splitlines()]


def ts_of(data: bytes) -> int:
    from broker_bridge.tt10 import stamp_to_utc_ns

    return stamp_to_utc_ns(data.decode().split("\t")[3])
