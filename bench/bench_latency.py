"""End-to-end latency, a reading taken -> queryable in QuestDB, at the national steady load and above it.

    .venv/bin/python bench/bench_latency.py                         # 2,000 stations, 1x and 2x, 60 s each
    .venv/bin/python bench/bench_latency.py --loads 1 --seconds 30  # a quicker look
    .venv/bin/python bench/bench_latency.py --collectors 2          # two collectors sharing the stream

Real QuestDB, Mosquitto and ``quantrac collector run`` processes. ``--stations`` stations (each its own
key and a 6-20 parameter profile, as in bench_collector.py) send live: one signed batch per poll, one
poll every ``1/load`` seconds per station, spread evenly over the second, from two publisher processes.
A reading's time is the moment its batch is built (what the agent stamps when it polls), so the
figure covers signing, the broker, the collector (admission, sequence, measurement controls, its
flush) and QuestDB's commit and WAL apply. Not covered: the agent's own outbox commit before it
publishes (about a millisecond, bench_outbox.py) and the network between a station and the broker.

A prober follows one station in fifty: every 100 ms it asks QuestDB for those stations' readings newer
than the last it saw; each new (station, ts) counts as queryable at the moment that query returned, so
the resolution is the 100 ms poll plus the query's own time (both included: the figures are upper
bounds). Printed per load: batches/s sent, p50 / p90 / p99 / max latency, the batches that were still
not visible when the run ended, and the cores the collector(s), QuestDB and Mosquitto used.
Target (issue 16): p99 under 2 s at the national steady load (2,000 stations, one poll a second).
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
import psycopg  # noqa: E402

from bench.bench_collector import CpuMeter, Station, connected_count, make_fleet  # noqa: E402
from broker_bridge.envelope import BatchBody, Reading, seal  # noqa: E402
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from broker_bridge.topics import data_topic  # noqa: E402
from cli.processes import collector_process  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402
from supervisor.process import free_port, wait_until  # noqa: E402

PROBE_EVERY = 50  # one station in fifty is followed by the prober
PROBE_INTERVAL_S = 0.1


def live_batch(st: Station, rng: random.Random) -> BatchBody:
    """One poll taken now: every reading stamped with this moment."""
    st.seq += 1
    now = time.time_ns()
    readings = tuple(
        Reading(now, st.device, sym, base + rng.gauss(0, noise), unit, "00", "") for sym, unit, base, noise in st.params
    )
    return BatchBody(st.id, st.seq, now, readings)


_FLEET: list[Station] = []  # set before forking the publishers (their keys do not pickle)


def _publish_live(args: tuple) -> tuple[int, float]:
    """A publisher process: its stations, one batch each per period, spread over the period."""
    port, first, step_of, period_s, until, seed = args
    stations = _FLEET[first::step_of]
    rng = random.Random(seed)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"latency-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    sent, late = 0, 0.0
    try:
        step = period_s / len(stations)
        next_at = time.monotonic()
        while next_at < until:
            for st in stations:
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                else:
                    late = max(late, -delay)
                body = live_batch(st, rng)
                client.publish(data_topic(st.id), seal(body, st.kid, st.key), qos=1)
                sent += 1
                next_at += step
        return sent, late
    finally:
        client.disconnect()
        client.loop_stop()


class Prober(threading.Thread):
    """Sees when each followed station's batches become queryable."""

    def __init__(self, conninfo: str, stations: list[str], since_ns: int) -> None:
        super().__init__(daemon=True)
        self.conninfo, self.stations, self.since_ns = conninfo, stations, since_ns
        self.seen: dict[tuple[str, int], int] = {}  # (station, ts) -> ns it was first queryable
        self.wal_behind: list[int] = []  # readings' WAL transactions committed but not yet applied, per poll
        self.stop = threading.Event()

    def run(self) -> None:
        last = dict.fromkeys(self.stations, self.since_ns)
        marks = ",".join(["%s"] * len(self.stations))
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            while not self.stop.is_set():
                floor = min(last.values())
                rows = conn.execute(
                    f"SELECT DISTINCT station, ts::long FROM readings WHERE station IN ({marks})"
                    " AND ts > cast(%s AS TIMESTAMP_NS)",
                    (*self.stations, floor),
                ).fetchall()
                now = time.time_ns()
                behind = conn.execute(
                    "SELECT sequencerTxn - writerTxn FROM wal_tables() WHERE name = 'readings'"
                ).fetchone()
                self.wal_behind.append(behind[0] if behind else 0)
                for station, ts in rows:
                    last[station] = max(last[station], ts)
                    self.seen.setdefault((station, ts), now)
                self.stop.wait(PROBE_INTERVAL_S)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def run_load(
    load: float, stations: list[Station], broker_port: int, pg: str, seconds: float, warmup: float, seed: int
) -> dict:
    period = 1.0 / load
    followed = [st.id for st in stations[::PROBE_EVERY]]
    start_ns = time.time_ns()
    prober = Prober(pg, followed, start_ns + int(warmup * 1e9))
    prober.start()
    until = time.monotonic() + warmup + seconds
    global _FLEET
    _FLEET = stations
    publishers = 2
    with multiprocessing.get_context("fork").Pool(publishers) as pool:
        results = pool.map(
            _publish_live, [(broker_port, n, publishers, period, until, seed + n) for n in range(publishers)]
        )
    # The batches built in the measured window of the followed stations: their reading times.
    sent_total = sum(r[0] for r in results)
    time.sleep(5)  # the last batches' commit
    prober.stop.set()
    prober.join(10)
    measured_from = start_ns + int(warmup * 1e9)
    measured_to = start_ns + int((warmup + seconds) * 1e9)
    latencies = [(seen - ts) / 1e9 for (_, ts), seen in prober.seen.items() if measured_from < ts <= measured_to]
    expected = int(len(followed) * seconds * load)
    return {
        "load": load,
        "batches_per_s": sent_total / (warmup + seconds),
        "publisher_late_s": max(r[1] for r in results),
        "samples": len(latencies),
        "expected": expected,
        "p50": percentile(latencies, 0.50) if latencies else float("nan"),
        "p90": percentile(latencies, 0.90) if latencies else float("nan"),
        "p99": percentile(latencies, 0.99) if latencies else float("nan"),
        "max": max(latencies) if latencies else float("nan"),
        "wal_behind_median": percentile(prober.wal_behind, 0.5) if prober.wal_behind else 0,
        "wal_behind_max": max(prober.wal_behind, default=0),
    }


def flush_figures(metrics_ports: list[int]) -> tuple[int, float, float]:
    """Flushes, their mean seconds (check + write + ack) and the largest last write lag, from /metrics."""
    count, total, lag = 0, 0.0, 0.0
    for port in metrics_ports:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        for line in text.splitlines():
            if line.startswith("quantrac_flush_seconds_count"):
                count += int(float(line.split()[-1]))
            elif line.startswith("quantrac_flush_seconds_sum"):
                total += float(line.split()[-1])
            elif line.startswith("quantrac_write_lag_seconds"):
                lag = max(lag, float(line.split()[-1]))
    return count, total, lag


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--loads", default="1,2", help="polls per second per station, comma-separated (1 = national)")
    ap.add_argument("--seconds", type=float, default=60.0, help="measured seconds per load")
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds sent before measuring, per load")
    ap.add_argument("--collectors", type=int, default=1, help="collector processes; more share the stream")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server and collector logs)")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-latency-"))
    qdb = QuestDBServer(tmp / "questdb")
    broker = MosquittoServer(tmp / "mosquitto")
    collectors = []
    try:
        qdb.start()
        broker.start()
        pg = qdb.endpoints.pg_conninfo
        ensure_schema(pg)
        registry = tmp / "registry.yaml"
        stations = make_fleet(args.stations, registry, rng)
        share = "latency" if args.collectors > 1 else None
        logs = [tmp / f"collector-{n}.log" for n in range(args.collectors)]
        metrics_ports = [free_port() for _ in logs]
        for n, log in enumerate(logs):
            collectors.append(
                collector_process(
                    registry,
                    f"127.0.0.1:{broker.port}",
                    f"127.0.0.1:{qdb.endpoints.http_port}",
                    f"127.0.0.1:{qdb.endpoints.pg_port}",
                    log,
                    client_id=f"latency-collector-{n}",
                    share_group=share,
                    metrics_port=metrics_ports[n],
                ).start()
            )
        for log, process in zip(logs, collectors):
            wait_until(lambda log=log: connected_count(log) >= 1, timeout=90, what="collector connected",
                       process=process)  # fmt: skip
        time.sleep(1.0)
        print(
            f"{len(stations):,} stations ({sum(len(s.params) for s in stations) / len(stations):.1f} readings a poll), "
            f"{args.collectors} collector process(es); {args.seconds:.0f} s measured per load after "
            f"{args.warmup:.0f} s of warm-up; one station in {PROBE_EVERY} followed every "
            f"{PROBE_INTERVAL_S * 1000:.0f} ms",
            flush=True,
        )
        verdicts = []
        for load in (float(x) for x in args.loads.split(",")):
            meter = CpuMeter(
                {
                    "collector": [p.pid for p in collectors],
                    "questdb": [qdb.pid],
                    "mosquitto": [broker.pid],
                }
            )
            flushes_before, flush_s_before, _ = flush_figures(metrics_ports)
            r = run_load(load, stations, broker.port, pg, args.seconds, args.warmup, args.seed)
            cpu = meter.report()
            flushes, flush_s, lag = flush_figures(metrics_ports)
            flushes, flush_s = flushes - flushes_before, flush_s - flush_s_before
            missing = r["expected"] - r["samples"]
            print(
                f"  load {load:g}x ({r['batches_per_s']:,.0f} batches/s sent; publishers at most "
                f"{r['publisher_late_s'] * 1000:.0f} ms behind): latency p50 {r['p50']:.2f} s, p90 {r['p90']:.2f} s, "
                f"p99 {r['p99']:.2f} s, max {r['max']:.2f} s over {r['samples']:,} followed batches"
                f" ({max(missing, 0):,} not seen of ~{r['expected']:,}); CPU: {cpu}; {flushes} flushes of "
                f"{flush_s / max(flushes, 1):.2f} s mean (last write lag {lag:.2f} s); readings' WAL behind by "
                f"{r['wal_behind_median']} transactions (median poll), {r['wal_behind_max']} at most",
                flush=True,
            )
            if load == 1.0:
                verdicts.append(f"p99 under 2 s at the national steady load: {'MET' if r['p99'] < 2.0 else 'NOT MET'}")
            time.sleep(3)
        for line in verdicts:
            print(f"target: {line}")
        return 0
    finally:
        for process in collectors:
            process.stop(timeout=30)
        broker.stop()
        qdb.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
