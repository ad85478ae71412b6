"""The REST API's latency at 50 concurrent clients, beside the same query sent straight to QuestDB over
the PostgreSQL wire (the ratio is the API's overhead). Issue 14's targets: latest-of-all p99 < 100 ms,
overhead < 2x.

    .venv/bin/python bench/bench_api.py [--stations 2000] [--clients 50] [--seconds 10]

Starts its own QuestDB and ``quantrac api serve`` (a separate process, as deployed), writes the rows
over ILP (the collector is not what is measured here), then per query: N clients for S seconds each
way, p50 / p99 side by side.
"""

from __future__ import annotations

import argparse
import statistics
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


def run_clients(clients: int, seconds: float, make_call) -> list[float]:
    latencies: list[float] = []
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client() -> None:
        call = make_call()
        mine = []
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            call()
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-api-"))
    server = QuestDBServer(root / "questdb").start()
    api = None
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
        port = free_port()
        pg = f"{server.endpoints.host}:{server.endpoints.pg_port}"
        api = ManagedProcess(
            quantrac("api", "serve", "--pg", pg, "--port", str(port), "--keys", keys_file, "--pool-size", "50"),
            log_path=root / "api.log", name="api",
        ).start()  # fmt: skip
        base = f"http://127.0.0.1:{port}/v1"
        wait_until(lambda: _ok(base + "/stations"), timeout=30, what="API up")
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
        print(f"{args.stations} stations x {len(PARAMETERS)} parameters, {args.clients} clients, {args.seconds} s each")
        print(f"{'query':26} {'rows':>6} {'API p50':>9} {'API p99':>9} {'PG p50':>9} {'PG p99':>9} {'p50 ratio':>9}")
        for label, path, params, direct in cases:
            headers = {"X-API-Key": secret}  # an agency's key: its check (memoised scrypt) is part of the cost
            rows = _rows(base + path, params, headers)

            def api_call(url=base + path, params=params, headers=headers):
                client = httpx.Client(timeout=30)
                return lambda: client.get(url, params=params, headers=headers).raise_for_status()

            def pg_call(direct=direct):
                conn = psycopg.connect(conninfo, autocommit=True)
                return lambda: direct(conn)

            a = run_clients(args.clients, args.seconds, api_call)
            d = run_clients(args.clients, args.seconds, pg_call)
            print(
                f"{label:26} {rows:>6} {pct(a, 50):>7.1f}ms {pct(a, 99):>7.1f}ms {pct(d, 50):>7.1f}ms"
                f" {pct(d, 99):>7.1f}ms {pct(a, 50) / pct(d, 50):>8.2f}x"
            )
    finally:
        if api is not None:
            api.stop()
        server.stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def _rows(url: str, params: dict, headers: dict) -> int:
    body = httpx.get(url, params=params, headers=headers, timeout=30).json()
    return len(body["data"]) if "data" in body else -1


if __name__ == "__main__":
    main()
