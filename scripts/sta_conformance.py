"""Runs the OGC SensorThings conformance suite (ets-sta10 from Maven Central, its all-in-one jar, no
TEAM Engine) against the /sta/v1.1 view and prints one line per test: its level, name, outcome, why.

    .venv/bin/python scripts/sta_conformance.py [--ics 1]

Starts its own QuestDB, writes a few readings and a station description over ILP, serves the API in
this process, and puts a small proxy in front of it that adds an agency's X-API-Key (the suite cannot
send one, and Observations need it). Results: api/README.md. Not a test: the suite is written for
SensorThings 1.0 with numeric ids and writes, so part of it cannot pass against this read-only view.
"""

from __future__ import annotations

import argparse
import glob
import http.server
import json
import subprocess
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx

from api.app import ApiConfig
from api.keys import add as add_key
from api.server import make_server
from store.ilp_writer import WarehouseWriter
from store.questdb_server import QuestDBServer
from store.schema import READINGS, STATION_METADATA, ensure_schema
from supervisor import free_port
from supervisor.process import wait_until

ETS = "org.opengis.cite:ets-sta10:1.5:jar:aio"
M = 60_000_000_000


def fetch_suite(into: Path) -> Path:
    jar = into / "ets-sta10-1.5-aio.jar"
    if not jar.is_file():
        into.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={ETS}", f"-DoutputDirectory={into}"], check=True
        )
    return jar


def load(endpoints, now: int) -> None:
    writer = WarehouseWriter(endpoints.ilp_conf)
    try:
        ts = [now - k * M for k in range(120)]
        writer.write_columns(
            READINGS,
            {"ts": ts, "station": ["ETS_01"] * 120, "device": ["pm1"] * 120, "parameter": ["PM10"] * 120,
             "value": [float(k % 50) for k in range(120)], "unit": ["ug/m3"] * 120, "status": ["00"] * 120,
             "qc_flag": [1] * 120},
        )  # fmt: skip
        writer.write_columns(
            STATION_METADATA,
            {"ts": [now], "station": ["ETS_01"], "name": ["ETS station"], "province_code": ["HN"], "facility": [""],
             "kind": ["ambient_air"], "latitude": [21.0285], "longitude": [105.8542], "enabled": [True],
             "parameters": [json.dumps({"PM10": 60})]},
        )  # fmt: skip
    finally:
        writer.close()


def key_adding_proxy(target: str, key: str) -> http.server.ThreadingHTTPServer:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # the Host is passed on, so the API's links name the proxy
            r = httpx.get(target + self.path, headers={"X-API-Key": key, "Host": self.headers["Host"]}, timeout=60)
            self.send_response(r.status_code)
            self.send_header("Content-Type", r.headers.get("content-type", "application/json"))
            self.send_header("Content-Length", str(len(r.content)))
            self.end_headers()
            self.wfile.write(r.content)

        def log_message(self, *args) -> None:  # the suite's requests are many; the outcome is what counts
            return

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ics", default="1", help="conformance levels to check: 1 (read), 2 (+ create/update), 3")
    args = ap.parse_args()
    repo = Path(__file__).resolve().parents[1]
    jar = fetch_suite(repo / ".cache" / "ets-sta10")
    root = Path(tempfile.mkdtemp(prefix="sta-ets-"))
    server = QuestDBServer(root / "questdb").start()
    try:
        conninfo = server.endpoints.pg_conninfo
        ensure_schema(conninfo)
        load(server.endpoints, (time.time_ns() // M) * M)
        keys = root / "keys.json"
        _, secret = add_key(keys, "ets", 100_000_000)
        port = free_port()
        uv = make_server(ApiConfig(conninfo, keys, 100_000_000), "127.0.0.1", port)
        threading.Thread(target=uv.run, daemon=True).start()
        wait_until(lambda: uv.started, 30, what="API up")
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: httpx.get(base + "/sta/v1.1/Datastreams").json()["value"], 60, what="rows visible")
        proxy = key_adding_proxy(base, secret)
        iut = f"http://127.0.0.1:{proxy.server_address[1]}/sta/v1.1"
        props = root / "test-run-props.xml"
        # No DOCTYPE: the suite's XML parser would fetch the DTD from the network.
        props.write_text(
            f'<?xml version="1.0" encoding="UTF-8"?><properties><entry key="iut">{iut}</entry>'
            f'<entry key="ics">{args.ics}</entry></properties>'
        )
        subprocess.run(["java", f"-Duser.home={root}", "-jar", str(jar), str(props)], check=True, capture_output=True)
        (results,) = glob.glob(str(root / "testng" / "*" / "testng-results.xml"))
        tree = ET.parse(results).getroot()
        print(f"ets-sta10 1.5, ics={args.ics}: {dict(tree.attrib)}")
        for test in tree.iter("test"):
            for method in test.iter("test-method"):
                if method.get("is-config") == "true" and method.get("status") == "PASS":
                    continue
                message = method.find("exception/message")
                why = " ".join((message.text or "").split())[:150] if message is not None else ""
                print(f"{test.get('name')} | {method.get('name')} | {method.get('status')} | {why}")
        proxy.shutdown()
        uv.should_exit = True
    finally:
        server.stop()


if __name__ == "__main__":
    main()
