"""`quantrac bridge tt10 serve` SIGKILLed twice while 50 stations upload every few seconds (ftplib
clients in threads, a few with curl) and a province's FTP server keeps writing into the drop folders
the bridge watches; restarted each time. Clients send again whatever got no 226, as loggers do.

The audit, per (station, parameter, ts) against what the clients sent and the writer wrote: every
reading in QuestDB with its value, none missing, no revision (nothing stored twice with another
value), and in the bridge's ledger every file accepted exactly once (a file sent again after the kill
or re-read by the watcher after its memory lost the last window is a duplicate of it, never a second
conversion)."""

from __future__ import annotations

import ftplib
import io
import json
import subprocess
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from cli.processes import quantrac
from supervisor.process import wait_until
from tests.end_to_end.tt10_bridge_rig import BridgeRig, Tt10Station, make_bridge_rig
from tests.helpers import require_tool, sql, wait_for_count

STATIONS, CYCLES, PERIOD_S = 50, 8, 3.0
CURL_STATIONS = 3  # the first few upload with curl, the others with ftplib
WATCHED, WATCH_FILES, WATCH_EVERY_S = 5, 40, 0.5
KILLS_AT_S = (8.0, 17.0)  # after the stream started; down 2 s each time
PARAMETERS = ("PM2,5", "PM10", "SO2", "NO2", "CO")


def stamp(ts_s: int) -> str:
    """Vietnam local time of a UTC second, written out here (not with our codec)."""
    return datetime.fromtimestamp(ts_s + 7 * 3600, tz=UTC).strftime("%Y%m%d%H%M%S")


def make_file(station: str, ts_s: int, seed: int) -> tuple[str, bytes, dict]:
    values = {p: round(seed + i / 10, 1) for i, p in enumerate(PARAMETERS)}
    data = b"".join(f"{p}\t{v}\tug/m3\t{stamp(ts_s)}\t00\r\n".encode() for p, v in values.items())
    return f"{station}_{stamp(ts_s)}.txt", data, {(station, p, ts_s): v for p, v in values.items()}


class Client:
    """One station's logger: a file every PERIOD_S, each sent until it got its 226."""

    def __init__(self, rig: BridgeRig, station: Tt10Station, use_curl: bool, base_s: int, k: int) -> None:
        self.rig, self.station, self.use_curl, self.base_s, self.k = rig, station, use_curl, base_s, k
        self.confirmed: list[float] = []  # when each file got its 226
        self.failures = 0
        self.sent: dict = {}

    def send(self, name: str, data: bytes) -> None:
        if self.use_curl:
            exe = require_tool("curl", package="curl")
            local = self.rig.tmp / "out" / name
            local.parent.mkdir(exist_ok=True)
            local.write_bytes(data)
            done = subprocess.run([exe, "-sS", "-T", str(local), self.rig.ftp_url(self.station)],
                                  capture_output=True, text=True, timeout=30)  # fmt: skip
            if done.returncode != 0:
                raise OSError(done.stderr.strip())
            return
        ftp = ftplib.FTP()
        ftp.connect("127.0.0.1", self.rig.ftp_port, timeout=10)
        try:
            ftp.login(self.station.account, self.station.password)
            ftp.storbinary(f"STOR {name}", io.BytesIO(data))  # raises unless the reply is 2xx (226)
            ftp.quit()
        finally:
            ftp.close()

    def run(self, start: float, deadline: float) -> None:
        for c in range(CYCLES):
            time.sleep(max(0.0, start + c * PERIOD_S + (self.k % 10) * 0.1 - time.monotonic()))
            name, data, values = make_file(self.station.station, self.base_s + c * 300, 1000 * self.k + c)
            while True:
                try:
                    self.send(name, data)
                    break
                except (OSError, EOFError, ftplib.Error):
                    self.failures += 1
                    assert time.monotonic() < deadline, f"{self.station.station}: {name} never got its 226"
                    time.sleep(0.5)
            self.confirmed.append(time.monotonic())
            self.sent.update(values)


def write_drop_folders(rig: BridgeRig, stations: list[str], base_s: int, written: dict) -> None:
    """The province's own FTP server writing `<station>/yyyy/MM/dd/` files, whatever the bridge does."""
    assert rig.watch_dir is not None
    for i in range(WATCH_FILES):
        for k, station in enumerate(stations):
            ts_s = base_s + i * 300
            name, data, values = make_file(station, ts_s, 50_000 + 100 * k + i)
            day = rig.watch_dir / station / stamp(ts_s)[:4] / stamp(ts_s)[4:6] / stamp(ts_s)[6:8]
            day.mkdir(parents=True, exist_ok=True)
            (day / name).write_bytes(data)
            written.update(values)
        time.sleep(WATCH_EVERY_S)


@pytest.mark.slow  # two SIGKILLs and restarts of the bridge under load: about 90 s
def test_bridge_killed_while_50_stations_upload_and_a_folder_is_watched_loses_and_doubles_nothing(
    tmp_path, mosquitto_server, make_collector, warehouse
):
    tag = uuid.uuid4().hex[:6].upper()
    watched = [f"TKW{tag}_W{i}" for i in range(WATCHED)]
    rig = make_bridge_rig(
        tmp_path, mosquitto_server.port, make_collector, warehouse, ftp_stations=STATIONS, sftp_stations=0,
        hold_s=60.0, watch_stations=watched,
    )  # fmt: skip
    rig.start()
    base_s = (int(time.time()) // 300 - 48) * 300  # the last hours, whole cycles
    clients = [Client(rig, s, k < CURL_STATIONS, base_s, k) for k, s in enumerate(rig.stations)]
    written: dict = {}
    start = time.monotonic()
    deadline = start + 100
    kills: list[float] = []
    try:
        writer = threading.Thread(target=write_drop_folders, args=(rig, watched, base_s, written), daemon=True)
        writer.start()
        with ThreadPoolExecutor(len(clients)) as pool:
            running = [pool.submit(c.run, start, deadline) for c in clients]
            for at in KILLS_AT_S:
                time.sleep(max(0.0, start + at - time.monotonic()))
                assert rig.process.kill() == -9
                kills.append(time.monotonic())
                time.sleep(2.0)
                rig.start()
            for f in running:
                f.result()
        writer.join(60)
        expected = {**written}
        for c in clients:
            expected.update(c.sent)
        assert len(expected) == (STATIONS * CYCLES + WATCHED * WATCH_FILES) * len(PARAMETERS)
        before = sum(t < kills[0] for c in clients for t in c.confirmed)
        after = sum(t > kills[-1] for c in clients for t in c.confirmed)
        failures = sum(c.failures for c in clients)
        assert before > 0 and after > 0 and failures > 0, (before, after, failures)  # the kills were mid-stream

        everyone = [s.station for s in rig.stations] + watched
        in_list = ", ".join(f"'{s}'" for s in everyone)
        wait_for_count(rig.pg, f"SELECT count() FROM readings WHERE station IN ({in_list})", len(expected),
                       timeout=120)  # fmt: skip
        rows = sql(rig.pg, f"SELECT station, parameter, cast(ts AS LONG), value, source FROM readings"
                           f" WHERE station IN ({in_list})")  # fmt: skip
        assert len(rows) == len(expected)
        assert {(s, p, ts // 10**9): v for s, p, ts, v, _ in rows} == expected
        assert {r[4] for r in rows} == {"tt10"}
        assert sql(rig.pg, f"SELECT count() FROM reading_revisions WHERE station IN ({in_list})") == [(0,)]
        assert sql(rig.pg, f"SELECT count() FROM rejects WHERE claimed_station IN ({in_list})") == [(0,)]

        files = ledger_files(rig)
        accepted = Counter(f["sha256"] for f in files if f["state"] == "accepted")
        names = {(f["station"], f["name"]) for f in files if f["state"] == "accepted"}
        assert len(names) == STATIONS * CYCLES + WATCHED * WATCH_FILES  # every file accepted...
        assert set(accepted.values()) == {1}  # ...exactly once
        states = Counter(f["state"] for f in files)
        assert set(states) <= {"accepted", "duplicate", "superseded"}, states
        print(f"\n{before} files confirmed before the first kill, {after} after the last, {failures} failed"
              f" attempts sent again; receipts {dict(states)}; watched files re-read after a kill:"
              f" {sum(f['state'] == 'duplicate' and f['transport'] == 'watch' for f in files)}")  # fmt: skip
    finally:
        rig.process.stop(20)


def ledger_files(rig: BridgeRig) -> list[dict]:
    def listed() -> list[dict] | None:
        done = subprocess.run(quantrac("bridge", "tt10", "files", "--root", rig.root, "--json", "--limit", "0"),
                              capture_output=True, text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
        files = [json.loads(line) for line in done.stdout.splitlines()]
        return files if all(f["state"] != "held" and f["state"] != "received" for f in files) else None

    return wait_until(listed, timeout=60, what="every file judged")
