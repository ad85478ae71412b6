"""Remote pull with ftplib from a province's existing FTP server (pyftpdlib, started here, with
and without MLSD, plain and explicit FTPS)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from broker_bridge.broker_config import create_pki
from broker_bridge.tt10.sources.pull import Puller, PullSettings, mdtm_to_ns
from tests.broker_bridge.tt10.upload_recorder import RecordingSink

OLD = time.time_ns() - 3600 * 10**9
FILES = [
    "HN_AIR_1/HN_AIR_1_20260325000500.txt",
    "HN_AIR_1/20260325/HN_AIR_1_20260325001000.txt",
    "HN_WW_2/2026/03/25/HN_WW_2_20260325000500.txt",
]
IGNORED = ["HN_AIR_1/TXT_mov/HN_AIR_1_20260324000500.txt", "HN_AIR_1/20260325/readme.pdf"]


class ProvinceServer:
    """The province's FTP server as it runs today: pyftpdlib, one read-only user."""

    def __init__(self, root: Path, *, mlsd: bool = True, pki=None) -> None:
        authorizer = DummyAuthorizer()
        authorizer.add_user("bridge", "pull-secret", str(root), perm="elr")
        base = TLS_FTPHandler if pki else FTPHandler
        attrs = {"authorizer": authorizer, "proto_cmds": dict(base.proto_cmds)}
        if not mlsd:  # an older server: NLST, SIZE and MDTM only
            attrs["proto_cmds"].pop("MLSD")
            attrs["proto_cmds"].pop("MLST")
        if pki:
            attrs |= {"certfile": str(pki.server_cert), "keyfile": str(pki.server_key), "ssl_context": None}
            attrs |= {"tls_control_required": True, "tls_data_required": True}
        self.server = FTPServer(("127.0.0.1", 0), type("Province", (base,), attrs), ioloop=IOLoop())
        self.port = self.server.address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.server.ioloop.loop(timeout=0.05, blocking=False)
        self.server.close_all()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def drop(root: Path, rel: str, data: bytes | None = None, mtime_ns: int | None = OLD) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if data is not None else f"PM2,5\t1\tug/m3\t20260325000500\t00\r\n# {rel}\r\n".encode())
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


@pytest.fixture
def province(tmp_path):
    root = tmp_path / "province"
    for rel in FILES + IGNORED:
        drop(root, rel)
    servers = []

    def start(**kw) -> ProvinceServer:
        servers.append(ProvinceServer(root, **kw))
        return servers[-1]

    yield root, start
    for server in servers:
        server.stop()


def puller(tmp_path: Path, server: ProvinceServer, sink: RecordingSink, **kw) -> Puller:
    secret = tmp_path / "pull.password"
    secret.write_text("pull-secret\n")
    secret.chmod(0o600)
    settings = {"host": "127.0.0.1", "port": server.port, "user": "bridge", "password_file": secret}
    settings |= {"memory": tmp_path / "state" / "pull.sqlite", "settle_s": 0.5, "interval_s": 0.1}
    return Puller(PullSettings(**(settings | kw)), sink)


@pytest.mark.parametrize("mlsd", [True, False], ids=["mlsd", "nlst_size_mdtm"])
def test_pull_takes_every_file_once_across_a_restart(tmp_path, province, mlsd):
    root, start = province
    server = start(mlsd=mlsd)
    sink = RecordingSink(tmp_path / "sink")
    p = puller(tmp_path, server, sink)
    assert p.scan_once().taken == 3
    assert p.scan_once().taken == 0
    p.memory.close()
    drop(root, "HN_WW_2/2026/03/26/HN_WW_2_20260326000000.txt")  # written while the puller was down
    p = puller(tmp_path, server, sink).start()
    sink.wait_for(4)
    time.sleep(0.3)
    p.stop()
    by_path = {u.path: u for u in sink.uploads}
    assert len(sink.uploads) == 4 and sorted(by_path) == sorted(
        FILES + ["HN_WW_2/2026/03/26/HN_WW_2_20260326000000.txt"]
    )
    for rel, upload in by_path.items():
        assert upload.data == (root / rel).read_bytes()
        assert (upload.station, upload.transport, upload.interrupted) == (rel.split("/")[0], "pull", False)
        assert upload.peer == f"127.0.0.1:{server.port}" and upload.account == "pull:127.0.0.1"


def test_pull_over_explicit_ftps_verifies_the_server(tmp_path, province):
    _, start = province
    pki = create_pki(tmp_path / "pki")
    server = start(pki=pki)
    sink = RecordingSink(tmp_path / "sink")
    p = puller(tmp_path, server, sink, tls=True, tls_ca=pki.ca_cert)
    assert p.scan_once().taken == 3
    p.memory.close()
    other_ca = create_pki(tmp_path / "other-pki")
    p = puller(tmp_path, server, RecordingSink(tmp_path / "sink2"), tls=True, tls_ca=other_ca.ca_cert)
    with pytest.raises(Exception, match="CERTIFICATE_VERIFY_FAILED"):
        p.scan_once()
    p.memory.close()


def test_a_fresh_file_is_pulled_only_once_settled(tmp_path, province):
    root, start = province
    server = start()
    sink = RecordingSink(tmp_path / "sink")
    p = puller(tmp_path, server, sink, settle_s=0.6)
    assert p.scan_once().taken == 3
    drop(root, "HN_AIR_1/HN_AIR_1_20260325001500.txt", b"PM2,5\t1\tug", mtime_ns=None)  # still being written
    assert p.scan_once().unsettled == 1
    time.sleep(0.3)
    drop(root, "HN_AIR_1/HN_AIR_1_20260325001500.txt", b"PM2,5\t1\tug/m3\t20260325001500\t00\r\n", mtime_ns=None)
    assert p.scan_once().taken == 0
    time.sleep(0.7)
    assert p.scan_once().taken == 1
    p.memory.close()
    assert sink.uploads[-1].data == b"PM2,5\t1\tug/m3\t20260325001500\t00\r\n"


def test_mdtm_times_are_utc():
    assert mdtm_to_ns("20260324170500") == 1774371900 * 10**9
    assert mdtm_to_ns("20260324170500.25") == 1774371900 * 10**9 + 250_000_000
