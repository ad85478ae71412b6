"""Remote pull: the watcher's job against a province's existing FTP server, over the network,
with the standard library's ftplib (FTP, or explicit FTPS with FTP_TLS and ``PROT P``).

Listing with MLSD where the server has it, else NLST with SIZE and MDTM (RFC 3659 times: UTC).
A file is downloaded once settled (its modify time ``settle_s`` old, or its size and modify time
unchanged across listings ``settle_s`` apart, for a server whose clock is ahead) and only when
the bytes received match the listed size; then ``sink.take``, then remembered (``taken.py``).
The puller never deletes, renames or uploads anything on the remote server.
"""

from __future__ import annotations

import ftplib
import hashlib
import ssl
import threading
import time
from calendar import timegm
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import structlog

from broker_bridge.tt10.sources.layout import is_day_folder, is_tt10_name, may_descend, station_of
from broker_bridge.tt10.sources.taken import TakenMemory
from broker_bridge.tt10.sources.upload import Upload, UploadSink
from broker_bridge.tt10.sources.watch import ScanResult

log = structlog.get_logger("broker_bridge.tt10.sources.pull")


@dataclass(frozen=True)
class PullSettings:
    host: str
    memory: Path
    port: int = 21
    user: str = "anonymous"
    password_file: Path | None = None  # one line; keep it 0600
    tls: bool = False  # explicit FTPS (AUTH TLS, PROT P), certificate verified
    tls_ca: Path | None = None  # the CA to verify the server with (default: the system's)
    remote_dir: str = "/"
    settle_s: float = 60.0
    interval_s: float = 60.0
    timeout_s: float = 30.0
    stations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RemoteFile:
    rel: str  # below remote_dir
    station: str
    size: int
    modify_ns: int


def mdtm_to_ns(stamp: str) -> int:
    """``YYYYMMDDHHMMSS[.fff]`` (UTC, RFC 3659) -> UTC nanoseconds."""
    whole, _, frac = stamp.strip().partition(".")
    seconds = timegm(time.strptime(whole, "%Y%m%d%H%M%S"))
    return seconds * 10**9 + (int((frac + "000000000")[:9]) if frac else 0)


class Puller:
    def __init__(self, settings: PullSettings, sink: UploadSink) -> None:
        self.settings = settings
        self.sink = sink
        self.source = f"pull:{settings.host}:{settings.port}{PurePosixPath('/', settings.remote_dir)}"
        self.memory = TakenMemory(settings.memory)
        self._observed: dict[str, tuple[int, int, float]] = {}  # rel -> (size, modify_ns, first seen)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the connection

    def _connect(self) -> ftplib.FTP:
        s = self.settings
        password = s.password_file.read_text().strip() if s.password_file else ""
        if s.tls:
            context = ssl.create_default_context(cafile=str(s.tls_ca) if s.tls_ca else None)
            ftp: ftplib.FTP = ftplib.FTP_TLS(context=context, timeout=s.timeout_s)
        else:
            ftp = ftplib.FTP(timeout=s.timeout_s)
        ftp.connect(s.host, s.port)
        ftp.login(s.user, password)
        if isinstance(ftp, ftplib.FTP_TLS):
            ftp.prot_p()
        ftp.voidcmd("TYPE I")
        return ftp

    # -- listing

    def _entries(
        self, ftp: ftplib.FTP, path: str, mlsd: list[bool]
    ) -> Iterator[tuple[str, str, int | None, int | None]]:
        """(name, "dir"|"file", size, modify_ns) of a remote folder; ``mlsd[0]`` turns False when
        the server refuses MLSD, and NLST with SIZE/MDTM is used from then on."""
        if mlsd[0]:
            try:
                for name, facts in ftp.mlsd(path, facts=["type", "size", "modify"]):
                    kind = facts.get("type", "").lower()
                    if kind in ("dir", "file"):
                        size = int(facts["size"]) if "size" in facts else None
                        modify = mdtm_to_ns(facts["modify"]) if "modify" in facts else None
                        yield name, kind, size, modify
                return
            except ftplib.error_perm as exc:
                if not str(exc).startswith(("500", "501", "502", "504")):
                    raise
                mlsd[0] = False
                log.info("tt10_pull_no_mlsd", host=self.settings.host, reply=str(exc))
        names = ftp.nlst(path)
        ftp.voidcmd("TYPE I")  # NLST switched to ASCII, where servers refuse SIZE
        for entry in names:
            name = PurePosixPath(entry).name
            if name in (".", ".."):
                continue
            if is_tt10_name(name):
                full = str(PurePosixPath(path, name))
                size = ftp.size(full)
                modify = mdtm_to_ns(ftp.sendcmd(f"MDTM {full}")[4:])
                yield name, "file", size, modify
            else:
                yield name, "dir", None, None

    def _files(self, ftp: ftplib.FTP) -> Iterator[RemoteFile]:
        mlsd = [True]
        base = PurePosixPath("/", self.settings.remote_dir)
        for name, kind, _, _ in sorted(self._entries(ftp, str(base), mlsd)):
            station = station_of(name, self.settings.stations) if kind == "dir" else None
            if station is not None:
                yield from self._walk(ftp, base, base / name, (), station, mlsd)

    def _walk(self, ftp, base, folder, parts, station, mlsd) -> Iterator[RemoteFile]:
        for name, kind, size, modify in sorted(self._entries(ftp, str(folder), mlsd)):
            if kind == "dir" and may_descend((*parts, name)):
                yield from self._walk(ftp, base, folder / name, (*parts, name), station, mlsd)
            elif kind == "file" and is_day_folder(parts) and is_tt10_name(name) and size is not None and modify:
                yield RemoteFile(str((folder / name).relative_to(base)), station, size, modify)

    # -- taking

    def _settled(self, f: RemoteFile) -> bool:
        now = time.monotonic()
        seen = self._observed.get(f.rel)
        if seen is None or seen[:2] != (f.size, f.modify_ns):
            self._observed[f.rel] = (f.size, f.modify_ns, now)
            seen = self._observed[f.rel]
        # MLSD/MDTM times have whole seconds: the file may have been written up to 1 s later
        aged = time.time_ns() - (f.modify_ns + 10**9) >= self.settings.settle_s * 1e9
        return aged or now - seen[2] >= self.settings.settle_s

    def scan_once(self) -> ScanResult:
        result = ScanResult()
        ftp = self._connect()
        try:
            for f in list(self._files(ftp)):
                if self.memory.seen(self.source, f.rel, f.size, f.modify_ns):
                    continue
                if not self._settled(f):
                    result.unsettled += 1
                    continue
                chunks: list[bytes] = []
                ftp.retrbinary(f"RETR {PurePosixPath('/', self.settings.remote_dir, f.rel)}", chunks.append)
                data = b"".join(chunks)
                if len(data) != f.size:
                    result.unsettled += 1  # changed since the listing: next scan
                    continue
                sha = hashlib.sha256(data).hexdigest()
                if not self.memory.has_hash(self.source, f.rel, sha):
                    try:
                        self.sink.take(self._upload(f, data))
                    except Exception as exc:  # noqa: BLE001 - logged, not remembered: the next scan tries again
                        result.failed += 1
                        log.error(
                            "tt10_pull_not_taken", station=f.station, transport="pull", path=f.rel, error=repr(exc)
                        )
                        continue
                    result.taken += 1
                    log.info("tt10_upload_taken", account=self.source, station=f.station, transport="pull", path=f.rel)
                self.memory.remember(self.source, f.rel, f.size, f.modify_ns, sha, f.station)
                self._observed.pop(f.rel, None)
        finally:
            self.memory.commit()
            try:
                ftp.quit()
            except ftplib.all_errors:
                ftp.close()
        return result

    def _upload(self, f: RemoteFile, data: bytes) -> Upload:
        s = self.settings
        return Upload(
            account=f"pull:{s.host}",
            station=f.station,
            name=PurePosixPath(f.rel).name,
            path=f.rel,
            data=data,
            received_ns=time.time_ns(),
            transport="pull",
            peer=f"{s.host}:{s.port}",
            interrupted=False,
        )

    # -- the loop

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                result = self.scan_once()
                if result.taken or result.failed:
                    log.info("tt10_pull_scan", host=self.settings.host, **result.__dict__)
            except (*ftplib.all_errors, ssl.SSLError) as exc:  # the server is down or refuses: try again later
                log.error("tt10_pull_scan_failed", host=self.settings.host, transport="pull", error=repr(exc))
            self._stop.wait(self.settings.interval_s)

    def start(self) -> Puller:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="tt10-pull", daemon=True)
        self._thread.start()
        log.info("tt10_pull_started", host=self.settings.host, port=self.settings.port, tls=self.settings.tls)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
            self._thread = None
        self.memory.close()
        log.info("tt10_pull_stopped", host=self.settings.host)
