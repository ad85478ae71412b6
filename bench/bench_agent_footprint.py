"""The edge agent's footprint: RSS and CPU share of one core, beside a floor.

    .venv/bin/python bench/bench_agent_footprint.py [--duration 300] [--compare REV]

Runs the real agent (``quantrac agent run``, a subprocess) against simulated analyzers
(firmware_sim, a process of its own: 5 analyzers x 20 float32 values plus a status register,
Modbus TCP, polled at 1 Hz) and a real Mosquitto, with a QoS 1 subscriber in this process so
every batch is acknowledged (PUBACK "success": a collector session would receive it). Every
second it reads the agent's ``/proc/<pid>/status`` (VmRSS) and ``/proc/<pid>/stat``
(utime + stime): RSS as median and peak after a warm-up, CPU as the median of 10-second windows'
share of one core (and the mean over the whole window). The simulators' cost is not counted:
they are other processes.

The floor is a bare Python process that imports exactly the non-quantrac modules the agent had
loaded when it stopped (written by the agent's launcher at exit) and then sleeps, measured the
same way. What the floor holds, no change to the agent's own code can take away.

``--compare REV`` also runs the agent of git revision REV (``git archive`` into the temp dir),
side by side in the same run against its own simulator, so both see the same machine load.

The profile lives in the temp dir; the agent finds it through ``--profiles-dir`` when the CLI
has it, else its launcher points ``station_profiles.loader.PROFILES_DIR`` there (older revisions).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as mqtt
import yaml

from broker_bridge.keys import write_new_key
from broker_bridge.mosquitto_server import MosquittoServer
from broker_bridge.topics import data_subscription
from supervisor.process import ManagedProcess, free_port, wait_until

REPO = Path(__file__).resolve().parent.parent
PROFILE = "bench-float20"
PROJECT_PACKAGES = {
    "analysis", "api", "bench", "broker_bridge", "cli", "collector", "configuration", "edge_agent",
    "firmware_sim", "station_profiles", "store", "supervisor", "tests", "vocabulary",
}  # fmt: skip
TICKS = os.sysconf("SC_CLK_TCK")

# Runs `quantrac agent run ...` in-process (argv after the launcher's name), records at exit the
# modules the agent had loaded, for the floor.
LAUNCHER = """\
import atexit, os, sys
from pathlib import Path

def _dump():
    # in import order; "-name": a module the agent's process blocked (None in sys.modules), the floor blocks it too
    loaded = [name if module is not None else "-" + name for name, module in sys.modules.items()]
    Path(os.environ["BENCH_MODULES_OUT"]).write_text("\\n".join(loaded))

atexit.register(_dump)
if os.environ.get("BENCH_PROFILES_DIR"):
    import station_profiles.loader as _loader
    _loader.PROFILES_DIR = Path(os.environ["BENCH_PROFILES_DIR"])
    del _loader  # stays imported: the agent loads its station with it anyway
from cli.main import app
sys.argv[0] = "quantrac"
app()
"""

# Imports every module in the file named by argv[1] that is not quantrac's own, then idles.
FLOOR = """\
import importlib, json, re, sys, time, warnings
warnings.simplefilter("ignore")

def rss_kb():
    return int(re.search(r"VmRSS:\\s+(\\d+)", open("/proc/self/status").read()).group(1))

names = open(sys.argv[1]).read().split()
for name in names:
    if name.startswith("-"):
        sys.modules[name[1:]] = None
names = [name for name in names if not name.startswith("-")]
project = set(sys.argv[2].split(","))
failed, cost, bare = 0, {}, rss_kb()
for name in names:  # in the agent's import order: each library is charged what it brought in first
    top = name.split(".")[0]
    if top in project or name == "__main__" or name.startswith("__editable__") or name in sys.modules:
        continue
    before = rss_kb()
    try:
        importlib.import_module(name)
    except Exception:
        failed += 1
    cost[top] = cost.get(top, 0) + rss_kb() - before
print("floor.cost " + json.dumps({"bare_kb": bare, "by_library_kb": cost}), flush=True)
print(f"floor.ready imported={len(sys.modules)} failed={failed}", flush=True)
while True:
    time.sleep(3600)
"""


def profile_doc(values: int) -> dict:
    return {
        "profile": PROFILE,
        "manufacturer": "quantrac",
        "model": f"bench analyzer, {values} float32 values",
        "source": "Simulated analyzer for bench/bench_agent_footprint.py; not a real device",
        "protocol": "modbus",
        "address_base": 0,
        "values": [
            {
                "parameter": f"P{i:02d}",
                "table": "input_register",
                "address": 2 * i,
                "type": "float32",
                "word_order": "ABCD",
                "unit": "ug/m3",
                "range": [0, 1000],
                "sentinels": [-9999.0],
                "signal": {"base": 10.0 + i, "noise": 1.0, "min": 0.0},
            }
            for i in range(values)
        ],
        "status": {
            "table": "input_register",
            "address": 100,
            "type": "uint16",
            "codes": {0: ["00", ""], 1: ["01", "zero calibration"], 3: ["02", "device fault"]},
        },
    }


def station_doc(station_id: str, devices: int, poll_s: float) -> dict:
    return {
        "station": {"id": station_id, "name": "Footprint bench", "kind": "ambient_air"},
        "poll_interval_s": poll_s,
        "devices": [
            {
                "id": f"an{i + 1}",
                "profile": PROFILE,
                "transport": "modbus_tcp",
                "host": "127.0.0.1",
                "port": free_port(),
                "unit_id": 1,
                "timeout_s": 1.0,
            }
            for i in range(devices)
        ],
    }


@dataclass
class Sample:
    t: float
    rss_kb: int
    cpu_ticks: int


def sample(pid: int) -> Sample | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; utime, stime are fields 14, 15
    return Sample(time.monotonic(), rss, int(fields[11]) + int(fields[12]))


@dataclass
class Measured:
    samples: list[Sample] = field(default_factory=list)

    def after(self, t0: float) -> list[Sample]:
        return [s for s in self.samples if s.t >= t0]

    def figures(self, t0: float, window_s: float = 10.0) -> dict:
        kept = self.after(t0)
        if len(kept) < 2:
            raise RuntimeError("too few samples after the warm-up: run longer")
        rss = [s.rss_kb / 1024 for s in kept]
        windows, start = [], kept[0]
        for s in kept[1:]:
            if s.t - start.t >= window_s:
                windows.append((s.cpu_ticks - start.cpu_ticks) / TICKS / (s.t - start.t) * 100)
                start = s
        whole = (kept[-1].cpu_ticks - kept[0].cpu_ticks) / TICKS / (kept[-1].t - kept[0].t) * 100
        return {
            "rss_median_mb": statistics.median(rss),
            "rss_peak_mb": max(s.rss_kb for s in self.samples) / 1024,
            "cpu_median_pct": statistics.median(windows) if windows else whole,
            "cpu_mean_pct": whole,
            "windows": len(windows),
        }


def sample_all(processes: dict[str, ManagedProcess], into: dict[str, Measured], seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for name, proc in processes.items():
            if not proc.running:
                raise RuntimeError(f"{name} exited early (rc {proc.returncode}); see {proc.log_path}")
            s = sample(proc.pid)
            if s is not None:
                into[name].samples.append(s)
        time.sleep(1.0)


class Subscriber:
    """A QoS 1 subscription to every station's data, so the broker's PUBACKs say "delivered"."""

    def __init__(self, port: int) -> None:
        self.messages: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-footprint", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(data_subscription(), qos=1)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, client, userdata, message) -> None:
        station = message.topic.split("/")[2]
        with self.lock:
            self.messages[station] = self.messages.get(station, 0) + 1

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class Variant:
    name: str
    code: Path  # the tree whose agent runs
    station_id: str
    tmp: Path
    station_file: Path = field(init=False)
    modules: Path = field(init=False)

    def __post_init__(self) -> None:
        self.tmp.mkdir(parents=True)
        self.station_file = self.tmp / "station.yaml"
        self.modules = self.tmp / "agent-modules.txt"


def export_revision(rev: str, into: Path) -> Path:
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def has_profiles_dir(code: Path) -> bool:
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "agent", "run", "--help"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(code), "COLUMNS": "200"},
    )  # fmt: skip
    return "--profiles-dir" in out.stdout


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench-footprint-"))
    profiles = tmp / "profiles"
    profiles.mkdir()
    (profiles / f"{PROFILE}.yaml").write_text(yaml.safe_dump(profile_doc(args.values), sort_keys=False))
    variants = [Variant("this tree", REPO, "BENCH_FOOT_NEW", tmp / "new")]
    if args.compare:
        old = export_revision(args.compare, tmp / "rev")
        variants.insert(0, Variant(f"{args.compare}", old, "BENCH_FOOT_OLD", tmp / "old"))
    broker = MosquittoServer(tmp / "mosquitto").start()
    started: list[ManagedProcess] = []
    subscriber = Subscriber(broker.port)
    try:
        agents: dict[str, ManagedProcess] = {}
        for v in variants:
            v.station_file.write_text(yaml.safe_dump(station_doc(v.station_id, args.devices, args.poll_s)))
            key = v.tmp / "station.key"
            write_new_key(key)
            sim = ManagedProcess(
                [sys.executable, "-m", "firmware_sim.modbus_tcp", "--station", v.station_file,
                 "--truth", v.tmp / "truth.jsonl", "--profiles-dir", profiles],
                log_path=v.tmp / "sim.log", name=f"sim:{v.name}", env={**os.environ, "PYTHONPATH": str(REPO)},
            ).start()  # fmt: skip
            started.append(sim)
            wait_until(lambda s=sim: "sim.listening" in s.log_path.read_text(), timeout=30, what="sim", process=sim)
            env = {**os.environ, "PYTHONPATH": str(v.code), "BENCH_MODULES_OUT": str(v.modules)}
            extra: list[str | Path] = []
            if has_profiles_dir(v.code):
                extra = ["--profiles-dir", profiles]
            else:
                env["BENCH_PROFILES_DIR"] = str(profiles)
            launcher = v.tmp / "launch_agent.py"
            launcher.write_text(LAUNCHER)
            agent = ManagedProcess(
                [sys.executable, launcher, "agent", "run", v.station_file, "--key", key,
                 "--broker", f"127.0.0.1:{broker.port}", "--outbox", v.tmp / "outbox.sqlite", *extra],
                log_path=v.tmp / "agent.log", env=env, name=f"agent:{v.name}",
            ).start()  # fmt: skip
            started.append(agent)
            agents[v.name] = agent
        measured = {name: Measured() for name in agents}
        t_start = time.monotonic()
        print(f"agents running for {args.duration:.0f} s (warm-up {args.warmup:.0f} s); logs in {tmp}", flush=True)
        sample_all(agents, measured, args.duration)
        results: dict[str, dict] = {}
        for v in variants:
            results[v.name] = measured[v.name].figures(t_start + args.warmup)
        for v in variants:
            agents[v.name].stop(timeout=30)
        for v in variants:
            log = (v.tmp / "agent.log").read_text()
            polled = log.count("poll_overrun")
            results[v.name]["poll_overruns"] = polled
            results[v.name]["batches_received"] = subscriber.messages.get(v.station_id, 0)
            loaded = v.modules.read_text().split() if v.modules.exists() else None
            results[v.name]["modules"] = None if loaded is None else sum(not n.startswith("-") for n in loaded)
        # The floors, side by side too: each imports what its agent had loaded.
        floors: dict[str, ManagedProcess] = {}
        for v in variants:
            if not v.modules.exists():
                raise RuntimeError(f"the agent of {v.name} wrote no module list; see {v.tmp / 'agent.log'}")
            script = v.tmp / "floor.py"
            script.write_text(FLOOR)
            floor = ManagedProcess(
                [sys.executable, script, v.modules, ",".join(sorted(PROJECT_PACKAGES))],
                log_path=v.tmp / "floor.log", env={**os.environ, "PYTHONPATH": str(v.code)}, name=f"floor:{v.name}",
            ).start()  # fmt: skip
            started.append(floor)
            floors[v.name] = floor
        for floor in floors.values():
            wait_until(lambda f=floor: "floor.ready" in f.log_path.read_text(), timeout=60, what="floor", process=floor)
        floor_measured = {name: Measured() for name in floors}
        t_floor = time.monotonic()
        sample_all(floors, floor_measured, args.floor_s)
        for v in variants:
            results[v.name]["floor"] = floor_measured[v.name].figures(t_floor)
            lines = floors[v.name].log_path.read_text().splitlines()
            results[v.name]["floor_log"] = next(x for x in lines if x.startswith("floor.ready"))
            results[v.name]["floor_cost"] = json.loads(next(x for x in lines if x.startswith("floor.cost "))[11:])
        return results
    finally:
        subscriber.stop()
        for proc in reversed(started):
            proc.stop(timeout=15)
        broker.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=300.0, help="seconds the agents run (default 300)")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds not counted after the start")
    parser.add_argument("--floor-s", type=float, default=20.0, help="seconds each floor process is sampled")
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--values", type=int, default=20, help="values per analyzer")
    parser.add_argument("--poll-s", type=float, default=1.0, help="poll interval")
    parser.add_argument("--compare", metavar="REV", help="also run the agent of this git revision, side by side")
    parser.add_argument("--top", type=int, default=14, help="libraries listed by their share of the floor")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, outboxes)")
    args = parser.parse_args()
    results = run(args)
    print(
        f"\n{args.devices} analyzers x {args.values} values at {1 / args.poll_s:g} Hz, {args.duration:.0f} s"
        f" (warm-up {args.warmup:.0f} s); CPU: median of 10 s windows (mean)\n"
    )
    print(f"{'agent':<14} {'RSS med MB':>10} {'RSS peak':>9} {'CPU %':>14} {'floor RSS':>10} {'floor CPU':>9}"
          f" {'above floor':>11} {'modules':>7} {'batches':>7}")  # fmt: skip
    for name, r in results.items():
        f = r["floor"]
        print(
            f"{name:<14} {r['rss_median_mb']:>10.1f} {r['rss_peak_mb']:>9.1f}"
            f" {r['cpu_median_pct']:>6.2f} ({r['cpu_mean_pct']:.2f})"
            f" {f['rss_median_mb']:>10.1f} {f['cpu_median_pct']:>9.2f}"
            f" {r['rss_median_mb'] - f['rss_median_mb']:>11.1f} {r['modules']:>7} {r['batches_received']:>7}"
        )
        if r["poll_overruns"]:
            print(f"  {name}: {r['poll_overruns']} poll overruns")
    print("target: at most 40 MB RSS and 2 % of one core")
    for name, r in results.items():
        cost = r["floor_cost"]
        top = sorted(cost["by_library_kb"].items(), key=lambda kv: -kv[1])[: args.top]
        print(
            f"\nfloor of {name}: bare interpreter {cost['bare_kb'] / 1024:.1f} MB,"
            " then (MB, in the agent's import order):"
            f" {', '.join(f'{lib} {kb / 1024:.1f}' for lib, kb in top)}; {r['floor_log'][12:]}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
