"""Issue 10's chaos test: bench/chaos.py run as it is, its report checked.

The short variant (fast tier): 60 s, 20 stations, 30 SIGKILLs of agents and collectors. The full one
(slow tier): 600 s, 20 stations, 120 SIGKILLs (at least 100) across agents, collectors, Mosquitto and QuestDB,
the province broker and the relay the stations' batches pass through (`--relay`).
QUANTRAC_CHAOS_S sets the seconds of killing of both, QUANTRAC_CHAOS_SEED the seed (a failure prints
it; set it to replay). The run's files (every process's log, the outboxes, QuestDB) stay in tmp_path.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHAOS = Path(__file__).resolve().parents[2] / "bench" / "chaos.py"


def run_chaos(tmp_path: Path, seconds: float, kills: int, kinds: str, *extra: str) -> dict:
    seed = int(os.environ.get("QUANTRAC_CHAOS_SEED", time.time_ns() % 10**6))
    report = tmp_path / "chaos.json"
    argv = [sys.executable, str(CHAOS), "--duration", str(seconds), "--seed", str(seed), "--stations", "20"]
    argv += ["--kills", str(kills), "--kinds", kinds, "--workdir", str(tmp_path / "run"), "--json", str(report)]
    argv += list(extra)
    done = subprocess.run(argv, capture_output=True, text=True)
    print(done.stdout[-20000:], done.stderr[-5000:])
    assert report.exists(), f"bench/chaos.py wrote no report (status {done.returncode}, seed {seed}):\n{done.stderr}"
    return json.loads(report.read_text())


def assert_nothing_lost(report: dict, min_kills: int) -> None:
    seed, r, g, p = report["seed"], report["readings"], report["gaps"], report["processes"]
    assert p["kills"] >= min_kills, f"only {p['kills']} kills (seed {seed})"
    assert r["outbox"] > 0 and r["warehouse"] > 0, f"nothing flowed (seed {seed})"
    assert r["lost"] == 0, f"{r['lost']} committed readings lost: {r['lost_by_station']} (seed {seed})"
    assert r["duplicated"] == r["unknown"] == 0, f"duplicated {r['duplicated']}, unknown {r['unknown']} (seed {seed})"
    assert r["altered"] == 0, f"{r['altered']} readings altered: {r['examples']} (seed {seed})"
    assert g["open"] == 0, f"gaps neither healed nor closed as lost at source: {g['open_gaps']} (seed {seed})"
    assert p["unexpected_collector_exits"] == 0, f"collector exits: {p['collector_exits']} (seed {seed})"
    assert p["unexpected_relay_exits"] == 0, f"relay exits: {p['relay_exits']} (seed {seed})"
    assert report["passed"], f"bench/chaos.py judged the run failed (seed {seed})"


@pytest.mark.slow  # a minute and a half of kills and the drain
@pytest.mark.timeout(900)
def test_short_chaos_of_every_kind_of_kill_loses_nothing(tmp_path):
    # Every kind of process, as the full run: with receipts a broker that loses what it acknowledged loses nothing.
    seconds = float(os.environ.get("QUANTRAC_CHAOS_S", "60"))
    kills = max(25, round(seconds / 2))
    report = run_chaos(tmp_path, seconds, kills, "agent,collector,mosquitto,questdb")
    assert_nothing_lost(report, min_kills=25)


@pytest.mark.slow  # ten minutes of kills, then the drain
@pytest.mark.timeout(2400)
def test_ten_minutes_of_chaos_across_every_process_loses_nothing(tmp_path):
    seconds = float(os.environ.get("QUANTRAC_CHAOS_S", "600"))
    kills = max(25, round(seconds / 5))  # 120 in ten minutes
    # The stations' batches travel through a province broker and the store-and-forward relay, both killed too.
    report = run_chaos(tmp_path, seconds, kills, "agent,collector,mosquitto,questdb,relay,province", "--relay")
    assert_nothing_lost(report, min_kills=100 if seconds >= 500 else 25)
    assert all(report["processes"]["kills_by_kind"].values()), "every kind of process was killed at least once"
