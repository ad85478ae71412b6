"""The FTP server with explicit FTPS (pyftpdlib) that stations upload their TT10 files to.

One account per station, chrooted to its home (pyftpdlib's authorizer home and AbstractedFS),
passwords checked against scrypt hashes, a byte quota and a files-per-minute limit per account.
The client's ``226 Transfer complete`` is sent only after the sink took the file: a 226 means
the file is durable, and a sink that refuses makes the client see ``451`` and send it again.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS
from pyftpdlib.handlers import FTPHandler, TLS_FTPHandler
from pyftpdlib.ioloop import IOLoop
from pyftpdlib.servers import FTPServer

from broker_bridge.tt10.sources.accounts import Account, PasswordChecker
from broker_bridge.tt10.sources.homes import DEFAULT_HOLD_SUFFIXES, deliver, is_held_name, recover_leftovers
from broker_bridge.tt10.sources.limits import AccountLimits
from broker_bridge.tt10.sources.upload import UploadSink

log = structlog.get_logger("broker_bridge.tt10.sources.ftp")
# Our own events say what happened. pyftpdlib configures INFO logging to stderr on its first loop
# unless its logger has a handler: the NullHandler keeps its warnings going to the root logger only.
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)
logging.getLogger("pyftpdlib").addHandler(logging.NullHandler())

#: l list, e cd, r read, a append, d delete, f rename, m mkdir, w store (no chmod, no site commands)
PERMISSIONS = "elradfmw"


@dataclass(frozen=True)
class FtpSettings:
    host: str = "0.0.0.0"
    port: int = 21  # 0: any free port (tests)
    passive_ports: tuple[int, int] | None = None  # (first, last), open them in the firewall
    masquerade_address: str | None = None  # the public IP behind NAT, sent in PASV replies
    certfile: Path | None = None  # PEM chain: enables explicit FTPS (AUTH TLS)
    keyfile: Path | None = None
    require_tls: bool = False  # refuse login and data transfers without TLS
    hold_suffixes: tuple[str, ...] = DEFAULT_HOLD_SUFFIXES
    auth_failed_delay_s: float = 3.0
    idle_timeout_s: int = 300
    max_connections: int = 4096
    max_connections_per_ip: int = 0  # 0: unlimited (a province NAT may carry many stations)


class _Authorizer(DummyAuthorizer):
    def __init__(self, accounts: dict[str, Account], checker: PasswordChecker) -> None:
        super().__init__()
        self.accounts = accounts
        self._checker = checker
        for account in accounts.values():
            account.root.mkdir(parents=True, exist_ok=True)
            self.add_user(account.name, "", str(account.root), perm=PERMISSIONS)

    def validate_authentication(self, username: str, password: str, handler: Any) -> None:
        account = self.accounts.get(username)
        if account is None or not self._checker.check(account, password):
            raise AuthenticationFailed("Authentication failed.")


class _QuotaFile:
    """A file opened for an upload that refuses to grow past the account's quota (EDQUOT: the
    client sees ``426 Disk quota exceeded; transfer aborted``)."""

    def __init__(self, raw: Any, budget: int, handler: Any) -> None:
        self._raw = raw
        self._room = max(0, budget)
        self._handler = handler

    def write(self, data: bytes) -> int:
        if len(data) > self._room:
            self._raw.write(data[: self._room])  # what fits stays, as a disk quota would leave it
            self._room = 0
            account = self._handler._account
            self._handler._quota_reply = f"552 Quota exceeded: {account.quota_bytes} bytes reached; transfer aborted."
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
        self._room -= len(data)
        return self._raw.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)


class _QuotaFS(AbstractedFS):
    def open(self, filename: str, mode: str) -> Any:
        raw = super().open(filename, mode)
        if not any(c in mode for c in "wa+"):
            return raw
        handler = self.cmd_channel
        account = handler.authorizer.accounts[handler.username]
        budget = handler.limits.budget(account, Path(filename), keeps_existing="w" not in mode)
        return _QuotaFile(raw, budget, handler)


class _SourceHandler:
    """Mixed into pyftpdlib's FTPHandler / TLS_FTPHandler; class attributes set per FtpSource."""

    sink: UploadSink
    limits: AccountLimits
    hold_suffixes: tuple[str, ...]
    _hold_codes: tuple[str, ...] = ()
    _held_reply: str | None = None
    _quota_reply: str | None = None

    # -- replies held until the sink took the file

    def respond(self, resp: str, logfun: Any = logging.debug) -> None:
        if self._quota_reply is not None and resp.startswith("426"):  # pyftpdlib would say "426 None; ..."
            resp, self._quota_reply = self._quota_reply, None
        if self._hold_codes and resp[:3] in self._hold_codes and self._held_reply is None:
            self._held_reply = resp
            return
        super().respond(resp, logfun)  # type: ignore[misc]

    def _release(self, ok: bool) -> None:
        held, self._held_reply, self._hold_codes = self._held_reply, None, ()
        if held is not None:
            reply = held if ok else "451 Requested action aborted: the file could not be stored; send it again."
            super().respond(reply)  # type: ignore[misc]

    # -- who and how

    @property
    def _account(self) -> Account:
        return self.authorizer.accounts[self.username]  # type: ignore[attr-defined]

    @property
    def _transport(self) -> str:
        return "ftps" if getattr(self, "_ssl_established", False) else "ftp"

    @property
    def _peer(self) -> str:
        return f"{self.remote_ip}:{self.remote_port}"  # type: ignore[attr-defined]

    def _log(self, event: str, level: str = "info", **kw: Any) -> None:
        account = self.authorizer.accounts.get(self.username)  # type: ignore[attr-defined]
        getattr(log, level)(
            event,
            account=self.username,  # type: ignore[attr-defined]
            station=account.station if account else None,
            transport=self._transport,
            peer=self._peer,
            **kw,
        )

    # -- uploads

    def ftp_STOR(self, file: str, mode: str = "w") -> Any:
        account = self._account
        refusal = self.limits.rate_refusal(account)
        if refusal is not None:
            self._log("tt10_upload_refused", "warning", reason=refusal, path=file)
            self.respond(f"450 {refusal[0].upper()}{refusal[1:]}.")  # type: ignore[attr-defined]
            return None
        keeps = "a" in mode or bool(self._restart_position)  # type: ignore[attr-defined]
        refusal = self.limits.quota_refusal(account, self.limits.budget(account, Path(file), keeps_existing=keeps))
        if refusal is not None:
            self._log("tt10_upload_refused", "warning", reason=refusal, path=file)
            self.respond(f"552 {refusal[0].upper()}{refusal[1:]}; files leave the home once taken.")  # type: ignore[attr-defined]
            return None
        result = super().ftp_STOR(file, mode)  # type: ignore[misc]
        if result is not None:
            self._hold_codes = ("226",)
        return result

    def ftp_STOU(self, line: str) -> None:
        self.respond("502 STOU is not supported: upload with STOR under the file's TT10 name.")  # type: ignore[attr-defined]

    def on_file_received(self, file: str) -> None:
        path = Path(file)
        if is_held_name(path.name, self.hold_suffixes):
            self._log("tt10_upload_held_for_rename", path=file)
            self._release(True)
            return
        self._release(self._deliver(path, interrupted=False))

    def on_incomplete_file_received(self, file: str) -> None:
        self._hold_codes = ()
        self._log("tt10_upload_interrupted", "warning", path=file)
        if not is_held_name(Path(file).name, self.hold_suffixes):
            self._deliver(Path(file), interrupted=True)

    def ftp_RNTO(self, path: str) -> Any:
        src = self._rnfr  # type: ignore[attr-defined]
        completes = (
            src is not None
            and is_held_name(Path(src).name, self.hold_suffixes)
            and not is_held_name(Path(path).name, self.hold_suffixes)
        )
        if completes:
            self._hold_codes = ("250",)
        result = super().ftp_RNTO(path)  # type: ignore[misc]
        if completes:
            self._release(result is not None and self._deliver(Path(path), interrupted=False))
        return result

    def _deliver(self, path: Path, *, interrupted: bool) -> bool:
        try:
            deliver(
                self.sink,
                self._account,
                path,
                transport=self._transport,
                peer=self._peer,
                interrupted=interrupted,
                remove=not interrupted,
            )
        except Exception as exc:  # noqa: BLE001 - the client is told (451) and the file stays in the home
            self._log("tt10_upload_not_taken", "error", path=str(path), error=repr(exc))
            return False
        return True

    def on_login(self, username: str) -> None:
        self._log("tt10_login")

    def on_login_failed(self, username: str, password: str) -> None:
        self._log("tt10_login_failed", "warning")


class FtpSource:
    """``FtpSource(accounts, sink, settings).start()`` serves in a thread; ``.port`` is the bound
    port; ``.stop()`` closes every connection and the listening socket."""

    def __init__(
        self,
        accounts: dict[str, Account],
        sink: UploadSink,
        settings: FtpSettings = FtpSettings(),
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
        self._server: FTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _handler_class(self) -> type:
        s = self.settings
        tls = s.certfile is not None
        base = TLS_FTPHandler if tls else FTPHandler
        attrs: dict[str, Any] = {
            "sink": self.sink,
            "limits": self.limits,
            "hold_suffixes": s.hold_suffixes,
            "authorizer": _Authorizer(self.accounts, self.checker),
            "abstracted_fs": _QuotaFS,
            "passive_ports": list(range(s.passive_ports[0], s.passive_ports[1] + 1)) if s.passive_ports else None,
            "masquerade_address": s.masquerade_address,
            "auth_failed_timeout": s.auth_failed_delay_s,
            "timeout": s.idle_timeout_s,
            "banner": "quantrac TT10 bridge ready.",
            "use_sendfile": False,
        }
        if tls:
            attrs.update(
                certfile=str(s.certfile),
                keyfile=str(s.keyfile) if s.keyfile else None,
                ssl_context=None,  # built from this class's files, not shared with another source
                tls_control_required=s.require_tls,
                tls_data_required=s.require_tls,
            )
        elif s.require_tls:
            raise ValueError("require_tls needs certfile (and keyfile) for explicit FTPS")
        return type("TT10FtpHandler", (_SourceHandler, base), attrs)

    def start(self) -> FtpSource:
        if self.recover:
            recover_leftovers(self.sink, self.accounts, transport="ftp")
        handler = self._handler_class()
        self._server = FTPServer((self.settings.host, self.settings.port), handler, ioloop=IOLoop())
        self._server.max_cons = self.settings.max_connections
        self._server.max_cons_per_ip = self.settings.max_connections_per_ip
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tt10-ftp", daemon=True)
        self._thread.start()
        log.info(
            "tt10_ftp_started",
            host=self.settings.host,
            port=self.port,
            tls=self.settings.certfile is not None,
            require_tls=self.settings.require_tls,
            accounts=len(self.accounts),
        )
        return self

    def _run(self) -> None:
        assert self._server is not None
        try:
            while not self._stop.is_set():
                self._server.ioloop.loop(timeout=0.1, blocking=False)
        finally:
            self._server.close_all()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.address[1]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        log.info("tt10_ftp_stopped")

    def __enter__(self) -> FtpSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
