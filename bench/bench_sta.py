"""The SensorThings view (/sta/v1.1): a deep page by @iot.nextLink (keyset) beside the same depth by
$skip (offset), $count over the whole readings table and under filters, and the Datastreams list of a
2,000-station warehouse; medians of sequential calls, each beside the same SQL sent straight to QuestDB.

    .venv/bin/python bench/bench_sta.py [--readings 1000000] [--stations 2000] [--calls 15]

Starts its own QuestDB and the API (uvicorn in this process), writes the rows over ILP as columns.
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

from api.app import ApiConfig
from api.keys import add as add_key
from api.sensorthings.routes import _token
from api.server import make_server
from store import sta_queries as sq
from store.ilp_writer import WarehouseWriter
from store.questdb_server import QuestDBServer
from store.schema import READINGS, ensure_schema
from supervisor import free_port
from supervisor.process import wait_until

S = 1_000_000_000
PARAMETERS = ("PM10", "PM2,5", "NO2", "SO2", "CO", "O3")


def load(endpoints, readings: int, stations: int, now: int) -> int:
    writer = WarehouseWriter(endpoints.ilp_conf)
    start = now - readings * 10 * S  # one reading every 10 s of one series
    try:
        for lo in range(0, readings, 200_000):
            n = min(200_000, readings - lo)
            writer.write_columns(
                READINGS,
                {
                    "ts": [start + (lo + i) * 10 * S for i in range(n)],
                    "station": ["DEEP"] * n,
                    "device": ["d"] * n,
                    "parameter": ["PM10"] * n,
                    "value": [float((lo + i) % 97) for i in range(n)],
                    "unit": ["ug/m3"] * n,
                    "status": ["00"] * n,
                    "qc_flag": [1] * n,
                },
            )
        keys = [(f"B{s:04d}", p) for s in range(stations) for p in PARAMETERS]
        writer.write_columns(
            READINGS,
            {
                "ts": [now - 60 * S] * len(keys),
                "station": [s for s, _ in keys],
                "device": ["d"] * len(keys),
                "parameter": [p for _, p in keys],
                "value": [1.0] * len(keys),
                "unit": ["ug/m3"] * len(keys),
                "status": ["00"] * len(keys),
                "qc_flag": [1] * len(keys),
            },
        )
    finally:
        writer.close()
    return start


def median_ms(call, n: int) -> float:
    call()  # warm
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--readings", type=int, default=1_000_000)
    ap.add_argument("--stations", type=int, default=2000)
    ap.add_argument("--calls", type=int, default=15)
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-sta-"))
    server = QuestDBServer(root / "questdb").start()
    try:
        conninfo = server.endpoints.pg_conninfo
        ensure_schema(conninfo)
        now = (time.time_ns() // S) * S
        start = load(server.endpoints, args.readings, args.stations, now)
        total = args.readings + args.stations * len(PARAMETERS)
        conn = psycopg.connect(conninfo, autocommit=True)
        wait_until(lambda: conn.execute("SELECT count() FROM readings").fetchone()[0] >= total, 300, what="rows")
        keys = root / "keys.json"
        _, secret = add_key(keys, "bench", 100_000_000)
        port = free_port()
        uv = make_server(ApiConfig(conninfo, keys, 100_000_000), "127.0.0.1", port)
        threading.Thread(target=uv.run, daemon=True).start()
        wait_until(lambda: uv.started, 30, what="API up")
        base = f"http://127.0.0.1:{port}/sta/v1.1"
        client = httpx.Client(timeout=120, headers={"X-API-Key": secret})

        def get(path: str, **params) -> dict:
            r = client.get(base + path, params=params)
            r.raise_for_status()
            return r.json()

        ds = "DEEP:d:PM10"
        deep = args.readings // 2
        scope = sq.AllOf((sq.Compare("station", "eq", "DEEP"), sq.Compare("device", "eq", "d"),
                          sq.Compare("parameter", "eq", "PM10")))  # fmt: skip
        ((key_ts,),) = conn.execute(
            "SELECT ts::long FROM readings WHERE station = 'DEEP' ORDER BY ts LIMIT %s, %s", (deep - 1, deep)
        ).fetchall()
        token = _token([key_ts, "DEEP", "d", "PM10"], [("ts", False)])
        day0 = start + deep * 10 * S
        window = f"phenomenonTime ge {_iso(day0)} and phenomenonTime lt {_iso(day0 + 86_400 * S)}"
        day_cond = sq.AllOf((sq.Compare("ts", "ge", day0), sq.Compare("ts", "lt", day0 + 86_400 * S)))
        page = f"/Datastreams('{ds}')/Observations"
        cases = [
            ("page 1, $top=1000", lambda: get(page, **{"$top": "1000"}),
             lambda: sq.observations_page(conn, scope, limit=1001)),
            (f"row {deep:,} via nextLink (keyset)", lambda: get(page, **{"$top": "1000", "$skip": str(deep),
                                                                       "$skiptoken": token}),
             lambda: sq.observations_page(conn, scope, after=[key_ts, "DEEP", "d", "PM10"], limit=1001)),
            (f"row {deep:,} via $skip (offset)", lambda: get(page, **{"$top": "1000", "$skip": str(deep)}),
             lambda: sq.observations_page(conn, scope, offset=deep, limit=1001)),
            (f"$count all ({total:,})", lambda: get("/Observations", **{"$count": "true", "$top": "1"}),
             lambda: sq.observations_count(conn, None)),
            ("$count one day (8,640)", lambda: get("/Observations", **{"$count": "true", "$top": "1",
                                                                       "$filter": window}),
             lambda: sq.observations_count(conn, day_cond)),
            ("$count one Datastream", lambda: get(page, **{"$count": "true", "$top": "1"}),
             lambda: sq.observations_count(conn, scope)),
            (f"Datastreams $top=100 (of {total - args.readings + 1:,})", lambda: get("/Datastreams", **{"$top": "100"}),
             lambda: sq.datastreams(conn)),
        ]  # fmt: skip
        assert (
            get(page, **{"$top": "1000", "$skip": str(deep), "$skiptoken": token})["value"]
            == get(page, **{"$top": "1000", "$skip": str(deep)})["value"]
        ), "keyset and offset pages differ"
        assert get("/Observations", **{"$count": "true", "$top": "1"})["@iot.count"] == total
        print(f"{total:,} readings ({args.readings:,} in one series), {args.stations} stations; median of {args.calls}")
        print(f"{'request':42} {'API':>10} {'SQL alone':>10}")
        for label, api_call, sql_call in cases:
            print(f"{label:42} {median_ms(api_call, args.calls):>8.1f}ms {median_ms(sql_call, args.calls):>8.1f}ms")
        uv.should_exit = True
    finally:
        server.stop()


def _iso(ns: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ns // S))


if __name__ == "__main__":
    main()
