"""Real servers for the TT10 out tests: pyftpdlib (FTP, explicit FTPS) and asyncssh (SFTP), each in a thread.

They are the libraries' own servers on free ports in temporary folders, not stand-ins: the
agent's ftplib and asyncssh clients speak the real protocols to them. ``FtpServer`` can stop
and start again on the same port (an outage), records every completed rename (RNTO), and can
cut the data connection after the first bytes of every upload (``cut_uploads``).
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

import asyncssh
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.handlers import DTPHandler, FTPHandler, TLS_DTPHandler, TLS_FTPHandler
from pyftpdlib.servers import FTPServer

USER, PASSWORD = "hn_station", "s3cret-pw"
logging.getLogger("pyftpdlib").setLevel(logging.WARNING)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def password_file(folder: Path, password: str = PASSWORD, mode: int = 0o600) -> Path:
    path = folder / "province.password"
    path.write_text(password + "\n")
    path.chmod(mode)
    return path


@dataclass
class Tls:
    ca: Path
    cert: Path
    key: Path


def make_tls(folder: Path) -> Tls:
    """A CA and a server certificate for 127.0.0.1 signed by it (made here with `cryptography`)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "quantrac test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # key_cert_sign, crl_sign
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    tls = Tls(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    tls.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    tls.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    tls.key.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    tls.key.chmod(0o600)
    return tls


@dataclass
class FtpServer:
    root: Path
    tls: Tls | None = None
    port: int = field(default_factory=free_port)
    renames: list[str] = field(default_factory=list)  # final paths, relative to root, in the order renamed
    cut_uploads: bool = False
    _server: FTPServer | None = None
    _thread: threading.Thread | None = None

    def start(self) -> FtpServer:
        owner = self
        authorizer = DummyAuthorizer()
        self.root.mkdir(parents=True, exist_ok=True)
        authorizer.add_user(USER, PASSWORD, str(self.root), perm="elradfmw")
        base_dtp = TLS_DTPHandler if self.tls else DTPHandler
        base_handler = TLS_FTPHandler if self.tls else FTPHandler

        class CuttingDTP(base_dtp):
            """Takes the first 16 bytes of an upload, then cuts the data connection (when asked to)."""

            ac_in_buffer_size = 16

            def handle_read(self):
                if not owner.cut_uploads:
                    self.ac_in_buffer_size = 65536
                    return super().handle_read()
                super().handle_read()
                self._resp = ("426 Connection cut by the test server.", logging.getLogger("pyftpdlib").info)
                self.close()

            handle_read_event = handle_read  # the base class aliases its own handle_read

        class Handler(base_handler):
            def ftp_RNTO(self, path):
                result = super().ftp_RNTO(path)
                if Path(path).exists():
                    owner.renames.append(str(Path(path).relative_to(owner.root)))
                return result

        Handler.authorizer = authorizer
        Handler.dtp_handler = CuttingDTP
        Handler.passive_ports = None
        if self.tls:
            Handler.certfile = str(self.tls.cert)
            Handler.keyfile = str(self.tls.key)
            Handler.tls_control_required = True
            Handler.tls_data_required = True
        self._server = FTPServer(("127.0.0.1", self.port), Handler)
        server = self._server
        self._thread = threading.Thread(target=lambda: server.serve_forever(timeout=0.05), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.close_all()
            self._thread.join(5)
            self._server = None

    def files(self) -> dict[str, bytes]:
        """Every file under the root (relative path -> bytes)."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}


class _PasswordServer(asyncssh.SSHServer):
    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return True

    def validate_password(self, username: str, password: str) -> bool:
        return username == USER and password == PASSWORD


@dataclass
class SftpServer:
    """asyncssh's SFTP server, chrooted to ``root``, password login, in its own thread and event loop."""

    root: Path
    folder: Path
    port: int = field(default_factory=free_port)
    known_hosts: Path | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None

    def start(self) -> SftpServer:
        self.root.mkdir(parents=True, exist_ok=True)
        key = asyncssh.generate_private_key("ssh-ed25519")
        self.known_hosts = self.folder / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key.export_public_key().decode().strip()}\n")
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve():
            self._acceptor = await asyncssh.listen(
                "127.0.0.1",
                self.port,
                server_host_keys=[key],
                server_factory=_PasswordServer,
                sftp_factory=lambda chan: asyncssh.SFTPServer(chan, chroot=str(self.root)),
                allow_scp=False,
            )
            ready.set()

        def run():
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "the SFTP server did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:

            async def close():
                self._acceptor.close()
                await self._acceptor.wait_closed()

            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    def files(self) -> dict[str, bytes]:
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}
