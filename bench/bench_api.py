"""The REST API's latency at 50 concurrent clients, beside the same query sent straight to QuestDB over
the PostgreSQL wire (the ratio is the API's overhead). Issue 14's targets: latest-of-all p99 < 100 ms,
overhead < 2x.

    PYTHONPATH=$PWD .venv/bin/python bench/bench_api.py [--stations 2000] [--clients 50] [--seconds 10]
        [--before REV] [--rounds 3] [--wrk]

Starts its own QuestDB and ``quantrac api serve`` (a separate process, as deployed) from this tree and,
beside it, from commit REV (``git archive``; default: the API core before the work on its speed), writes
the rows over ILP (the collector is not what is measured here), then per query: N clients for S seconds
against each server and against QuestDB directly, p50 / p99 side by side, and whether both servers' answers
hold the same data. The three take turns, round after round (the machine is shared: its load drifts over a
run); each figure is the median of the rounds' figures, each ratio the median of the rounds' ratios (the two
measured in the same round).

The clients are 50 Python threads in this process, sharing its interpreter lock (and the machine's two
cores with the server and QuestDB): their own waits are part of every figure, the direct query's too.
``--wrk`` also loads each API with wrk (Debian's; C, one epoll loop per thread) at the same concurrency and
prints its p50 / p99: the server's latency without the Python client's.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psycopg

from api.keys import add as add_key
from cli.processes import quantrac
from store import api_queries as q
from store.ilp_writer import WarehouseWriter, ilp_row
from store.questdb_server import QuestDBServer
from store.schema import HOURLY_MEANS, READINGS, ensure_schema
from supervisor import free_port
from supervisor.process import ManagedProcess, wait_until

REPO = Path(__file__).resolve().parents[1]
BEFORE = "ed525b4"  # the REST API core as it landed on main, before the work on its speed
M = 60_000_000_000
H = 60 * M
PARAMETERS = ("PM10", "PM2,5", "NO2", "SO2", "CO", "O3")


def load(endpoints, stations: int, now: int) -> None:
    writer = WarehouseWriter(endpoints.ilp_conf)
    try:
        rows = [
            ilp_row(READINGS, now - k * M, station=f"B{s:04d}", device="d", parameter=p, value=1.0 + k, unit="ug/m3",
                    status="00", qc_flag=1)
            for s in range(stations) for k in range(3) for p in PARAMETERS
        ]  # fmt: skip
        for i in range(0, len(rows), 50_000):
            writer.write_rows(READINGS, rows[i : i + 50_000])
        day = [
            ilp_row(READINGS, now - 2 * 86_400_000_000_000 + k * M, station="B0000", device="d", parameter=p,
                    value=float(k), unit="ug/m3", status="00", qc_flag=1)
            for k in range(1440) for p in PARAMETERS
        ]  # fmt: skip
        writer.write_rows(READINGS, day)
        month = [
            ilp_row(HOURLY_MEANS, now - k * H, station="B0000", device="d", parameter=p, unit="ug/m3", mean=1.0,
                    n_valid=60, n_expected=60, coverage=1.0, valid=True, rule="r")
            for k in range(1, 24 * 30 + 1) for p in PARAMETERS
        ]  # fmt: skip
        writer.write_rows(HOURLY_MEANS, month)
    finally:
        writer.close()


ERRORS: dict[str, int] = {}


def run_clients(clients: int, seconds: float, make_call) -> list[float]:
    """Latencies (s) of the calls that succeeded; failures are counted in ERRORS by kind, and printed."""
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        call = make_call()
        mine = []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            try:
                call()
            except (httpx.HTTPError, psycopg.Error) as exc:
                with lock:
                    ERRORS[type(exc).__name__] = ERRORS.get(type(exc).__name__, 0) + 1
                continue
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return latencies


def pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100)[p - 1] * 1000 if len(values) > 1 else float("nan")


def serve_api(
    root: Path, name: str, pg: str, keys_file: Path, tree: Path | None, extra: tuple[str, ...] = ()
) -> tuple[ManagedProcess, str]:
    """``quantrac api serve`` from this tree, or from ``tree`` (another commit's files) when given."""
    port = free_port()
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    argv = quantrac("api", "serve", "--pg", pg, "--port", str(port), "--keys", keys_file, "--pool-size", "50", *extra)
    process = ManagedProcess(argv, log_path=root / f"{name}.log", cwd=tree, env=env, name=name).start()
    base = f"http://127.0.0.1:{port}/v1"
    wait_until(lambda: _ok(base + "/stations"), timeout=60, what=f"{name} API up")
    return process, base


def checkout(rev: str, into: Path) -> Path:
    """The files of commit ``rev`` of this repository, to serve the API as it was (the "before" column)."""
    into.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", rev], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=3, help="every server and the direct query in turn, this often")
    ap.add_argument(
        "--before",
        default=BEFORE,
        help="a commit whose API is measured in the same run, beside this tree's ('' for none);"
        f" default {BEFORE}, the API core as it landed",
    )
    ap.add_argument(
        "--wrk",
        action="store_true",
        help="also load each API with wrk (C, epoll: no client-side GIL), -c CLIENTS, and print its p50 / p99",
    )
    args = ap.parse_args()
    if args.wrk and shutil.which("wrk") is None:
        raise SystemExit("--wrk: wrk is missing; run `bash scripts/bootstrap.sh` (installs Debian's wrk)")
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = QuestDBServer(root / "questdb").start()
    apis: list[ManagedProcess] = []
    try:
        conninfo = server.endpoints.pg_conninfo
        ensure_schema(conninfo)
        now = (time.time_ns() // M) * M
        load(server.endpoints, args.stations, now)
        wait_until(
            lambda: psycopg.connect(conninfo, autocommit=True).execute("SELECT count() FROM hourly_means").fetchone()[0]
            >= 720 * len(PARAMETERS),
            timeout=120, what="rows visible",
        )  # fmt: skip
        keys_file = root / "keys.json"
        _, secret = add_key(keys_file, "bench", 100_000_000)
        pg = f"{server.endpoints.host}:{server.endpoints.pg_port}"
        day0, day, month = now - 2 * 86_400_000_000_000, 86_400_000_000_000, 31 * 86_400_000_000_000
        iso = lambda ns: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns / 1e9))  # noqa: E731
        cases = [
            ("latest of all (public)", "/latest", {},
             lambda c: q.latest_readings(c, valid_only=True)),
            ("one station-day raw", "/stations/B0000/readings",
             {"start": iso(day0), "end": iso(day0 + day), "limit": 10000},
             lambda c: q.readings_page(c, "B0000", day0, day0 + day, limit=10001)),
            ("a month of hourly means", "/stations/B0000/means/hourly",
             {"start": iso(now - month), "end": iso(now), "limit": 10000},
             lambda c: q.means_page(c, "hourly", "B0000", now - month, now, limit=10001)),
        ]  # fmt: skip
        headers = {"X-API-Key": secret}  # an agency's key: its check (memoised scrypt) is part of the cost
        # One server at a time, stopped before the next starts: each keeps its pool of connections open, and
        # QuestDB's PostgreSQL wire takes only so many (two pools and 50 direct clients were refused).
        servers = [(f"before ({args.before})", checkout(args.before, root / "before"))] if args.before else []
        servers.append(("this tree", None))
        targets = [name for name, _ in servers] + ["PostgreSQL wire"]
        rounds: dict[tuple[str, str], list[list[float]]] = {(c[0], t): [] for c in cases for t in targets}
        bodies: dict[tuple[str, str], list] = {}
        by_wrk: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, tree in servers:
                process, base = serve_api(root, name.split()[0], pg, keys_file, tree)
                apis.append(process)
                for label, path, params, _ in cases:
                    bodies.setdefault((label, name), _body(base + path, params, headers)["data"])

                    def api_call(url=base + path, params=params):
                        client = httpx.Client(timeout=120)
                        return lambda: client.get(url, params=params, headers=headers).raise_for_status()

                    rounds[label, name].append(run_clients(args.clients, args.seconds, api_call))
                    if args.wrk:
                        url = str(httpx.URL(base + path, params=params))
                        by_wrk.setdefault((label, name), []).append(wrk(url, headers, args.clients, args.seconds))
                process.stop()
            for label, _, _, direct in cases:

                def pg_call(direct=direct):
                    conn = psycopg.connect(conninfo, autocommit=True)
                    return lambda: direct(conn)

                rounds[label, "PostgreSQL wire"].append(run_clients(args.clients, args.seconds, pg_call))

        def med(label: str, name: str, p: int, over: str | None = None) -> float:
            """The median over the rounds of the p-th percentile (of its ratio to ``over``'s in that round)."""
            mine = [pct(r, p) for r in rounds[label, name]]
            if over is not None:
                mine = [m / pct(o, p) for m, o in zip(mine, rounds[label, over])]
            return statistics.median(mine)

        print(
            f"{args.stations} stations x {len(PARAMETERS)} parameters, {args.clients} clients, {args.seconds} s each,"
            f" {args.rounds} rounds (medians of the rounds);"
        )
        print("latency in ms; ratio: the API / the same query over the PostgreSQL wire (target < 2x); n: requests")
        print(
            f"{'query':24} {'rows':>6} {'server':22} {'p50':>8} {'p99':>8} {'n':>6} {'p50 ratio':>9} {'p99 ratio':>9}"
        )
        wire = "PostgreSQL wire"
        for label, *_ in cases:
            rows = len(bodies[label, "this tree"])
            for name in targets:
                n = sum(len(r) for r in rounds[label, name])
                ratios = (
                    "" if name == wire else f" {med(label, name, 50, wire):>8.2f}x {med(label, name, 99, wire):>8.2f}x"
                )
                p50, p99 = med(label, name, 50), med(label, name, 99)
                print(f"{label:24} {rows:>6} {name:22} {p50:>8.1f} {p99:>8.1f} {n:>6}{ratios}")
                if (label, name) in by_wrk:
                    w50, w99 = (statistics.median(r[i] for r in by_wrk[label, name]) for i in (0, 1))
                    print(f"{'':31} {name + ' (wrk)':22} {w50:>8.1f} {w99:>8.1f}")
            if len(servers) == 2:
                b, a = (name for name, _ in servers)
                same = bodies[label, b] == bodies[label, a]
                print(
                    f"{'':31} before/after: p50 {med(label, b, 50, a):.1f}x, p99 {med(label, b, 99, a):.1f}x;"
                    f" same data in both answers: {'yes' if same else 'NO'}"
                )
        print(f"failed calls: {ERRORS or 'none'}")
    finally:
        for process in apis:
            process.stop()
        server.stop()


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, headers: dict[str, str], clients: int, seconds: float) -> tuple[float, float]:
    """(p50, p99) in ms of ``clients`` connections kept busy for ``seconds`` by wrk, gzip accepted as httpx does."""
    argv = ["wrk", "-t", "2", "-c", str(clients), "-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "60s"]
    for name, value in {**headers, "Accept-Encoding": "gzip"}.items():
        argv += ["-H", f"{name}: {value}"]
    out = subprocess.run([*argv, url], check=True, capture_output=True, text=True).stdout
    found = dict(re.findall(r"^\s+(50|99)%\s+([0-9.]+(?:us|ms|s))\s*$", out, re.MULTILINE))
    if "Non-2xx" in out or set(found) != {"50", "99"}:
        raise RuntimeError(f"wrk against {url}: unexpected output:\n{out}")
    value = lambda text: float(re.match(r"[0-9.]+", text).group()) * WRK_UNITS[re.search(r"[a-z]+$", text).group()]  # noqa: E731
    return value(found["50"]), value(found["99"])


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _body(url: str, params: dict, headers: dict) -> dict:
    answer = httpx.get(url, params=params, headers=headers, timeout=120)
    answer.raise_for_status()
    return answer.json()


if __name__ == "__main__":
    main()
