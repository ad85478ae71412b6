"""The quantrac collector against Telegraf relaying the same readings into the same QuestDB (issue 16).

    .venv/bin/python bench/bench_relay.py                    # 1,000 stations, one-poll and 20-poll batches, 3 rounds
    .venv/bin/python bench/bench_relay.py --runs 1 --cycles 1     # one quick round of one-poll batches
    QUANTRAC_TELEGRAF=/path/to/telegraf .venv/bin/python bench/bench_relay.py   # a Telegraf of your own

The paths (columns), each measured on its own readings in alternating order, round by round:

* ``collector x1``: one ``quantrac collector run`` on the stations' signed msgpack envelopes (every
  signature verified, sequence judged, measurement controls, acknowledged after commit);
* ``collector x2``: two collector processes sharing the subscription (``--share-group``);
* ``telegraf``: Telegraf's ``inputs.mqtt_consumer`` -> ``outputs.influxdb_v2`` (QuestDB's
  ``/api/v2/write``), the same readings as InfluxDB line protocol, one line per reading, on the same
  topics with the same batching (one message per batch), unsigned and unchecked: what a user who
  relays with Telegraf instead gets. Tuned: ``metric_batch_size`` 50,000, ``max_undelivered_messages``
  about four batches' worth of messages, the faster ``upstream`` line-protocol parser,
  ``content_encoding = "identity"`` (QuestDB takes no gzip), a persistent session at QoS 1 (so it too
  acknowledges a message only after the output delivered it), ``flush_interval`` 1 s, no host or
  topic tag. Its lines carry the columns a reading has (station, device, parameter, unit, status,
  key_id tags; value, cause, seq, historical fields; the reading's time); the collector also writes
  received_at, the measurement-control columns and source.

Every phase as in ``bench_collector.py`` (its fleet, backlog, publishers and QuestDB wait are reused):
the table is emptied, the consumer started and subscribed with a persistent session, frozen
(SIGSTOP), the backlog published into its session, then the clock starts as it is thawed (SIGCONT)
and stops when ``SELECT count() FROM readings`` shows every reading and QuestDB applied every WAL
transaction. The consumer is then stopped and its session removed from the broker, so the next path
does not find the other's messages queued. Cores are from /proc/<pid>/stat over the measured phase.

Telegraf is looked for in ``--telegraf`` / ``QUANTRAC_TELEGRAF`` (an error if that path is not an
executable), then ``.cache/telegraf/telegraf``; if it is missing, ``scripts/build_telegraf.sh`` builds it
there (a Go >= 1.25 toolchain and the Go module proxy; about a minute and ~300 MB of modules) unless
``--no-build``. When no binary can be had, the Telegraf column is skipped with a banner saying why and
how to provide one, and the other columns run.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import paho.mqtt.client as mqtt  # noqa: E402

from bench.bench_collector import (  # noqa: E402
    CpuMeter,
    connected_count,
    make_backlog,
    make_fleet,
    publish,
    truncate,
    wait_visible,
)
from broker_bridge.envelope import BatchBody  # noqa: E402
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from broker_bridge.topics import data_subscription  # noqa: E402
from cli.processes import collector_process  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import READINGS, ensure_schema  # noqa: E402
from supervisor.process import ManagedProcess, log_tail, wait_until  # noqa: E402

CACHED_TELEGRAF = REPO / ".cache" / "telegraf" / "telegraf"
BUILD_SCRIPT = REPO / "scripts" / "build_telegraf.sh"
PATHS = ("collector x1", "collector x2", "telegraf")
HOW_TO_PROVIDE = (
    "  how: run `bash scripts/build_telegraf.sh` (Go >= 1.25 as `go`, /usr/local/go/bin/go or GO=/path/to/go;\n"
    "       it fetches Telegraf and its modules through the Go module proxy and builds .cache/telegraf/telegraf),\n"
    "       or give any Telegraf >= 1.30 with inputs.mqtt_consumer, outputs.influxdb_v2 and parsers.influx:\n"
    "       QUANTRAC_TELEGRAF=/path/to/telegraf .venv/bin/python bench/bench_relay.py   (or --telegraf PATH)"
)


# -- Telegraf: the binary --------------------------------------------------------------------------
def banner(lines: str) -> None:
    text = f"\n{'!' * 100}\n!!! TELEGRAF COLUMN SKIPPED\n{lines}\n{'!' * 100}\n"
    print(text, flush=True)


def telegraf_version(binary: Path) -> str:
    done = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{binary} --version exited {done.returncode}: {(done.stdout + done.stderr).strip()}")
    return done.stdout.strip()


def find_telegraf(given: str | None, build: bool) -> tuple[Path | None, str]:
    """The Telegraf binary to run and its version, or (None, why not)."""
    if given:
        path = Path(given).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise SystemExit(
                f"bench_relay: ERROR: the Telegraf given by --telegraf / QUANTRAC_TELEGRAF, {path}, "
                "is not an executable file; fix the path, or unset it to use .cache/telegraf/telegraf"
            )
        return path, telegraf_version(path)
    if not CACHED_TELEGRAF.exists():
        if not build:
            return None, f"  why: {CACHED_TELEGRAF} does not exist and --no-build was given"
        print(f"bench_relay: {CACHED_TELEGRAF} is missing: building it with {BUILD_SCRIPT} ...", flush=True)
        done = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=1800, check=False)
        if done.returncode != 0:
            tail = "\n".join("       " + line for line in (done.stdout + done.stderr).strip().splitlines()[-8:])
            return None, f"  why: {BUILD_SCRIPT.name} exited {done.returncode}:\n{tail}"
    return CACHED_TELEGRAF, telegraf_version(CACHED_TELEGRAF)


# -- Telegraf: the readings as line protocol -------------------------------------------------------
def _tag(value: str) -> str:
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=").replace(" ", "\\ ")


def _text(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def line_protocol(body: BatchBody, kid: str) -> bytes:
    """One batch as InfluxDB line protocol, one line per reading, into the ``readings`` table's columns."""
    lines = []
    station, k = _tag(body.station), _tag(kid)
    for r in body.readings:
        fields = (f"value={r.value!r}," if r.value is not None else "") + (
            f"cause={_text(r.cause)},seq={body.seq}i,historical=false"
        )
        lines.append(
            f"{READINGS.name},station={station},device={_tag(r.device)},parameter={_tag(r.parameter)},"
            f"unit={_tag(r.unit)},status={_tag(r.status)},key_id={k} {fields} {r.ts_ns}"
        )
    return ("\n".join(lines) + "\n").encode()


def telegraf_conf(broker_port: int, questdb_http_port: int, client_id: str, avg_lines: float, args) -> str:
    # Four batches' worth of messages read ahead: enough for the output never to wait on the input,
    # bounded so a 20-poll backlog does not hold millions of metrics in memory.
    undelivered = max(1000, int(4 * args.telegraf_batch / avg_lines))
    buffer = max(1_000_000, 2 * int(undelivered * avg_lines))
    return f"""# written by bench/bench_relay.py
[agent]
  interval = "10s"
  round_interval = false
  metric_batch_size = {args.telegraf_batch}
  metric_buffer_limit = {buffer}
  collection_jitter = "0s"
  flush_interval = "1s"
  flush_jitter = "0s"
  omit_hostname = true
  quiet = false

[[inputs.mqtt_consumer]]
  servers = ["tcp://127.0.0.1:{broker_port}"]
  topics = ["{data_subscription()}"]
  topic_tag = ""
  qos = 1
  persistent_session = true
  client_id = "{client_id}"
  max_undelivered_messages = {undelivered}
  data_format = "influx"
  influx_parser_type = "{args.telegraf_parser}"

[[outputs.influxdb_v2]]
  urls = ["http://127.0.0.1:{questdb_http_port}"]
  token = ""
  organization = ""
  bucket = "quantrac"
  content_encoding = "identity"
  timeout = "60s"
"""


# -- the broker side -----------------------------------------------------------------------------
def forget_session(broker_port: int, client_id: str) -> None:
    """Remove a stopped consumer's persistent session, so it queues nothing while the other paths run."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = []
    client.on_connect = lambda c, u, flags, rc, props: connected.append(rc)
    client.connect("127.0.0.1", broker_port, clean_start=True)  # session expiry 0: gone on disconnect
    client.loop_start()
    try:
        wait_until(lambda: connected, timeout=30, what=f"a clean-start connection as {client_id}")
        if connected[0].is_failure:
            raise RuntimeError(f"the broker refused a clean-start connection as {client_id}: {connected[0]}")
    finally:
        client.disconnect()
        client.loop_stop()


class Consumers:
    """One path's consumer processes: started, subscribed, frozen, thawed, stopped, their sessions removed."""

    def __init__(self, path: str, tmp: Path, phase: int, broker: MosquittoServer, qdb: QuestDBServer, ctx) -> None:
        self.path, self.broker, self.processes, self.client_ids = path, broker, [], []
        self.logs: list[Path] = []
        if path.startswith("collector"):
            n = int(path[-1])
            share = "bench" if n > 1 else None
            for i in range(n):
                client_id = f"bench-collector-{i}" if share else "bench-collector"
                log = tmp / f"phase-{phase:02d}-{client_id}.log"
                self.client_ids.append(client_id)
                self.logs.append(log)
                self.processes.append(
                    collector_process(
                        ctx["registry"],
                        f"127.0.0.1:{broker.port}",
                        f"127.0.0.1:{qdb.endpoints.http_port}",
                        f"127.0.0.1:{qdb.endpoints.pg_port}",
                        log,
                        client_id=client_id,
                        share_group=share,
                    )
                )
        else:
            client_id = "bench-telegraf"
            conf = tmp / f"phase-{phase:02d}-telegraf.conf"
            conf.write_text(
                telegraf_conf(broker.port, qdb.endpoints.http_port, client_id, ctx["avg_lines"], ctx["args"])
            )
            log = tmp / f"phase-{phase:02d}-telegraf.log"
            self.client_ids.append(client_id)
            self.logs.append(log)
            self.processes.append(ManagedProcess([ctx["telegraf"], "--config", conf], log_path=log, name="telegraf"))

    def start(self) -> None:
        for process in self.processes:
            process.start()
        for log, process in zip(self.logs, self.processes):
            if self.path == "telegraf":
                ready = lambda log=log: "[inputs.mqtt_consumer] Connected" in log.read_text(errors="replace")  # noqa: E731
            else:
                ready = lambda log=log: connected_count(log) >= 1  # noqa: E731
            wait_until(ready, timeout=60, what=f"{process.name} connected", process=process)
        time.sleep(1.0)  # both subscribe right after their CONNACK

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.processes]

    def signal(self, sig: int) -> None:
        for pid in self.pids:
            os.kill(pid, sig)

    def errors(self) -> str:
        """Telegraf's error lines (a refused write is dropped, so its rows would never show)."""
        if self.path != "telegraf":
            return ""
        return "\n".join(line for line in self.logs[0].read_text(errors="replace").splitlines() if " E! " in line)

    def stop(self) -> None:
        for process in self.processes:
            process.stop(timeout=30)
        for client_id in self.client_ids:
            forget_session(self.broker.port, client_id)


def wait_committed(pg: str, expected: int, consumers: Consumers, timeout: float) -> float:
    """``wait_visible`` in 10 s steps, stopping early if a consumer died or Telegraf logged an error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return wait_visible(pg, expected, timeout=10)
        except RuntimeError as exc:
            dead = [p for p in consumers.processes if not p.running]
            errors = consumers.errors()
            if dead or errors or time.monotonic() > deadline:
                tails = "\n".join(f"--- {log}\n{log_tail(log)}" for log in consumers.logs)
                raise RuntimeError(f"{consumers.path}: {exc}; exited: {dead}; errors:\n{errors}\n{tails}") from exc


def run_phase(path: str, phase: int, stations, cycles: int, polls: int, rng, env: dict) -> dict:
    """One path on its own fresh readings; readings/s and cores over the measured window."""
    backlog, bodies = make_backlog(stations, polls, rng, cycles)
    expected = sum(len(b.readings) for b in bodies)
    avg = expected / len(backlog)
    if path == "telegraf":
        backlog = [(topic, line_protocol(body, env["kids"][body.station])) for (topic, _), body in zip(backlog, bodies)]
    pg = env["qdb"].endpoints.pg_conninfo
    truncate(pg)
    consumers = Consumers(path, env["tmp"], phase, env["broker"], env["qdb"], {**env, "avg_lines": avg})
    consumers.start()
    try:
        consumers.signal(signal.SIGSTOP)
        try:
            pub_s = publish(env["broker"].port, backlog, env["args"].publishers)
        finally:
            meter = CpuMeter(
                {"consumer": consumers.pids, "questdb": [env["qdb"].pid], "mosquitto": [env["broker"].pid]}
            )
            t0 = time.monotonic()
            consumers.signal(signal.SIGCONT)
        t1 = wait_committed(pg, expected, consumers, timeout=900)
        wall = t1 - t0
        cores = {name: meter.seconds(name) / wall for name in ("consumer", "questdb", "mosquitto")}
    finally:
        consumers.stop()
    return {
        "rate": expected / wall,
        "cores": cores,
        "readings": expected,
        "messages": len(backlog),
        "bytes": sum(len(p) for _, p in backlog),
        "pub_s": pub_s,
    }


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--cycles", default="1,20", help="poll cycles per message, one bench column each (default 1,20)")
    ap.add_argument(
        "--polls", default="30,4", help="messages per station per phase, for each --cycles value (default 30,4)"
    )
    ap.add_argument("--runs", type=int, default=3, help="rounds; every path once per round and batching")
    ap.add_argument("--paths", default=",".join(PATHS), help=f"which paths (default {','.join(PATHS)})")
    ap.add_argument("--publishers", type=int, default=2, help="publisher processes for pre-publishing")
    ap.add_argument("--telegraf", default=os.environ.get("QUANTRAC_TELEGRAF"), help="Telegraf binary")
    ap.add_argument("--no-build", action="store_true", help="do not run scripts/build_telegraf.sh when it is missing")
    ap.add_argument("--telegraf-batch", type=int, default=50_000, help="Telegraf's metric_batch_size")
    ap.add_argument("--telegraf-parser", choices=("upstream", "internal"), default="upstream")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server, collector and Telegraf logs)")
    args = ap.parse_args()

    cycles_list = [int(c) for c in args.cycles.split(",")]
    polls_list = [int(p) for p in args.polls.split(",")]
    if len(polls_list) != len(cycles_list):
        ap.error(f"--polls needs one value per --cycles value ({len(cycles_list)}), got {args.polls!r}")
    paths = [p.strip() for p in args.paths.split(",")]
    unknown = set(paths) - set(PATHS)
    if unknown:
        ap.error(f"unknown --paths {sorted(unknown)}; choose from {', '.join(PATHS)}")

    skipped = ""
    telegraf = None
    if "telegraf" in paths:
        telegraf, told = find_telegraf(args.telegraf, build=not args.no_build)
        if telegraf is None:
            skipped = told + "\n" + HOW_TO_PROVIDE
            banner(skipped)
            paths.remove("telegraf")
        else:
            print(f"telegraf: {telegraf} ({told})", flush=True)

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-relay-"))
    qdb = QuestDBServer(tmp / "questdb")
    broker = MosquittoServer(tmp / "mosquitto")
    load_start = load_average()
    results: dict[tuple[str, int], list[dict]] = {(p, c): [] for p in paths for c in cycles_list}
    try:
        qdb.start()
        broker.start()
        ensure_schema(qdb.endpoints.pg_conninfo)
        registry = tmp / "registry.yaml"
        stations = make_fleet(args.stations, registry, rng)
        env = {
            "args": args,
            "tmp": tmp,
            "qdb": qdb,
            "broker": broker,
            "registry": registry,
            "kids": {st.id: st.kid for st in stations},
            "telegraf": telegraf,
        }
        print(
            f"{len(stations):,} stations; paths: {', '.join(paths)}; batches of {args.cycles} polls; "
            f"{args.runs} rounds; load average at start {load_start}",
            flush=True,
        )
        phase = 0
        for run in range(args.runs):
            for cycles, polls in zip(cycles_list, polls_list):
                order = paths[run % len(paths) :] + paths[: run % len(paths)]  # each path leads in turn
                for path in order:
                    phase += 1
                    res = run_phase(path, phase, stations, cycles, polls, rng, env)
                    results[(path, cycles)].append(res)
                    c = res["cores"]
                    print(
                        f"round {run + 1}, {cycles:>2}-poll batches, {path:<12}: {res['rate']:>9,.0f} readings/s  "
                        f"({res['readings']:,} readings in {res['messages']:,} messages, "
                        f"{res['bytes'] / res['messages']:,.0f} B each; pre-published in {res['pub_s']:.1f} s)  "
                        f"cores: consumer {c['consumer']:.2f}, questdb {c['questdb']:.2f}, "
                        f"mosquitto {c['mosquitto']:.2f}; load {load_average()}",
                        flush=True,
                    )
                    time.sleep(3)  # QuestDB settles between phases
    finally:
        broker.stop()
        qdb.stop()
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    def med(path: str, cycles: int, key: str) -> float:
        values = [r[key] if key == "rate" else r["cores"][key] for r in results[(path, cycles)]]
        return statistics.median(values)

    def paired_ratio(path: str, cycles: int) -> float:
        rounds = zip(results[(path, cycles)], results[("telegraf", cycles)])
        return statistics.median(ours["rate"] / theirs["rate"] for ours, theirs in rounds)

    readings = {c: results[(paths[0], c)][0]["readings"] / results[(paths[0], c)][0]["messages"] for c in cycles_list}
    print(
        f"\nmedians over {args.runs} rounds, {args.stations:,} stations; load average at start {load_start}, "
        f"at the end {load_average()} (2 cores, shared)\n"
    )
    head = " | ".join(f"{c}-poll batches ({readings[c]:.0f} readings) readings/s | consumer cores" for c in cycles_list)
    print(f"| path | {head} |")
    print("|---|" + "---|---|" * len(cycles_list))
    for path in paths:
        cells = " | ".join(f"{med(path, c, 'rate'):,.0f} | {med(path, c, 'consumer'):.2f}" for c in cycles_list)
        print(f"| {path} | {cells} |")
    if "telegraf" in paths:
        print()
        for path in paths:
            if path == "telegraf":
                continue
            ratios = ", ".join(
                f"{c}-poll {med(path, c, 'rate') / med('telegraf', c, 'rate'):.2f}x" for c in cycles_list
            )
            print(f"{path} / telegraf (medians): {ratios}")
            paired = ", ".join(f"{c}-poll {paired_ratio(path, c):.2f}x" for c in cycles_list)
            print(f"{path} / telegraf (median of each round's ratio, the two measured side by side): {paired}")
        for c in cycles_list:
            t = med("telegraf", c, "rate")
            marks = []
            if "collector x1" in paths and c == 1:
                ok = med("collector x1", c, "rate") >= t
                marks.append(f"collector x1 >= telegraf: {'MET' if ok else 'NOT MET'}")
            if "collector x2" in paths:
                ok = med("collector x2", c, "rate") >= 1.5 * t
                marks.append(f"collector x2 >= 1.5 x telegraf: {'MET' if ok else 'NOT MET'}")
            print(f"issue 16's targets, {c}-poll batches: " + "; ".join(marks))
    if skipped:
        banner(skipped)


if __name__ == "__main__":
    main()
