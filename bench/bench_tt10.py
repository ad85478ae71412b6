"""The TT10 ingest bridge for 2,000 stations: files/s, readings/s, CPU, medians of several runs.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_tt10.py [--runs 3] [--steady-s 60] [--backlog-files 12] [--no-profile]
        [--py-spy] [--trees /tmp/before $PWD]

1. Steady national load: `quantrac bridge tt10 serve` as a process (FTP, 2,000 accounts, a real
   Mosquitto) receives 25-line files at the national rate, 2,000 files per 5 minutes (6.67 files/s),
   from ftplib clients (login, STOR, quit). Before the window every station sent its previous cycle's
   file (not measured: in steady state each did 5 minutes ago, so the bridge remembers its password and
   has its outbox and publisher open, and the idle loop runs over 2,000 of them). The bridge's CPU time
   (utime + stime of /proc/<pid>/stat) over a window of ``--steady-s`` seconds at that rate (until the
   window's last file is converted), as a share of one core. The window is shorter than 5 minutes (the
   rate is the real one; the share does not depend on the window's length beyond the idle loop, which
   is in it).
2. A day's backlog in watch mode: files of 25 lines (each station's bytes its own) in
   `<station>/yyyy/MM/dd/` folders, taken by the bridge's `Watcher` into its sink (archive, ledger), then
   judged, sealed into the outboxes and published to Mosquitto (every batch PUBACKed), in process, in
   one thread; the time to the last PUBACK. Cold: every station's first file into a bridge with no
   outbox yet (2,000 are created). Warm: ``--backlog-files`` more per station, under cProfile in the
   first run (``--no-profile``: not). A day (2,000 x 288) is extrapolated as cold + 2,000 x 287 files
   at the warm rate: the outboxes are created once, not once per ``--backlog-files``.

``--py-spy``: py-spy (the test extras) samples the serving process over the first steady window
(100 Hz, threads, idle stacks left out) and the bench prints the functions with the most samples, by
own time and cumulative, as a share of one core.

Before/after on one machine: ``--trees A B`` runs this file once per run and tree in turn
(A, B, A, B, ...), each with PYTHONPATH at its tree (it uses only APIs both have), and prints each
tree's medians and B's over A's; the machine is shared, so the rounds alternate.

Logs are written (JSON, as the bridge writes them) to a file in the run's temporary folder.
"""

from __future__ import annotations

import argparse
import cProfile
import ftplib
import io
import json
import os
import pstats
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from bench import py_spy
from broker_bridge.keys import write_new_key
from broker_bridge.mosquitto_server import MosquittoServer
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import DATA_SUFFIX, PREFIX
from broker_bridge.tt10.ingest.service import IngestService
from broker_bridge.tt10.ingest.settings import IngestSettings
from broker_bridge.tt10.sources.accounts import hash_password
from broker_bridge.tt10.sources.watch import Watcher, WatchSettings
from cli.logging_setup import configure_logging
from cli.processes import tt10_bridge_process
from supervisor.process import free_port, wait_until

STATIONS = 2000
LINES = 25
PARAMETERS = tuple(f"P{i:02d}" for i in range(LINES))
DAY_FILES = 288
RATE = STATIONS / 300.0  # files per second: 2,000 every 5 minutes
TICK = os.sysconf("SC_CLK_TCK")
IDLE_S = 10.0


def stamp(ts_s: int) -> str:
    return datetime.fromtimestamp(ts_s + 7 * 3600, tz=UTC).strftime("%Y%m%d%H%M%S")


def station_id(i: int) -> str:
    return f"BN_ST{i:04d}"


def tt10_file(i: int, ts_s: int) -> tuple[str, bytes]:
    """Each station's file has bytes of its own, as real ones do (the archive stores identical bytes once)."""
    st = stamp(ts_s)
    lines = "".join(f"{p}\t{(i * LINES + k) / 10}\tug/m3\t{st}\t00\r\n" for k, p in enumerate(PARAMETERS))
    return f"{station_id(i)}_{st}.txt", lines.encode()


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime (fields 14, 15)


def steady(tmp: Path, broker_port: int, window_s: float, sample: bool = False) -> dict:
    password = "bench-password"
    digest = hash_password(password)  # one hash for all: 2,000 scrypts would only slow the set-up
    port = free_port()
    sources = {
        "state_dir": str(tmp / "state"),
        "homes_dir": str(tmp / "homes"),
        "ftp": {"host": "127.0.0.1", "port": port, "auth_failed_delay_s": 0.1},
        "accounts": {f"st{i:04d}": {"station": station_id(i), "password_hash": digest} for i in range(STATIONS)},
    }
    (tmp / "state").mkdir(parents=True)
    (tmp / "sources.yaml").write_text(yaml.safe_dump(sources))
    write_new_key(tmp / "bridge.key")
    bridge = tt10_bridge_process(
        tmp / "sources.yaml", tmp / "bridge", f"127.0.0.1:{broker_port}", tmp / "bridge.key", tmp / "bridge.log",
        client_id=f"bench-{port}",
    )  # fmt: skip
    bridge.start()
    try:
        wait_until(lambda: "tt10_bridge_connected" in (tmp / "bridge.log").read_text(), timeout=60, process=bridge)
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close() or True, timeout=60,
                   what="the bridge's FTP server", process=bridge)  # fmt: skip
        count = int(window_s * RATE)
        now_s = int(time.time()) // 300 * 300

        def send(i: int, ts_s: int = now_s) -> None:
            ftp = ftplib.FTP()
            ftp.connect("127.0.0.1", port, timeout=30)
            ftp.login(f"st{i:04d}", password)
            name, data = tt10_file(i, ts_s)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))
            ftp.quit()

        def converted() -> int:
            return (tmp / "bridge.log").read_text().count("tt10_file_converted")

        # warm-up, not measured: every station sent its previous cycle's file (in steady state each one
        # did 5 minutes ago), so its login is remembered and its outbox and publisher are open
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: send(i, now_s - 300), range(STATIONS)))
        wait_until(lambda: converted() >= STATIONS, timeout=600, what="the warm-up files", process=bridge)
        time.sleep(5.0)
        idle_cpu, idle_start = cpu_s(bridge.pid), time.monotonic()  # type: ignore[arg-type]
        time.sleep(IDLE_S)  # nobody uploads: what the loops and the sweep cost on their own
        idle_share = (cpu_s(bridge.pid) - idle_cpu) / (time.monotonic() - idle_start)  # type: ignore[arg-type]
        spy = py_spy.record(bridge.pid, tmp / "py-spy.txt", window_s) if sample else None  # type: ignore[arg-type]
        start_cpu, start = cpu_s(bridge.pid), time.monotonic()  # type: ignore[arg-type]
        with ThreadPoolExecutor(8) as pool:
            futures = []
            for i in range(count):
                time.sleep(max(0.0, start + i / RATE - time.monotonic()))
                futures.append(pool.submit(send, i))
            for f in futures:
                f.result()
        time.sleep(max(0.0, start + window_s - time.monotonic()))
        # the window ends when the last file is converted too (a worker may gather news for a round)
        wait_until(lambda: converted() - STATIONS >= count, timeout=30, what="the window's files", process=bridge)
        used, elapsed = cpu_s(bridge.pid) - start_cpu, time.monotonic() - start  # type: ignore[arg-type]
        received = converted() - STATIONS
        profile = None
        if spy is not None:
            py_spy.finish(spy)
            profile = py_spy.summary(
                tmp / "py-spy.txt", window_s,
                "the serving process (a thread counts when not idle: running, or blocked in a disk write such"
                " as an fsync or SQLite commit, so busy wall time, not CPU)",
            )  # fmt: skip
    finally:
        bridge.stop(30)
    assert received >= count, f"only {received} of {count} files converted"
    return {"files": count, "window_s": elapsed, "cpu_s": used, "share": used / elapsed, "idle_share": idle_share,
            "per_file_ms": 1000 * (used - idle_share * elapsed) / count, "py_spy": profile}  # fmt: skip


def write_cycles(drop: Path, base_s: int, cycles: range) -> int:
    for i in range(STATIONS):
        for c in cycles:
            ts = base_s + c * 300
            name, data = tt10_file(i, ts)
            st = stamp(ts)
            day = drop / station_id(i) / st[:4] / st[4:6] / st[6:8]
            day.mkdir(parents=True, exist_ok=True)
            (day / name).write_bytes(data)
    return STATIONS * len(cycles)


def drain(service: IngestService, watcher: Watcher, total: int, profiler: cProfile.Profile | None) -> dict:
    """One watcher scan into the sink, then the worker's loop in this thread until every accepted file
    is converted (``total`` in all) and every batch PUBACKed."""
    start, start_cpu = time.monotonic(), time.process_time()
    if profiler:
        profiler.enable()
    taken = watcher.scan_once().taken
    scanned = time.monotonic()
    checked = 0.0
    while True:
        busy = service.step()
        if time.monotonic() - checked > 0.5 or not busy:
            checked = time.monotonic()
            counts = service.ledger.counts()
            if counts["accepted"] - counts["unconverted"] >= total and service.unsent() == 0:
                break
        if not busy:
            time.sleep(0.01)
    if profiler:
        profiler.disable()
    return {"taken": taken, "s": time.monotonic() - start, "scan_s": scanned - start,
            "cpu_s": time.process_time() - start_cpu}  # fmt: skip


def backlog(tmp: Path, broker_port: int, per_station: int, profile: bool) -> dict:
    """Phase 1 (cold): every station's first file, into a bridge with no outbox yet (each is created).
    Phase 2 (warm): ``per_station`` more files each, the outboxes open: the per-file rate of the rest."""
    drop = tmp / "drop"
    base_s = (int(time.time()) // 300 - per_station - 1) * 300
    first = write_cycles(drop, base_s, range(1))
    key = write_new_key(tmp / "bridge.key")
    settings = IngestSettings(
        root=tmp / "bridge", broker=BrokerAddress("127.0.0.1", broker_port), client_id=f"bench-backlog-{os.getpid()}"
    )
    service = IngestService(settings, key)
    watcher = Watcher(WatchSettings(drop, tmp / "watch.sqlite", settle_s=0.0), service.sink)
    service.start()
    assert service.connected.wait(30)
    cold = drain(service, watcher, first, None)
    rest = write_cycles(drop, base_s, range(1, per_station + 1))
    profiler = cProfile.Profile() if profile else None
    warm = drain(service, watcher, first + rest, profiler)
    stop = threading.Event()
    stop.set()
    service.run(stop)  # closes the outboxes
    service.stop()
    watcher.memory.close()
    assert (cold["taken"], warm["taken"]) == (first, rest), (cold, warm, first, rest)
    out = {"cold": cold, "files": rest, "s": warm["s"], "scan_s": warm["scan_s"], "cpu_s": warm["cpu_s"]}
    if profiler:
        out["profile"] = profiler
    return out


def subscriber(port: int) -> mqtt.Client:
    """Subscribed to every station's data topic (counts nothing, keeps nothing): the broker then has
    a subscriber to PUBACK to, as it would with the collector running."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-tt10-listener", protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    client.on_connect = lambda c, *_: c.subscribe(f"{PREFIX}/+/{DATA_SUFFIX}", qos=1)
    client.on_subscribe = lambda *_: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    assert subscribed.wait(10), "the listener did not subscribe"
    return client


def alternate(args: argparse.Namespace, out) -> None:
    """``--trees``: this file once per run and tree in turn, each with PYTHONPATH at its tree."""
    trees = [Path(t).resolve() for t in args.trees]
    argv = [sys.executable, __file__, "--runs", "1", "--json", "--steady-s", str(args.steady_s),
            "--backlog-files", str(args.backlog_files), "--no-profile",
            *(["--skip", args.skip] if args.skip else []), *(["--py-spy"] if args.py_spy else [])]  # fmt: skip
    results: dict[Path, list[dict]] = {t: [] for t in trees}
    for r in range(args.runs):
        for tree in trees:
            print(f"-- run {r + 1}/{args.runs}, {tree}", file=out, flush=True)
            done = subprocess.run(argv, env={**os.environ, "PYTHONPATH": str(tree)}, cwd=tree, text=True,
                                  stdout=subprocess.PIPE, check=True)  # fmt: skip
            *lines, last = done.stdout.rstrip("\n").split("\n")
            print("\n".join(lines), file=out, flush=True)
            results[tree].append(json.loads(last))
    print("\nMEDIANS (rounds alternated):", file=out)
    medians = {}
    for tree, rows in results.items():
        medians[tree] = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
        print(f"  {tree}: " + ", ".join(f"{k} {v:.3g}" for k, v in medians[tree].items()), file=out)
    first, last = medians[trees[0]], medians[trees[-1]]
    print(f"  {trees[-1].name} / {trees[0].name}: "
          + ", ".join(f"{k} {last[k] / first[k]:.2f}x" for k in first if first[k]), file=out)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steady-s", type=float, default=60.0)
    parser.add_argument("--backlog-files", type=int, default=12, help="files per station (a day: 288)")
    parser.add_argument("--skip", choices=("steady", "backlog"), default=None)
    parser.add_argument("--no-profile", action="store_true", help="no cProfile of the first backlog run")
    parser.add_argument("--py-spy", action="store_true", help="py-spy the serving process in the first steady window")
    parser.add_argument("--trees", nargs="+", type=Path, help="alternate runs of these trees (before, after)")
    parser.add_argument("--json", action="store_true", help="end with one line of JSON: the medians")
    args = parser.parse_args()
    out = sys.stdout
    if args.trees:
        alternate(args, out)
        return
    summary: dict[str, float] = {}
    top = Path(tempfile.mkdtemp(prefix="bench-tt10-"))
    log_file = (top / "bench.log").open("a")
    sys.stderr = log_file
    configure_logging("info")  # the bridge's own JSON events, to the file
    sys.stderr = sys.__stderr__
    broker = MosquittoServer(top / "mosquitto")
    broker.start()
    listener = subscriber(broker.port)  # the collector's place: a batch nobody hears is retried
    try:
        if args.skip != "steady":
            runs = [steady(top / f"steady{r}", broker.port, args.steady_s, sample=args.py_spy and r == 0)
                    for r in range(args.runs)]  # fmt: skip
            for r in runs:
                print(f"steady: {r['files']} files in {r['window_s']:.1f} s, bridge CPU {r['cpu_s']:.2f} s"
                      f" = {100 * r['share']:.2f} % of one core; idle (nobody uploading, {IDLE_S:.0f} s)"
                      f" {100 * r['idle_share']:.2f} %; per file above idle {r['per_file_ms']:.1f} ms",
                      file=out)  # fmt: skip
            share = statistics.median(r["share"] for r in runs)
            print(f"STEADY median: {100 * share:.2f} % of one core at {RATE:.2f} files/s"
                  f" ({RATE * LINES:.0f} readings/s); target < 5 %: {'met' if share < 0.05 else 'MISSED'}",
                  file=out)  # fmt: skip
            if runs[0]["py_spy"]:
                print(runs[0]["py_spy"], file=out)
            summary["steady_pct"] = 100 * share
            summary["idle_pct"] = 100 * statistics.median(r["idle_share"] for r in runs)
            summary["per_file_ms"] = statistics.median(r["per_file_ms"] for r in runs)
        if args.skip != "backlog":
            runs = []
            for r in range(args.runs):
                d = top / f"backlog{r}"
                d.mkdir()
                runs.append(backlog(d, broker.port, args.backlog_files, profile=(r == 0 and not args.no_profile)))
                shutil.rmtree(d)
            for r in runs:
                c = r["cold"]
                print(f"backlog, cold: {STATIONS} first files (each station's outbox created) in {c['s']:.1f} s,"
                      f" CPU {c['cpu_s']:.1f} s; warm: {r['files']} files in {r['s']:.1f} s (watcher scan + sink"
                      f" {r['scan_s']:.1f} s), CPU {r['cpu_s']:.1f} s: {r['files'] / r['s']:.0f} files/s,"
                      f" {r['files'] * LINES / r['s']:.0f} readings/s", file=out)  # fmt: skip
            rate = statistics.median(r["files"] / r["s"] for r in runs)
            cold_s = statistics.median(r["cold"]["s"] for r in runs)
            day_s = cold_s + STATIONS * (DAY_FILES - 1) / rate
            print(f"BACKLOG median: warm {rate:.0f} files/s, {rate * LINES:.0f} readings/s, cold first files"
                  f" {cold_s:.1f} s; a day ({STATIONS} x {DAY_FILES}) extrapolated: cold + {STATIONS} x"
                  f" {DAY_FILES - 1} at the warm rate = {day_s / 60:.1f} min; target < 15 min:"
                  f" {'met' if day_s < 900 else 'MISSED'}", file=out)  # fmt: skip
            summary["warm_files_per_s"] = rate
            summary["cold_s"] = cold_s
            summary["day_min"] = day_s / 60
            if "profile" in runs[0]:
                print("\ncProfile of the first backlog run (cumulative, top 15):", file=out)
                pstats.Stats(runs[0]["profile"], stream=out).sort_stats("cumulative").print_stats(15)
                print("by own time (tottime, top 15):", file=out)
                pstats.Stats(runs[0]["profile"], stream=out).sort_stats("tottime").print_stats(15)
    finally:
        listener.disconnect()
        listener.loop_stop()
        broker.stop()
        log_file.close()
        shutil.rmtree(top, ignore_errors=True)
    if args.json:
        print(json.dumps(summary), file=out)


if __name__ == "__main__":
    main()
