"""The sources file (``sources.sample.yaml``), read by the one configuration loader: a wrong line
fails at start with FILE:LINE: path: message (fix: ...); and ``serve_sources`` that starts
everything it configures in front of one sink."""

from __future__ import annotations

import hashlib
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from broker_bridge.tt10.sources.accounts import Account, AccountEntry, PasswordChecker, accounts_from_model
from broker_bridge.tt10.sources.ftp_server import FtpSettings, FtpSource
from broker_bridge.tt10.sources.homes import DEFAULT_HOLD_SUFFIXES, HomeSweeper, recover_leftovers
from broker_bridge.tt10.sources.limits import AccountLimits
from broker_bridge.tt10.sources.pull import Puller, PullSettings
from broker_bridge.tt10.sources.sftp_server import SftpSettings, SftpSource
from broker_bridge.tt10.sources.upload import SerializedSink, UploadSink
from broker_bridge.tt10.sources.watch import Watcher, WatchSettings
from configuration.errors import ConfigError, DocumentProblem, SemanticErrors
from configuration.yaml_source import YamlDocument, read_yaml, validate

README = "broker_bridge/tt10/sources/README.md"
SAMPLE = Path(__file__).with_name("sources.sample.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FtpSection(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(21, ge=0, le=65535)
    passive_ports: tuple[int, int] | None = None
    masquerade_address: str | None = None
    certfile: Path | None = None
    keyfile: Path | None = None
    require_tls: bool = False
    auth_failed_delay_s: float = Field(3.0, ge=0)
    idle_timeout_s: int = Field(300, gt=0)
    max_connections: int = Field(4096, gt=0)
    max_connections_per_ip: int = Field(0, ge=0)


class SftpSection(_Strict):
    host: str = "0.0.0.0"
    port: int = Field(22, ge=0, le=65535)
    host_key: Path | None = None  # default: state_dir/ssh_host_ed25519_key


class WatchSection(_Strict):
    dir: Path
    settle_s: float = Field(10.0, ge=0)
    interval_s: float = Field(5.0, gt=0)
    stations: dict[str, str] = Field(default_factory=dict)
    memory: Path | None = None  # default: state_dir/watch-<hash of dir>.sqlite


class PullSection(_Strict):
    host: str
    port: int = Field(21, gt=0, le=65535)
    user: str = "anonymous"
    password_file: Path | None = None
    tls: bool = False
    tls_ca: Path | None = None
    remote_dir: str = "/"
    settle_s: float = Field(60.0, ge=0)
    interval_s: float = Field(60.0, gt=0)
    timeout_s: float = Field(30.0, gt=0)
    stations: dict[str, str] = Field(default_factory=dict)
    memory: Path | None = None


class SourcesFile(_Strict):
    state_dir: Path
    homes_dir: Path | None = None
    hold_suffixes: list[str] = Field(default_factory=lambda: list(DEFAULT_HOLD_SUFFIXES))
    ftp: FtpSection | None = None
    sftp: SftpSection | None = None
    watch: list[WatchSection] = Field(default_factory=list)
    pull: list[PullSection] = Field(default_factory=list)
    accounts: dict[str, AccountEntry] = Field(default_factory=dict)
    # a file left in a home this long after its last write (a partial upload never resumed, a file the
    # sink refused and its logger never sent again) goes to the sink as interrupted and leaves the home
    leftover_age_s: float = Field(3600.0, gt=0)
    # true: the accounts are the station registry's (`tt10:` on each station), read by
    # `quantrac bridge tt10 serve --registry`; an account here as well is refused there
    accounts_in_registry: bool = False

    @model_validator(mode="after")
    def _whole(self) -> SourcesFile:
        problems = []
        if not (self.ftp or self.sftp or self.watch or self.pull):
            problems.append(DocumentProblem((), "no source configured", "add ftp:, sftp:, watch: or pull:"))
        if (self.ftp or self.sftp) and not self.accounts and not self.accounts_in_registry:
            problems.append(
                DocumentProblem(
                    ("accounts",),
                    "ftp/sftp need accounts",
                    "add one account per station, or accounts_in_registry: true (tt10: on the registry's stations)",
                )
            )
        if self.ftp and self.ftp.require_tls and self.ftp.certfile is None:
            problems.append(
                DocumentProblem(("ftp", "require_tls"), "require_tls without a certificate", "add certfile and keyfile")
            )
        if self.ftp and self.ftp.passive_ports and self.ftp.passive_ports[0] > self.ftp.passive_ports[1]:
            problems.append(DocumentProblem(("ftp", "passive_ports"), "first port above last", "write [first, last]"))
        if (
            self.ftp
            and self.sftp
            and self.ftp.port == self.sftp.port
            and self.ftp.port
            and self.ftp.host == self.sftp.host
        ):
            problems.append(DocumentProblem(("sftp", "port"), "the same port as ftp", "give sftp another port (22)"))
        if problems:
            raise SemanticErrors(problems)
        return self


@dataclass(frozen=True)
class SourcesConfig:
    model: SourcesFile
    accounts: dict[str, Account]
    path: Path


def _memory(state_dir: Path, kind: str, key: str, explicit: Path | None) -> Path:
    return explicit or state_dir / f"{kind}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.sqlite"


def _file_issues(doc: YamlDocument, model: SourcesFile) -> list:
    issues = []
    wanted: list[tuple[tuple, Path | None, bool]] = []  # (loc, path, secret)
    if model.ftp:
        wanted += [(("ftp", "certfile"), model.ftp.certfile, False), (("ftp", "keyfile"), model.ftp.keyfile, True)]
    for i, p in enumerate(model.pull):
        wanted += [(("pull", i, "password_file"), p.password_file, True), (("pull", i, "tls_ca"), p.tls_ca, False)]
    for loc, path, secret in wanted:
        if path is None:
            continue
        if not path.is_file():
            issues.append(doc.issue(loc, f"{path} does not exist", "write the path of an existing file"))
        elif secret and stat.S_IMODE(path.stat().st_mode) & 0o077:
            issues.append(doc.issue(loc, f"{path} is readable by others", f"chmod 600 {path}"))
    for i, w in enumerate(model.watch):
        if not w.dir.is_dir():
            issues.append(doc.issue(("watch", i, "dir"), f"{w.dir} is not a folder", "write the drop folder's path"))
    return issues


def load_sources_file(path: Path, *, check_files: bool = True) -> SourcesConfig:
    """The sources file; raises ConfigError (FILE:LINE: path: message (fix: ...)). ``check_files``
    also checks that certificates, password files and watched folders exist (and secrets are 0600)."""
    doc = read_yaml(path, readme=README)
    model = validate(SourcesFile, doc)
    accounts = accounts_from_model(model, homes_dir=model.homes_dir, doc=doc)  # type: ignore[arg-type]
    issues = _file_issues(doc, model) if check_files else []
    if issues:
        raise ConfigError(issues)
    return SourcesConfig(model, accounts, Path(path))


@dataclass
class RunningSources:
    ftp: FtpSource | None = None
    sftp: SftpSource | None = None
    sweeper: HomeSweeper | None = None
    watchers: list[Watcher] = field(default_factory=list)
    pullers: list[Puller] = field(default_factory=list)

    def stop(self) -> None:
        for part in [*self.pullers, *self.watchers, self.sweeper, self.sftp, self.ftp]:
            if part is not None:
                part.stop()


def serve_sources(config: SourcesConfig, sink: UploadSink) -> RunningSources:
    """Start every configured source in front of ``sink`` (called one ``take`` at a time)."""
    m = config.model
    shared: Any = SerializedSink(sink)
    limits, checker = AccountLimits(), PasswordChecker()
    holds = tuple(m.hold_suffixes)
    running = RunningSources()
    try:
        if m.ftp or m.sftp:  # once, before either server may write into a home
            recover_leftovers(shared, config.accounts, transport="ftp" if m.ftp else "sftp")
        if m.ftp:
            f = m.ftp
            settings = FtpSettings(
                host=f.host,
                port=f.port,
                passive_ports=f.passive_ports,
                masquerade_address=f.masquerade_address,
                certfile=f.certfile,
                keyfile=f.keyfile,
                require_tls=f.require_tls,
                hold_suffixes=holds,
                auth_failed_delay_s=f.auth_failed_delay_s,
                idle_timeout_s=f.idle_timeout_s,
                max_connections=f.max_connections,
                max_connections_per_ip=f.max_connections_per_ip,
            )
            running.ftp = FtpSource(config.accounts, shared, settings, limits=limits, checker=checker, recover=False)
            running.ftp.start()
        if m.sftp:
            key = m.sftp.host_key or m.state_dir / "ssh_host_ed25519_key"
            settings_s = SftpSettings(host_key=key, host=m.sftp.host, port=m.sftp.port, hold_suffixes=holds)
            running.sftp = SftpSource(
                config.accounts, shared, settings_s, limits=limits, checker=checker, recover=False
            )
            running.sftp.start()
        if m.ftp or m.sftp:
            running.sweeper = HomeSweeper(
                shared, config.accounts, transport="ftp" if m.ftp else "sftp", age_s=m.leftover_age_s
            ).start()
        for w in m.watch:
            memory = _memory(m.state_dir, "watch", str(w.dir.resolve()), w.memory)
            ws = WatchSettings(w.dir, memory, w.settle_s, w.interval_s, dict(w.stations))
            running.watchers.append(Watcher(ws, shared).start())
        for p in m.pull:
            memory = _memory(m.state_dir, "pull", f"{p.host}:{p.port}{p.remote_dir}", p.memory)
            ps = PullSettings(
                host=p.host,
                memory=memory,
                port=p.port,
                user=p.user,
                password_file=p.password_file,
                tls=p.tls,
                tls_ca=p.tls_ca,
                remote_dir=p.remote_dir,
                settle_s=p.settle_s,
                interval_s=p.interval_s,
                timeout_s=p.timeout_s,
                stations=dict(p.stations),
            )
            running.pullers.append(Puller(ps, shared).start())
    except BaseException:
        running.stop()
        raise
    return running
