"""``quantrac install systemd``: unit files for each role of a deployment (docs/deployment.md).

One unit per role, ``quantrac-<role>.service``, each running the ``quantrac`` entry point this
command itself was started from (its absolute path) as a dedicated user, restarted by systemd,
and confined: the file system read-only but for the role's own state folder
(``ProtectSystem=strict`` with ``ReadWritePaths=``), no home folders, a private /tmp, no new
privileges, no capabilities.  Secrets are never written into a unit: one-line secret files
(signing keys, broker passwords, the webhook secret) are handed over with ``LoadCredential=``
from root-only 0600 files under ``<config-dir>/secrets/`` and named on the command line as
``%d/<name>`` (systemd's credentials folder for that unit alone); everything else a unit
reads is a path under ``<config-dir>``.  ``sysusers-quantrac.conf`` creates the user
(``systemd-sysusers``).
"""

from __future__ import annotations

import shutil
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

import typer

install_app = typer.Typer(help="Install quantrac as services (systemd units).", no_args_is_help=True)

ROLES = ("agent", "collector", "warehouse", "aggregator", "broker", "bridge", "relay", "api")


@dataclass(frozen=True)
class Layout:
    """Where a deployment keeps its files (docs/deployment.md, "Files and users")."""

    exe: Path
    user: str = "quantrac"
    group: str = "quantrac"
    config_dir: Path = Path("/etc/quantrac")
    state_dir: Path = Path("/var/lib/quantrac")
    log_dir: Path = Path("/var/log/quantrac")
    broker: str = "127.0.0.1:1883"
    broker_user: str | None = None
    tls_ca: Path | None = None
    questdb_http: str = "127.0.0.1:9000"
    questdb_pg: str = "127.0.0.1:8812"
    extra_args: tuple[str, ...] = ()

    @property
    def secrets(self) -> Path:
        return self.config_dir / "secrets"

    def state(self, role: str) -> Path:
        return self.state_dir / role


@dataclass
class Unit:
    role: str
    description: str
    argv: list[str]
    after: list[str] = field(default_factory=list)
    credentials: dict[str, Path] = field(default_factory=dict)  # name in %d -> 0600 file on the host
    restart: str = "always"
    restart_sec: int = 5
    stop_timeout_s: int = 30
    kill_mode: str = "mixed"  # SIGTERM to quantrac only; it stops its own children in order
    private_devices: bool = True
    capabilities: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    limit_nofile: int | None = None
    extra_service: list[str] = field(default_factory=list)


def _quote(arg: str) -> str:
    """One ExecStart= word: ``$`` doubled (no variable expansion); quoted when it holds blanks or quotes.

    ``%`` is left alone: ``%d`` (the credentials folder) is meant; no other argument holds one.
    """
    arg = arg.replace("$", "$$")
    if any(c in arg for c in " \t\"'\\;"):
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return arg


def _broker_login(layout: Layout, password_credential: str) -> tuple[list[str], dict[str, Path]]:
    if layout.broker_user is None:
        return [], {}
    args = ["--broker-user", layout.broker_user, "--broker-password-file", f"%d/{password_credential}"]
    # each broker user's own file, so the collector, aggregator and bridge of one host never share one
    return args, {password_credential: layout.secrets / f"{layout.broker_user}.password"}


def _tls(layout: Layout, option: str = "--tls-ca") -> list[str]:
    return [option, str(layout.tls_ca)] if layout.tls_ca is not None else []


def build_unit(role: str, layout: Layout) -> Unit:
    """The unit of one role with ``layout``'s paths."""
    exe = str(layout.exe)
    cfg = layout.config_dir
    state = layout.state(role)
    if role == "agent":
        login, creds = _broker_login(layout, "broker.password")
        return Unit(
            role,
            "quantrac edge agent: analyzers to the broker through the durable outbox",
            [exe, "agent", "run", str(cfg / "station.yaml"), "--key", "%d/station.key",
             "--outbox", str(state / "outbox.sqlite"), "--broker", layout.broker, *login, *_tls(layout)],
            after=["network-online.target"],
            credentials={"station.key": layout.secrets / "station.key", **creds},
            private_devices=False,  # serial analyzers: /dev/ttyUSB*, /dev/ttyS* (group dialout)
            groups=("dialout",),
        )  # fmt: skip
    if role == "collector":
        login, creds = _broker_login(layout, "broker.password")
        return Unit(
            role,
            "quantrac collector: verified batches from the broker into QuestDB",
            [exe, "collector", "run", "--registry", str(cfg / "registry.yaml"), "--broker", layout.broker,
             "--questdb", layout.questdb_http, "--questdb-pg", layout.questdb_pg,
             "--client-id", layout.broker_user or "quantrac-collector-1", "--key", "%d/collector.key",
             "--reject-store", str(state / "rejects"), *login, *_tls(layout)],
            after=["network-online.target", "quantrac-broker.service", "quantrac-warehouse.service"],
            credentials={"collector.key": layout.secrets / "collector.key", **creds},
        )  # fmt: skip
    if role == "warehouse":
        return Unit(
            role,
            "quantrac warehouse: QuestDB 9.3.4 with quantrac's settings and schema",
            [exe, "warehouse", "run", "--data-dir", str(state)],
            after=["network.target"],
            restart="on-failure",
            stop_timeout_s=120,  # QuestDB closes its tables and applies what the WAL holds
            limit_nofile=1_048_576,  # QuestDB keeps many files open (one per column and partition)
            extra_service=["CacheDirectory=quantrac", "CacheDirectoryMode=0750"],  # the jar, when fetched
        )
    if role == "aggregator":
        login, creds = _broker_login(layout, "broker.password")
        return Unit(
            role,
            "quantrac aggregator: hourly means, VN_AQI, exceedances, availability alerts",
            [exe, "warehouse", "aggregate", "--registry", str(cfg / "registry.yaml"),
             "--questdb", layout.questdb_http, "--questdb-pg", layout.questdb_pg,
             *(["--broker", layout.broker, *login] if layout.broker_user else [])],
            after=["quantrac-warehouse.service", "quantrac-broker.service"],
            credentials=creds,
        )  # fmt: skip
    if role == "broker":
        return Unit(
            role,
            "quantrac broker: Mosquitto with the config `quantrac broker config` wrote",
            [exe, "broker", "run", "--config-dir", str(cfg / "broker")],
            after=["network.target"],
            restart="on-failure",
            limit_nofile=65_536,  # one descriptor per connected station
            extra_service=["ExecReload=/bin/kill -HUP $MAINPID", "LogsDirectory=quantrac", "LogsDirectoryMode=0750"],
        )
    if role == "bridge":
        return Unit(
            role,
            "quantrac TT10 bridge: the stations' TT10 files (FTP/FTPS/SFTP, watch, pull) into signed batches",
            [exe, "bridge", "tt10", "serve", "--sources", str(cfg / "tt10" / "sources.yaml"), "--root", str(state),
             "--broker", layout.broker, "--key", "%d/tt10-bridge.key", "--registry", str(cfg / "registry.yaml"),
             "--questdb", layout.questdb_http,
             *(["--user", layout.broker_user, "--password-file", "%d/broker.password"] if layout.broker_user else []),
             *_tls(layout)],
            after=["network-online.target", "quantrac-broker.service"],
            credentials={
                "tt10-bridge.key": layout.secrets / "tt10-bridge.key",
                **_broker_login(layout, "broker.password")[1],
            },
            capabilities=("CAP_NET_BIND_SERVICE",),  # FTP on port 21, SFTP on 22 if the sources file says so
        )  # fmt: skip
    if role == "relay":
        return Unit(
            role,
            "quantrac relay: store-and-forward of a province's batches to the national broker",
            [exe, "bridge", "forward", "--config", str(cfg / "relay.yaml")],
            after=["network-online.target", "quantrac-broker.service"],
        )
    if role == "api":
        return Unit(
            role,
            "quantrac API: REST, SensorThings and the public VN_AQI page",
            [exe, "api", "serve", "--pg", layout.questdb_pg, "--host", "127.0.0.1", "--port", "8080",
             "--keys", str(state / "keys.json")],
            after=["network.target", "quantrac-warehouse.service"],
        )  # fmt: skip
    raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")


ROLE_HELP = f"one of {', '.join(ROLES)} (repeatable), or all"

HARDENING = [
    "NoNewPrivileges=yes",
    "ProtectSystem=strict",
    "ProtectHome=yes",
    "PrivateTmp=yes",
    "ProtectKernelTunables=yes",
    "ProtectKernelModules=yes",
    "ProtectKernelLogs=yes",
    "ProtectControlGroups=yes",
    "ProtectClock=yes",
    "ProtectHostname=yes",
    "ProtectProc=invisible",
    "RestrictSUIDSGID=yes",
    "RestrictRealtime=yes",
    "RestrictNamespaces=yes",
    "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
    "LockPersonality=yes",
    "RemoveIPC=yes",
    "SystemCallArchitectures=native",
    "UMask=0027",
]


def render_unit(unit: Unit, layout: Layout) -> str:
    state = layout.state(unit.role)
    after = " ".join(unit.after)
    wants = " ".join(u for u in unit.after if u == "network-online.target")
    lines = [
        "# written by `quantrac install systemd`; re-run it rather than editing (or use `systemctl edit`)",
        "[Unit]",
        f"Description={unit.description}",
        f"After={after}",
        *([f"Wants={wants}"] if wants else []),
        "StartLimitIntervalSec=300",
        "StartLimitBurst=20",
        "",
        "[Service]",
        "Type=simple",
        f"User={layout.user}",
        f"Group={layout.group}",
        *([f"SupplementaryGroups={' '.join(unit.groups)}"] if unit.groups else []),
        f"ExecStart={' '.join(_quote(a) for a in [*unit.argv, *layout.extra_args])}",
        f"WorkingDirectory={state}",
        "Environment=PYTHONUNBUFFERED=1",
        f"Restart={unit.restart}",
        f"RestartSec={unit.restart_sec}",
        f"TimeoutStopSec={unit.stop_timeout_s}",
        f"KillMode={unit.kill_mode}",
        *([f"LimitNOFILE={unit.limit_nofile}"] if unit.limit_nofile else []),
        *(
            [f"StateDirectory={state.relative_to('/var/lib')}", "StateDirectoryMode=0750"]
            if state.is_relative_to("/var/lib")
            else []
        ),
        f"ReadWritePaths={state}",
        *unit.extra_service,
        *[f"LoadCredential={name}:{path}" for name, path in unit.credentials.items()],
        *HARDENING,
        *(["PrivateDevices=yes"] if unit.private_devices else []),
        f"CapabilityBoundingSet={' '.join(unit.capabilities)}",
        f"AmbientCapabilities={' '.join(unit.capabilities)}",
        "",
        "[Install]",
        "WantedBy=multi-user.target",
        "",
    ]
    return "\n".join(lines)


def sysusers_conf(layout: Layout) -> str:
    """systemd-sysusers(8) lines: the service user and group, home in the state folder, no login."""
    return (
        "# written by `quantrac install systemd`: systemd-sysusers sysusers-quantrac.conf creates the user\n"
        f'u {layout.user} - "quantrac services" {layout.state_dir} /usr/sbin/nologin\n'
        f"m {layout.user} dialout\n"
    )


def default_exe() -> Path:
    """The ``quantrac`` entry point of this installation (a venv's, pipx's), else the one on PATH."""
    here = Path(sysconfig.get_path("scripts")) / "quantrac"
    if here.is_file():
        return here
    found = shutil.which("quantrac")
    if found:
        return Path(found).resolve()
    return Path(sys.argv[0]).resolve()


def write_units(roles: list[str], out: Path, layout: Layout) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for role in roles:
        path = out / f"quantrac-{role}.service"
        path.write_text(render_unit(build_unit(role, layout), layout))
        written.append(path)
    sysusers = out / "sysusers-quantrac.conf"
    sysusers.write_text(sysusers_conf(layout))
    written.append(sysusers)
    return written


@install_app.command("systemd")
def install_systemd(
    role: list[str] = typer.Option(..., "--role", help=ROLE_HELP),
    out: Path = typer.Option(Path("/etc/systemd/system"), "--out", help="where the unit files are written"),
    user: str = typer.Option("quantrac", "--user", help="the dedicated user every unit runs as"),
    group: str | None = typer.Option(None, "--group", help="its group (default: the user's name)"),
    exe: Path | None = typer.Option(None, "--exec", help="the quantrac entry point (default: this installation's)"),
    config_dir: Path = typer.Option(Path("/etc/quantrac"), help="configuration; secrets/ under it (root, 0600)"),
    state_dir: Path = typer.Option(Path("/var/lib/quantrac"), help="state: one folder per role"),
    broker: str = typer.Option("127.0.0.1:1883", help="the broker the agent, collector, aggregator, bridge use"),
    broker_user: str | None = typer.Option(
        None,
        help="the role's broker user (station id, collector or aggregator user); password: secrets/USER.password",
    ),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate of the broker (enables TLS)"),
    arg: list[str] = typer.Option([], "--arg", help="a further argument appended to ExecStart (repeatable)"),
) -> None:
    """Write quantrac-<role>.service unit files (restart policy, dedicated user, hardening, secrets by file)."""
    roles = list(ROLES) if role == ["all"] else role
    unknown = [r for r in roles if r not in ROLES]
    if unknown:
        typer.secho(f"error: unknown role {', '.join(unknown)}; one of {', '.join(ROLES)} or all", err=True, fg="red")
        raise typer.Exit(code=2)
    for path in (config_dir, state_dir):
        if not path.is_absolute():
            typer.secho(f"error: {path} must be an absolute path (systemd needs them)", err=True, fg="red")
            raise typer.Exit(code=2)
    layout = Layout(
        exe=(exe or default_exe()).absolute(),
        user=user,
        group=group or user,
        config_dir=config_dir,
        state_dir=state_dir,
        broker=broker,
        broker_user=broker_user,
        tls_ca=tls_ca,
        extra_args=tuple(arg),
    )
    if layout.exe.is_relative_to("/home") or layout.exe.is_relative_to("/root"):
        typer.secho(
            f"WARNING: {layout.exe} is under a home folder, which ProtectHome=yes hides from the service;"
            " install quantrac system-wide (docs/deployment.md: PIPX_HOME=/opt/quantrac/pipx) or pass --exec",
            err=True,
            fg="yellow",
        )
    for path in write_units(roles, out, layout):
        typer.echo(f"wrote {path}")
    typer.echo(
        f"next: systemd-sysusers {out / 'sysusers-quantrac.conf'}; put secrets in {layout.secrets}/ (root, 0600);"
        f" systemctl daemon-reload; systemctl enable --now {' '.join(f'quantrac-{r}' for r in roles)}"
    )
