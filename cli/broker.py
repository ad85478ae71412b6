"""``quantrac broker config`` and ``quantrac broker tls``: what an operator installs on the broker.

Plain functions; ``cli/main.py`` wraps them in typer commands.  Every
refusal is raised as ``BrokerConfigError`` (file system errors as OSError)
for the command to report.  Nothing here ever prints a password: the
per-user credential files are the only place a plain password is written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from broker_bridge.broker_config import (
    DEFAULT_AGGREGATOR_USER,
    DEFAULT_COLLECTOR_USER,
    BridgeSettings,
    BrokerConfigError,
    GeneratedBrokerConfig,
    Pki,
    QueueSizing,
    TlsListener,
    create_pki,
    generate_broker_config,
)
from broker_bridge.session import SESSION_EXPIRY_S
from collector.registry import RegistryError, bridge_delegations, delegations, parse_registry

log = structlog.get_logger("cli.broker")

Echo = Callable[[str], None]


def parse_listen(text: str, what: str) -> tuple[str | None, int]:
    """``PORT`` or ``HOST:PORT`` (host None: every interface)."""
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or not 0 < int(port) < 65536 or (sep and not host):
        raise BrokerConfigError(f"{what} {text!r} must look like PORT or HOST:PORT, e.g. 127.0.0.1:1883")
    return (host or None), int(port)


def _is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: may resolve to anything


def stations_from_registry(registry: Path) -> tuple[list[str], list[str]]:
    """(enabled, disabled) station ids of a registry file."""
    enabled, disabled, _, _ = registry_users(registry)
    return enabled, disabled


def registry_users(registry: Path) -> tuple[list[str], list[str], dict[str, list[str]], dict[str, list[str]]]:
    """(enabled, disabled) station ids, province user -> delegated stations and bridge (``bridges:``) ->
    its bound enabled stations, of a registry file."""
    try:
        text = Path(registry).read_text()
    except FileNotFoundError as exc:
        raise BrokerConfigError(f"{registry}: registry file not found") from exc
    try:
        entries = parse_registry(text, str(registry))
    except RegistryError as exc:
        raise BrokerConfigError(str(exc)) from exc
    enabled = sorted(s for s, e in entries.items() if e.enabled)
    disabled = sorted(s for s, e in entries.items() if not e.enabled)
    return enabled, disabled, delegations(entries), bridge_delegations(entries)


def broker_config(
    out: Path,
    *,
    registry: Path | None = None,
    stations: Sequence[str] = (),
    collector_users: Sequence[str] = (),
    aggregator_users: Sequence[str] = (),
    rotate: Sequence[str] = (),
    listen: str | None = "127.0.0.1:1883",
    tls_listen: str = "8883",
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    require_certificate: bool = False,
    batches_per_minute: float = 1.0,
    outage_hours: float = 72.0,
    batch_bytes: int = 4096,
    margin: float = 2.0,
    autosave_interval: int = 10,
    config_dir: Path | None = None,
    data_dir: Path = Path("/var/lib/mosquitto"),
    log_file: Path = Path("/var/log/mosquitto/mosquitto.log"),
    run_as: str = "mosquitto",
    acl_plugin: Path | None = None,
    bridge_to: str | None = None,
    bridge_user: str | None = None,
    bridge_password_file: Path | None = None,
    bridge_ca: Path | None = None,
    bridge_cert: Path | None = None,
    bridge_key: Path | None = None,
    echo: Echo = print,
) -> GeneratedBrokerConfig:
    """Generate the broker's files for the registry's enabled stations plus ``stations``.

    Disabled stations get no broker access (their agents keep their data in
    the outbox until re-enabled); their credential files are kept so that
    re-enabling restores the same password.  ``acl_plugin``: quantrac_acl.so as
    the broker host sees it (default: this checkout's build from scripts/bootstrap.sh).
    A national registry's ``province:`` delegations give each province a user that speaks
    only for its stations, and each bridge of its ``bridges:`` (a TT10 ingest bridge) a user of its name
    that speaks only for the enabled stations bound to it.  ``bridge_to`` (a province broker) adds a
    bridge to the national broker, logging in as ``bridge_user`` (the province's user there), TLS
    verified by ``bridge_ca``.
    """
    ids: list[str] = []
    disabled: list[str] = []
    provinces: dict[str, list[str]] = {}
    bridges: dict[str, list[str]] = {}
    if registry is not None:
        ids, disabled, provinces, bridges = registry_users(registry)
    ids += [s for s in stations if s not in ids]
    if not ids:
        raise BrokerConfigError("no stations: give --registry and/or --station")

    tls = None
    if any((tls_ca, tls_cert, tls_key)):
        if not all((tls_ca, tls_cert, tls_key)):
            raise BrokerConfigError("a TLS listener needs --tls-ca, --tls-cert and --tls-key together")
        if config_dir is None:  # the paths are local, so they can be checked here
            for path in (tls_ca, tls_cert, tls_key):
                if not Path(path).is_file():
                    raise BrokerConfigError(f"TLS file {path} does not exist")
        tls_host, tls_port = parse_listen(tls_listen, "--tls-listen")
        tls = TlsListener(
            Path(tls_ca).resolve() if config_dir is None else Path(tls_ca),
            Path(tls_cert).resolve() if config_dir is None else Path(tls_cert),
            Path(tls_key).resolve() if config_dir is None else Path(tls_key),
            port=tls_port,
            host=tls_host,
            require_certificate=require_certificate,
        )
    elif require_certificate:
        raise BrokerConfigError("--require-certificate needs a TLS listener (--tls-ca, --tls-cert, --tls-key)")

    plain = None
    if listen is not None and listen.lower() != "none":
        host, port = parse_listen(listen, "--listen")
        plain = (host or "0.0.0.0", port)

    bridge = None
    if bridge_to is not None:
        bridge_host, bridge_port = parse_listen(bridge_to, "--bridge-to")
        if bridge_host is None or bridge_user is None or bridge_password_file is None or bridge_ca is None:
            raise BrokerConfigError(
                "--bridge-to HOST:PORT needs --bridge-user, --bridge-password-file and --bridge-ca"
                " (the bridge always uses TLS and verifies the national broker's certificate)"
            )
        bridge = BridgeSettings(
            bridge_host,
            bridge_port,
            bridge_user,
            Path(bridge_password_file),
            Path(bridge_ca).resolve(),
            Path(bridge_cert).resolve() if bridge_cert else None,
            Path(bridge_key).resolve() if bridge_key else None,
            outage_hours=outage_hours,
        )
    elif any((bridge_user, bridge_password_file, bridge_ca, bridge_cert, bridge_key)):
        raise BrokerConfigError(
            "--bridge-user/--bridge-password-file/--bridge-ca/--bridge-cert/--bridge-key need --bridge-to"
        )

    sizing = QueueSizing(
        stations=len(ids),
        batches_per_minute=batches_per_minute,
        outage_hours=outage_hours,
        batch_bytes=batch_bytes,
        margin=margin,
    )
    result = generate_broker_config(
        out,
        ids,
        collector_users=list(collector_users) or [DEFAULT_COLLECTOR_USER],
        aggregator_users=list(aggregator_users) or [DEFAULT_AGGREGATOR_USER],
        rotate=rotate,
        plain_listener=plain,
        tls=tls,
        sizing=sizing,
        autosave_interval=autosave_interval,
        config_dir=config_dir,
        data_dir=data_dir,
        log_file=log_file,
        run_as=run_as,
        acl_plugin=acl_plugin,
        province_users=provinces,
        bridge=bridge,
        bridge_users=bridges,
    )
    log.info(
        "broker_config_written",
        out=str(out),
        stations=len(ids),
        created=len(result.created),
        rotated=len(result.rotated),
    )

    echo(f"wrote {result.conf_file}, {result.password_file} (0600), {result.acl_file}")
    echo(f"credentials: {result.credentials_dir}/<user>.password (0600), one per user; give each station only its own")
    for label, users in (("new", result.created), ("rotated", result.rotated), ("unchanged", result.kept)):
        if users:
            echo(f"  {label}: {', '.join(users)}")
    for province, delegated in provinces.items():
        echo(f"  province {province} may forward {len(delegated)} delegated station(s): {', '.join(delegated)}")
    for name, bound in bridges.items():
        echo(
            f"  bridge {name} (registry bridges:) may speak for {len(bound)} station(s): {', '.join(bound)};"
            f" run it with --broker-user {name} --broker-password-file credentials/{name}.password"
        )
    if bridge is not None:
        echo(
            f"bridge to {bridge.host}:{bridge.port} as {bridge.remote_user}: data and status out, commands in (QoS 1);"
            f" mosquitto.conf holds its password (0600); the province queues up to {outage_hours:g} h of batches"
        )
    if disabled:
        echo(f"  disabled in the registry, no broker access: {', '.join(disabled)}")
    if result.without_access:
        echo(f"  credential files of users no longer configured, no broker access: {', '.join(result.without_access)}")
    for line in sizing.describe():
        echo(line)
    echo(f"autosave_interval {autosave_interval} s: a broker crash loses at most that much of the queue")
    if outage_hours * 3600 > SESSION_EXPIRY_S:
        # the broker discards a session (and its queue) once its expiry passes
        echo(
            f"WARNING: an outage of {outage_hours:g} h outlasts the collector's session expiry of "
            f"{SESSION_EXPIRY_S // 3600} h (broker_bridge/session.py); the queue would be discarded before that"
        )
    if plain is not None and not _is_loopback(plain[0]):
        echo(
            f"WARNING: the plain listener {plain[0]}:{plain[1]} is not loopback; "
            "passwords would cross the network in clear"
        )
    if tls is None:
        echo("WARNING: no TLS listener; use --tls-ca/--tls-cert/--tls-key for stations outside this host")
    echo(install_hint(result, config_dir, run_as))
    echo(
        f"plugin: mosquitto.conf loads {result.acl_plugin}; on another host build it there from "
        "broker_bridge/mosquitto_plugin/quantrac_acl.c (see its header) and pass --acl-plugin; "
        "a new collector user needs a restart (plugin options are read at start only)"
    )
    return result


def install_hint(result: GeneratedBrokerConfig, config_dir: Path | None, run_as: str | None) -> str:
    """What to do with the files: copy them only when the broker reads them from elsewhere (--config-dir)."""
    owner = f"chown them (and the TLS files) to user {run_as} with mode 0600, " if run_as else ""
    written = result.out_dir.resolve()
    if config_dir is None or Path(config_dir).resolve() == written:
        return (
            f"install: mosquitto.conf names passwd and acl where they were written, in {written}: "
            f"{owner}then start Mosquitto with -c {result.conf_file.resolve()} (or restart it); "
            "after adding stations or rotating, run this command again and send Mosquitto SIGHUP"
        )
    return (
        f"install: copy mosquitto.conf, passwd and acl from {written} to {config_dir} on the broker host "
        f"(mosquitto.conf names them there), {owner}then restart Mosquitto; "
        "after adding stations or rotating, copying passwd and acl again and sending SIGHUP is enough"
    )


def broker_tls(
    out: Path,
    *,
    hosts: Sequence[str] = ("127.0.0.1", "localhost"),
    clients: Sequence[str] = (),
    days: int = 825,
    echo: Echo = print,
) -> Pki:
    """Create (or extend) a private CA with a server certificate and client certificates."""
    if days <= 0:
        raise BrokerConfigError("--days must be > 0")
    pki = create_pki(out, hosts=list(hosts), clients=list(clients), days=days)
    echo(f"CA certificate: {pki.ca_cert} (give it to every client: --tls-ca)")
    echo(f"CA key:         {pki.ca_key} (0600; keep it off the broker and out of git)")
    echo(f"server:         {pki.server_cert} + {pki.server_key} (0600), for {', '.join(hosts)}")
    for name, (cert, key) in pki.clients.items():
        echo(f"client {name}: {cert} + {key} (0600)")
    for cert in pki.issued:
        echo(f"  issued now: {cert}")
    for cert in pki.kept:
        echo(f"  already there, left alone: {cert}")
    return pki
