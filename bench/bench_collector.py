"""Collector throughput: Mosquitto -> real `quantrac collector run` -> committed rows in QuestDB,
measured side by side with raw ILP ingestion of the same readings into the same QuestDB.

    .venv/bin/python bench/bench_collector.py                       # 1,000 stations, 3 rounds
    .venv/bin/python bench/bench_collector.py --stations 2000 --polls 20 --runs 5
    .venv/bin/python bench/bench_collector.py --collectors 2                  # two processes sharing the stream
    .venv/bin/python bench/bench_collector.py --cycles 5 --polls 6            # batches of 5 polls (~65 readings)
    .venv/bin/python bench/bench_collector.py --cycles 20 --polls 4 --collectors 2   # the issue's target case
    .venv/bin/python bench/bench_collector.py --profile /tmp/collector.prof   # + one profiled round, in-process
    .venv/bin/python bench/bench_collector.py --receipts compare              # receipts' cost, off and on side by side

What is measured, and why this way:

* Every station is a real registered station with its own Ed25519 key; each
  batch is one station's poll (6-20 parameters, its own profile; a few
  missing values and calibrations), signed in advance so signing costs
  nothing inside the measured window.
* The backlog is put into the collector's persistent MQTT session while the
  collector process is frozen (SIGSTOP, after it connected and subscribed);
  then the clock starts and the process is thawed (SIGCONT). So the
  publishers never compete with the collector for the two cores, the
  collector's start-up (imports, schema, ledger seed) is not counted, and
  the publishers cannot be the bottleneck: the collector drains a queue that
  is already full. Pre-publishing uses several publisher processes (paho,
  QoS 1, every PUBACK awaited) only to make the set-up shorter.
* The clock stops when ``SELECT count() FROM readings`` shows every reading
  and QuestDB applied every WAL transaction: rows that queries can see, not
  just rows that reached the WAL.
* Raw ILP: the same readings (same table, same symbols and columns, same
  ``ts`` keys after a TRUNCATE) written straight with ``questdb.Sender`` from
  this process, both ways the client offers: a ``row()`` call per reading,
  and a pandas DataFrame per transaction (the client's columnar path, which
  the collector uses too); transactions of up to ~200,000 rows / 32 MiB, the
  clock stopping the same way. The ratio is taken against the faster of the
  two in each round: the ceiling one Python process with the client reaches
  on this machine; the ratio says what the collector's checks, MQTT and
  acknowledgements cost.
* Rounds alternate (collector, raw, collector, raw, ...) and the medians are
  printed with their ratio, so both numbers come from the same machine state.
* Each phase also prints how many cores each process kept busy (from
  /proc/<pid>/stat): the machine has two, shared by QuestDB, Mosquitto and
  the collector. (QuestDB's figure includes its workers' spin-waiting.)
  Waiting for the rows polls one connection every 100 ms: a new connection
  every 50 ms alone kept QuestDB 0.7 cores busy.

``--receipts compare`` runs every round twice, the collector without a key and with one (it
then signs and publishes a retained receipt per station after each commit), in alternating order,
restarting the collector process between them with the same client id; it prints both medians and
their ratio. The agent's side is measured from what the agent really receives: the receipts
published in the "on" rounds are recorded (a subscriber on ``quantrac/v1/+/receipt``), then
replayed for a sample of stations into a real agent outbox holding those stations' batches,
through the agent's own code (``SignedReceipt.parse(...).verified(...)`` and
``Outbox.mark_receipted``); it prints receipts per batch and the agent's CPU time per batch.

``--py-spy FILE`` samples the first collector process with py-spy during the first round (it runs at
full speed: py-spy reads its memory without stopping it) and prints, per thread, where the samples
were, waits included; FILE keeps the raw stacks (flamegraph.pl takes them as they are).

``--profile FILE`` adds one round with the Collector running in this process
under cProfile (every thread: the paho network thread and the flush loop) and
prints the top functions; FILE receives the combined pstats data.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import multiprocessing
import os
import pstats
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402
import pandas as pd  # noqa: E402
import psycopg  # noqa: E402
import yaml  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from questdb import Sender, TimestampNanos  # noqa: E402

from bench import py_spy  # noqa: E402
from broker_bridge.envelope import BatchBody, Reading, seal, verifier  # noqa: E402
from broker_bridge.keys import (  # noqa: E402
    key_id,
    public_key_b64,
    write_new_key,  # noqa: E402
)
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from broker_bridge.receipts import SignedReceipt  # noqa: E402
from broker_bridge.topics import RECEIPT_SUFFIX, data_topic  # noqa: E402
from cli.processes import collector_process  # noqa: E402
from edge_agent.outbox import Outbox  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402
from supervisor.process import wait_until  # noqa: E402

# symbol, unit, base, noise: the regulation's parameters across air, stack and water stations
PARAMS = [
    ("PM2,5", "ug/m3", 40.0, 4.0), ("PM10", "ug/m3", 65.0, 6.0), ("SO2", "ug/m3", 15.0, 2.0),
    ("NO2", "ug/m3", 35.0, 4.0), ("NO", "ug/m3", 20.0, 3.0), ("NOx", "ug/m3", 70.0, 5.0),
    ("CO", "ug/m3", 1500.0, 150.0), ("O3", "ug/m3", 60.0, 5.0), ("Temp", "oC", 29.0, 0.2),
    ("RH", "%", 70.0, 1.0), ("pH", "-", 7.2, 0.05), ("COD", "mg/L", 45.0, 3.0),
    ("TSS", "mg/L", 25.0, 2.0), ("NH4", "mg/L", 3.5, 0.3), ("TN", "mg/L", 12.0, 0.5),
    ("Flow", "m3/h", 38.0, 2.0), ("O2", "%", 12.0, 0.3), ("HCl", "mg/Nm3", 5.0, 0.5),
    ("HF", "mg/Nm3", 1.0, 0.1), ("Pressure", "kPa", 101.3, 0.2),
]  # fmt: skip
POLL_NS = 60 * 10**9


@dataclass
class Station:
    id: str
    key: Ed25519PrivateKey
    kid: str
    device: str
    params: list[tuple[str, str, float, float]]
    seq: int = 0
    clock_ns: int = 0


def make_fleet(n: int, registry: Path, rng: random.Random) -> list[Station]:
    """``n`` stations, each with its own key and a 6-20 parameter profile, written into one registry file."""
    stations, doc = [], {"stations": {}}
    start = time.time_ns() - 2 * 86_400 * 10**9
    for i in range(n):
        key = Ed25519PrivateKey.generate()
        st = Station(
            id=f"BENCH_{i:05d}",
            key=key,
            kid=key_id(key.public_key()),
            device=rng.choice(["aqms1", "stack1", "ww1", "cems1"]),
            params=rng.sample(PARAMS, rng.randint(6, 20)),
            clock_ns=start + rng.randrange(POLL_NS),
        )
        stations.append(st)
        doc["stations"][st.id] = {
            "enabled": True,
            "keys": [{"kid": st.kid, "public_key": public_key_b64(key.public_key()), "state": "active"}],
        }
    # Written in one go (not `add_station` per station): 1,000 re-parses of a growing file is set-up time.
    registry.write_text(yaml.safe_dump(doc))
    return stations


def poll_batch(st: Station, rng: random.Random, cycles: int = 1) -> BatchBody:
    """One batch: ``cycles`` poll cycles of the station (1: one poll; more: a station batching several polls,
    or the outbox's backlog lane after an outage)."""
    st.seq += 1
    readings = []
    for _ in range(cycles):
        st.clock_ns += POLL_NS
        for sym, unit, base, noise in st.params:
            r = rng.random()
            if r < 0.005:
                readings.append(Reading(st.clock_ns, st.device, sym, None, unit, "02", "no reply: timeout after 1.0 s"))
            elif r < 0.01:
                readings.append(Reading(st.clock_ns, st.device, sym, base * 0.8, unit, "01", "zero calibration"))
            else:
                readings.append(Reading(st.clock_ns, st.device, sym, base + rng.gauss(0, noise), unit, "00", ""))
    return BatchBody(st.id, st.seq, st.clock_ns + 2 * 10**9, tuple(readings))


def make_backlog(
    stations: list[Station], polls: int, rng: random.Random, cycles: int = 1
) -> tuple[list[tuple[str, bytes]], list[BatchBody]]:
    """``polls`` batches per station, in the order stations would send them (round by round)."""
    messages, bodies = [], []
    for _ in range(polls):
        for st in stations:
            body = poll_batch(st, rng, cycles)
            bodies.append(body)
            messages.append((data_topic(st.id), seal(body, st.kid, st.key)))
    return messages, bodies


# -- publishing ---------------------------------------------------------------------------------
_TO_PUBLISH: list[tuple[str, bytes]] = []  # set before forking the publisher processes


def _publish_slice(args: tuple[int, int, int]) -> int:
    port, start, step = args
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-pub-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
    )
    client.max_inflight_messages_set(1000)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=1) for topic, payload in _TO_PUBLISH[start::step]]
        for info in infos:
            info.wait_for_publish(timeout=120)
            if not info.is_published():
                raise RuntimeError("the broker did not acknowledge a publish within 120 s")
        return len(infos)
    finally:
        client.disconnect()
        client.loop_stop()


def publish(port: int, messages: list[tuple[str, bytes]], processes: int) -> float:
    """Publish at QoS 1 from several processes; return once the broker acknowledged every message."""
    global _TO_PUBLISH
    _TO_PUBLISH = messages
    t0 = time.perf_counter()
    # fork: the children see the pre-signed messages without pickling them.
    with multiprocessing.get_context("fork").Pool(processes) as pool:
        sent = sum(pool.map(_publish_slice, [(port, i, processes) for i in range(processes)]))
    assert sent == len(messages)
    return time.perf_counter() - t0


# -- QuestDB side --------------------------------------------------------------------------------
def sql(conninfo: str, query: str) -> list[tuple]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cur = conn.execute(query)
        return cur.fetchall() if cur.description is not None else []


def visible(conn: psycopg.Connection, expected: int) -> bool:
    if conn.execute("SELECT count() FROM readings").fetchone()[0] < expected:
        return False
    return conn.execute("SELECT count() FROM wal_tables() WHERE writerTxn < sequencerTxn").fetchone()[0] == 0


def wait_visible(conninfo: str, expected: int, timeout: float) -> float:
    """Poll until ``expected`` readings are visible; return the monotonic time it first held.

    One connection, a query every 100 ms: a new connection every 50 ms kept QuestDB's
    workers busy enough to take 0.7 of the machine's 2 cores from what is measured.
    """
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while True:
            if visible(conn, expected):
                return time.monotonic()
            if time.monotonic() > deadline:
                got = conn.execute("SELECT count() FROM readings").fetchone()[0]
                raise RuntimeError(f"only {got} of {expected} readings visible after {timeout:.0f} s")
            time.sleep(0.1)


def truncate(conninfo: str) -> None:
    for table in ("readings", "batches", "sequence_gaps"):
        sql(conninfo, f"TRUNCATE TABLE {table}")
    wait_visible(conninfo, 0, timeout=60)
    wait_until(lambda: sql(conninfo, "SELECT count() FROM readings")[0][0] == 0, timeout=60, what="empty readings")


RAW_FLUSH_BYTES = 32 * 1024 * 1024  # well below QuestDB's 100 MiB request limit, about what a collector flush sends


def raw_ilp_rows(
    ilp_conf: str, bodies: list[BatchBody], kids: dict[str, str], rows_per_flush: int, qc_flag: bool
) -> None:
    """The same rows the collector writes (symbols, columns, designated ts), straight over ILP/HTTP.

    One ``row()`` call per reading.
    """
    received = time.time_ns()
    with Sender.from_conf(ilp_conf) as sender:
        buffer, rows = sender.new_buffer(), 0
        for body in bodies:
            kid = kids[body.station]
            for r in body.readings:
                columns = {
                    "cause": r.cause,
                    "seq": body.seq,
                    "historical": False,
                    "received_at": TimestampNanos(received),
                }
                if qc_flag:
                    columns["qc_flag"] = 1
                if r.value is not None:
                    columns["value"] = r.value
                buffer.row(
                    "readings",
                    symbols={
                        "station": body.station,
                        "device": r.device,
                        "parameter": r.parameter,
                        "unit": r.unit,
                        "status": r.status,
                        "key_id": kid,
                    },
                    columns=columns,
                    at=TimestampNanos(r.ts_ns),
                )
                rows += 1
            if rows >= rows_per_flush or len(buffer) >= RAW_FLUSH_BYTES:
                sender.flush(buffer, transactional=True)
                rows = 0
        if rows:
            sender.flush(buffer, transactional=True)


def raw_ilp_frames(
    ilp_conf: str, bodies: list[BatchBody], kids: dict[str, str], rows_per_flush: int, qc_flag: bool
) -> None:
    """The same rows through the client's columnar path: one pandas DataFrame per transaction."""
    received = time.time_ns()

    def text(values: list) -> np.ndarray:
        column = np.empty(len(values), dtype=object)
        column[:] = values
        return column

    def frame(chunk: list[BatchBody]) -> pd.DataFrame:
        readings = [(b, r) for b in chunk for r in b.readings]
        n = len(readings)
        columns = {
            "station": text([b.station for b, _ in readings]),
            "device": text([r.device for _, r in readings]),
            "parameter": text([r.parameter for _, r in readings]),
            "unit": text([r.unit for _, r in readings]),
            "status": text([r.status for _, r in readings]),
            "key_id": text([kids[b.station] for b, _ in readings]),
            "cause": text([r.cause for _, r in readings]),
            "seq": np.array([b.seq for b, _ in readings], dtype=np.int64),
            "historical": np.zeros(n, dtype=bool),
            "received_at": np.full(n, received, dtype=np.int64).view("datetime64[ns]"),
            "value": np.array([r.value for _, r in readings], dtype=np.float64),
        }
        if qc_flag:
            columns["qc_flag"] = np.ones(n, dtype=np.int8)
        columns["ts"] = np.array([r.ts_ns for _, r in readings], dtype=np.int64).view("datetime64[ns]")
        return pd.DataFrame({k: pd.Series(v, dtype=v.dtype, copy=False) for k, v in columns.items()}, copy=False)

    per_batch = max(1, sum(len(b.readings) for b in bodies) // len(bodies))
    step = max(1, min(rows_per_flush, 200_000) // per_batch)  # 200,000 rows: ~30 MB of ILP, like RAW_FLUSH_BYTES
    with Sender.from_conf(ilp_conf) as sender:
        for at in range(0, len(bodies), step):
            buffer = sender.new_buffer()
            buffer.dataframe(
                frame(bodies[at : at + step]),
                table_name="readings",
                symbols=["station", "device", "parameter", "unit", "status", "key_id"],
                at="ts",
            )
            sender.flush(buffer, transactional=True)


# -- the collector -------------------------------------------------------------------------------
def connected_count(log: Path) -> int:
    return log.read_text(errors="replace").count('"event": "mqtt_connected"')


def profile_round(
    args,
    registry: Path,
    broker_port: int,
    qdb: QuestDBServer,
    backlog,
    expected: int,
    client_id: str,
    receipt_key=None,
) -> None:
    """One round with the Collector in this process, every thread under cProfile; prints the top functions."""
    from broker_bridge.session import BrokerAddress
    from collector.service import Collector, CollectorConfig

    profiles: list[tuple[str, cProfile.Profile]] = []
    original_run = threading.Thread.run

    def profiled_run(self):  # each new thread (paho's network loop, the flush loop) gets its own profile
        prof = cProfile.Profile()
        profiles.append((self.name, prof))
        prof.enable()
        try:
            original_run(self)
        finally:
            prof.disable()

    publish(broker_port, backlog, args.publishers)  # the session exists already: the broker queues it all
    threading.Thread.run = profiled_run
    try:
        collector = Collector(
            CollectorConfig(
                broker=BrokerAddress("127.0.0.1", broker_port),
                client_id=client_id,
                registry_path=str(registry),
                ilp_conf=qdb.endpoints.ilp_conf,
                pg_conninfo=qdb.endpoints.pg_conninfo,
                receipt_key=receipt_key,
            )
        )
        stop = threading.Event()
        t0 = time.monotonic()
        collector.start()
        flusher = threading.Thread(target=collector.run, args=(stop,), name="flush-loop")
        flusher.start()
        t1 = wait_visible(qdb.endpoints.pg_conninfo, expected, timeout=600)
        stop.set()
        flusher.join(30)
        collector.stop()
    finally:
        threading.Thread.run = original_run
    print(
        f"\nprofiled round (in-process, cProfile on): {expected:,} readings in {t1 - t0:.2f} s "
        f"= {expected / (t1 - t0):,.0f} readings/s"
    )
    combined = None
    for name, prof in profiles:
        stats = pstats.Stats(prof)
        total = sum(v[2] for v in stats.stats.values())  # tottime over all functions = the thread's busy time
        print(f"  thread {name!r}: {total:.2f} s inside profiled functions (wall time, waits included)")
        combined = stats if combined is None else combined.add(prof)
    combined.dump_stats(str(args.profile))
    for order in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(str(args.profile), stream=out).sort_stats(order).print_stats(25)
        text = out.getvalue()
        print(f"\n--- top 25 by {order} (all threads) ---")
        print(text[text.find("   ncalls") :].rstrip())


def cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of a process (this one when ``pid`` is None), all its threads."""
    if pid is None:
        t = os.times()
        return t.user + t.system
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Cores each process kept busy over a measured phase: where the two cores went."""

    def __init__(self, pids: dict[str, list[int | None]]) -> None:
        self.pids = pids
        self.start = {name: sum(cpu_seconds(p) for p in ps) for name, ps in pids.items()}
        self.t0 = time.monotonic()

    def seconds(self, name: str) -> float:
        """CPU seconds the named processes used since the meter started."""
        return sum(cpu_seconds(p) for p in self.pids[name]) - self.start[name]

    def report(self) -> str:
        wall = time.monotonic() - self.t0
        used = {name: (sum(cpu_seconds(p) for p in ps) - self.start[name]) / wall for name, ps in self.pids.items()}
        return ", ".join(f"{name} {cores:.2f}" for name, cores in used.items()) + " cores"


class ReceiptRecorder:
    """Every receipt the collector publishes while ``recording``: what the stations' agents receive."""

    def __init__(self, port: int) -> None:
        self.recording = False
        self.payloads: dict[str, list[bytes]] = {}
        self._client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-receipts-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", port)
        self._client.subscribe(f"quantrac/v1/+/{RECEIPT_SUFFIX}", qos=1)
        self._client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        if self.recording and not message.retain:
            self.payloads.setdefault(message.topic.split("/")[2], []).append(bytes(message.payload))

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def agent_receipt_cost(
    recorder: ReceiptRecorder | None, batches: list[tuple[str, bytes]], collector_key, tmp: Path, rng: random.Random
) -> str:
    """The agent's CPU for the receipts it received in the last "on" round, through the agent's own code."""
    if recorder is None or not recorder.payloads:
        return "agent: no receipt was recorded"
    recorder.stop()
    by_station: dict[str, list[bytes]] = {}
    for topic, payload in batches:
        by_station.setdefault(topic.split("/")[2], []).append(payload)
    sample = rng.sample(sorted(recorder.payloads), min(50, len(recorder.payloads)))
    keys = {collector_key.key_id: verifier(collector_key.public_key)}
    receipts = sent = uncovered = 0
    spent = 0.0
    for station in sample:
        outbox = Outbox(tmp / "agent-outboxes" / f"{station}.sqlite", station)
        kept = outbox.keep_sealed(by_station[station])
        outbox.mark_acked([b.seq for b in kept])
        t0 = time.process_time()
        for payload in recorder.payloads[station]:
            receipt = SignedReceipt.parse(payload).verified(keys)
            outbox.mark_receipted(receipt.watermark, receipt.ranges)
        spent += time.process_time() - t0
        uncovered += outbox.receipt_counts()["unreceipted_batches"]
        receipts += len(recorder.payloads[station])
        sent += len(kept)
        outbox.close()
    return (
        f"agent ({len(sample)} stations' receipts replayed into real outboxes): {receipts / sent:.2f} receipts "
        f"per batch sent, {spent / receipts * 1e6:.0f} us CPU per receipt (verify + outbox commit), "
        f"{spent / sent * 1e6:.0f} us per batch sent; at one batch a minute that is "
        f"{spent / sent / 60:.4%} of one core ({uncovered} of {sent} batches not yet covered when recording stopped)"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--polls", type=int, default=30, help="batches per station per round")
    ap.add_argument(
        "--cycles", type=int, default=1, help="poll cycles per batch (1: a batch is one poll, 6-20 readings)"
    )
    ap.add_argument("--runs", type=int, default=3, help="rounds of each kind (collector, raw ILP), alternating")
    ap.add_argument(
        "--collectors", type=int, default=1, help="collector processes; more than one share the stream (--share-group)"
    )
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes for pre-publishing")
    ap.add_argument(
        "--py-spy", type=Path, default=None, help="sample the collector with py-spy in round 1; raw stacks file"
    )
    ap.add_argument("--profile", type=Path, default=None, help="also run one profiled round in-process; pstats file")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, collector log)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--receipts",
        choices=("off", "on", "compare"),
        default="off",
        help="give the collector a key (--key) so it signs and publishes receipts; compare: both, side by side",
    )
    args = ap.parse_args()

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-collector-"))
    qdb = QuestDBServer(tmp / "questdb")
    broker = MosquittoServer(tmp / "mosquitto")
    collectors: list = []
    try:
        qdb.start()
        broker.start()
        pg = qdb.endpoints.pg_conninfo
        ensure_schema(pg)
        # The collector writes the measurement-control flag too: the raw rows carry it when the schema has it.
        qc_flag = bool(sql(pg, "SELECT \"column\" FROM table_columns('readings') WHERE \"column\" = 'qc_flag'"))
        registry = tmp / "registry.yaml"
        stations = make_fleet(args.stations, registry, rng)
        kids = {st.id: st.kid for st in stations}
        client_id = "bench-collector"
        share = "bench" if args.collectors > 1 else None
        logs = [tmp / f"collector-{n}.log" for n in range(args.collectors)]
        receipt_key = tmp / "collector.key"
        collector_key = write_new_key(receipt_key)
        variants = {"off": [False], "on": [True], "compare": [False, True]}[args.receipts]

        def start_collectors(with_key: bool) -> list:
            started = []
            for n, log in enumerate(logs):
                started.append(
                    collector_process(
                        registry,
                        f"127.0.0.1:{broker.port}",
                        f"127.0.0.1:{qdb.endpoints.http_port}",
                        f"127.0.0.1:{qdb.endpoints.pg_port}",
                        log,
                        client_id=f"{client_id}-{n}" if share else client_id,
                        share_group=share,
                        key=receipt_key if with_key else None,
                    ).start()
                )
            for log, process in zip(logs, started):
                wait_until(
                    lambda log=log, process=process: connected_count(log) >= len(started_logs[log]) + 1,
                    timeout=60,
                    what="collector connected",
                    process=process,
                )
                started_logs[log].append(process.pid)
            time.sleep(0.5)  # the SUBACK follows the CONNACK
            return started

        started_logs: dict[Path, list[int]] = {log: [] for log in logs}
        receipts = ReceiptRecorder(broker.port) if True in variants else None
        collectors = start_collectors(variants[0])
        running_with_key = variants[0]
        print(
            f"{args.collectors} collector process(es){' sharing the subscription' if share else ''}; "
            f"{len(stations):,} stations; readings carry qc_flag: {qc_flag}; receipts: {args.receipts}",
            flush=True,
        )

        coll_rates: dict[bool, list[float]] = {v: [] for v in variants}
        coll_cpu_per_reading: dict[bool, list[float]] = {v: [] for v in variants}
        raw_rates: list[float] = []
        sent_batches: list[tuple[str, bytes]] = []
        for run in range(args.runs):
            t_sign = time.perf_counter()
            backlog, bodies = make_backlog(stations, args.polls, rng, args.cycles)
            expected = sum(len(b.readings) for b in bodies)
            sign_s = time.perf_counter() - t_sign
            avg = expected / len(backlog)
            rows_per_flush = int(avg * 5000)  # what one collector flush of flush_max_messages holds

            # The variants alternate their order round by round, so neither always runs on a warmer machine.
            order = variants if run % 2 == 0 else list(reversed(variants))
            lines = []
            for index, with_key in enumerate(order):
                if index:
                    # Each variant its own readings (new times, next sequence numbers): the second one
                    # writing the very keys the first wrote into the truncated table ran at half speed
                    # whichever variant it was (QuestDB still busy with the first's rows).
                    backlog, bodies = make_backlog(stations, args.polls, rng, args.cycles)
                    time.sleep(5)
                if with_key != running_with_key:
                    for process in collectors:
                        process.stop(timeout=30)
                    collectors = start_collectors(with_key)
                    running_with_key = with_key
                if with_key and receipts is not None:
                    receipts.payloads.clear()  # the agent's side is measured on the last "on" round's batches
                    receipts.recording = True
                # collector: frozen while the backlog is queued for its session, then thawed with the clock running
                truncate(pg)
                for process in collectors:
                    os.kill(process.pid, signal.SIGSTOP)
                try:
                    pub_s = publish(broker.port, backlog, args.publishers)
                finally:
                    meter = CpuMeter(
                        {"collector": [c.pid for c in collectors], "questdb": [qdb.pid], "mosquitto": [broker.pid]}
                    )
                    t0 = time.monotonic()
                    for process in collectors:
                        os.kill(process.pid, signal.SIGCONT)
                    spying = args.py_spy and run == 0 and index == 0
                    spy = py_spy.record(collectors[0].pid, args.py_spy, idle=True) if spying else None
                t1 = wait_visible(pg, expected, timeout=900)
                if spy is not None:
                    py_spy.finish(spy, stop=True)
                    print(py_spy.summary(args.py_spy, t1 - t0, "the collector, waits included"), flush=True)
                coll_cpu = meter.report()
                rate = expected / (t1 - t0)
                coll_rates[with_key].append(rate)
                coll_cpu_per_reading[with_key].append(meter.seconds("collector") / expected)
                assert sql(pg, "SELECT count() FROM readings")[0][0] == expected, "collector wrote more than sent"
                if with_key and receipts is not None:
                    time.sleep(4.0)  # the last commit's receipts (at most one per station per 2 s)
                    receipts.recording = False
                    sent_batches = backlog
                lines.append(
                    f"  collector{' (receipts on) ' if with_key else ' (receipts off)' if len(variants) > 1 else ''}"
                    f" {rate:>9,.0f} readings/s ({rate / avg:,.0f} batches/s; pre-published in {pub_s:.1f} s)   "
                    f"CPU: {coll_cpu}\n"
                )

            # raw ILP: the same readings, same keys, into the emptied table; both ways the client offers
            raw_cpu, raw_round = {}, {}
            for how, write in (("row() per reading", raw_ilp_rows), ("DataFrame", raw_ilp_frames)):
                truncate(pg)
                meter = CpuMeter({"this process (ILP client)": [None], "questdb": [qdb.pid]})
                t0 = time.monotonic()
                write(qdb.endpoints.ilp_conf, bodies, kids, rows_per_flush, qc_flag)
                t1 = wait_visible(pg, expected, timeout=900)
                raw_cpu[how] = meter.report()
                raw_round[how] = expected / (t1 - t0)
            # The ratio is taken against the faster of the two: the real ceiling of the client.
            raw_rates.append(max(raw_round.values()))
            print(
                f"round {run + 1}: {len(backlog):,} batches, {expected:,} readings (avg {avg:.1f}/batch; "
                f"signed in {sign_s:.1f} s)\n"
                + "".join(lines)
                + "".join(
                    f"  raw ILP, {how:<17} {rate:>9,.0f} readings/s   CPU: {raw_cpu[how]}\n"
                    for how, rate in raw_round.items()
                )
                + "".join(
                    f"  ratio{' (receipts ' + ('on)' if v else 'off)') if len(variants) > 1 else ''} "
                    f"{coll_rates[v][-1] / raw_rates[-1]:.2f} (collector / the faster raw ILP)\n"
                    for v in variants
                ),
                end="",
                flush=True,
            )
        r = statistics.median(raw_rates)
        if len(variants) > 1:
            off, on = (statistics.median(coll_rates[v]) for v in (False, True))
            cpu_off, cpu_on = (statistics.median(coll_cpu_per_reading[v]) * 1e6 for v in (False, True))
            print(
                f"\nreceipts' cost, medians over {args.runs} rounds side by side: collector {off:,.0f} readings/s "
                f"without, {on:,.0f} with (ratio {on / off:.3f}); collector CPU {cpu_off:.2f} us/reading without, "
                f"{cpu_on:.2f} with (+{(cpu_on - cpu_off) / cpu_off:.1%})"
            )
            print(agent_receipt_cost(receipts, sent_batches, collector_key, tmp, rng))
        c = statistics.median(coll_rates[variants[-1]])
        reconnects = sum(connected_count(log) - len(started_logs[log]) for log in logs)
        print(
            f"\nmedian over {args.runs} rounds: collector {c:,.0f} readings/s, "
            f"raw ILP (the faster way, per round) {r:,.0f} readings/s, ratio {c / r:.2f}; collector CPU "
            f"{statistics.median(coll_cpu_per_reading[variants[-1]]) * 1e6:.2f} us/reading"
        )
        print(
            f"targets: collector >= 100,000 readings/s: {'MET' if c >= 100_000 else 'NOT MET'}; "
            f">= 0.5 x raw ILP: {'MET' if c >= 0.5 * r else 'NOT MET'}  "
            f"(collector MQTT reconnects during the run: {reconnects})"
        )

        if args.profile:
            for process in collectors:
                process.stop(timeout=30)
            collectors = []
            truncate(pg)
            backlog, bodies = make_backlog(stations, args.polls, rng, args.cycles)
            profile_round(
                args,
                registry,
                broker.port,
                qdb,
                backlog,
                sum(len(b.readings) for b in bodies),
                f"{client_id}-0" if share else client_id,
                receipt_key=collector_key if running_with_key else None,
            )
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
    main()
