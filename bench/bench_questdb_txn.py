"""What a QuestDB transaction costs: the same readings written over ILP/HTTP in transactions of
different sizes, with the rows/s and the cores QuestDB and the client kept busy.

    .venv/bin/python bench/bench_questdb_txn.py                  # batches of 20 polls, 1,000 stations
    .venv/bin/python bench/bench_questdb_txn.py --sizes 5000 20000 200000 --runs 3

Why it exists: the collector decides how many readings go into one
transaction (CollectorConfig.flush_max_readings, flush_interval_s). QuestDB
merges every WAL transaction into its partitions, so small transactions cost
it far more CPU per row, CPU that the collector needs on a 2-core machine.
The sizes run interleaved (round by round) and the medians are printed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_collector import CpuMeter, make_backlog, make_fleet, raw_ilp_frames, truncate, wait_visible  # noqa: E402

from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=20, help="poll cycles per batch")
    ap.add_argument("--polls", type=int, default=4, help="batches per station")
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 200_000], help="rows per transaction")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-qdb-txn-"))
    qdb = QuestDBServer(tmp / "questdb")
    try:
        qdb.start()
        pg = qdb.endpoints.pg_conninfo
        ensure_schema(pg)
        stations = make_fleet(args.stations, tmp / "registry.yaml", rng)
        kids = {s.id: s.kid for s in stations}
        _, bodies = make_backlog(stations, args.polls, rng, args.cycles)
        n = sum(len(b.readings) for b in bodies)
        print(f"{n:,} readings from {len(stations):,} stations, batches of {args.cycles} polls")
        rates: dict[int, list[float]] = {size: [] for size in args.sizes}
        qdb_cores: dict[int, list[float]] = {size: [] for size in args.sizes}
        for run in range(args.runs):
            for size in args.sizes:
                truncate(pg)
                meter = CpuMeter({"client": [None], "questdb": [qdb.pid]})
                t0 = time.monotonic()
                raw_ilp_frames(qdb.endpoints.ilp_conf, bodies, kids, size, True)
                t1 = wait_visible(pg, n, timeout=900)
                report = meter.report()
                rates[size].append(n / (t1 - t0))
                qdb_cores[size].append(float(report.split("questdb ")[1].split()[0]))
                print(
                    f"round {run + 1}: transactions of ~{size:>7,} rows: {n / (t1 - t0):>9,.0f} rows/s   CPU: {report}",
                    flush=True,
                )
        print("\nmedians:")
        for size in args.sizes:
            rate, cores = statistics.median(rates[size]), statistics.median(qdb_cores[size])
            print(
                f"  ~{size:>7,} rows per transaction: {rate:>9,.0f} rows/s, QuestDB {cores:.2f} cores "
                f"= {cores / rate * 1e6:.1f} us of QuestDB CPU per row"
            )
    finally:
        qdb.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
