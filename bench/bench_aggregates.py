"""What the aggregator costs: keeping up with a country of stations, and a month's recompute after a backlog.

    .venv/bin/python bench/bench_aggregates.py                                 # 2,000 stations x 30 parameters
    .venv/bin/python bench/bench_aggregates.py --stations 200 --hours 3        # a reduced scale

Steady state, in simulated time (the readings are what a collector commits: one reading a minute per
station and parameter, with one ``touched_hours`` row per station per minute's flush): each hour of
readings is written into a private QuestDB, then the aggregator polls once, 2 minutes after the hour
ended (``--settle-s 120``, the production setting: an hour is computed when it is over, late data
recompute it again), computing hourly means, the local day, 8-hour O3/CO, hourly and daily VN_AQI and
the QCVN 05:2023 episodes of every station (all ambient air). The CPU time of that poll (this
process; QuestDB's own CPU is printed beside it) over the hour it covers is the share of one core
needed to keep up. Then one station receives a month of readings as a late backlog and the poll that
recomputes its 720 hours is timed. Medians over ``--hours`` hours and ``--repeat`` backlogs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.aggregator import Aggregator  # noqa: E402
from analysis.settings import Settings, SettingsFile  # noqa: E402
from store.ilp_writer import ReadingColumns, WarehouseWriter, ilp_row  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import TOUCHED_HOURS, ensure_schema  # noqa: E402

H = 3_600_000_000_000
M = 60_000_000_000
AQI = [("PM2,5", 30.0), ("PM10", 55.0), ("SO2", 20.0), ("NO2", 40.0), ("CO", 1500.0), ("O3", 60.0)]


def parameters(n: int) -> list[tuple[str, float]]:
    return (AQI + [(f"X{i:02d}", 10.0 + i) for i in range(n)])[:n]


def readings(stations: list[str], params, first_minute_ns: int, minutes: int, rng) -> ReadingColumns:
    n_s, n_p = len(stations), len(params)
    ts = first_minute_ns + np.arange(minutes, dtype=np.int64) * M
    shape = (minutes, n_s, n_p)
    ts_all = np.broadcast_to(ts[:, None, None], shape).ravel()
    base = np.broadcast_to(np.array([b for _, b in params])[None, None, :], shape)
    value = (base * (1 + 0.1 * rng.standard_normal(shape))).clip(min=0).ravel()
    n = value.size
    station = np.broadcast_to(np.array(stations, dtype=object)[None, :, None], shape).ravel()
    parameter = np.broadcast_to(np.array([p for p, _ in params], dtype=object)[None, None, :], shape).ravel()
    now = time.time_ns()
    return ReadingColumns(
        station=station,
        seq=np.ones(n, dtype=np.int64),
        historical=np.zeros(n, dtype=bool),
        key_id=np.full(n, "k", dtype=object),
        received_ns=np.full(n, now, dtype=np.int64),
        ts_ns=ts_all,
        device=np.full(n, "dev", dtype=object),
        parameter=parameter,
        value=value,
        unit=np.full(n, "ug/m3", dtype=object),
        status=np.full(n, "00", dtype=object),
        cause=np.full(n, "", dtype=object),
        qc_flag=np.ones(n, dtype=np.int8),
        qc_check=[""] * n,
        qc_cause=[""] * n,
        qc_checks=[""] * n,
    )


def touched(stations, hour_end: int, flushes: int, written_ns: int):
    return [
        ilp_row(TOUCHED_HOURS, written_ns + k * 1000, station=s, hour_end=hour_end, readings=1)
        for k in range(flushes)
        for s in stations
    ]


def cpu_of(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_hour(writer, stations, params, hour_start, rng, chunk_minutes):
    for m in range(0, 60, chunk_minutes):
        writer.write_reading_columns(readings(stations, params, hour_start + m * M, chunk_minutes, rng))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--parameters", type=int, default=30)
    ap.add_argument("--hours", type=int, default=3, help="steady hours measured (after one warm-up hour)")
    ap.add_argument("--backlog-days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=3, help="backlog recomputes measured")
    ap.add_argument("--settle-s", type=float, default=120.0)
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    params = parameters(args.parameters)
    stations = [f"ST{i:05d}" for i in range(args.stations)]
    tmp = Path(tempfile.mkdtemp(prefix="bench-aggregates-"))
    qdb = QuestDBServer(tmp / "questdb")
    qdb.start()
    try:
        pg, ilp = qdb.endpoints.pg_conninfo, qdb.endpoints.ilp_conf
        ensure_schema(pg)
        writer = WarehouseWriter(ilp)
        kinds = dict.fromkeys(stations, "ambient_air")
        aggregator = Aggregator(pg, ilp, Settings(SettingsFile()), lambda: kinds, settle_s=args.settle_s)
        aggregator.start()
        first_hour = (time.time_ns() // H - args.hours - 3) * H
        chunk = max(1, min(60, 200_000 // (len(stations) * len(params))))
        shares, walls, qdb_shares = [], [], []
        for k in range(args.hours + 1):
            hour_start = first_hour + k * H
            write_hour(writer, stations, params, hour_start, rng, chunk)
            writer.write_rows(TOUCHED_HOURS, touched(stations, hour_start + H, 60, time.time_ns()))
            time.sleep(0.5)
            cpu0, wall0, q0 = time.process_time(), time.perf_counter(), cpu_of(qdb.pid)
            report = aggregator.poll_once(now_ns=time.time_ns() + 10**15)  # every hour "over" and settled
            cpu, wall, qcpu = time.process_time() - cpu0, time.perf_counter() - wall0, cpu_of(qdb.pid) - q0
            label = "warm-up" if k == 0 else f"hour {k}"
            print(
                f"{label}: {report.hours} station-hours, {report.hourly_rows} hourly, {report.daily_rows} daily,"
                f" {report.eight_hour_rows} 8-hour, {report.aqi_rows} AQI rows: aggregator CPU {cpu:.2f} s"
                f" ({cpu / 3600:.2%} of a core for the hour), QuestDB CPU {qcpu:.2f} s, wall {wall:.2f} s",
                flush=True,
            )
            if k:
                shares.append(cpu / 3600)
                walls.append(wall)
                qdb_shares.append(qcpu / 3600)
        print(
            f"steady: median aggregator CPU share {statistics.median(shares):.3%} of one core,"
            f" QuestDB {statistics.median(qdb_shares):.3%}, poll wall {statistics.median(walls):.2f} s"
            f" ({len(stations)} stations x {len(params)} parameters, one reading a minute)"
        )
        # A month of one station, arriving late.
        station = ["BACKLOG"]
        kinds["BACKLOG"] = "ambient_air"
        days = args.backlog_days
        month_start = first_hour - days * 24 * H
        for d in range(days):
            writer.write_reading_columns(readings(station, params, month_start + d * 24 * H, 24 * 60, rng))
        times = []
        for r in range(args.repeat):
            writer.write_rows(
                TOUCHED_HOURS,
                [
                    ilp_row(TOUCHED_HOURS, time.time_ns() + h, station="BACKLOG", hour_end=month_start + (h + 1) * H,
                            readings=60 * len(params))
                    for h in range(days * 24)
                ],
            )  # fmt: skip
            time.sleep(0.5)
            wall0 = time.perf_counter()
            report = aggregator.poll_once(now_ns=time.time_ns() + 10**15)
            times.append(time.perf_counter() - wall0)
            print(f"backlog {r + 1}: {report.hours} hours, {report.hourly_rows} hourly rows: {times[-1]:.2f} s")
        print(f"backlog: median recompute of {days} days of one station: {statistics.median(times):.2f} s")
    finally:
        qdb.stop()


if __name__ == "__main__":
    main()
