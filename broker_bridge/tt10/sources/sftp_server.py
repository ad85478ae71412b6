"""The SFTP server (asyncssh) that stations upload their TT10 files to.

The same accounts as FTP (password against the scrypt hash, or an OpenSSH public key from the
account's ``authorized_keys``), each chrooted to its home, with the same quota and rate limit.
A file opened for writing is handed to the sink when the client closes it; the close is
answered only after the sink took it (an error if it refused). SFTP cannot tell an interrupted
PUT from a finished one (``interrupted=False``), except when the SSH connection drops while the
file is still open for writing: then ``interrupted=True``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import stat
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
import structlog

from broker_bridge.tt10.sources.accounts import Account, PasswordChecker
from broker_bridge.tt10.sources.homes import DEFAULT_HOLD_SUFFIXES, deliver, is_held_name, recover_leftovers
from broker_bridge.tt10.sources.limits import AccountLimits
from broker_bridge.tt10.sources.upload import UploadSink

log = structlog.get_logger("broker_bridge.tt10.sources.sftp")


@dataclass(frozen=True)
class SftpSettings:
    host_key: Path  # generated (ed25519, mode 0600) on first start
    host: str = "0.0.0.0"
    port: int = 22  # 0: any free port (tests)
    hold_suffixes: tuple[str, ...] = DEFAULT_HOLD_SUFFIXES
    login_timeout_s: float = 60.0


def load_or_create_host_key(path: Path) -> asyncssh.SSHKey:
    """The server's host key: created 0600 from the first byte if missing; refused if others may read it."""
    if path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(f"{path} is readable by others (mode {mode:o}); run `chmod 600 {path}`")
        return asyncssh.read_private_key(str(path))
    key = asyncssh.generate_private_key("ssh-ed25519", comment="quantrac-tt10")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key.export_private_key())
        handle.flush()
        os.fsync(handle.fileno())
    log.info("tt10_sftp_host_key_created", path=str(path))
    return key


class _Upload:
    __slots__ = ("path", "room", "refused")

    def __init__(self, path: Path, room: int) -> None:
        self.path = path
        self.room = room  # the end offset the file may reach before the quota
        self.refused = False  # a write was refused: the server knows the file is not whole


class _Session(asyncssh.SFTPServer):
    """One client's SFTP session, chrooted to its account's home."""

    def __init__(self, chan: asyncssh.SSHServerChannel, source: SftpSource) -> None:
        self.source = source
        self.account: Account = source.accounts[chan.get_extra_info("username")]
        host, port = chan.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        self.uploads: dict[int, _Upload] = {}
        self.account.root.mkdir(parents=True, exist_ok=True)
        super().__init__(chan, chroot=os.fsencode(self.account.root))

    def _log(self, event: str, level: str = "info", **kw: Any) -> None:
        getattr(log, level)(
            event, account=self.account.name, station=self.account.station, transport="sftp", peer=self.peer, **kw
        )

    def _local(self, path: bytes) -> Path:
        return Path(os.fsdecode(self.map_path(path)))

    def open(self, path: bytes, pflags: int, attrs: asyncssh.SFTPAttrs) -> object:
        if not pflags & asyncssh.FXF_WRITE:
            return super().open(path, pflags, attrs)
        local = self._local(path)
        refusal = self.source.limits.rate_refusal(self.account)
        budget = self.source.limits.budget(self.account, local, keeps_existing=False)  # the end it may reach
        refusal = refusal or self.source.limits.quota_refusal(self.account, budget)
        if refusal is not None:
            self._log("tt10_upload_refused", "warning", reason=refusal, path=str(local))
            raise asyncssh.SFTPFailure(f"{refusal[0].upper()}{refusal[1:]}")
        file_obj = super().open(path, pflags, attrs)
        self.uploads[id(file_obj)] = _Upload(local, budget)
        return file_obj

    def write(self, file_obj: object, offset: int, data: bytes) -> int:
        upload = self.uploads.get(id(file_obj))
        if upload is not None and offset + len(data) > upload.room:
            upload.refused = True
            self._log("tt10_upload_refused", "warning", reason="quota exceeded", path=str(upload.path))
            raise asyncssh.SFTPFailure(f"Quota exceeded: {self.account.quota_bytes} bytes reached")
        return super().write(file_obj, offset, data)

    async def close(self, file_obj: object) -> None:
        upload = self.uploads.pop(id(file_obj), None)
        super().close(file_obj)
        if upload is None:
            return
        if self.channel.is_closing() or upload.refused:  # the session's clean-up, or a refused write
            self._log("tt10_upload_interrupted", "warning", path=str(upload.path), refused_write=upload.refused)
            await self._deliver(upload.path, interrupted=True)
        elif is_held_name(upload.path.name, self.source.settings.hold_suffixes):
            self._log("tt10_upload_held_for_rename", path=str(upload.path))
        elif not await self._deliver(upload.path, interrupted=False):
            raise asyncssh.SFTPFailure("The file could not be stored; send it again")

    async def _renamed(self, oldpath: bytes, newpath: bytes, posix: bool) -> None:
        old, new = self._local(oldpath), self._local(newpath)
        holds = self.source.settings.hold_suffixes
        if posix:
            super().posix_rename(oldpath, newpath)
        else:
            super().rename(oldpath, newpath)
        if is_held_name(old.name, holds) and not is_held_name(new.name, holds):
            if not await self._deliver(new, interrupted=False):
                raise asyncssh.SFTPFailure("The file could not be stored; send it again")

    async def rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._renamed(oldpath, newpath, posix=False)

    async def posix_rename(self, oldpath: bytes, newpath: bytes) -> None:
        await self._renamed(oldpath, newpath, posix=True)

    def symlink(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")  # a link could point out of the home

    def link(self, oldpath: bytes, newpath: bytes) -> None:
        raise asyncssh.SFTPPermissionDenied("Links are not allowed")

    async def _deliver(self, path: Path, *, interrupted: bool) -> bool:
        call = functools.partial(
            deliver,
            self.source.sink,
            self.account,
            path,
            transport="sftp",
            peer=self.peer,
            interrupted=interrupted,
            remove=not interrupted,
        )
        try:
            await asyncio.get_running_loop().run_in_executor(None, call)
        except Exception as exc:  # noqa: BLE001 - the client is told, the file stays in the home
            self._log("tt10_upload_not_taken", "error", path=str(path), error=repr(exc))
            return False
        return True


class _SshServer(asyncssh.SSHServer):
    def __init__(self, source: SftpSource) -> None:
        self.source = source
        self.conn: asyncssh.SSHServerConnection | None = None
        self.peer = ""

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        host, port = conn.get_extra_info("peername")[:2]
        self.peer = f"{host}:{port}"
        self.source._connections.add(conn)

    def connection_lost(self, exc: Exception | None) -> None:
        self.source._connections.discard(self.conn)

    def begin_auth(self, username: str) -> bool:
        account = self.source.accounts.get(username)
        if account is not None and account.authorized_keys and self.conn is not None:
            self.conn.set_authorized_keys(asyncssh.import_authorized_keys("\n".join(account.authorized_keys)))
        return True

    def password_auth_supported(self) -> bool:
        return True

    def public_key_auth_supported(self) -> bool:
        return True

    async def validate_password(self, username: str, password: str) -> bool:
        account = self.source.accounts.get(username)
        ok = account is not None and await asyncio.get_running_loop().run_in_executor(
            None, self.source.checker.check, account, password
        )
        if not ok:
            log.warning("tt10_login_failed", account=username, transport="sftp", peer=self.peer)
        return ok

    def auth_completed(self) -> None:
        username = self.conn.get_extra_info("username") if self.conn else None
        account = self.source.accounts.get(username or "")
        log.info(
            "tt10_login",
            account=username,
            station=account.station if account else None,
            transport="sftp",
            peer=self.peer,
        )


class SftpSource:
    """``SftpSource(accounts, sink, settings).start()`` serves in a thread with its own event loop;
    ``.port`` is the bound port, ``.host_public_key`` the line for a client's known_hosts."""

    def __init__(
        self,
        accounts: dict[str, Account],
        sink: UploadSink,
        settings: SftpSettings,
        *,
        limits: AccountLimits | None = None,
        checker: PasswordChecker | None = None,
        recover: bool = True,
    ) -> None:
        self.accounts = accounts
        self.sink = sink
        self.settings = settings
        self.limits = limits or AccountLimits()
        self.checker = checker or PasswordChecker()
        self.recover = recover
        self._connections: set[Any] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._acceptor: Any = None
        self._host_key: asyncssh.SSHKey | None = None

    def start(self) -> SftpSource:
        if self.recover:
            recover_leftovers(self.sink, self.accounts, transport="sftp")
        self._host_key = load_or_create_host_key(self.settings.host_key)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tt10-sftp", daemon=True)
        self._thread.start()
        self._acceptor = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=30)
        log.info("tt10_sftp_started", host=self.settings.host, port=self.port, accounts=len(self.accounts))
        return self

    async def _serve(self) -> Any:
        return await asyncssh.create_server(
            lambda: _SshServer(self),
            self.settings.host,
            self.settings.port,
            server_host_keys=[self._host_key],
            sftp_factory=lambda chan: _Session(chan, self),
            allow_scp=False,
            login_timeout=self.settings.login_timeout_s,
        )

    @property
    def port(self) -> int:
        assert self._acceptor is not None, "start() first"
        return self._acceptor.get_port()

    @property
    def host_public_key(self) -> str:
        assert self._host_key is not None, "start() first"
        return self._host_key.export_public_key().decode().strip()

    async def _close(self) -> None:
        self._acceptor.close()
        await self._acceptor.wait_closed()
        for conn in list(self._connections):
            conn.close()
        for conn in list(self._connections):
            await conn.wait_closed()

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(timeout=10)
        self._loop.close()
        self._loop = None
        log.info("tt10_sftp_stopped")

    def __enter__(self) -> SftpSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
