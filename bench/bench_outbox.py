"""Outbox append rate and end-to-end backlog drain, medians of several runs.

    .venv/bin/python bench/bench_outbox.py [--runs 5] [--drain-runs 3] [--drain-readings 1000000]

1. Append: 2,000 concurrent pollers (a busy station, or 50 Hz polling) each
   append 20 readings at a time and wait until they are durable, through the
   group committer (200 ms window), until 1,000,000 readings are on disk;
   beside it, one transaction (one fsync) per poller call, and one per
   reading, so the ratio shows what group commit buys.
2. Drain: an outbox holding a backlog of N readings (taken "offline") is
   drained by the real publisher through a real Mosquitto to a real collector
   process into a real QuestDB; the clock runs from connect to the last row
   visible in QuestDB.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from broker_bridge.envelope import Reading
from broker_bridge.keys import write_new_key
from broker_bridge.mosquitto_server import MosquittoServer
from broker_bridge.session import BrokerAddress
from cli.logging_setup import configure_logging
from cli.processes import collector_process
from collector.registry import add_station
from edge_agent.group_commit import GroupCommitter
from edge_agent.outbox import Outbox
from edge_agent.publisher import BatchPublisher
from store.questdb_server import QuestDBServer
from store.schema import ensure_schema
from supervisor.process import wait_until

PARAMS = ("PM2,5", "PM10", "SO2", "NO2", "CO", "O3", "NOx", "O2", "Temp", "Flow")


def make_readings(n: int, start_ns: int, device: str = "dev") -> list[Reading]:
    return [
        Reading(start_ns + i * 1000, f"{device}{i % 5}", PARAMS[i % len(PARAMS)], 12.5 + i % 97, "ug/m3", "00", "")
        for i in range(n)
    ]


def append_group_commit(path: Path, total: int, pollers: int = 2000, per_call: int = 20) -> float:
    box = Outbox(path, "BENCH")
    committer = GroupCommitter(box, window_s=0.2)
    chunk = make_readings(per_call, time.time_ns())

    async def poller(calls: int) -> None:
        for _ in range(calls):
            await committer.append(chunk)

    async def all_pollers() -> None:
        await asyncio.gather(*(poller(total // pollers // per_call) for _ in range(pollers)))

    started = time.perf_counter()
    asyncio.run(all_pollers())
    elapsed = time.perf_counter() - started
    assert box.counts()["staged_readings"] == total
    box.close()
    print(
        f"  group commit run: {committer.commits} commits, "
        f"{total / committer.commits:,.0f} readings each, {elapsed:.2f} s"
    )
    return total / elapsed


def append_per_call(path: Path, total: int, per_call: int) -> float:
    box = Outbox(path, "BENCH")
    chunk = make_readings(per_call, time.time_ns())
    started = time.perf_counter()
    for _ in range(total // per_call):
        box.append(chunk)
    elapsed = time.perf_counter() - started
    box.close()
    return total / elapsed


def drain(work: Path, readings: int, questdb: QuestDBServer, mosquitto: MosquittoServer, run: int) -> float:
    station = f"BENCH_DRAIN_{run}"
    key = write_new_key(work / f"{station}.key")
    registry = work / "registry.yaml"
    add_station(registry, station, key.public_key)
    box = Outbox(work / f"{station}.sqlite", station)
    start = time.time_ns() - 3600 * 10**9
    for offset in range(0, readings, 100_000):
        box.append(make_readings(min(100_000, readings - offset), start + offset * 1000), historical=True)
    ep = questdb.endpoints
    collector = collector_process(
        registry,
        f"127.0.0.1:{mosquitto.port}",
        f"127.0.0.1:{ep.http_port}",
        f"127.0.0.1:{ep.pg_port}",
        work / f"collector-{run}.log",
        client_id=f"bench-collector-{run}",
    ).start()
    wait_until(lambda: "mqtt_connected" in (work / f"collector-{run}.log").read_text(), timeout=30, what="collector up")
    publisher = BatchPublisher(
        box, key, BrokerAddress("127.0.0.1", mosquitto.port), window=20, max_readings_per_batch=2000
    )
    conn = psycopg.connect(ep.pg_conninfo, autocommit=True)
    started = time.perf_counter()
    publisher.start()

    def stored() -> int:
        publisher.pump()
        return conn.execute("SELECT count() FROM readings WHERE station = %s", (station,)).fetchone()[0]

    wait_until(lambda: stored() >= readings, timeout=600, interval=0.02, what="backlog in QuestDB")
    elapsed = time.perf_counter() - started
    publisher.stop()
    collector.stop()
    box.close()
    conn.close()
    return elapsed


def main() -> None:
    configure_logging("warning")
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--append-readings", type=int, default=1_000_000)
    parser.add_argument("--drain-runs", type=int, default=3)
    parser.add_argument("--drain-readings", type=int, default=1_000_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="quantrac-bench-"))
    try:
        group, per_poll, per_reading = [], [], []
        for run in range(args.runs):
            group.append(append_group_commit(work / f"g{run}.sqlite", args.append_readings))
            per_poll.append(append_per_call(work / f"p{run}.sqlite", args.append_readings // 10, per_call=20))
            per_reading.append(append_per_call(work / f"r{run}.sqlite", 2_000, per_call=1))
        print(
            f"outbox append, group commit (2000 pollers x 20 readings, 200 ms window): "
            f"median {statistics.median(group):,.0f} readings/s over {args.runs} runs {sorted(round(g) for g in group)}"
        )
        print(f"outbox append, one commit per poller call of 20: median {statistics.median(per_poll):,.0f} readings/s")
        print(
            f"outbox append, one commit per reading:            median {statistics.median(per_reading):,.0f} readings/s"
        )
        print(
            f"group commit vs one commit per reading: {statistics.median(group) / statistics.median(per_reading):,.0f}x"
        )
        if args.drain_runs:
            with QuestDBServer(work / "questdb") as questdb, MosquittoServer(work / "mosquitto") as mosquitto:
                ensure_schema(questdb.endpoints.pg_conninfo)
                times = [drain(work, args.drain_readings, questdb, mosquitto, run) for run in range(args.drain_runs)]
            print(
                f"drain {args.drain_readings:,} backlog readings outbox -> Mosquitto -> collector -> QuestDB: "
                f"median {statistics.median(times):.1f} s over {len(times)} runs {[round(t, 1) for t in times]} "
                f"({args.drain_readings / statistics.median(times):,.0f} readings/s)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
