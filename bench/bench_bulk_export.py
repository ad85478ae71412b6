"""What a day of bulk downloads costs: one Vietnam local day of minute readings of many stations in a
private QuestDB, exported with ``store.bulk_export.export_day`` as CSV and as Parquet, with where the
time goes (the warehouse's queries, encoding, durable writes).

    .venv/bin/python bench/bench_bulk_export.py                      # 200 stations, 6 parameters, 20 provinces
    .venv/bin/python bench/bench_bulk_export.py --stations 500 --runs 3

Each run re-exports the same day (a new generation each time: what the daily cron does for the
days still provisional). The formats run interleaved, run by run; medians are printed side by side.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from store.bulk_export.export import export_day  # noqa: E402
from store.bulk_export.layout import DAY_NS, LocalDay  # noqa: E402
from store.ilp_writer import ReadingColumns, WarehouseWriter, ilp_row  # noqa: E402
from store.queries import readings_applied  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import STATION_METADATA, ensure_schema  # noqa: E402

DAY = LocalDay.parse("2026-03-25")
PARAMETERS = ("PM2,5", "PM10", "SO2", "NO2", "CO", "O3")
S = 1_000_000_000


def load(ilp_conf: str, pg: str, stations: int, provinces: int, per_day: int) -> int:
    writer = WarehouseWriter(ilp_conf)
    step = DAY_NS // per_day
    total = 0
    try:
        writer.write_rows(
            STATION_METADATA,
            [
                ilp_row(
                    STATION_METADATA, DAY.start_ns - DAY_NS, station=f"ST{i:04d}", province_code=f"P{i % provinces:02d}"
                )
                for i in range(stations)
            ],
        )
        for i in range(stations):
            n = per_day * len(PARAMETERS)
            ts = [DAY.start_ns + k * step + i * 1000 for k in range(per_day) for _ in PARAMETERS]
            writer.write_reading_columns(
                ReadingColumns(
                    station=[f"ST{i:04d}"] * n,
                    seq=[k // 10 for k in range(n)],
                    historical=[False] * n,
                    key_id=["k"] * n,
                    received_ns=ts,
                    ts_ns=ts,
                    device=["aq"] * n,
                    parameter=list(PARAMETERS) * per_day,
                    value=[float(k % 97) + 0.25 for k in range(n)],
                    unit=["ug/m3"] * n,
                    status=["00" if k % 50 else "01" for k in range(n)],
                    cause=[""] * n,
                    qc_flag=[1] * n,
                    qc_check=[""] * n,
                    qc_cause=[""] * n,
                    qc_checks=[""] * n,
                )
            )
            total += n
    finally:
        writer.close()
    deadline = time.monotonic() + 600
    while not readings_applied(pg) and time.monotonic() < deadline:
        time.sleep(0.5)
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=200)
    ap.add_argument("--provinces", type=int, default=20)
    ap.add_argument("--per-day", type=int, default=1440, help="readings per parameter per station (1440: one a minute)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", action="store_true", help="print the top of a cProfile of one CSV export")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-bulk-export-"))
    qdb = QuestDBServer(tmp / "questdb")
    try:
        qdb.start()
        pg = qdb.endpoints.pg_conninfo
        ensure_schema(pg)
        t0 = time.perf_counter()
        rows = load(qdb.endpoints.ilp_conf, pg, args.stations, args.provinces, args.per_day)
        print(
            f"{rows:,} readings ({args.stations} stations, {len(PARAMETERS)} parameters, {args.provinces} provinces,"
            f" day {DAY}) loaded in {time.perf_counter() - t0:.1f} s"
        )
        times: dict[str, list[float]] = {"csv": [], "parquet": []}
        sizes: dict[str, int] = {}
        files: dict[str, int] = {}
        now = DAY.end_ns + DAY_NS
        for run in range(args.runs):
            for fmt in times:
                start = time.perf_counter()
                result = export_day(pg, DAY, tmp / "out", fmt, now_ns=now + run * S)
                times[fmt].append(time.perf_counter() - start)
                sizes[fmt] = sum(e["bytes"] for e in result.written)
                files[fmt] = len(result.written)
                assert sum(e["rows"] for e in result.written) == rows
        print(f"{'format':<8} {'files':>6} {'MB':>8} {'median s':>9} {'rows/s':>11}   runs (s)")
        for fmt, values in times.items():
            median = statistics.median(values)
            print(
                f"{fmt:<8} {files[fmt]:>6} {sizes[fmt] / 1e6:>8.1f} {median:>9.2f} {rows / median:>11,.0f}"
                f"   {', '.join(f'{v:.2f}' for v in values)}"
            )
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            export_day(pg, DAY, tmp / "out", "csv", now_ns=now + 99 * S)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(18)
    finally:
        qdb.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
