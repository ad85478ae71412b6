"""The FTP/FTPS source (pyftpdlib), uploaded to with curl and, for what curl cannot do on
purpose (cut a transfer, ABOR, rename), with the standard library's ftplib."""

from __future__ import annotations

import ftplib
import os
import socket
import subprocess
from pathlib import Path

import pytest

from broker_bridge.broker_config import create_pki
from broker_bridge.tt10.sources.accounts import Account, hash_password
from broker_bridge.tt10.sources.ftp_server import FtpSettings, FtpSource
from supervisor.process import wait_until
from tests.broker_bridge.tt10.upload_recorder import RecordingSink
from tests.helpers import require_tool

NAME = "HN_BKHN_KHIKXQ_20260325000500.txt"
BODY = b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\nSO2\t12.1\tug/m3\t20260325000500\t00\r\n"
PASSWORDS = {"hn_air": "correct horse", "hn_ww": "battery staple"}


def make_accounts(tmp_path: Path, **overrides) -> dict[str, Account]:
    out = {}
    for name, station in (("hn_air", "HN_BKHN_KHIKXQ"), ("hn_ww", "HN_KCN_NUOSXL")):
        fields = dict(quota_bytes=1 << 20, max_files_per_minute=100) | overrides.get(name, {})
        out[name] = Account(name, station, hash_password(PASSWORDS[name]), tmp_path / "homes" / name, **fields)
    return out


@pytest.fixture
def pki(tmp_path):
    return create_pki(tmp_path / "pki")


def start(tmp_path, accounts=None, **settings) -> tuple[FtpSource, RecordingSink]:
    sink = RecordingSink(tmp_path / "sink")
    settings = {"host": "127.0.0.1", "port": 0, "auth_failed_delay_s": 0.05} | settings
    source = FtpSource(accounts or make_accounts(tmp_path), sink, FtpSettings(**settings)).start()
    return source, sink


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    exe = require_tool("curl", package="curl")
    return subprocess.run([exe, "-sS", *args], capture_output=True, text=True, timeout=timeout)


def write(tmp_path: Path, data: bytes = BODY, name: str = NAME) -> Path:
    path = tmp_path / "out" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_curl_upload_over_ftp_hands_the_exact_bytes_to_the_sink(tmp_path):
    source, sink = start(tmp_path)
    try:
        data = BODY + "Nhiệtđộ\t31.5\toC\t20260325000500\t00\n".encode() + b"\x00\xff"  # any bytes, unchanged
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/2026/03/25/"
        done = curl("--ftp-create-dirs", "-T", str(write(tmp_path, data)), url)
        assert done.returncode == 0, done.stderr
        (upload,) = sink.wait_for(1)
    finally:
        source.stop()
    assert upload.data == data and sink.stored(0) == data
    assert (upload.account, upload.station, upload.name) == ("hn_air", "HN_BKHN_KHIKXQ", NAME)
    assert upload.path == f"2026/03/25/{NAME}"
    assert (upload.transport, upload.interrupted) == ("ftp", False)
    assert upload.peer.startswith("127.0.0.1:")
    assert not (tmp_path / "homes" / "hn_air" / upload.path).exists()  # taken: the home is emptied


def test_curl_upload_over_explicit_ftps_with_tls_required(tmp_path, pki):
    source, sink = start(tmp_path, certfile=pki.server_cert, keyfile=pki.server_key, require_tls=True)
    try:
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
        plain = curl("-T", str(write(tmp_path)), url)
        assert plain.returncode != 0  # login refused without AUTH TLS: 550 SSL/TLS required
        assert sink.uploads == []
        done = curl("--ssl-reqd", "--cacert", str(pki.ca_cert), "-T", str(write(tmp_path)), url)
        assert done.returncode == 0, done.stderr
        (upload,) = sink.wait_for(1)
    finally:
        source.stop()
    assert (upload.data, upload.transport, upload.interrupted) == (BODY, "ftps", False)


def test_wrong_password_and_unknown_account_are_refused(tmp_path):
    source, sink = start(tmp_path)
    try:
        for user in ("hn_air:battery%20staple", "nobody:x", "hn_air:"):
            done = curl("-T", str(write(tmp_path)), f"ftp://{user}@127.0.0.1:{source.port}/")
            assert done.returncode == 67, done.stderr  # curl: "login denied"
    finally:
        source.stop()
    assert sink.uploads == []


def login(source: FtpSource, user: str = "hn_air") -> ftplib.FTP:
    ftp = ftplib.FTP()
    ftp.connect("127.0.0.1", source.port, timeout=10)
    ftp.login(user, PASSWORDS[user])
    return ftp


def test_each_account_is_chrooted_to_its_home(tmp_path):
    accounts = make_accounts(tmp_path)
    secret = tmp_path / "outside.txt"
    secret.write_text("not yours")
    other = accounts["hn_ww"].root / "held.txt.tmp"
    other.parent.mkdir(parents=True)
    other.write_text("another station's file")
    source, sink = start(tmp_path, accounts, hold_suffixes=(".tmp",))
    source_recovered = len(sink.uploads)
    try:
        ftp = login(source)
        ftp.cwd("../../..")
        assert ftp.pwd() == "/"
        assert ftp.nlst() == []  # its own empty home, not homes/ or another account's
        for path in ("../outside.txt", "/../../outside.txt", "../hn_ww/held.txt.tmp"):
            with pytest.raises(ftplib.error_perm):
                ftp.retrbinary(f"RETR {path}", lambda _: None)
        with pytest.raises(ftplib.error_perm):
            ftp.cwd("/../hn_ww")
        ftp.storbinary("STOR ../../escape.txt", __import__("io").BytesIO(BODY))  # lands inside the home
        ftp.quit()
        (*_, upload) = sink.wait_for(source_recovered + 1)
    finally:
        source.stop()
    assert upload.path == "escape.txt" and upload.account == "hn_air"
    assert not (tmp_path / "escape.txt").exists() and secret.read_text() == "not yours"


def test_quota_refuses_a_file_that_does_not_fit_and_then_every_upload(tmp_path):
    accounts = make_accounts(tmp_path, hn_air={"quota_bytes": 100})
    source, sink = start(tmp_path, accounts)
    try:
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
        big = curl("-T", str(write(tmp_path, b"x" * 5000, "big.txt")), url)
        assert big.returncode == 70 and "Exceeded storage allocation" in big.stderr, big.stderr  # curl on a 552
        (cut,) = sink.wait_for(1)  # the part that fit, reported as interrupted
        assert cut.interrupted and cut.data == b"x" * 100
        ftp = login(source)
        with pytest.raises(ftplib.error_perm, match=r"552 Quota exceeded: \d+ of 100 bytes held"):
            ftp.storbinary("STOR small.txt", __import__("io").BytesIO(b"y"))
        ftp.quit()
    finally:
        source.stop()
    assert len(sink.uploads) == 1


def test_rate_limit_refuses_past_the_files_per_minute(tmp_path):
    accounts = make_accounts(tmp_path, hn_air={"max_files_per_minute": 2})
    source, sink = start(tmp_path, accounts)
    try:
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
        for i in range(2):
            assert curl("-T", str(write(tmp_path, BODY, f"f{i}.txt")), url).returncode == 0
        third = curl("-v", "-T", str(write(tmp_path, BODY, "f2.txt")), url)  # -v shows the server's replies
        assert third.returncode == 25 and "< 450 Rate limit: at most 2 files per minute" in third.stderr, third.stderr
        other = f"ftp://hn_ww:battery%20staple@127.0.0.1:{source.port}/"
        assert curl("-T", str(write(tmp_path, BODY, "f3.txt")), other).returncode == 0  # per account
    finally:
        source.stop()
    assert [u.name for u in sink.uploads] == ["f0.txt", "f1.txt", "f3.txt"]


def cut_upload(source: FtpSource, name: str, data: bytes, how: str) -> socket.socket | None:
    """Send half of ``data`` for STOR ``name`` and end the transfer ``how``. After an abort or a dropped
    control connection the data socket is returned still open (the caller closes it once the server has
    given up the transfer): closing it at once raced the server, which could read its end of file first
    and take the half file as finished (seen once in the whole suite under load)."""
    ftp = login(source)
    ftp.voidcmd("TYPE I")
    conn = ftp.transfercmd(f"STOR {name}")
    conn.sendall(data[: len(data) // 2])
    if how == "close_data":  # what a logger's crash between its writes does to the data socket
        conn.close()
        ftp.voidresp()
        ftp.quit()
        return None
    if how == "abort":
        ftp.sock.sendall(b"ABOR\r\n")  # ftplib's abort() sends it urgent; a plain line works for pyftpdlib
        ftp.close()
    elif how == "drop_control":  # the link drops: the control connection goes without a goodbye
        ftp.sock.shutdown(socket.SHUT_RDWR)
        ftp.close()
    return conn


def test_a_data_connection_closed_halfway_reaches_the_sink_truncated_and_not_flagged(tmp_path):
    """pyftpdlib #624/#655: closing the data socket looks like the end of the file to FTP;
    the transport cannot know, so the sink gets the truncated bytes with interrupted=False."""
    source, sink = start(tmp_path)
    try:
        cut_upload(source, NAME, BODY, "close_data")
        (upload,) = sink.wait_for(1)
    finally:
        source.stop()
    assert upload.data == BODY[: len(BODY) // 2] and upload.interrupted is False


@pytest.mark.parametrize("how", ["abort", "drop_control"])
def test_an_aborted_or_dropped_upload_is_flagged_and_a_re_upload_arrives_whole(tmp_path, how):
    source, sink = start(tmp_path)
    try:
        data_socket = cut_upload(source, NAME, BODY, how)
        (cut,) = sink.wait_for(1)
        data_socket.close()
        assert cut.interrupted is True and BODY.startswith(cut.data) and len(cut.data) < len(BODY)
        assert (tmp_path / "homes" / "hn_air" / NAME).exists()  # kept for a REST/APPE resume
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
        assert curl("-T", str(write(tmp_path)), url).returncode == 0
        _, whole = sink.wait_for(2)
    finally:
        source.stop()
    assert (whole.data, whole.interrupted) == (BODY, False)


def test_a_temporary_name_is_handed_on_when_renamed(tmp_path):
    source, sink = start(tmp_path)
    try:
        ftp = login(source)
        ftp.storbinary(f"STOR {NAME}.tmp", __import__("io").BytesIO(BODY))
        assert sink.uploads == []  # held until renamed
        ftp.rename(f"{NAME}.tmp", NAME)
        (upload,) = sink.wait_for(1)  # the 250 came after the sink took it
        ftp.quit()
    finally:
        source.stop()
    assert (upload.name, upload.data) == (NAME, BODY)


def test_226_only_after_the_sink_took_it_and_leftovers_are_taken_at_the_next_start(tmp_path):
    accounts = make_accounts(tmp_path)
    source, sink = start(tmp_path, accounts)
    sink.refuse = 1
    try:
        url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
        done = curl("-T", str(write(tmp_path)), url)
        assert done.returncode != 0 and "451" in done.stderr, done.stderr  # the logger will send it again
    finally:
        source.stop()
    assert sink.uploads == [] and (accounts["hn_air"].root / NAME).read_bytes() == BODY
    source, sink = start(tmp_path, accounts)  # a new run: what the homes still hold goes to the sink
    source.stop()
    (upload,) = sink.uploads
    assert (upload.data, upload.interrupted, upload.peer) == (BODY, True, "leftover")
    assert not (accounts["hn_air"].root / NAME).exists()


def test_a_partial_never_resumed_and_a_refused_file_leave_the_home_after_their_age(tmp_path):
    """Stop 18 left it open: a kept partial stayed in the home until the next start, filling the account's
    quota (a logger with a flaky link and a small quota was refused every file: 552), and a file the sink
    refused waited there for a restart. HomeSweeper hands both to the sink, as at start, once they are
    ``age_s`` old, and frees the quota; a younger one stays for its resume."""
    from broker_bridge.tt10.sources.homes import HomeSweeper

    accounts = make_accounts(tmp_path, hn_air={"quota_bytes": len(BODY)})
    home = accounts["hn_air"].root
    source, sink = start(tmp_path, accounts)
    sweeper = HomeSweeper(sink, accounts, transport="ftp", age_s=60)
    url = f"ftp://hn_air:correct%20horse@127.0.0.1:{source.port}/"
    other = "HN_BKHN_KHIKXQ_20260325001000.txt"
    try:
        # An upload larger than the quota is cut at it and kept as interrupted, for a resume that never comes.
        done = curl("-T", str(write(tmp_path, BODY * 2, NAME)), url)
        assert done.returncode == 70 and "Exceeded storage allocation" in done.stderr, done.stderr  # 552
        (cut,) = sink.wait_for(1)
        assert (cut.interrupted, cut.data) == (True, BODY) and (home / NAME).read_bytes() == BODY
        done = curl("-T", str(write(tmp_path, BODY, other)), url)
        assert done.returncode != 0, done.stderr  # the home is full: every later file refused (552)
        assert sweeper.sweep_once() == 0 and [p.name for p in home.iterdir()] == [NAME]  # too young: kept

        old = home.stat().st_mtime - 3600
        os.utime(home / NAME, (old, old))
        assert sweeper.sweep_once() == 1
        swept = sink.uploads[-1]
        assert (swept.name, swept.data, swept.interrupted, swept.peer) == (NAME, BODY, True, "leftover")
        assert list(home.iterdir()) == []
        assert curl("-T", str(write(tmp_path, BODY, other)), url).returncode == 0  # the quota is free again
        assert (sink.uploads[-1].name, sink.uploads[-1].data, sink.uploads[-1].interrupted) == (other, BODY, False)

        # A file the sink refused (451) and its logger never sent again: taken by the sweep, not at a restart.
        third = "HN_BKHN_KHIKXQ_20260325001500.txt"
        sink.refuse = 1
        assert "451" in curl("-T", str(write(tmp_path, BODY, third)), url).stderr
        os.utime(home / third, (old, old))
        count = len(sink.uploads)
        sweeper = HomeSweeper(sink, accounts, transport="ftp", age_s=60, interval_s=0.1).start()
        sink.wait_for(count + 1)
        assert (sink.uploads[-1].name, sink.uploads[-1].data, sink.uploads[-1].peer) == (third, BODY, "leftover")
        wait_until(lambda: not (home / third).exists(), timeout=5, what="the swept file to leave the home")
    finally:
        sweeper.stop()
        source.stop()


def test_a_leftover_written_to_while_it_is_taken_stays_in_the_home(tmp_path):
    """A client appending (APPE) while the sweep hands the file on: the sweep's copy reaches the sink, the
    file stays for its own upload (or the next sweep), never removed under the writer."""
    from broker_bridge.tt10.sources.homes import recover_leftovers

    accounts = make_accounts(tmp_path)
    path = accounts["hn_air"].root / NAME
    path.parent.mkdir(parents=True)
    path.write_bytes(BODY[:20])
    sink = RecordingSink(tmp_path / "sink")

    class AppendingSink:
        def take(self, upload):
            sink.take(upload)
            with open(path, "ab") as handle:  # the resume arrives meanwhile
                handle.write(BODY[20:])

    assert recover_leftovers(AppendingSink(), accounts, transport="ftp") == 1
    assert sink.uploads[0].data == BODY[:20] and path.read_bytes() == BODY
    assert recover_leftovers(sink, accounts, transport="ftp") == 1  # unchanged now: taken whole and removed
    assert sink.uploads[1].data == BODY and not path.exists()
