"""TT10 out (edge_agent/tt10_out): the outbox's cycles become files on real FTP, FTPS and SFTP servers.

The servers are pyftpdlib's and asyncssh's own, on free ports (tests/edge_agent/tt10_servers.py);
the files are read back with the codec and compared with the readings put in the outbox.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from broker_bridge.envelope import Reading
from broker_bridge.keys import write_new_key
from broker_bridge.tt10 import read_file, stamp_to_utc_ns
from edge_agent.outbox import Outbox
from edge_agent.tt10_out import Tt10Out, Tt10OutError, temporary_name
from station_profiles.profile_model import StationConfig
from tests.edge_agent.tt10_servers import USER, FtpServer, SftpServer, make_tls, password_file

S = 1_000_000_000
E1 = stamp_to_utc_ns("20260325000500")  # a 5-minute cycle's end, Vietnam time
STATION = "HN_AIR_T10"


def station(tmp_path: Path, port: int, protocol: str = "ftp", **target) -> StationConfig:
    return StationConfig.model_validate(
        {
            "station": {"id": STATION, "kind": "ambient_air"},
            "devices": [{"id": "aq", "profile": "demo-ambient-air", "transport": "modbus_tcp", "host": "127.0.0.1"}],
            "tt10_out": [
                {
                    "name": "province",
                    "protocol": protocol,
                    "host": "127.0.0.1",
                    "port": port,
                    "user": USER,
                    "password_file": str(password_file(tmp_path)),
                    "prefix": "HN_BKHN_KHIKXQ",
                    "settle_s": 0,
                    "retry_min_s": 0.1,
                    "retry_max_s": 0.5,
                    "timeout_s": 5,
                    **target,
                }
            ],
        }
    )


def reading(ts_ns: int, parameter: str, value: float | None, status: str = "00") -> Reading:
    return Reading(ts_ns, "aq", parameter, value, "ug/m3", status)


# Two cycles, hand-computed: PM10 (10 + 20 + 33) / 3 = 21; CO only 01 and 02 (02 twice): 02 without a value;
# cycle 2: PM10 (40 + 50) / 2 = 45 with one 02 left out.
CYCLE_1 = [
    reading(E1 - 250 * S + 7, "PM10", 10.0),
    reading(E1 - 200 * S, "PM10", 20.0),
    reading(E1 - 150 * S, "PM10", 99.0, "01"),
    reading(E1 - 1, "PM10", 33.0),
    reading(E1 - 200 * S, "CO", 1.5, "01"),
    reading(E1 - 100 * S, "CO", None, "02"),
    reading(E1 - 50 * S, "CO", None, "02"),
]
CYCLE_2 = [
    reading(E1 + 100 * S, "PM10", 40.0),
    reading(E1 + 200 * S, "PM10", None, "02"),
    reading(E1 + 300 * S, "PM10", 50.0),
]


def outbox_with_cycles(tmp_path: Path) -> Path:
    """An outbox holding both cycles: the first sealed into a signed batch, the second still staged."""
    path = tmp_path / "outbox.sqlite"
    outbox = Outbox(path, STATION)
    key = write_new_key(tmp_path / "station.key")
    outbox.append(CYCLE_1)
    assert outbox.seal_next(key, max_readings=1000, historical_after_s=1e9) is not None
    outbox.append(CYCLE_2)
    assert outbox.counts()["staged_readings"] == len(CYCLE_2)
    outbox.close()
    return path


def run_two_cycles(tmp_path: Path, config: StationConfig) -> Tt10Out:
    out = Tt10Out(config, outbox_with_cycles(tmp_path))
    out.queue.start_at("province", E1 - 300 * S)  # as if the target had been running since before cycle 1
    out.tick(now_ns=E1 + 301 * S)
    return out


def test_ftp_receives_each_cycles_mean_with_the_period_status(tmp_path):
    server = FtpServer(tmp_path / "ftp").start()
    try:
        out = run_two_cycles(tmp_path, station(tmp_path, server.port))
        files = server.files()
    finally:
        server.stop()
    assert list(files) == [
        f"{STATION}/2026/03/25/HN_BKHN_KHIKXQ_20260325000500.txt",
        f"{STATION}/2026/03/25/HN_BKHN_KHIKXQ_20260325001000.txt",
    ]
    assert server.renames == list(files)  # renamed into place once each, oldest first
    first, second = (read_file(data, name) for name, data in files.items())
    assert first.clean and first.complete and second.clean
    assert [(r.parameter, r.value, r.unit, r.stamp, r.status) for r in first.readings] == [
        ("CO", None, "ug/m3", "20260325000500", "02"),
        ("PM10", 21.0, "ug/m3", "20260325000500", "00"),
    ]
    assert [(r.parameter, r.value, r.stamp, r.status) for r in second.readings] == [
        ("PM10", 45.0, "20260325001000", "00")
    ]
    assert out.status() == {"province": {"pending": 0, "sent": 2, "unwritable": 0, "oldest_pending_ns": None}}
    assert [content for _, _, content, _ in out.queue.sent("province")] == list(files.values())  # kept as sent
    out.stop()


@pytest.mark.parametrize("protocol", ["ftps", "sftp"])
def test_ftps_and_sftp_receive_every_reading(tmp_path, protocol):
    if protocol == "ftps":
        tls = make_tls(tmp_path)
        server = FtpServer(tmp_path / "ftp", tls=tls).start()
        extra = {"tls_ca": str(tls.ca)}
    else:
        server = SftpServer(tmp_path / "sftp", tmp_path).start()
        extra = {"known_hosts": str(server.known_hosts)}
    try:
        out = run_two_cycles(
            tmp_path,
            station(tmp_path, server.port, protocol, mode="each", remote_dir="in/{prefix}/{yyyy}{MM}{dd}", **extra),
        )
        files = server.files()
    finally:
        server.stop()
    assert list(files) == [
        "in/HN_BKHN_KHIKXQ/20260325/HN_BKHN_KHIKXQ_20260325000500.txt",
        "in/HN_BKHN_KHIKXQ/20260325/HN_BKHN_KHIKXQ_20260325001000.txt",
    ]
    back = [r for name, data in files.items() for r in read_file(data, name).readings]
    expected = sorted(CYCLE_1 + CYCLE_2, key=lambda r: (r.ts_ns - r.ts_ns % S, r.parameter))
    assert [(r.parameter, r.value, r.unit, r.ts_ns, r.status) for r in back] == [
        (r.parameter, r.value, r.unit, r.ts_ns - r.ts_ns % S, r.status) for r in expected
    ]
    out.stop()


def test_a_cut_upload_never_appears_under_its_final_name(tmp_path):
    server = FtpServer(tmp_path / "ftp", cut_uploads=True).start()
    try:
        config = station(tmp_path, server.port)
        out = Tt10Out(config, outbox_with_cycles(tmp_path))
        out.queue.start_at("province", E1 - 300 * S)
        now = E1 + 301 * S
        out.tick(now_ns=now)
        folder = f"{STATION}/2026/03/25"
        cut = server.files()
        assert cut == {f"{folder}/{temporary_name('HN_BKHN_KHIKXQ_20260325000500.txt')}": cut[next(iter(cut))]}
        assert len(next(iter(cut.values()))) == 16  # half a file, under the temporary name only
        assert server.renames == []
        status = out.status()["province"]
        assert status["pending"] == 2 and status["sent"] == 0
        pending = out.queue.pending("province")
        assert pending[0].attempts == 1 and "426" in out.queue._db.execute("SELECT last_error FROM files").fetchone()[0]
        out.tick(now_ns=now + 1)  # before the back-off: not tried again
        assert out.queue.pending("province")[0].attempts == 1
        server.cut_uploads = False
        out.tick(now_ns=now + S)
        files = server.files()
    finally:
        server.stop()
    assert sorted(files) == [
        f"{folder}/HN_BKHN_KHIKXQ_20260325000500.txt",
        f"{folder}/HN_BKHN_KHIKXQ_20260325001000.txt",
    ]
    assert read_file(files[f"{folder}/HN_BKHN_KHIKXQ_20260325000500.txt"]).readings[1].value == 21.0
    out.stop()


def test_a_password_file_others_can_read_is_refused(tmp_path):
    config = station(tmp_path, 21)
    os.chmod(config.tt10_out[0].password_file, 0o644)
    with pytest.raises(Tt10OutError, match="chmod 600"):
        Tt10Out(config, tmp_path / "outbox.sqlite")


def outage(tmp_path: Path, outage_s: float) -> None:
    """Readings every 0.1 s, 1-second cycles; the FTP server goes away for ``outage_s`` and comes back on its port."""
    server = FtpServer(tmp_path / "ftp").start()
    config = station(tmp_path, server.port, cycle_s=1, settle_s=0.3, retry_min_s=0.2, retry_max_s=1.0)
    path = tmp_path / "outbox.sqlite"
    Outbox(path, STATION).close()
    stop = threading.Event()

    def feed() -> None:  # the agent's side: its own connection, in its own thread
        outbox = Outbox(path, STATION)
        value = 0.0
        while not stop.is_set():
            value += 1
            outbox.append([reading(time.time_ns(), "PM10", value)])
            time.sleep(0.1)
        outbox.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    out = Tt10Out(config, path, tick_s=0.1)
    out.start()
    try:
        time.sleep(2.5)
        before = len(server.renames)
        assert before >= 1, "nothing was delivered before the outage"
        server.stop()
        time.sleep(outage_s)
        assert out.status()["province"]["pending"] >= outage_s - 1  # queued meanwhile, one per cycle
        server.start()  # the same port
        time.sleep(2.0)
        stop.set()
        feeder.join()
        deadline = time.monotonic() + 30
        while out.status()["province"]["pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
        out.tick()  # the cycles still open when feeding stopped
        while out.status()["province"]["pending"] and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        out.stop()
        server.stop()
    files = server.files()
    assert not [name for name in files if name.endswith(".part")]
    names = sorted(files)
    assert server.renames == names  # each renamed into place exactly once, in cycle order
    ends = [stamp_to_utc_ns(n[-18:-4]) for n in names]
    assert ends == list(range(ends[0], ends[-1] + 1, S))  # no cycle missing across the outage
    assert len(ends) >= outage_s + 3
    # every file holds the mean of exactly the readings its cycle had in the outbox
    check = Outbox(path, STATION)
    staged = check._db.execute("SELECT ts_ns, value FROM staged").fetchall()
    check.close()
    for name, end in zip(names, ends, strict=True):
        values = [v for ts, v in staged if end <= ts < end + S]
        (line,) = read_file(files[name], name).readings
        assert line.value == pytest.approx(sum(values) / len(values), rel=1e-12), name


@pytest.mark.slow  # waits out an FTP outage (~10 s)
def test_an_ftp_outage_loses_nothing_fast(tmp_path):
    outage(tmp_path, 5.0)


@pytest.mark.slow
def test_an_ftp_outage_of_two_minutes_loses_nothing(tmp_path):
    outage(tmp_path, float(os.environ.get("QUANTRAC_TT10_OUTAGE_S", "120")))
