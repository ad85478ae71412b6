"""The SFTP source (asyncssh), uploaded to with OpenSSH's sftp in batch mode (key auth) and with
asyncssh's own client (password auth, and what sftp cannot do on purpose: drop mid-file)."""

from __future__ import annotations

import asyncio
import stat
import subprocess
from pathlib import Path

import asyncssh
import pytest

from broker_bridge.tt10.sources.accounts import Account, hash_password
from broker_bridge.tt10.sources.sftp_server import SftpSettings, SftpSource
from tests.broker_bridge.tt10.upload_recorder import RecordingSink
from tests.helpers import require_tool

NAME = "HN_BKHN_KHIKXQ_20260325000500.txt"
BODY = b"PM2,5\t23.4\tug/m3\t20260325000500\t00\r\nSO2\t12.1\tug/m3\t20260325000500\t00\r\n"
PASSWORD = "correct horse"


def keypair(tmp_path: Path, name: str) -> tuple[Path, str]:
    exe = require_tool("ssh-keygen", package="openssh-client")
    path = tmp_path / "keys" / name
    path.parent.mkdir(exist_ok=True)
    subprocess.run([exe, "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(path)], check=True, timeout=30)
    return path, path.with_suffix(".pub").read_text().strip()


@pytest.fixture
def rig(tmp_path):
    key, pub = keypair(tmp_path, "hn_air")
    accounts = {
        "hn_air": Account(
            "hn_air", "HN_BKHN_KHIKXQ", hash_password(PASSWORD), tmp_path / "homes" / "hn_air", 1 << 20, 100, (pub,)
        ),
        "hn_ww": Account("hn_ww", "HN_KCN_NUOSXL", hash_password("other"), tmp_path / "homes" / "hn_ww", 1 << 20, 100),
    }
    sink = RecordingSink(tmp_path / "sink")
    started: list[SftpSource] = []

    def start(**account_changes) -> SftpSource:
        for name, fields in account_changes.items():
            accounts[name] = Account(**{**accounts[name].__dict__, **fields})
        settings = SftpSettings(host_key=tmp_path / "host_key", host="127.0.0.1", port=0)
        source = SftpSource(accounts, sink, settings).start()
        started.append(source)
        return source

    yield start, sink, key, tmp_path
    for source in started:
        source.stop()


def openssh_sftp(source: SftpSource, key: Path, tmp_path: Path, commands: str, user: str = "hn_air"):
    exe = require_tool("sftp", package="openssh-client")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{source.port} {source.host_public_key}\n")  # the host key is verified
    batch = tmp_path / "batch"
    batch.write_text(commands)
    return subprocess.run(
        [exe, "-b", str(batch), "-i", str(key), "-P", str(source.port), "-o", f"UserKnownHostsFile={known}",
         "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
         "-o", "PasswordAuthentication=no", f"{user}@127.0.0.1"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def local_file(tmp_path: Path, data: bytes = BODY, name: str = NAME) -> Path:
    path = tmp_path / "out" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(data)
    return path


def test_openssh_sftp_with_a_key_hands_the_exact_bytes_to_the_sink(rig):
    start, sink, key, tmp_path = rig
    source = start()
    data = BODY + "Nhiệtđộ\t31.5\toC\t20260325000500\t00".encode()  # no final newline: unchanged
    done = openssh_sftp(
        source, key, tmp_path, f"-mkdir 2026\nmkdir 2026/03\nput {local_file(tmp_path, data)} 2026/03/\n"
    )
    assert done.returncode == 0, done.stderr
    (upload,) = sink.wait_for(1)
    assert (upload.data, upload.name, upload.path) == (data, NAME, f"2026/03/{NAME}")
    assert (upload.account, upload.station, upload.transport, upload.interrupted) == (
        "hn_air", "HN_BKHN_KHIKXQ", "sftp", False,
    )  # fmt: skip
    assert not (tmp_path / "homes" / "hn_air" / "2026" / "03" / NAME).exists()


def test_a_key_of_another_account_and_a_missing_key_are_refused(rig):
    start, sink, key, tmp_path = rig
    source = start()
    other_key, _ = keypair(tmp_path, "stranger")
    for user, k in (("hn_air", other_key), ("hn_ww", key)):
        done = openssh_sftp(source, k, tmp_path, f"put {local_file(tmp_path)}\n", user=user)
        assert done.returncode != 0 and "Permission denied" in done.stderr, done.stderr
    assert sink.uploads == []


async def _client(source: SftpSource, user: str = "hn_air", password: str = PASSWORD):
    return await asyncssh.connect(
        "127.0.0.1", source.port, username=user, password=password, known_hosts=None, client_keys=None
    )


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def test_password_auth_with_asyncssh_and_a_wrong_password(rig):
    start, sink, _, tmp_path = rig
    source = start()

    async def scenario():
        with pytest.raises(asyncssh.PermissionDenied):
            await _client(source, password="wrong")
        with pytest.raises(asyncssh.PermissionDenied):
            await _client(source, user="nobody")
        async with await _client(source) as conn, conn.start_sftp_client() as sftp:
            await sftp.put(str(local_file(tmp_path)), NAME)

    run(scenario())
    (upload,) = sink.uploads
    assert upload.data == BODY and upload.account == "hn_air"


def test_each_account_is_chrooted_to_its_home(rig):
    start, sink, _, tmp_path = rig
    (tmp_path / "homes" / "hn_ww").mkdir(parents=True)
    (tmp_path / "homes" / "hn_ww" / "held.txt.tmp").write_text("another station's file")
    (tmp_path / "outside.txt").write_text("not yours")
    source = start()
    recovered = len(sink.uploads)

    async def scenario():
        async with await _client(source) as conn, conn.start_sftp_client() as sftp:
            assert await sftp.realpath("../../..") == "/"
            assert sorted(await sftp.listdir("/")) == [".", ".."]
            for path in ("../outside.txt", "/../../outside.txt", "../hn_ww/held.txt.tmp"):
                with pytest.raises(asyncssh.SFTPNoSuchFile):
                    await sftp.get(path, str(tmp_path / "stolen"))
            with pytest.raises(asyncssh.SFTPPermissionDenied):
                await sftp.symlink("/../../outside.txt", "link.txt")
            await sftp.put(str(local_file(tmp_path)), "../../escape.txt")

    run(scenario())
    (*_, upload) = sink.wait_for(recovered + 1)
    assert upload.path == "escape.txt" and not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "stolen").exists()


def test_quota_and_rate_limit_refuse_with_a_reason(rig):
    start, sink, _, tmp_path = rig
    source = start(hn_air={"quota_bytes": 100, "max_files_per_minute": 3})

    async def scenario():
        async with await _client(source) as conn, conn.start_sftp_client() as sftp:
            with pytest.raises(asyncssh.SFTPFailure, match="Quota exceeded: 100 bytes reached"):
                await sftp.put(str(local_file(tmp_path, b"x" * 5000, "big.txt")), "big.txt")
            for i in range(2):
                await sftp.put(str(local_file(tmp_path, b"y", f"f{i}.txt")), f"f{i}.txt")
            with pytest.raises(asyncssh.SFTPFailure, match="Rate limit: at most 3 files per minute; retry in"):
                await sftp.put(str(local_file(tmp_path, b"y", "f2.txt")), "f2.txt")

    run(scenario())
    assert [u.name for u in sink.uploads] == ["big.txt", "f0.txt", "f1.txt"]
    assert (sink.uploads[0].data, sink.uploads[0].interrupted) == (b"", True)  # its one write was refused


def test_a_connection_dropped_mid_file_is_flagged_and_a_short_close_is_not(rig):
    start, sink, _, _ = rig
    source = start()

    async def scenario():
        conn = await _client(source)
        sftp = await conn.start_sftp_client()
        handle = await sftp.open(NAME, "wb")
        await handle.write(BODY[:30])
        conn.abort()  # the link drops with the file open for writing
        await conn.wait_closed()
        sink.wait_for(1)
        async with await _client(source) as conn, conn.start_sftp_client() as sftp:
            async with sftp.open("short.txt", "wb") as handle:
                await handle.write(BODY[:30])  # then closed normally: SFTP cannot tell

    run(scenario())
    dropped, short = sink.wait_for(2)
    assert (dropped.name, dropped.data, dropped.interrupted) == (NAME, BODY[:30], True)
    assert (short.name, short.data, short.interrupted) == ("short.txt", BODY[:30], False)


def test_a_temporary_name_is_handed_on_when_renamed_and_a_refusing_sink_fails_the_close(rig):
    start, sink, key, tmp_path = rig
    source = start()
    done = openssh_sftp(source, key, tmp_path, f"put {local_file(tmp_path)} {NAME}.part\nrename {NAME}.part {NAME}\n")
    assert done.returncode == 0, done.stderr
    (upload,) = sink.uploads
    assert (upload.name, upload.data) == (NAME, BODY)
    sink.refuse = 1
    done = openssh_sftp(source, key, tmp_path, f"put {local_file(tmp_path)} again.txt\n")
    assert done.returncode != 0 and "close remote: Failure" in done.stderr, (
        done.stderr
    )  # the client knows to send it again
    assert (tmp_path / "homes" / "hn_air" / "again.txt").read_bytes() == BODY


def test_the_host_key_is_created_0600_and_kept(rig):
    start, _, _, tmp_path = rig
    first = start()
    mode = stat.S_IMODE((tmp_path / "host_key").stat().st_mode)
    public = first.host_public_key
    first.stop()
    assert mode == 0o600
    assert start().host_public_key == public
