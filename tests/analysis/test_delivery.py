"""Alert delivery resumes after the aggregator restarts: an alert decided while the webhook receiver is
down reaches it once the receiver is up and ``quantrac warehouse aggregate`` has been restarted, exactly
once per alert id, and a further restart sends nothing again (the ``alerts`` table is the outbox)."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from broker_bridge.alerts import AlertMessage
from store.ilp_writer import ReadingColumns, WarehouseWriter, ilp_row
from store.schema import TOUCHED_HOURS
from supervisor import free_port
from supervisor.process import wait_until
from tests.helpers import sql, unique_station

H = 3_600_000_000_000
M = 60_000_000_000


class Receiver(http.server.BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self):  # noqa: N802
        Receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def write_hours(warehouse, sid: str, start: int, means: list[float]) -> None:
    """Two hours of SO2 and O2 readings, a reading a minute, QC pass, and the touched_hours rows of a commit."""
    minutes = [start + h * H + m * M for h in range(len(means)) for m in range(60)]
    ts = minutes * 2  # SO2, then O2 at the reference 7 % (QCVN 19's limits are stated at it)
    parameter = ["SO2"] * len(minutes) + ["O2"] * len(minutes)
    n = len(ts)
    writer = WarehouseWriter(warehouse.ilp_conf)
    writer.write_reading_columns(
        ReadingColumns(
            station=[sid] * n, seq=[1] * n, historical=[False] * n, key_id=["k"] * n, received_ns=[time.time_ns()] * n,
            ts_ns=ts, device=["cems"] * n, parameter=parameter,
            value=[means[t // H - start // H] if p == "SO2" else 7.0 for t, p in zip(ts, parameter)],
            unit=["mg/Nm3" if p == "SO2" else "%" for p in parameter], status=["00"] * n, cause=[""] * n,
            qc_flag=[1] * n, qc_check=[""] * n, qc_cause=[""] * n, qc_checks=[""] * n,
        )
    )  # fmt: skip
    now = time.time_ns()
    writer.write_rows(
        TOUCHED_HOURS,
        [ilp_row(TOUCHED_HOURS, now + h, station=sid, hour_end=start + (h + 1) * H, readings=60) for h in range(2)],
    )
    writer.close()


def alert_states(warehouse, sid: str) -> list[tuple]:
    return sql(
        warehouse.pg_conninfo,
        "SELECT alert_id, kind, webhook_state, webhook_attempts FROM alerts WHERE station = %s ORDER BY ts",
        (sid,),
    )


@pytest.mark.slow  # three aggregator processes, one killed with its alerts undelivered: ~15 s
def test_alerts_decided_while_the_receiver_is_down_are_delivered_once_after_a_restart(warehouse, tmp_path: Path):
    sid = unique_station("DLV")
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"stations:\n  {sid}:\n    limits:\n      - {{regulation: qcvn_19_2024, zone: B}}\n")
    port = free_port()
    command = [
        sys.executable, "-m", "cli.main", "warehouse", "aggregate",
        "--questdb", f"{warehouse.host}:{warehouse.http_port}", "--questdb-pg", f"{warehouse.host}:{warehouse.pg_port}",
        "--settings", str(settings), "--webhook", f"http://127.0.0.1:{port}/alerts", "--poll-s", "0.2",
        "--name", f"agg-{sid}", "--availability-poll-s", "0",  # this station is silent: not what is tested here
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}

    log = (tmp_path / "aggregator.log").open("ab")

    def aggregator() -> subprocess.Popen:
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)

    start = (time.time_ns() // H - 10) * H
    write_hours(warehouse, sid, start, [250.0, 170.0])  # zone B limit 200 mg/Nm3: opens, then closes (< 180)
    first = aggregator()
    try:
        # Nothing listens on the webhook's port: both decisions are tried, refused and left pending.
        wait_until(
            lambda: (
                sorted((k, s) for _, k, s, n in alert_states(warehouse, sid) if n >= 1)
                == [("close", "pending"), ("open", "pending")]  # decided in one poll: one ts, no order
            ),
            timeout=30,
            what="two pending alerts, each tried once",
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    decided = [a for a, *_ in alert_states(warehouse, sid)]
    Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        second = aggregator()
        try:
            wait_until(lambda: len(Receiver.bodies) >= 2, timeout=30, what="the two alerts after the restart")
            wait_until(
                lambda: [s for _, _, s, _ in alert_states(warehouse, sid)] == ["delivered", "delivered"],
                timeout=30,
                what="both recorded delivered",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert second.wait(15) == 0
        third = aggregator()  # the outbox is empty now: nothing is sent again
        try:
            # Started (its SIGTERM handler set) before it is judged: under load the imports take seconds.
            wait_until(
                lambda: (tmp_path / "aggregator.log").read_bytes().count(b"aggregator_started") >= 3,
                timeout=30,
                what="the third aggregator started",
            )
            time.sleep(3)
        finally:
            third.send_signal(signal.SIGTERM)
            assert third.wait(15) == 0
    finally:
        server.shutdown()
    received = [AlertMessage.parse(b) for b in Receiver.bodies]
    assert sorted(a.alert_id for a in received) == sorted(decided) and len(set(decided)) == 2
    assert [a.kind for a in sorted(received, key=lambda a: a.at_ns)] == ["open", "close"]
