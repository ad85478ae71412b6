"""The sources file (errors at their line, with the fix) and serve_sources in front of one sink."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from pathlib import Path

import asyncssh
import pytest

from broker_bridge.tt10.sources.accounts import hash_password
from broker_bridge.tt10.sources.config import SAMPLE, load_sources_file, serve_sources
from configuration.errors import ConfigError
from tests.broker_bridge.tt10.upload_recorder import RecordingSink
from tests.helpers import require_tool


def test_the_sample_is_valid():
    config = load_sources_file(SAMPLE, check_files=False)
    assert config.model.ftp is not None and config.model.sftp is not None
    assert config.accounts["hn_bkhn_khikxq"].root == Path("/srv/quantrac/tt10/homes/hn_bkhn_khikxq")
    assert config.accounts["hn_kcn_nuosxl"].authorized_keys and config.model.watch[0].stations


def errors(tmp_path: Path, text: str, **kw) -> list[str]:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_sources_file(path, **kw)
    return [str(issue) for issue in err.value.issues]


def test_a_wrong_line_fails_with_its_line_and_a_fix(tmp_path):
    found = errors(
        tmp_path,
        "state_dir: /tmp/x\n"
        "ftp:\n"
        "  port: 21\n"
        "  requre_tls: true\n"
        "accounts:\n"
        "  a1:\n"
        "    station: HN A\n"
        "    password_hash: hunter2\n",
    )
    text = "\n".join(found)
    assert "sources.yaml:4: ftp.requre_tls: unknown key 'requre_tls' (fix: did you mean 'require_tls'?" in text
    assert "sources.yaml:7: accounts.a1.station: 'HN A' is not a station id" in text
    assert "sources.yaml:8: accounts.a1.password_hash: not a password hash" in text


def test_whole_document_checks_and_missing_files(tmp_path):
    found = errors(tmp_path, "state_dir: /tmp/x\nftp:\n  require_tls: true\naccounts: {}\n")
    assert any("sources.yaml:3: ftp.require_tls: require_tls without a certificate" in e for e in found), found
    assert any("ftp/sftp need accounts" in e for e in found), found
    secret = tmp_path / "pw"
    secret.write_text("x")
    secret.chmod(0o644)
    found = errors(
        tmp_path,
        f"state_dir: /tmp/x\npull:\n  - host: h\n    password_file: {secret}\nwatch:\n  - dir: {tmp_path / 'nope'}\n",
    )
    assert any(
        f"sources.yaml:4: pull[0].password_file: {secret} is readable by others (fix: chmod 600" in e for e in found
    )
    assert any("sources.yaml:6: watch[0].dir:" in e and "is not a folder" in e for e in found), found


def test_serve_sources_runs_ftp_sftp_and_watch_in_front_of_one_sink(tmp_path):
    drop = tmp_path / "province" / "HN_WW_2" / "20260325"
    drop.mkdir(parents=True)
    watched = drop / "HN_WW_2_20260325000500.txt"
    watched.write_bytes(b"pH\t7.1\t\t20260325000500\t00\r\n")
    os.utime(watched, ns=(time.time_ns() - 10**11,) * 2)
    config_path = tmp_path / "sources.yaml"
    config_path.write_text(
        f"state_dir: {tmp_path / 'state'}\nhomes_dir: {tmp_path / 'homes'}\nleftover_age_s: 120\n"
        "ftp:\n  host: 127.0.0.1\n  port: 0\n  auth_failed_delay_s: 0\n"
        "sftp:\n  host: 127.0.0.1\n  port: 0\n"
        f"watch:\n  - dir: {tmp_path / 'province'}\n    settle_s: 1\n    interval_s: 0.2\n"
        f"accounts:\n  hn_air:\n    station: HN_AIR_1\n    password_hash: '{hash_password('pw')}'\n"
    )
    sink = RecordingSink(tmp_path / "sink")
    running = serve_sources(load_sources_file(config_path), sink)
    try:
        # the homes' sweeper runs beside the servers, with the file's age (interval a quarter of it)
        assert (running.sweeper.age_s, running.sweeper.interval_s) == (120, 30)
        body = tmp_path / "HN_AIR_1_20260325000500.txt"
        body.write_bytes(b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\n")
        curl = require_tool("curl", package="curl")
        url = f"ftp://hn_air:pw@127.0.0.1:{running.ftp.port}/"
        subprocess.run([curl, "-sS", "-T", str(body), url], check=True, timeout=30)

        async def sftp_put():
            async with (
                asyncssh.connect(
                    "127.0.0.1", running.sftp.port, username="hn_air", password="pw", known_hosts=None, client_keys=None
                ) as conn,
                conn.start_sftp_client() as sftp,
            ):
                await sftp.put(str(body), "second.txt")

        asyncio.run(asyncio.wait_for(sftp_put(), 30))
        uploads = sink.wait_for(3)
    finally:
        running.stop()
    assert sorted((u.transport, u.station) for u in uploads) == [
        ("ftp", "HN_AIR_1"),
        ("sftp", "HN_AIR_1"),
        ("watch", "HN_WW_2"),
    ]
    assert (tmp_path / "state" / "ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
