"""Chaos run: real stations, real servers, a seeded schedule of SIGKILLs, then an audit against the outboxes.

    .venv/bin/python bench/chaos.py --duration 600 --seed 7                 # issue 10's run: 20 stations
    .venv/bin/python bench/chaos.py --duration 600 --seed 7 --collectors 2  # two collectors, one share group
    .venv/bin/python bench/chaos.py --duration 60 --seed 3 --kinds agent,collector --kills 30
    .venv/bin/python bench/chaos.py --duration 90 --seed 1 --json /tmp/chaos.json --keep

What runs, all as real processes: one QuestDB, one Mosquitto, per station a ``quantrac sim run``
(Modbus TCP simulators, never killed: they are the analyzers) and a ``quantrac agent run``, and one or
two ``quantrac collector run`` (two share one subscription group). During ``--duration`` seconds,
``--kills`` SIGKILLs fall at seeded random moments on agents, collectors, Mosquitto and QuestDB (the
``--kinds`` chosen, weighted as in issue 10's run); each victim is started again after a seeded random
short delay, Mosquitto and QuestDB on the same ports and data directories, so what they persisted (and
what they had not yet) is part of the test. A collector or agent that exits on its own is counted,
its log's traceback kept, and it is started again.

Then the killing stops and everything drains: the agents keep running until every batch sealed before
the end of the chaos is acknowledged (and receipted, where the outbox knows receipts) and in the
warehouse, or until the warehouse stops changing; then the agents are stopped gracefully (they seal and
send what is staged) and the warehouse is given time to take the rest. Bounded by ``--drain-timeout``.

The audit reads every station's outbox (SQLite, read-only: sealed batches decoded with the envelope
codec, plus anything still staged) and the warehouse's ``readings`` over the PostgreSQL wire, keyed on
(station, device, parameter, ts): lost (committed at the station, not in the warehouse), duplicated
(a key more than once, or a warehouse row the station never committed), altered (same key, other
value or status). Gaps come from ``sequence_gaps`` against the batch ledger: healed, closed as lost at
source (where the collector records such a state: its reason is printed), or open. The exit status is
0 only when lost, duplicated, altered, open gaps and unexpected collector exits are all zero.

Receipts (issue 10): when ``cli.processes.collector_process`` takes a ``key``, the collectors get a
signing key and the agents its public half, so the run uses them; the summary says which.
The harness itself uses about a third of a core (a probe query every few seconds); the load average
is printed as the run goes and at the end.
"""

from __future__ import annotations

import argparse
import heapq
import inspect
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg  # noqa: E402
import yaml  # noqa: E402

from broker_bridge.envelope import decode_body, open_envelope  # noqa: E402
from broker_bridge.keys import write_new_key  # noqa: E402
from broker_bridge.mosquitto_server import MosquittoServer  # noqa: E402
from cli.processes import agent_process, collector_process, relay_process, sim_process  # noqa: E402
from collector.registry import add_station  # noqa: E402
from station_profiles.loader import STATIONS_DIR  # noqa: E402
from store.questdb_server import QuestDBServer  # noqa: E402
from store.schema import ensure_schema  # noqa: E402
from supervisor.process import ManagedProcess, free_port, log_tail, wait_until  # noqa: E402

KINDS = ("agent", "collector", "mosquitto", "questdb", "relay", "province")
# Issue 10's run: agents 55, collector 20, Mosquitto 14, QuestDB 5 out of 94. With --relay the
# stations' broker is a province's ("province") and the relay forwards to the collector's broker.
WEIGHTS = {"agent": 55, "collector": 20, "mosquitto": 15, "questdb": 10, "relay": 12, "province": 10}
RESTART_DELAY_S = {
    "agent": (0.2, 3.0), "collector": (0.5, 5.0), "mosquitto": (0.5, 5.0), "questdb": (1.0, 8.0),
    "relay": (0.5, 5.0), "province": (0.5, 5.0),
}  # fmt: skip
TEMPLATES = ("demo_air_01.yaml", "demo_stack_01.yaml", "demo_ww_01.yaml")
SHARE_GROUP = "chaos"
PROGRESS_EVERY_S = 30.0


def receipts_supported() -> bool:
    """The collector signs warehouse receipts (issue 10) when its command line takes a key."""
    return "key" in inspect.signature(collector_process).parameters


def optional_kwargs(function, **wanted) -> dict:
    """The keyword arguments ``function`` accepts, of those wanted (the harness runs before and after issue 10)."""
    accepted = inspect.signature(function).parameters
    return {k: v for k, v in wanted.items() if k in accepted and v is not None}


# -- warehouse ------------------------------------------------------------------------------------------------


def query(conninfo: str, text: str, params=None) -> list[tuple]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(text, params)
        return cursor.fetchall() if cursor.description is not None else []


def query_with_columns(conninfo: str, text: str) -> tuple[list[str], list[tuple]]:
    with psycopg.connect(conninfo, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(text)
        return [c.name for c in cursor.description], cursor.fetchall()


def warehouse_counts_by_seq(conninfo: str) -> dict[str, dict[int, int]]:
    """Per station, readings per batch sequence number."""
    counts: dict[str, dict[int, int]] = {}
    for station, seq, n in query(conninfo, "SELECT station, seq, count() FROM readings GROUP BY station, seq"):
        counts.setdefault(station, {})[seq] = n
    return counts


def warehouse_total(conninfo: str) -> int | None:
    try:
        return query(conninfo, "SELECT count() FROM readings")[0][0]
    except psycopg.Error:
        return None


# -- outboxes -------------------------------------------------------------------------------------------------


def open_outbox(path: Path) -> sqlite3.Connection:
    """Read-only, beside a running agent (the outbox is in WAL mode)."""
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)


def outbox_columns(db: sqlite3.Connection) -> set[str]:
    return {row[1] for row in db.execute("PRAGMA table_info(batches)")}


def undelivered_condition(columns: set[str]) -> str:
    """Batches not yet delivered: not PUBACKed, or (where the outbox knows receipts) not receipted."""
    return "acked_ns IS NULL OR receipted_ns IS NULL" if "receipted_ns" in columns else "acked_ns IS NULL"


@dataclass
class OutboxState:
    last_seq: int
    readings_upto: dict[int, int]  # seq -> readings, sealed batches
    undelivered_upto_cutoff: int


def outbox_state(path: Path, cutoff: int | None = None) -> OutboxState:
    if not path.exists():
        return OutboxState(0, {}, 0)
    with open_outbox(path) as db:
        last_seq = db.execute("SELECT value FROM meta WHERE key='last_seq'").fetchone()[0]
        per_seq = dict(db.execute("SELECT seq, readings FROM batches"))
        condition = undelivered_condition(outbox_columns(db))
        undelivered = db.execute(
            f"SELECT count(*) FROM batches WHERE seq <= ? AND ({condition})", (cutoff if cutoff is not None else -1,)
        ).fetchone()[0]
    return OutboxState(last_seq, per_seq, undelivered)


@dataclass
class OutboxReading:
    value: float | None
    status: str
    seq: int | None  # None: still staged, never sealed
    acked: bool


def outbox_readings(path: Path) -> tuple[dict[tuple[int, str, str], OutboxReading], dict[str, int]]:
    """Every reading the station committed: in sealed batches (decoded) and still staged; plus counts."""
    readings: dict[tuple[int, str, str], OutboxReading] = {}
    info = {"batches": 0, "staged": 0, "duplicate_keys": 0, "dropped_readings": 0, "unacked_batches": 0}
    with open_outbox(path) as db:
        columns = outbox_columns(db)
        receipted = "receipted_ns" in columns
        info["unreceipted_batches"] = (
            db.execute("SELECT count(*) FROM batches WHERE receipted_ns IS NULL").fetchone()[0] if receipted else None
        )
        for seq, payload, acked_ns in db.execute("SELECT seq, payload, acked_ns FROM batches ORDER BY seq"):
            info["batches"] += 1
            info["unacked_batches"] += acked_ns is None
            for r in decode_body(open_envelope(payload).body).readings:
                key = (r.ts_ns, r.device, r.parameter)
                info["duplicate_keys"] += key in readings
                readings[key] = OutboxReading(r.value, r.status, seq, acked_ns is not None)
        for ts_ns, device, parameter, value, status in db.execute(
            "SELECT ts_ns, device, parameter, value, status FROM staged"
        ):
            info["staged"] += 1
            key = (ts_ns, device, parameter)
            info["duplicate_keys"] += key in readings
            readings[key] = OutboxReading(value, status, None, False)
        info["dropped_readings"] = db.execute("SELECT coalesce(sum(readings), 0) FROM dropped").fetchone()[0]
    return readings, info


# -- the processes --------------------------------------------------------------------------------------------


@dataclass
class Victim:
    """Something the schedule may kill: an agent, a collector, Mosquitto or QuestDB."""

    kind: str
    name: str
    target: object  # ManagedProcess or ServerProcess
    down_by_us: bool = False
    kills: int = 0
    restarts: int = 0
    unexpected_exits: list[dict] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.target.running

    def kill(self) -> None:
        self.down_by_us = True
        self.kills += 1
        self.target.kill()

    def start(self) -> None:
        self.target.start()
        self.down_by_us = False
        self.restarts += 1


@dataclass
class ChaosStation:
    id: str
    root: Path
    file: Path
    ports: dict[str, int]
    key: Path
    outbox: Path
    sim: ManagedProcess | None = None
    agent: Victim | None = None


def make_stations(n: int, root: Path, registry: Path, poll_s: float, run_tag: str) -> list[ChaosStation]:
    stations = []
    for i in range(n):
        template = TEMPLATES[i % len(TEMPLATES)]
        doc = yaml.safe_load((STATIONS_DIR / template).read_text())
        station_id = f"CHAOS_{run_tag}_{i:02d}"
        doc["station"]["id"] = station_id
        doc["poll_interval_s"] = poll_s
        home = root / station_id
        home.mkdir(parents=True)
        file = home / "station.yaml"
        file.write_text(yaml.safe_dump(doc))
        key = home / "station.key"
        add_station(registry, station_id, write_new_key(key).public_key)
        stations.append(
            ChaosStation(
                station_id, home, file, {d["id"]: free_port() for d in doc["devices"]}, key, home / "outbox.sqlite"
            )
        )
    return stations


def wait_logged(process: ManagedProcess, event: str) -> None:
    """Started all at once, then waited for: the processes start in parallel."""
    wait_until(
        lambda: event in process.log_path.read_text(), timeout=60, what=f"{event} from {process.name}", process=process
    )


class Rig:
    """The whole system as real processes, each killable and restartable."""

    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.receipts = receipts_supported()
        self.questdb = QuestDBServer(root / "questdb")
        self.mosquitto = MosquittoServer(root / "mosquitto")
        # --relay: the stations speak to a province broker; a relay forwards their batches to this one
        self.province = MosquittoServer(root / "province-mosquitto") if args.relay else None
        self.relay: Victim | None = None
        self.registry = root / "registry.yaml"
        self.collector_key = root / "keys" / "collector.key"
        if self.receipts:
            write_new_key(self.collector_key)
        run_tag = uuid.uuid4().hex[:6]
        self.stations = make_stations(args.stations, root / "stations", self.registry, args.poll_s, run_tag)
        self.collectors: list[Victim] = []
        self.victims: list[Victim] = []

    @property
    def conninfo(self) -> str:
        return self.questdb.endpoints.pg_conninfo

    def start(self) -> None:
        self.questdb.start()
        ensure_schema(self.conninfo)
        self.mosquitto.start()
        self.victims += [Victim("questdb", "questdb", self.questdb), Victim("mosquitto", "mosquitto", self.mosquitto)]
        broker = f"127.0.0.1:{self.mosquitto.port}"
        station_broker = broker
        if self.province is not None:
            self.province.start()
            self.victims.append(Victim("province", "province-mosquitto", self.province))
            station_broker = f"127.0.0.1:{self.province.port}"
        for st in self.stations:
            st.sim = sim_process(st.file, st.root / "truth.jsonl", st.root / "sim.log", st.ports).start()
        for st in self.stations:
            wait_logged(st.sim, "sim.listening")
        e = self.questdb.endpoints
        for i in range(self.args.collectors):
            process = collector_process(
                self.registry,
                broker,
                f"127.0.0.1:{e.http_port}",
                f"127.0.0.1:{e.pg_port}",
                self.root / f"collector-{i + 1}.log",
                client_id=f"chaos-collector-{i + 1}",
                share_group=SHARE_GROUP if self.args.collectors > 1 else None,
                **optional_kwargs(
                    collector_process,
                    key=self.collector_key if self.receipts else None,
                    resend_retry_s=self.args.resend_retry_s,
                ),
            )
            victim = Victim("collector", process.name, process)
            victim.target.start()
            self.collectors.append(victim)
        for victim in self.collectors:
            wait_logged(victim.target, "mqtt_connected")
        if self.province is not None:
            self.relay = Victim("relay", "relay", relay_process(self.relay_file(), self.root / "relay.log"))
            self.relay.target.start()
            wait_logged(self.relay.target, "relay_connected")
            self.victims.append(self.relay)
        for st in self.stations:
            process = agent_process(
                st.file,
                st.key,
                station_broker,
                st.outbox,
                st.root / "agent.log",
                st.ports,
                **optional_kwargs(
                    agent_process,
                    collector_keys=(self.collector_key.with_suffix(".pub"),) if self.receipts else None,
                    receipt_timeout_s=self.args.receipt_timeout_s,
                ),
            )
            st.agent = Victim("agent", process.name, process)
            st.agent.target.start()
        self.victims += self.collectors + [st.agent for st in self.stations]

    def relay_file(self) -> Path:
        """The relay's file: national receipts verified and passed on to the agents (no province collector)."""
        path = self.root / "relay.yaml"
        doc = {
            "stations": [st.id for st in self.stations],
            "province": {"broker": f"127.0.0.1:{self.province.port}"},
            "national": {"broker": f"127.0.0.1:{self.mosquitto.port}"},
            "outbox_dir": str(self.root / "relay"),
            "client_id": "chaos-relay",
        }
        if self.receipts:
            doc |= {
                "receipt_keys": [str(self.collector_key.with_suffix(".pub"))],
                "receipt_timeout_s": self.args.receipt_timeout_s,
                "pass_receipts": True,
            }
        path.write_text(yaml.safe_dump(doc))
        return path

    def watch_exits(self, now: float) -> None:
        """An agent or collector that exited without our kill: count it, keep its log's tail, start it again."""
        for victim in self.victims:
            if victim.kind in ("agent", "collector", "relay") and not victim.down_by_us and not victim.running:
                victim.unexpected_exits.append(
                    {
                        "at_s": round(now, 1),
                        "returncode": victim.target.returncode,
                        "log_tail": log_tail(victim.target.log_path, 30),
                    }
                )
                print(f"  ! {victim.name} exited on its own (status {victim.target.returncode}); started again")
                victim.start()

    def stop(self) -> None:
        everything = [st.agent.target for st in self.stations if st.agent] + [c.target for c in self.collectors]
        everything += [self.relay.target] if self.relay is not None else []
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda p: p.stop(timeout=30), everything))
            list(pool.map(lambda p: p.stop(timeout=10), [st.sim for st in self.stations if st.sim]))
        self.mosquitto.stop()
        if self.province is not None:
            self.province.stop()
        self.questdb.stop()


# -- the chaos ------------------------------------------------------------------------------------------------


def load() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


def run_chaos(rig: Rig, args: argparse.Namespace, rng: random.Random, loads: list[float]) -> float:
    """Kill on schedule for ``args.duration`` s; restart each victim after a short random delay. Returns seconds."""
    kinds = [k for k in KINDS if k in args.kinds]
    t0 = time.monotonic()
    kill_at = sorted(rng.uniform(2.0, max(3.0, args.duration - 2.0)) for _ in range(args.kills))
    restarts: list[tuple[float, int, Victim]] = []  # (due, tie-breaker, victim)
    next_progress = PROGRESS_EVERY_S
    while True:
        now = time.monotonic() - t0
        while restarts and restarts[0][0] <= now:
            _, _, victim = heapq.heappop(restarts)
            victim.start()  # QuestDB blocks here until it answers: meanwhile nothing else is killed
            now = time.monotonic() - t0
        rig.watch_exits(now)
        if kill_at and kill_at[0] <= now:
            kill_at.pop(0)
            candidates = [k for k in kinds if any(v.kind == k and v.running for v in rig.victims)]
            if candidates:
                kind = rng.choices(candidates, weights=[WEIGHTS[k] for k in candidates])[0]
                victim = rng.choice([v for v in rig.victims if v.kind == kind and v.running])
                victim.kill()
                delay = rng.uniform(*RESTART_DELAY_S[kind])
                heapq.heappush(restarts, (now + delay, id(victim), victim))
        if now >= next_progress:
            next_progress += PROGRESS_EVERY_S
            loads.append(os.getloadavg()[0])
            kills = sum(v.kills for v in rig.victims)
            stored = warehouse_total(rig.conninfo) if rig.questdb.running else None
            print(f"  {now:5.0f} s: {kills} kills, warehouse {stored if stored is not None else '-'}, load {load()}")
        if now >= args.duration and not kill_at and not restarts:
            return now
        time.sleep(0.05)


def drain(rig: Rig, args: argparse.Namespace) -> dict:
    """Let everything catch up: first with the agents running (re-sends, healing), then stopped gracefully."""
    t0 = time.monotonic()
    deadline = t0 + args.drain_timeout
    for victim in rig.victims:  # the schedule leaves nothing down, but be sure
        if not victim.running:
            victim.start()
    cutoff = {st.id: outbox_state(st.outbox).last_seq for st in rig.stations}

    def behind() -> tuple[int, int, int]:
        """(readings sealed up to the cutoff and not in the warehouse, undelivered batches, 0)."""
        stored = warehouse_counts_by_seq(rig.conninfo)
        missing = undelivered = 0
        for st in rig.stations:
            state = outbox_state(st.outbox, cutoff[st.id])
            undelivered += state.undelivered_upto_cutoff
            have = stored.get(st.id, {})
            missing += sum(
                max(0, n - have.get(seq, 0)) for seq, n in state.readings_upto.items() if seq <= cutoff[st.id]
            )
        return missing, undelivered, 0

    phase1 = wait_settled(behind, lambda m, u, _: m == 0 and u == 0, deadline, args.stable_s, rig)
    print(f"  drain, agents running: {phase1['why']} after {phase1['s']:.0f} s (missing {phase1['last'][0]},"
          f" undelivered batches {phase1['last'][1]})")  # fmt: skip
    with ThreadPoolExecutor(16) as pool:  # SIGTERM: each agent seals what is staged and sends it
        codes = list(pool.map(lambda st: st.agent.target.stop(timeout=60), rig.stations))
    for st in rig.stations:
        st.agent.down_by_us = True

    def final() -> tuple[int, int]:
        committed = sum(
            sum(outbox_state(st.outbox).readings_upto.values()) for st in rig.stations
        )  # sealed: the graceful stop sealed the staged ones
        return committed, warehouse_total(rig.conninfo) or 0

    phase2 = wait_settled(
        lambda: (*final(), 0), lambda c, w, _: w >= c, max(deadline, time.monotonic() + 30), args.stable_s, rig
    )
    print(f"  drain, agents stopped: {phase2['why']} after {phase2['s']:.0f} s")
    return {
        "agents_running_s": round(phase1["s"], 1),
        "agents_running_end": phase1["why"],
        "agents_stopped_s": round(phase2["s"], 1),
        "agents_stopped_end": phase2["why"],
        "agent_stop_codes": sorted(set(codes)),
        "total_s": round(time.monotonic() - t0, 1),
    }


def wait_settled(probe, done, deadline: float, stable_s: float, rig: Rig) -> dict:
    """Probe every 3 s until ``done``, until the probe's answer stayed the same for ``stable_s``, or the deadline."""
    t0 = time.monotonic()
    last, since = None, time.monotonic()
    while True:
        rig.watch_exits(time.monotonic() - t0)
        try:
            value = probe()
        except psycopg.Error as exc:
            value = ("warehouse unreachable", str(exc)[:80])
        now = time.monotonic()
        if value != last:
            last, since = value, now
        if isinstance(value, tuple) and len(value) == 3 and done(*value):
            return {"why": "caught up", "s": now - t0, "last": value}
        if now - since >= stable_s:
            return {"why": f"unchanged for {stable_s:.0f} s", "s": now - t0, "last": value}
        if now >= deadline:
            return {"why": "timed out", "s": now - t0, "last": value}
        time.sleep(3.0)


# -- the audit ------------------------------------------------------------------------------------------------


def ranges(numbers) -> str:
    """'3-5, 9' for [3, 4, 5, 9]."""
    out, run = [], []
    for n in sorted(numbers):
        if run and n == run[-1] + 1:
            run.append(n)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [n]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ", ".join(out)


def audit_readings(rig: Rig) -> dict:
    totals = {"outbox": 0, "warehouse": 0, "lost": 0, "duplicated": 0, "unknown": 0, "altered": 0}
    info_totals: dict[str, int] = {}
    lost_batches: dict[str, dict] = {}
    examples: list[str] = []
    for st in rig.stations:
        committed, info = outbox_readings(st.outbox)
        for k, v in info.items():
            if v is not None:
                info_totals[k] = info_totals.get(k, 0) + v
        rows = query(
            rig.conninfo,
            "SELECT ts::long, device, parameter, value, status, seq FROM readings WHERE station = %s",
            (st.id,),
        )
        totals["outbox"] += len(committed)
        totals["warehouse"] += len(rows)
        seen: dict[tuple[int, str, str], tuple] = {}
        for ts, device, parameter, value, status, seq in rows:
            key = (ts, device, parameter)
            if key in seen:
                totals["duplicated"] += 1
                continue
            seen[key] = (value, status, seq)
            mine = committed.get(key)
            if mine is None:
                totals["unknown"] += 1
                if len(examples) < 5:
                    examples.append(f"{st.id} {key}: in the warehouse, never committed at the station")
            elif (mine.value, mine.status) != (value, status):
                totals["altered"] += 1
                if len(examples) < 5:
                    examples.append(f"{st.id} {key}: station {(mine.value, mine.status)}, warehouse {(value, status)}")
        lost = {key: r for key, r in committed.items() if key not in seen}
        totals["lost"] += len(lost)
        if lost:
            seqs = {r.seq for r in lost.values() if r.seq is not None}
            lost_batches[st.id] = {
                "readings": len(lost),
                "seqs": ranges(seqs),
                "staged": sum(r.seq is None for r in lost.values()),
                "pubacked": sum(r.acked for r in lost.values()),
            }
    return {**totals, "outbox_info": info_totals, "lost_by_station": lost_batches, "examples": examples}


def audit_gaps(rig: Rig, lost_by_station: dict[str, dict]) -> dict:
    """Each recorded gap: healed (the ledger has every batch), closed as lost at source, or open."""
    columns, rows = query_with_columns(rig.conninfo, "SELECT * FROM sequence_gaps")
    ledger: dict[str, set[int]] = {}
    for station, seq in query(rig.conninfo, "SELECT DISTINCT station, seq FROM batches"):
        ledger.setdefault(station, set()).add(seq)
    states: dict[str, int] = {}
    healed = closed = 0
    open_gaps, closed_gaps = [], []
    for row in rows:
        gap = dict(zip(columns, row))
        station, first, last = gap["station"], gap["first_missing"], gap["last_missing"]
        state = gap.get("state")
        states[str(state)] = states.get(str(state), 0) + 1
        missing = [s for s in range(first, last + 1) if s not in ledger.get(station, set())]
        described = f"{station} seq {first}-{last}"
        if state == "lost_at_source":
            closed += 1
            closed_gaps.append(f"{described}: lost at source ({gap.get('lost')} batches) {gap.get('detail') or ''}")
        elif not missing:
            healed += 1
        else:
            open_gaps.append(f"{described} ({len(missing)} batches missing, state {state})")
    noticed = {
        station: any(g.startswith(f"{station} ") for g in open_gaps + closed_gaps) for station in lost_by_station
    }
    return {
        "recorded": len(rows),
        "states": states,
        "healed": healed,
        "closed_lost_at_source": closed,
        "open": len(open_gaps),
        "open_gaps": open_gaps,
        "closed_gaps": closed_gaps,
        "stations_losing_without_a_gap": sorted(s for s, seen in noticed.items() if not seen),
    }


def audit_processes(rig: Rig) -> dict:
    present = {v.kind for v in rig.victims}
    by_kind = {k: sum(v.kills for v in rig.victims if v.kind == k) for k in KINDS if k in present}
    collector_exits = [
        {"collector": v.name, **exit} for v in rig.collectors for exit in v.unexpected_exits
    ]  # fmt: skip
    agent_exits = [{"agent": st.agent.name, **e} for st in rig.stations for e in st.agent.unexpected_exits]
    relay_exits = [{"relay": rig.relay.name, **e} for e in rig.relay.unexpected_exits] if rig.relay else []
    tracebacks = {
        v.name: v.target.log_path.read_text(errors="replace").count("Traceback") for v in rig.collectors
    }  # fmt: skip
    return {
        "kills": sum(by_kind.values()),
        "kills_by_kind": by_kind,
        "unexpected_collector_exits": len(collector_exits),
        "collector_exits": collector_exits,
        "unexpected_agent_exits": len(agent_exits),
        "agent_exits": agent_exits[:10],
        "unexpected_relay_exits": len(relay_exits),
        "relay_exits": relay_exits[:10],
        "collector_tracebacks": tracebacks,
    }


def summary_line(report: dict) -> str:
    k = report["processes"]["kills_by_kind"]
    r, g, exits = report["readings"], report["gaps"], report["processes"]["unexpected_collector_exits"]
    return (
        f"chaos: {report['duration_s']:.0f} s, seed {report['seed']}, {report['stations']} stations,"
        f" {report['collectors']} collector(s), receipts {'on' if report['receipts'] else 'off'},"
        f"{' through a relay,' if report.get('relay') else ''}"
        f" {report['processes']['kills']} kills ({', '.join(f'{kind} {n}' for kind, n in k.items())}):"
        f" outboxes {r['outbox']:,} readings;"
        f" warehouse {r['warehouse']:,}; lost {r['lost']}; duplicated {r['duplicated'] + r['unknown']};"
        f" altered {r['altered']}; open gaps {g['open']} (healed {g['healed']}, lost at source"
        f" {g['closed_lost_at_source']}); unexpected collector exits {exits}"
    )


def print_report(report: dict) -> None:
    r, g, p = report["readings"], report["gaps"], report["processes"]
    rows = [
        ("duration / seed", f"{report['duration_s']:.0f} s / {report['seed']}"),
        ("stations / collectors", f"{report['stations']} / {report['collectors']} (receipts {report['receipts']})"),
        ("kills", f"{p['kills']}  " + ", ".join(f"{k} {n}" for k, n in p["kills_by_kind"].items())),
        ("readings in the outboxes", f"{r['outbox']:,}  ({r['outbox_info']})"),
        ("readings in the warehouse", f"{r['warehouse']:,}"),
        ("lost", r["lost"]),
        ("duplicated (same key twice)", r["duplicated"]),
        ("in the warehouse, never committed", r["unknown"]),
        ("altered (value or status)", r["altered"]),
        ("gaps recorded", f"{g['recorded']}  states {g['states']}"),
        ("gaps healed / lost at source / open", f"{g['healed']} / {g['closed_lost_at_source']} / {g['open']}"),
        ("unexpected collector exits", p["unexpected_collector_exits"]),
        ("unexpected agent exits", p["unexpected_agent_exits"]),
        ("unexpected relay exits", p["unexpected_relay_exits"]),
        ("tracebacks in collector logs", p["collector_tracebacks"]),
        ("drain", report["drain"]),
        ("load average (mean / max, 1 min)", report["load"]),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    for station, lost in r["lost_by_station"].items():
        print(f"  lost at {station}: {lost}")
    for line in g["open_gaps"][:20] + g["closed_gaps"][:20] + r["examples"]:
        print(f"  {line}")
    if g["stations_losing_without_a_gap"]:
        print(f"  stations that lost readings with no gap recorded: {g['stations_losing_without_a_gap']}")
    for e in p["collector_exits"]:
        print(f"  collector exit {e['collector']} at {e['at_s']} s, status {e['returncode']}:\n{e['log_tail']}")
    print()
    print(summary_line(report))


def passed(report: dict) -> bool:
    r = report["readings"]
    return (
        r["lost"] == r["duplicated"] == r["unknown"] == r["altered"] == 0
        and report["gaps"]["open"] == 0
        and report["processes"]["unexpected_collector_exits"] == 0
        and report["processes"]["unexpected_relay_exits"] == 0
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of killing (default 600)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the schedule (default: from the clock)")
    parser.add_argument("--stations", type=int, default=20)
    parser.add_argument("--collectors", type=int, choices=(1, 2), default=1, help="2: one shared subscription")
    parser.add_argument(
        "--relay", action="store_true", help="stations on a province broker, forwarded by `quantrac bridge forward`"
    )
    parser.add_argument("--poll-s", type=float, default=1.0, help="each station's poll interval")
    parser.add_argument("--kills", type=int, default=None, help="SIGKILLs in all (default: one per 5 s, >= 25)")
    parser.add_argument(
        "--kinds", default=",".join(KINDS), help=f"what may be killed, comma-separated from {','.join(KINDS)}"
    )
    parser.add_argument("--drain-timeout", type=float, default=300.0, help="bound on the drain (s)")
    parser.add_argument("--stable-s", type=float, default=45.0, help="the drain ends when nothing moved this long")
    parser.add_argument("--receipt-timeout-s", type=float, default=10.0, help="agent's receipt time-out (receipts)")
    parser.add_argument("--resend-retry-s", type=float, default=5.0, help="collector's gap re-ask base (receipts)")
    parser.add_argument("--workdir", type=Path, default=None, help="where the run's files go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the run's files (logs, outboxes, QuestDB)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"--kinds: {sorted(unknown)} not among {KINDS}")
    if args.seed is None:
        args.seed = time.time_ns() % 10**6
    if args.kills is None:
        args.kills = max(25, round(args.duration / 5))
    rng = random.Random(args.seed)

    root = args.workdir or Path(tempfile.mkdtemp(prefix="quantrac-chaos-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"chaos: {args.duration:.0f} s, seed {args.seed}, {args.stations} stations, {args.collectors} collector(s),"
          f" {args.kills} kills of {','.join(args.kinds)}; files in {root}; load {load()}", flush=True)  # fmt: skip
    rig = Rig(args, root)
    loads: list[float] = []
    try:
        t_setup = time.monotonic()
        rig.start()
        print(f"  started in {time.monotonic() - t_setup:.0f} s (receipts {'on' if rig.receipts else 'off'}),"
              f" load {load()}", flush=True)  # fmt: skip
        duration = run_chaos(rig, args, rng, loads)
        drained = drain(rig, args)
        readings = audit_readings(rig)
        report = {
            "duration_s": duration,
            "seed": args.seed,
            "stations": args.stations,
            "collectors": args.collectors,
            "relay": args.relay,
            "poll_s": args.poll_s,
            "kinds": args.kinds,
            "receipts": rig.receipts,
            "processes": audit_processes(rig),
            "readings": readings,
            "gaps": audit_gaps(rig, readings["lost_by_station"]),
            "drain": drained,
            "load": {
                "mean": round(sum(loads) / len(loads), 2) if loads else None,
                "max": max(loads, default=None),
                "end": load(),
            },
            "workdir": str(root),
        }
        report["passed"] = passed(report)
    finally:
        rig.stop()
    print_report(report)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    if not args.keep and args.workdir is None:
        shutil.rmtree(root, ignore_errors=True)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
