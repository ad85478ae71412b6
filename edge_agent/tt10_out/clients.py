"""Uploading files to a province server: FTP and explicit FTPS with ftplib, SFTP with asyncssh.

Every file goes up under a temporary name in its folder (``.<name>.part``), its size is checked
on the server, and only then is it renamed to its final name, so a receiver watching the folder
never sees half a file under a TT10 name (a cut connection leaves at most the ``.part``, which
the next attempt overwrites). ``deliver`` sends files in the order given over one session and
calls ``on_sent`` after each rename succeeded; the first failure raises ``UploadError`` and
stops the run, so a later cycle never overtakes an earlier one.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
import posixpath
import ssl
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import structlog

from station_profiles.profile_model import Tt10Target

log = structlog.get_logger("edge_agent.tt10_out")

OnSent = Callable[["Upload"], None]


class Upload(Protocol):
    remote_dir: str
    name: str
    content: bytes


class UploadError(RuntimeError):
    """An upload that did not complete; the message says what the server or the network answered."""


class PasswordFileError(UploadError):
    """The password file is missing, empty or readable by others."""


def read_password(path: str) -> str:
    """The password from its file (first line), refused unless only the owner can read it (0600 or 0400)."""
    p = Path(path)
    try:
        mode = p.stat().st_mode
    except OSError as exc:
        raise PasswordFileError(f"password file {path}: {exc.strerror}") from exc
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordFileError(
            f"password file {path} has mode {stat.S_IMODE(mode):04o}: others can read it (fix: chmod 600 {path})"
        )
    password = p.read_text(encoding="utf-8").splitlines()[0] if p.stat().st_size else ""
    if not password:
        raise PasswordFileError(f"password file {path} is empty (fix: write the password on its first line)")
    return password


def temporary_name(name: str) -> str:
    return f".{name}.part"


def deliver(target: Tt10Target, files: Sequence[Upload], on_sent: OnSent, should_stop=lambda: False) -> int:
    """Send ``files`` in order over one session; returns how many were sent (each already passed to ``on_sent``)."""
    if not files:
        return 0
    password = read_password(target.password_file)
    if target.protocol == "sftp":
        return asyncio.run(_deliver_sftp(target, password, files, on_sent, should_stop))
    return _deliver_ftp(target, password, files, on_sent, should_stop)


# --------------------------------------------------------------------------- FTP, FTPS


def _tls_context(target: Tt10Target) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=target.tls_ca)  # verifies the certificate and the host name
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def _deliver_ftp(target: Tt10Target, password: str, files: Sequence[Upload], on_sent: OnSent, should_stop) -> int:
    sent = 0
    try:
        ftp = ftplib.FTP_TLS(context=_tls_context(target)) if target.protocol == "ftps" else ftplib.FTP()
        with ftp:
            ftp.connect(target.host, target.effective_port, timeout=target.timeout_s)
            ftp.login(target.user, password)  # FTP_TLS.login sends AUTH TLS first: explicit TLS
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.prot_p()  # the data channel encrypted too
            ftp.set_pasv(target.passive)
            home = ftp.pwd()
            for f in files:
                if should_stop():
                    break
                _put_ftp(ftp, home, f)
                on_sent(f)
                sent += 1
            ftp.quit()
    except (OSError, EOFError, ftplib.Error) as exc:
        raise UploadError(f"{target.protocol}://{target.host}:{target.effective_port}: {_describe(exc)}") from exc
    return sent


def _put_ftp(ftp: ftplib.FTP, home: str, f: Upload) -> None:
    ftp.cwd(home)
    _ftp_makedirs(ftp, f.remote_dir)
    part = temporary_name(f.name)
    _store(ftp, part, f.content)
    size = ftp.size(part)
    if size != len(f.content):
        raise UploadError(f"{f.remote_dir}/{part}: the server holds {size} bytes of {len(f.content)}")
    try:
        ftp.rename(part, f.name)
    except ftplib.error_perm as exc:
        # Some servers refuse to rename over a file: a previous attempt may have renamed it already
        # (then stopped before it was recorded). The same size there means that file is this one.
        if _ftp_size(ftp, f.name) != len(f.content):
            raise UploadError(f"{f.remote_dir}: rename {part} -> {f.name} refused: {exc}") from exc
        ftp.delete(part)


def _store(ftp: ftplib.FTP, name: str, content: bytes) -> None:
    """``storbinary``, tolerating a server that closes the TLS data channel without a close_notify.

    ftplib ends an FTPS upload with a TLS shutdown; pyftpdlib (and other servers) may drop the
    socket first, and ftplib then raises ``SSLEOFError`` although every byte was sent. The
    server's reply (226) and the size check that follows decide whether the upload is whole.
    """
    if not isinstance(ftp, ftplib.FTP_TLS):
        ftp.storbinary(f"STOR {name}", io.BytesIO(content))
        return
    ftp.voidcmd("TYPE I")
    with ftp.transfercmd(f"STOR {name}") as conn:
        conn.sendall(content)
        if isinstance(conn, ssl.SSLSocket):
            try:
                conn.unwrap()
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError) as exc:
                # the server closed first: its reply below, and the size check, say whether it took the file
                log.debug("ftps_data_closed_without_close_notify", file=name, error=repr(exc))
    ftp.voidresp()


def _ftp_size(ftp: ftplib.FTP, name: str) -> int | None:
    try:
        return ftp.size(name)
    except ftplib.error_perm:  # 550: no such file
        return None


def _ftp_makedirs(ftp: ftplib.FTP, remote_dir: str) -> None:
    if remote_dir.startswith("/"):
        ftp.cwd("/")
    for part in (p for p in remote_dir.split("/") if p):
        try:
            ftp.cwd(part)
        except ftplib.error_perm:  # 550: not there yet
            ftp.mkd(part)
            ftp.cwd(part)


# --------------------------------------------------------------------------- SFTP


async def _deliver_sftp(
    target: Tt10Target, password: str, files: Sequence[Upload], on_sent: OnSent, should_stop
) -> int:
    import asyncssh  # only the SFTP targets need it

    options = {"known_hosts": target.known_hosts} if target.known_hosts else {}
    sent = 0
    try:
        async with asyncssh.connect(
            target.host,
            port=target.effective_port,
            username=target.user,
            password=password,
            client_keys=None,
            agent_path=None,
            connect_timeout=target.timeout_s,
            login_timeout=target.timeout_s,
            **options,
        ) as conn:
            async with conn.start_sftp_client() as sftp:
                for f in files:
                    if should_stop():
                        break
                    await asyncio.wait_for(_put_sftp(sftp, f), target.timeout_s)
                    on_sent(f)
                    sent += 1
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise UploadError(f"sftp://{target.host}:{target.effective_port}: {_describe(exc)}") from exc
    return sent


async def _put_sftp(sftp, f: Upload) -> None:
    import asyncssh

    directory = f.remote_dir or "."
    await sftp.makedirs(directory, exist_ok=True)
    part = posixpath.join(directory, temporary_name(f.name))
    final = posixpath.join(directory, f.name)
    async with sftp.open(part, "wb") as handle:
        await handle.write(f.content)
    size = (await sftp.stat(part)).size
    if size != len(f.content):
        raise UploadError(f"{part}: the server holds {size} bytes of {len(f.content)}")
    try:
        await sftp.posix_rename(part, final)  # replaces a file left by an attempt that was not recorded
    except asyncssh.SFTPOpUnsupported:
        try:
            await sftp.rename(part, final)
        except asyncssh.SFTPFailure:  # the final name exists: the same size means a previous attempt's
            if (await sftp.stat(final)).size != len(f.content):
                raise
            await sftp.remove(part)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, ftplib.Error) else text


__all__ = ["PasswordFileError", "Upload", "UploadError", "deliver", "read_password", "temporary_name"]
