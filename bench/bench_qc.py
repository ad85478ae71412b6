"""Throughput of collector.qc.QualityControl.evaluate on one core.

    .venv/bin/python bench/bench_qc.py                 # 1000 stations x 17 parameters, mixed batch sizes
    .venv/bin/python bench/bench_qc.py --cycles 1      # 17 readings per batch (one poll cycle)
    .venv/bin/python bench/bench_qc.py --cycles 12     # 204 readings per batch

Each round sends every station one batch of ``cycles`` poll cycles (17
readings per cycle: an ambient-air, a stack and a wastewater mix), continuing
each station's time line, so every round exercises the live path with a full
history. Realistic noise plus a few missing values, calibrations, spikes and
clock-offset causes. Prints readings per CPU-second of this process (one
core: numpy runs single-threaded here) and wall-clock readings/s per round,
their medians and the best round; on a busy machine the best round is the
figure least disturbed by other processes.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from broker_bridge.envelope import Reading  # noqa: E402
from collector.qc import QualityControl, SeriesState, ThresholdSource  # noqa: E402

# 17 parameters: symbol, unit, base, noise
PARAMS = [
    ("PM2,5", "ug/m3", 40.0, 4.0), ("PM10", "ug/m3", 65.0, 6.0), ("SO2", "ug/m3", 15.0, 2.0),
    ("NO2", "ug/m3", 35.0, 4.0), ("NO", "ug/m3", 20.0, 3.0), ("NOx", "ug/m3", 70.0, 5.0),
    ("CO", "ug/m3", 1500.0, 150.0), ("O3", "ug/m3", 60.0, 5.0), ("Temp", "oC", 29.0, 0.2),
    ("RH", "%", 70.0, 1.0), ("pH", "-", 7.2, 0.05), ("COD", "mg/L", 45.0, 3.0),
    ("TSS", "mg/L", 25.0, 2.0), ("NH4", "mg/L", 3.5, 0.3), ("TN", "mg/L", 12.0, 0.5),
    ("Flow", "m3/h", 38.0, 2.0), ("O2", "%", 12.0, 0.3),
]  # fmt: skip
STEP_NS = 60 * 10**9


def make_round(
    rng: random.Random, stations: list[str], clock: dict[str, int], cycles_of
) -> list[tuple[str, list[Reading], int]]:
    out = []
    for st in stations:
        k = cycles_of()
        readings = []
        t = clock[st]
        for _ in range(k):
            t += STEP_NS
            for sym, unit, base, noise in PARAMS:
                r = rng.random()
                if r < 0.005:
                    readings.append(Reading(t, "dev1", sym, None, unit, "00", "no reply: timeout after 1.0 s"))
                elif r < 0.007:
                    readings.append(Reading(t, "dev1", sym, base * 0.8, unit, "01", "span calibration"))
                elif r < 0.008:
                    readings.append(Reading(t, "dev1", sym, base + 30 * noise, unit, "00"))  # a spike
                elif r < 0.009:
                    readings.append(
                        Reading(t, "dev1", sym, base + rng.gauss(0, noise), unit, "00", "clock offset +12.0 s")
                    )
                else:
                    readings.append(Reading(t, "dev1", sym, base + rng.gauss(0, noise), unit, "00"))
        clock[st] = t
        out.append((st, readings, t + 2 * 10**9))
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=1000)
    ap.add_argument("--cycles", type=int, default=0, help="poll cycles per batch (17 readings each); 0: random 1..12")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument(
        "--flush",
        type=int,
        default=500,
        help="messages per evaluate_many call (a collector flush); 0: evaluate() per message",
    )
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    stations = [f"ST{i:04d}" for i in range(args.stations)]
    start = time.time_ns() - 10 * 86400 * 10**9
    clock = {st: start for st in stations}
    cycles_of = (lambda: args.cycles) if args.cycles else (lambda: rng.randint(1, 12))
    qc = QualityControl(ThresholdSource(), SeriesState())
    warm = make_round(rng, stations, clock, cycles_of)
    qc.evaluate_many(warm)  # fills the history: every later round runs with full windows
    rates, walls = [], []
    for _ in range(args.rounds):
        batches = make_round(rng, stations, clock, cycles_of)
        n = sum(len(r) for _, r, _ in batches)
        t0, c0 = time.perf_counter(), time.process_time()
        if args.flush:
            results = []
            for at in range(0, len(batches), args.flush):
                results += qc.evaluate_many(batches[at : at + args.flush])
        else:
            results = [qc.evaluate(st, readings, received) for st, readings, received in batches]
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
        flagged = sum(1 for res in results for q in res if q.flag != 1)
        rates.append(n / cpu)
        walls.append(n / wall)
        print(
            f"round: {n} readings in {len(batches)} messages (avg {n / len(batches):.0f}/message), "
            f"{flagged} not passed: "
            f"{n / cpu:,.0f} readings per CPU-second ({n / wall:,.0f}/s wall)"
        )
    mode = f"evaluate_many, {args.flush} messages per call" if args.flush else "evaluate per message"
    print(
        f"median ({mode}): {statistics.median(rates):,.0f} readings per CPU-second, "
        f"{statistics.median(walls):,.0f}/s wall; "
        f"best round {max(rates):,.0f} per CPU-second  "
        f"(series kept: {len(qc.state)}, state arrays {qc.state.nbytes() / 1e6:.1f} MB)"
    )


if __name__ == "__main__":
    main()
