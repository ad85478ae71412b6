"""`quantrac bridge tt10 serve` as a process, uploaded to by clients nobody here wrote: `curl -T` over
plain FTP, `curl --ssl-reqd` over explicit FTPS (the certificate verified with --cacert) and OpenSSH
`sftp -b` (key login, the host key checked against known_hosts); a real Mosquitto, the collector and the
session QuestDB. The readings arrive once, with their values, UTC times (the file's local time - 7 h),
status, `source = 'tt10'` and the file's sha256; a file sent twice stays once; a cut upload is never
stored truncated, and sent again it is stored once, whole; every file has its receipt."""

from __future__ import annotations

import ftplib
import hashlib
import json
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from cli.processes import quantrac
from supervisor.process import wait_until
from tests.end_to_end.tt10_bridge_rig import BridgeRig, Tt10Station, make_bridge_rig
from tests.helpers import require_tool, sql, wait_for_count

STAMP = "20260325000500"  # Vietnam local time; 2026-03-24T17:05:00Z


def tt10_bytes(lines: list[tuple[str, str, str, str, str]]) -> bytes:
    """A TT10 file written by hand (not with our codec): TAB-separated, CRLF."""
    return b"".join("\t".join(fields).encode() + b"\r\n" for fields in lines)


def station_file(station: str, k: int, stamp: str = STAMP) -> tuple[str, bytes, list[tuple]]:
    lines = [
        ("PM2,5", f"{23.4 + k}", "ug/m3", stamp, "00"),
        ("PM10", f"{41 + k}.0", "ug/m3", stamp, "00"),
        ("SO2", f"{12.5 + k}", "ug/m3", stamp, "01"),
        ("CO", "", "mg/m3", stamp, "02"),  # a missing value: stored as NULL, never 0
        ("NO2", f"-{k}.5", "ug/m3", stamp, "00"),  # negative values are read
    ]
    return f"{station}_{stamp}.txt", tt10_bytes(lines), lines


def long_file(station: str, cycles: int = 12) -> tuple[str, bytes, list[tuple]]:
    """Several times of each parameter in one file (a logger that writes every reading of the hour)."""
    base = datetime.strptime(STAMP, "%Y%m%d%H%M%S")
    lines = []
    for c in range(cycles):
        stamp = (base + timedelta(minutes=5 * c)).strftime("%Y%m%d%H%M%S")
        lines += [(p, f"{10 * c + i}.25", "ug/m3", stamp, "00") for i, p in enumerate(("PM2,5", "PM10", "SO2", "NO2"))]
    return f"{station}_{lines[-1][3]}.txt", tt10_bytes(lines), lines


def utc(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y%m%d%H%M%S") - timedelta(hours=7)


def expected_rows(lines: list[tuple], sha256: str) -> list[tuple]:
    rows = [
        (p, utc(stamp), float(v) if v else None, unit, status, "tt10", sha256) for p, v, unit, stamp, status in lines
    ]
    return sorted(rows, key=lambda r: (r[0], r[1]))


def readings(pg: str, station: str) -> list[tuple]:
    return sql(
        pg,
        "SELECT parameter, ts, value, unit, status, source, file_sha256 FROM readings WHERE station = %s"
        " ORDER BY parameter, ts",
        (station,),
    )


def receipts(pg: str, station: str) -> list[tuple]:
    return sql(
        pg,
        "SELECT upload, state, readings, refused, reasons, sha256 FROM tt10_files WHERE station = %s ORDER BY upload",
        (station,),
    )


def files_json(rig: BridgeRig) -> list[dict]:
    done = subprocess.run(
        quantrac("bridge", "tt10", "files", "--root", rig.root, "--json"), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    exe = require_tool("curl", package="curl")
    return subprocess.run([exe, "-sS", *args], capture_output=True, text=True, timeout=timeout)


def write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / "out" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def openssh_put(rig: BridgeRig, station: Tt10Station, local: Path) -> subprocess.CompletedProcess:
    exe = require_tool("sftp", package="openssh-client")
    batch = rig.tmp / f"batch-{station.account}"
    batch.write_text(f"-mkdir upload\nput {local} upload/\n")
    return subprocess.run(
        [exe, "-b", str(batch), "-i", str(station.ssh_key), "-P", str(rig.sftp_port),
         "-o", f"UserKnownHostsFile={rig.known_hosts()}", "-o", "StrictHostKeyChecking=yes",
         "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "PasswordAuthentication=no",
         f"{station.account}@127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def make_rig(tmp_path, mosquitto_server, make_collector, warehouse):
    rigs: list[BridgeRig] = []

    def _make(**kwargs) -> BridgeRig:
        rig = make_bridge_rig(tmp_path, mosquitto_server.port, make_collector, warehouse, **kwargs)
        rigs.append(rig)
        rig.start()
        return rig

    yield _make
    for rig in rigs:
        assert rig.process.stop(20) == 0 or rig.process.returncode == 0, rig.log.read_text()[-3000:]


def test_curl_ftp_curl_ftps_and_openssh_sftp_uploads_reach_questdb_once(make_rig):
    rig = make_rig(ftp_stations=2, sftp_stations=1)
    ftp_station, ftps_station, sftp_station = rig.stations
    sent = {s.station: station_file(s.station, k) for k, s in enumerate(rig.stations)}

    name, data, _ = sent[ftp_station.station]
    done = curl("--ftp-create-dirs", "-T", str(write(rig.tmp, name, data)), rig.ftp_url(ftp_station, "/2026/03/25/"))
    assert done.returncode == 0, done.stderr
    name, data, _ = sent[ftps_station.station]
    done = curl("--ssl-reqd", "--cacert", str(rig.pki.ca_cert), "-T", str(write(rig.tmp, name, data)),
                rig.ftp_url(ftps_station))  # fmt: skip
    assert done.returncode == 0, done.stderr
    name, data, _ = sent[sftp_station.station]
    done = openssh_put(rig, sftp_station, write(rig.tmp, name, data))
    assert done.returncode == 0, done.stderr

    for station, (_, data, lines) in sent.items():
        wait_for_count(rig.pg, "SELECT count() FROM readings WHERE station = %s", len(lines), params=(station,))
        assert readings(rig.pg, station) == expected_rows(lines, hashlib.sha256(data).hexdigest())

    # the same file again (a logger that got no answer sends it again): a duplicate, nothing stored twice
    name, data, lines = sent[ftp_station.station]
    done = curl("-T", str(write(rig.tmp, name, data)), rig.ftp_url(ftp_station))
    assert done.returncode == 0, done.stderr
    # and files the bridge must refuse, in part or whole: a status 03 line, a UTF-16 file
    bad_name, bad, _ = station_file(ftps_station.station, 9, "20260325001000")
    bad += b"NO2\t18.2\tug/m3\t20260325001000\t03\r\n"
    assert curl("--ssl-reqd", "--cacert", str(rig.pki.ca_cert), "-T", str(write(rig.tmp, bad_name, bad)),
                rig.ftp_url(ftps_station)).returncode == 0  # fmt: skip
    utf16_name = f"{ftps_station.station}_20260325001500.txt"
    utf16 = "PM10\t41.0\tug/m3\t20260325001500\t00\r\n".encode("utf-16")
    assert curl("-T", str(write(rig.tmp, utf16_name, utf16)), rig.ftp_url(ftps_station)).returncode == 0

    wait_until(lambda: len(receipts(rig.pg, ftp_station.station)) == 2, timeout=30, what="two receipts")
    assert [r[1] for r in receipts(rig.pg, ftp_station.station)] == ["accepted", "duplicate"]
    wait_until(lambda: len(receipts(rig.pg, ftps_station.station)) == 3, timeout=30, what="three receipts")
    (_, *first), (_, *partly), (_, *utf) = receipts(rig.pg, ftps_station.station)
    assert first[:3] == ["accepted", 5, 0]
    assert partly[:3] == ["accepted", 5, 1] and "'03' is not a TT10 status code" in partly[3]
    assert utf[:3] == ["refused", 0, 0] and "UTF-16" in utf[3]
    assert len(readings(rig.pg, ftp_station.station)) == len(lines)
    wait_for_count(rig.pg, "SELECT count() FROM readings WHERE station = %s", 10, params=(ftps_station.station,))
    assert sql(rig.pg, "SELECT count() FROM batches WHERE station = %s", (ftp_station.station,)) == [(1,)]

    listed = {(f["station"], f["name"], f["upload"]): f for f in files_json(rig)}
    mine = [f for (station, _, _), f in sorted(listed.items()) if station == ftps_station.station]
    assert [(f["name"], f["state"], f["readings"], f["transport"]) for f in mine] == [
        (sent[ftps_station.station][0], "accepted", 5, "ftps"),
        (bad_name, "accepted", 5, "ftps"),
        (utf16_name, "refused", 0, "ftp"),
    ]
    assert (
        mine[1]["refused"]
        == [{"line": 6, "raw": "NO2\t18.2\tug/m3\t20260325001000\t03", "reason": mine[1]["refused"][0]["reason"]}]
        and "'03'" in mine[1]["refused"][0]["reason"]
    )
    assert any("UTF-16" in r for r in mine[2]["reasons"])
    dup = [f for f in listed.values() if f["station"] == ftp_station.station]
    assert sorted(f["state"] for f in dup) == ["accepted", "duplicate"]
    assert {f["transport"] for f in listed.values() if f["station"] == sftp_station.station} == {"sftp"}


def cut_with_ftplib(rig: BridgeRig, station: Tt10Station, name: str, data: bytes) -> None:
    """STOR ``name`` and close the data socket after half the bytes (a logger crashing mid-write)."""
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", rig.ftp_port, timeout=10)
    ftp.login(station.account, station.password)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"STOR {name}")
    conn.sendall(data[: len(data) // 2])
    conn.close()
    ftp.voidresp()  # pyftpdlib takes the closed data connection for the end of the file
    ftp.quit()


def cut_with_curl(rig: BridgeRig, station: Tt10Station, name: str, data: bytes) -> None:
    """curl uploading from a pipe, SIGKILLed after it was given half the file."""
    exe = require_tool("curl", package="curl")
    proc = subprocess.Popen([exe, "-sS", "-T", "-", rig.ftp_url(station, f"/{name}")], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.write(data[: len(data) // 2])
    proc.stdin.flush()
    time.sleep(1.5)  # curl sends what it has and waits for more
    proc.kill()
    proc.wait(10)


@pytest.mark.parametrize("cut", [cut_with_ftplib, cut_with_curl], ids=["ftplib_data_closed", "curl_killed"])
def test_a_cut_upload_is_never_stored_truncated_and_the_re_upload_is_stored_once_whole(make_rig, cut):
    rig = make_rig(ftp_stations=1, sftp_stations=0, hold_s=2.0)
    (station,) = rig.stations
    name, data, lines = long_file(station.station)
    assert data[len(data) // 2 - 1 : len(data) // 2] != b"\n"  # half way is inside a line
    cut(rig, station, name, data)
    # held for --hold-s, then only its whole lines are taken, the cut one refused with its reason
    wait_until(lambda: [r[1] for r in receipts(rig.pg, station.station)] == ["accepted"], timeout=30,
               what="the cut file accepted after its hold")  # fmt: skip
    (_, state, taken, refused, reasons, _), = receipts(rig.pg, station.station)  # fmt: skip
    half = data[: len(data) // 2].count(b"\r\n")
    assert taken == half and refused == 1 and "only its whole lines are taken" in reasons
    wait_for_count(rig.pg, "SELECT count() FROM readings WHERE station = %s", half, params=(station.station,))
    stored = readings(rig.pg, station.station)
    whole = {(p, utc(s)): float(v) for p, v, _, s, _ in lines}
    assert len(stored) == half and all(whole[(r[0], r[1])] == r[2] for r in stored)  # no truncated value

    done = curl("-T", str(write(rig.tmp, name, data)), rig.ftp_url(station))  # the station sends it again
    assert done.returncode == 0, done.stderr
    wait_for_count(rig.pg, "SELECT count() FROM readings WHERE station = %s", len(lines), params=(station.station,))
    sha = hashlib.sha256(data).hexdigest()
    stored = readings(rig.pg, station.station)
    assert [(r[0], r[1], r[2]) for r in stored] == [(p, t, v) for p, t, v, *_ in expected_rows(lines, sha)]
    assert sql(rig.pg, "SELECT count() FROM reading_revisions WHERE station = %s", (station.station,)) == [(0,)]
    wait_until(lambda: len(receipts(rig.pg, station.station)) == 2, timeout=30, what="the re-upload's receipt")
    assert [(r[1], r[2], r[5]) for r in receipts(rig.pg, station.station)][1] == ("accepted", len(lines), sha)
    states = [f["state"] for f in files_json(rig) if f["station"] == station.station]
    assert sorted(states) == ["accepted", "accepted"]
