"""The ``quantrac`` command for field technicians and operations staff."""

from __future__ import annotations

import os
import sys

if sys.argv[1:3] == ["agent", "run"]:
    # The agent runs for months on a station PC: rich and greenlet (which structlog imports when they are
    # installed, for its console renderer and its deprecated thread-local context) cost it ~6 MB and do
    # nothing for JSON log lines, so its process goes without them (typer then prints plain errors).
    os.environ["TYPER_USE_RICH"] = "0"
    sys.modules.setdefault("rich", None)
    sys.modules.setdefault("greenlet", None)

import asyncio
import signal
import threading
from pathlib import Path

import typer

from cli.api import api_app
from cli.bridge import bridge_app
from cli.export import export_app
from cli.install import install_app
from cli.logging_setup import configure_logging
from cli.profile import profile_app
from cli.results import COMMANDS as RESULT_COMMANDS
from cli.tt10 import tt10_app
from cli.tt10_account import tt10_account
from cli.warehouse import warehouse_app
from vocabulary.stations import STATION_KINDS

app = typer.Typer(help="quantrac: environmental monitoring stations to the national warehouse.", no_args_is_help=True)
keys_app = typer.Typer(help="Station signing keys (Ed25519).", no_args_is_help=True)
station_app = typer.Typer(help="The station registry the collector trusts.", no_args_is_help=True)
agent_app = typer.Typer(help="The edge agent on the station PC.", no_args_is_help=True)
collector_app = typer.Typer(help="The collector: MQTT to QuestDB.", no_args_is_help=True)
sim_app = typer.Typer(help="Simulated analyzers for demos and tests.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
app.add_typer(station_app, name="station")
app.add_typer(agent_app, name="agent")
app.add_typer(collector_app, name="collector")
app.add_typer(sim_app, name="sim")
app.add_typer(tt10_app, name="tt10")
app.add_typer(bridge_app, name="bridge")
app.add_typer(export_app, name="export")
app.add_typer(warehouse_app, name="warehouse")
app.add_typer(profile_app, name="profile")
for _name, _command in RESULT_COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(api_app, name="api")
app.add_typer(install_app, name="install")

LOG_LEVEL = typer.Option("info", "--log-level", help="debug, info, warning or error")
BROKER_USER = typer.Option(None, "--broker-user", help="MQTT user name")
BROKER_PASSWORD_FILE = typer.Option(None, "--broker-password-file", help="file holding the MQTT password (mode 0600)")
TLS_CA = typer.Option(None, "--tls-ca", help="CA certificate the broker's certificate must chain to (enables TLS)")
TLS_CERT = typer.Option(None, "--tls-cert", help="client certificate (optional, with --tls-key)")
TLS_KEY = typer.Option(None, "--tls-key", help="client certificate's private key")
PROFILES_DIRS = typer.Option(
    [],
    "--profiles-dir",
    help="a folder of analyzer profiles for the names the station file uses (repeatable); searched after the"
    " station file's folder (and its profiles/), before /etc/quantrac/profiles and the built-in ones",
)


def broker_address(broker: str, user, password_file, tls_ca, tls_cert, tls_key):
    from broker_bridge.session import BrokerAddress

    return BrokerAddress.parse(broker).with_credentials(user, password_file).with_tls(tls_ca, tls_cert, tls_key)


def fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def parse_port_overrides(items: list[str]) -> dict[str, int]:
    overrides: dict[str, int] = {}
    for item in items:
        device, sep, port = item.partition("=")
        if not sep or not port.isdigit():
            fail(f"--port {item!r} must look like DEVICE_ID=PORT, e.g. aqms1=15020")
        overrides[device] = int(port)
    return overrides


@keys_app.command("new")
def keys_new(path: Path = typer.Argument(..., help="private key file to create, e.g. keys/HN_AIR_001.key")) -> None:
    """Create an Ed25519 key pair: PATH (private, mode 0600) and PATH with .pub (public)."""
    from broker_bridge.keys import write_new_key

    if path.exists():
        fail(f"{path} exists; a station's key is never overwritten (rotate with a new file instead)")
    key = write_new_key(path)
    typer.echo(f"private key: {path} (mode 0600)\npublic key:  {path.with_suffix('.pub')}\nkey id:      {key.key_id}")


NAME = typer.Option(None, "--name", help="what people call the station (Vietnamese allowed)")
PROVINCE_CODE = typer.Option(
    None, "--province-code", help="the administrative province, as TT10 file names' <Tinh> (e.g. HN); not --province"
)
FACILITY = typer.Option(None, "--facility", help="the facility of an industrial station (TT10's <CoSo>)")
LATITUDE = typer.Option(None, "--lat", help="latitude, WGS 84 decimal degrees (north positive)")
LONGITUDE = typer.Option(None, "--lon", help="longitude, WGS 84 decimal degrees (east positive)")
INTERVAL = typer.Option(
    [],
    "--interval",
    help="PARAMETER=SECONDS, the logger's interval of a parameter (repeatable); PARAMETER=none removes it",
)


def parse_intervals(items: list[str]) -> dict[str, float | None]:
    intervals: dict[str, float | None] = {}
    for item in items:
        symbol, sep, seconds = item.rpartition("=")
        if not sep or not symbol:
            fail(f"--interval {item!r} must look like PARAMETER=SECONDS, e.g. PM10=60")
        if seconds == "none":
            intervals[symbol] = None
            continue
        try:
            intervals[symbol] = float(seconds)
        except ValueError:
            fail(f"--interval {item!r}: {seconds!r} is not a number of seconds, e.g. PM10=60")
    return intervals


def metadata_edit(name, province_code, facility, lat, lon, intervals: list[str], kind=None, clear=()):
    from collector.registry import MetadataEdit

    return MetadataEdit(
        name=name,
        province_code=province_code,
        facility=facility,
        latitude=lat,
        longitude=lon,
        kind=kind,
        intervals=parse_intervals(intervals),
        clear=frozenset(c.replace("-", "_") for c in clear),
    )


@station_app.command("add")
def station_add(
    station_id: str = typer.Argument(..., help="station id, e.g. HN_AIR_001"),
    public_key: Path = typer.Argument(..., help="the station's .pub file from `quantrac keys new`"),
    registry: Path = typer.Option(Path("registry.yaml"), help="registry file the collector reads"),
    kind: str | None = typer.Option(None, help="station kind, for the QC's kind layer: " + ", ".join(STATION_KINDS)),
    name: str | None = NAME,
    province_code: str | None = PROVINCE_CODE,
    facility: str | None = FACILITY,
    lat: float | None = LATITUDE,
    lon: float | None = LONGITUDE,
    interval: list[str] = INTERVAL,
) -> None:
    """Register a station (or one more key of it) so the collector accepts its batches."""
    from broker_bridge.keys import KeyFileError, load_public_key
    from broker_bridge.topics import TopicError
    from collector.registry import RegistryError, add_station

    edit = metadata_edit(name, province_code, facility, lat, lon, interval)
    try:
        kid = add_station(registry, station_id, load_public_key(public_key), kind=kind, metadata=edit)
    except (KeyFileError, TopicError, RegistryError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"{station_id}: key {kid} registered in {registry}")


@station_app.command("list")
def station_list(registry: Path = typer.Option(Path("registry.yaml"), help="registry file")) -> None:
    """List registered stations and their keys."""
    from collector.registry import RegistryError, StationRegistry

    try:
        reg = StationRegistry(registry)
    except RegistryError as exc:
        fail(str(exc))
    for station_id in reg.station_ids():
        entry = reg.get(station_id)
        keys = ", ".join(f"{k.key_id} ({k.state})" for k in entry.keys.values())
        place = f"{entry.province_code or '-'}\t{entry.name or '-'}"
        typer.echo(f"{station_id}\t{'enabled' if entry.enabled else 'DISABLED'}\t{entry.kind or '-'}\t{keys}\t{place}")


@station_app.command("rotate-key")
def station_rotate_key(
    station_id: str = typer.Argument(..., help="station id"),
    new_public_key: Path = typer.Argument(..., help="the station's next .pub file (from `quantrac keys new`)"),
    overlap_hours: float = typer.Option(168.0, help="how long the current key stays valid beside the new one"),
    registry: Path = typer.Option(Path("registry.yaml"), help="registry file"),
) -> None:
    """Register a station's next key; its current key is accepted for the overlap, then never again."""
    from datetime import timedelta

    from broker_bridge.keys import KeyFileError, load_public_key
    from collector.registry import RegistryError, rotate_key

    try:
        kid, retiring = rotate_key(
            registry, station_id, load_public_key(new_public_key), timedelta(hours=overlap_hours)
        )
    except (KeyFileError, RegistryError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"{station_id}: new key {kid} active; {', '.join(retiring) or 'no key'} retiring in {overlap_hours:g} h")
    typer.echo("Now restart the station's agent with --key pointing at the new private key.")


REGISTRY = typer.Option(Path("registry.yaml"), help="registry file the collector reads")


def edit_registry(change, done: str) -> None:
    """Apply one registry edit; the collector picks it up without a restart."""
    from collector.registry import RegistryError

    try:
        change()
    except (RegistryError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(done)


@station_app.command("retire-key")
def station_retire_key(
    station_id: str = typer.Argument(...),
    kid: str = typer.Argument(..., help="key id to retire now (e.g. a stolen key)"),
    registry: Path = REGISTRY,
) -> None:
    """Retire a key at once: batches signed with it are rejected from now on."""
    from collector.registry import retire_key

    edit_registry(lambda: retire_key(registry, station_id, kid), f"{station_id}: key {kid} retired")


@station_app.command("disable")
def station_disable(station_id: str = typer.Argument(...), registry: Path = REGISTRY) -> None:
    """Refuse a station's data (kept as rejects with reason disabled_station)."""
    from collector.registry import set_enabled

    edit_registry(lambda: set_enabled(registry, station_id, False), f"{station_id}: disabled")


@station_app.command("enable")
def station_enable(station_id: str = typer.Argument(...), registry: Path = REGISTRY) -> None:
    """Accept a disabled station's data again."""
    from collector.registry import set_enabled

    edit_registry(lambda: set_enabled(registry, station_id, True), f"{station_id}: enabled")


@station_app.command("set-kind")
def station_set_kind(
    station_id: str = typer.Argument(...),
    kind: str = typer.Argument(..., help="one of " + ", ".join(STATION_KINDS) + "; 'none' removes it"),
    registry: Path = REGISTRY,
) -> None:
    """Set a station's kind: the QC's kind layer (collector/qc/README.md) follows it without a restart."""
    from collector.registry import set_kind

    edit_registry(
        lambda: set_kind(registry, station_id, None if kind == "none" else kind), f"{station_id}: kind {kind}"
    )


@station_app.command("set")
def station_set(
    station_id: str = typer.Argument(...),
    registry: Path = REGISTRY,
    name: str | None = NAME,
    province_code: str | None = PROVINCE_CODE,
    facility: str | None = FACILITY,
    lat: float | None = LATITUDE,
    lon: float | None = LONGITUDE,
    interval: list[str] = INTERVAL,
    kind: str | None = typer.Option(None, help="station kind: " + ", ".join(STATION_KINDS)),
    clear: list[str] = typer.Option(
        [], "--clear", help="remove a field: name, province-code, facility, coordinates, parameters, kind (repeatable)"
    ),
) -> None:
    """Set what the registry says about a station: name, province, facility, place, logging intervals.
    The collector picks it up without a restart and writes it to the warehouse's station_metadata."""
    from collector.registry import set_metadata

    edit = metadata_edit(name, province_code, facility, lat, lon, interval, kind, clear)
    edit_registry(lambda: set_metadata(registry, station_id, edit), f"{station_id}: updated in {registry}")


station_app.command("tt10-account")(tt10_account)


@station_app.command("bind-bridge")
def station_bind_bridge(
    bridge: str = typer.Argument(..., help="the bridge's name, e.g. tt10-hn (also its broker user)"),
    public_key: Path = typer.Argument(..., help="the bridge's .pub file from `quantrac keys new`"),
    station: list[str] = typer.Option(..., "--station", help="a registered station the bridge serves (repeatable)"),
    registry: Path = REGISTRY,
) -> None:
    """Bind a bridge's own key to stations (the registry's bridges:): the collector accepts their converted
    batches (a TT10 file's readings) signed with it; `broker config --registry` gives the bridge its user."""
    from broker_bridge.keys import KeyFileError, load_public_key
    from broker_bridge.topics import TopicError
    from collector.registry import RegistryError, bind_bridge

    try:
        kid = bind_bridge(registry, bridge, load_public_key(public_key), list(station))
    except (KeyFileError, RegistryError, TopicError, FileNotFoundError) as exc:
        fail(str(exc))
    typer.echo(f"bridge {bridge}: key {kid} bound to {', '.join(station)} in {registry}")


@app.command("status")
def status(
    questdb_pg: str = typer.Option("127.0.0.1:8812", help="QuestDB PostgreSQL-wire host:port"),
) -> None:
    """Each station's last reading, online state, backlog, sequence gaps and reject count."""
    from store.queries import station_overview
    from store.questdb_server import QuestDBEndpoints

    rows = station_overview(QuestDBEndpoints.at(questdb_pg).pg_conninfo)
    typer.echo(
        f"{'station':<16} {'state':<8} {'session':>14} {'last reading (UTC)':<20} {'readings':>9} {'backlog':>8}"
        f" {'age s':>7} {'missing':>8} {'gaps':>5} {'lost':>5} {'no-rcpt':>7} {'overdue':>7} {'rejects':>8}"
    )
    for r in rows:
        last = r.last_reading.strftime("%Y-%m-%d %H:%M:%S") if r.last_reading else "-"
        backlog, age = backlog_of(r.latest_payload)
        unreceipted, overdue = receipts_of(r.latest_payload)
        typer.echo(
            f"{r.station:<16} {r.state:<8} {r.session if r.session is not None else '-':>14} {last:<20}"
            f" {r.readings:>9} {backlog if backlog is not None else '-':>8} {age if age is not None else '-':>7}"
            f" {r.missing_batches:>8} {r.open_gaps:>5} {r.lost_at_source:>5}"
            f" {unreceipted if unreceipted is not None else '-':>7} {overdue if overdue is not None else '-':>7}"
            f" {r.rejects:>8}"
        )
    typer.echo(
        "gaps: recorded gaps still asked for; lost: batches the station no longer held (closed as lost at source,"
        " ranges in sequence_gaps.detail); no-rcpt/overdue: PUBACKed batches without a warehouse receipt, and of"
        " those past their time-out (from the station's latest status)"
    )


def receipts_of(latest_payload: str | None) -> tuple[int | None, int | None]:
    """(batches awaiting a receipt, of those overdue) from a station's latest status, when it reports them."""
    outbox = _latest_outbox(latest_payload)
    return (None, None) if outbox is None else (outbox.unreceipted_batches, outbox.overdue_batches)


def _latest_outbox(latest_payload: str | None):
    from broker_bridge.json_message import MessageError
    from broker_bridge.station_messages import Status, parse_station_message

    if not latest_payload:
        return None
    try:
        message = parse_station_message(latest_payload.encode("utf-8"))
    except MessageError:  # stored by an older collector that took it; nothing to show
        return None
    return message.state.outbox if isinstance(message, Status) else None


def backlog_of(latest_payload: str | None) -> tuple[int | None, float | None]:
    """(readings not yet acknowledged, age of the oldest in s) from a station's latest message, when it is a status."""
    outbox = _latest_outbox(latest_payload)
    return (None, None) if outbox is None else (outbox.backlog_readings, outbox.backlog_age_s)


@agent_app.command("run")
def agent_run(
    station_file: Path = typer.Argument(..., help="station file (YAML)"),
    key: Path = typer.Option(..., help="the station's private key file"),
    broker: str = typer.Option("127.0.0.1:1883", help="MQTT broker host:port"),
    outbox: Path = typer.Option(..., help="outbox database file (SQLite)"),
    port: list[str] = typer.Option([], "--port", help="override a device's TCP port: DEVICE_ID=PORT"),
    profiles_dir: list[Path] = PROFILES_DIRS,
    retention_days: float = typer.Option(60.0, help="keep sent data this long (the regulation asks for 60 days)"),
    max_mb: float = typer.Option(2048.0, help="byte cap of the outbox; acknowledged data goes first"),
    overflow: str = typer.Option(
        "drop_oldest", help="when unsent data alone fills the cap: drop_oldest (recorded) or refuse_new"
    ),
    commit_window_ms: float = typer.Option(200.0, help="group-commit window: at most one fsync per window"),
    collector_key: list[Path] = typer.Option(
        [],
        "--collector-key",
        help="a collector's public key file (repeatable): receipts it signs make batches delivered; with one,"
        " a PUBACKed batch no receipt covered in time is sent again, and only delivered batches are dropped",
    ),
    receipt_timeout_s: float = typer.Option(
        30.0, min=0.1, help="send a PUBACKed batch again when no receipt covered it this long (doubling up to 10 min)"
    ),
    broker_user: str | None = BROKER_USER,
    broker_password_file: Path | None = BROKER_PASSWORD_FILE,
    tls_ca: Path | None = TLS_CA,
    tls_cert: Path | None = TLS_CERT,
    tls_key: Path | None = TLS_KEY,
    log_level: str = LOG_LEVEL,
) -> None:
    """Poll the station's analyzers and publish signed batches until SIGINT/SIGTERM."""
    configure_logging(log_level)
    from broker_bridge.envelope import verifier
    from broker_bridge.keys import KeyFileError, key_id, load_public_key, load_signing_key
    from edge_agent.agent import AgentSettings, StationAgent
    from edge_agent.outbox import RetentionPolicy
    from station_profiles.loader import ConfigError, load_station

    try:
        station = load_station(station_file, profiles_dir)
        overrides = parse_port_overrides(port)
        if overrides:
            station = station.with_port_overrides(overrides)
        signing_key = load_signing_key(key)
        address = broker_address(broker, broker_user, broker_password_file, tls_ca, tls_cert, tls_key)
        collector_keys = {key_id(k): verifier(k) for k in map(load_public_key, collector_key)}
        settings = AgentSettings(
            commit_window_s=commit_window_ms / 1000,
            retention=RetentionPolicy(
                retention_days,
                int(max_mb * 1024 * 1024),
                overflow,
                require_receipts=bool(collector_keys),
                receipt_timeout_s=receipt_timeout_s,
            ),
            collector_keys=collector_keys,
        )
        agent = StationAgent(station, signing_key, address, outbox, settings)  # Tt10OutError is a ValueError
    except (ConfigError, KeyFileError, ValueError, OSError) as exc:
        fail(str(exc))

    import structlog

    log = structlog.get_logger("cli.agent")
    for d in station.devices:  # with a search path, which file won matters
        log.info(
            "profile_resolved", station=station.id, device=d.id, profile=d.profile, file=station.profile_file(d.id)
        )

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except NotImplementedError:  # Windows' event loop has none; WinSW stops a service with Ctrl+C (SIGINT)
                signal.signal(sig, lambda *_: loop.call_soon_threadsafe(stop.set))
        await agent.run(stop)

    asyncio.run(main())


@agent_app.command("doctor")
def agent_doctor(
    station_file: Path = typer.Argument(..., help="station file (YAML)"),
    device: list[str] = typer.Option([], "--device", help="probe only this device (repeatable)"),
    profiles_dir: list[Path] = PROFILES_DIRS,
    log_level: str = typer.Option("error", "--log-level", help="debug, info, warning or error"),
) -> None:
    """Probe every device once: raw registers, decoded value, status, latency, hints.

    Stop the agent first: serial ports are opened exclusively.
    """
    configure_logging(log_level)
    from cli.doctor import run_doctor

    raise typer.Exit(code=run_doctor(station_file, devices=device or None, profiles_dirs=profiles_dir))


@collector_app.command("run")
def collector_run(
    registry: Path = typer.Option(..., help="station registry file"),
    broker: str = typer.Option("127.0.0.1:1883", help="MQTT broker host:port"),
    questdb: str = typer.Option("127.0.0.1:9000", help="QuestDB HTTP host:port (ILP and REST)"),
    questdb_pg: str = typer.Option("127.0.0.1:8812", help="QuestDB PostgreSQL-wire host:port (schema)"),
    client_id: str = typer.Option(
        "quantrac-collector-1",
        help="stable MQTT client id (persistent session); with the generated broker config the user name is the id,"
        " so give each collector its own --broker-user",
    ),
    share_group: str | None = typer.Option(None, help="MQTT shared-subscription group for several collectors"),
    metrics_port: int | None = typer.Option(None, help="serve Prometheus metrics on 127.0.0.1:PORT/metrics"),
    qc_thresholds: Path | None = typer.Option(
        None, help="measurement-control thresholds (YAML) over collector/qc/defaults.yaml; applied on change"
    ),
    max_pending: int = typer.Option(
        20_000,
        min=100,
        max=65_535,
        help="unacknowledged messages held at most (also the MQTT Receive Maximum); with --max-pending-mb it bounds"
        " the collector's memory while QuestDB is down",
    ),
    max_pending_mb: int = typer.Option(256, min=16, help="payload megabytes held unacknowledged at most"),
    key: Path | None = typer.Option(
        None,
        help="the collector's own private key (`quantrac keys new`): signs the receipts that tell each station how far"
        " its batches are committed; without it no receipts are sent and stations re-send what no receipt covered",
    ),
    resend_retry_s: float = typer.Option(
        30.0, min=0.1, help="a recorded gap is asked for again after this long, doubling up to 10 minutes"
    ),
    reject_store: Path | None = typer.Option(
        None,
        "--reject-store",
        help="directory for the whole bytes of rejected payloads over 64 KiB (files named by SHA-256, fsynced"
        " before the reject is committed); without it such a reject keeps its first 64 KiB, size and SHA-256",
    ),
    broker_user: str | None = BROKER_USER,
    broker_password_file: Path | None = BROKER_PASSWORD_FILE,
    tls_ca: Path | None = TLS_CA,
    tls_cert: Path | None = TLS_CERT,
    tls_key: Path | None = TLS_KEY,
    log_level: str = LOG_LEVEL,
) -> None:
    """Verify and store every station's batches; acknowledge each only after QuestDB committed it."""
    configure_logging(log_level)
    from broker_bridge.keys import KeyFileError, load_signing_key
    from collector.healing import HealingPolicy
    from collector.qc.thresholds import ThresholdsError
    from collector.registry import RegistryError
    from collector.service import Collector, CollectorConfig
    from store.ilp_writer import WarehouseUnavailable
    from store.payload_store import PayloadStoreError
    from store.questdb_server import QuestDBEndpoints

    # Only an operator's mistake at start-up ends the collector, with one line; QuestDB or the broker
    # being away is waited for (Collector.start, paho's reconnect), never an exit.
    try:
        endpoints = QuestDBEndpoints.at(questdb_pg, http=questdb)
        config = CollectorConfig(
            broker=broker_address(broker, broker_user, broker_password_file, tls_ca, tls_cert, tls_key),
            client_id=client_id,
            registry_path=str(registry),
            ilp_conf=endpoints.ilp_conf,
            pg_conninfo=endpoints.pg_conninfo,
            share_group=share_group,
            qc_thresholds_path=str(qc_thresholds) if qc_thresholds else None,
            metrics_port=metrics_port,
            max_pending=max_pending,
            receive_maximum=max_pending,
            max_pending_bytes=max_pending_mb * 1024 * 1024,
            receipt_key=load_signing_key(key) if key is not None else None,
            healing=HealingPolicy(first_retry_s=resend_retry_s),
            reject_store=str(reject_store) if reject_store is not None else None,
        )
        collector = Collector(config)
    except (RegistryError, ThresholdsError, KeyFileError, PayloadStoreError, ValueError, OSError) as exc:
        fail(str(exc))
    stop = threading.Event()

    def stop_requested(*_) -> None:
        stop.set()
        collector.request_stop()  # also ends the wait for QuestDB at start

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop_requested)
    try:
        collector.start()
    except OSError as exc:  # the metrics port is taken: an operator's choice
        fail(f"cannot start the collector: {exc}")
    except WarehouseUnavailable:
        if not stop.is_set():
            raise
        return  # stopped while waiting for QuestDB
    try:
        collector.run(stop)
    finally:
        collector.stop()


@sim_app.command("run")
def sim_run(
    station_file: Path = typer.Argument(
        ..., help="station file whose devices to simulate (Modbus TCP, RTU and serial on ptys)"
    ),
    truth: Path = typer.Option(..., help="ground-truth log: every value served, one JSON line each"),
    port: list[str] = typer.Option([], "--port", help="override a device's TCP port: DEVICE_ID=PORT"),
    profiles_dir: list[Path] = PROFILES_DIRS,
    log_level: str = LOG_LEVEL,
) -> None:
    """Serve a simulated analyzer for every device of a station file; serial ports become ptys at the file's paths."""
    configure_logging(log_level)
    from firmware_sim.modbus_tcp import run_sim
    from station_profiles.loader import ConfigError

    overrides = parse_port_overrides(port) or None
    try:
        run_sim(station_file, truth, overrides, profiles_dirs=profiles_dir)
    except (ConfigError, KeyError, ValueError) as exc:  # KeyError: a --port for a device the station lacks
        fail(str(exc.args[0]) if isinstance(exc, KeyError) else str(exc))


broker_app = typer.Typer(help="The Mosquitto broker: users, ACL, TLS, queue sizing.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")


@broker_app.command("config")
def broker_config_cmd(
    out: Path = typer.Option(..., "--out", help="directory for mosquitto.conf, passwd, acl and credentials/"),
    registry: Path | None = typer.Option(
        None, help="station registry: each enabled station, province and bridge gets a broker user"
    ),
    station: list[str] = typer.Option([], "--station", help="a further station id (repeatable)"),
    collector_user: list[str] = typer.Option(
        [], "--collector-user", help="collector user (repeatable; one per collector); default quantrac-collector"
    ),
    aggregator_user: list[str] = typer.Option(
        [],
        "--aggregator-user",
        help="warehouse aggregator user, may only publish alerts (repeatable); default quantrac-aggregator",
    ),
    rotate: list[str] = typer.Option([], "--rotate", help="give this user a new password (repeatable)"),
    listen: str = typer.Option("127.0.0.1:1883", help="plain listener HOST:PORT for local tools, or 'none'"),
    tls_listen: str = typer.Option("8883", help="TLS listener PORT or HOST:PORT"),
    tls_ca: Path | None = typer.Option(None, "--tls-ca", help="CA certificate clients' certificates chain to"),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="the broker's certificate"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="the broker's private key"),
    require_certificate: bool = typer.Option(
        False, "--require-certificate", help="TLS clients must present a certificate signed by --tls-ca"
    ),
    batches_per_minute: float = typer.Option(1.0, help="batches each station sends per minute"),
    outage_hours: float = typer.Option(72.0, help="longest collector outage the broker must queue through"),
    batch_bytes: int = typer.Option(4096, help="average batch size in bytes"),
    margin: float = typer.Option(2.0, help="safety factor on the queue limits"),
    autosave_interval: int = typer.Option(10, help="seconds between persistence snapshots"),
    config_dir: Path | None = typer.Option(
        None, help="where passwd and acl will live on the broker host (default: --out)"
    ),
    data_dir: Path = typer.Option(Path("/var/lib/mosquitto"), help="Mosquitto persistence directory"),
    log_file: Path = typer.Option(Path("/var/log/mosquitto/mosquitto.log"), help="Mosquitto log file"),
    run_as: str = typer.Option("mosquitto", help="user Mosquitto drops to when started as root"),
    acl_plugin: Path | None = typer.Option(
        None,
        "--acl-plugin",
        help=(
            "quantrac_acl.so on the broker host (no $share for stations, no retained data); "
            "default: this checkout's build"
        ),
    ),
    bridge_to: str | None = typer.Option(
        None, "--bridge-to", help="province broker: bridge to the national broker HOST:PORT (TLS)"
    ),
    bridge_user: str | None = typer.Option(None, "--bridge-user", help="the province's user on the national broker"),
    bridge_password_file: Path | None = typer.Option(None, "--bridge-password-file", help="its password file there"),
    bridge_ca: Path | None = typer.Option(None, "--bridge-ca", help="CA the national broker's certificate chains to"),
    bridge_cert: Path | None = typer.Option(None, "--bridge-cert", help="client certificate for the national broker"),
    bridge_key: Path | None = typer.Option(None, "--bridge-key", help="its private key"),
    log_level: str = LOG_LEVEL,
) -> None:
    """Write the broker's config, hashed password file, ACL and one password file per user (0600).

    Re-running keeps existing passwords; --rotate USER replaces one. Passwords are never printed.
    """
    configure_logging(log_level)
    from broker_bridge.broker_config import BrokerConfigError
    from cli.broker import broker_config

    try:
        broker_config(
            out,
            registry=registry,
            stations=station,
            collector_users=collector_user,
            aggregator_users=aggregator_user,
            rotate=rotate,
            listen=listen,
            tls_listen=tls_listen,
            tls_ca=tls_ca,
            tls_cert=tls_cert,
            tls_key=tls_key,
            require_certificate=require_certificate,
            batches_per_minute=batches_per_minute,
            outage_hours=outage_hours,
            batch_bytes=batch_bytes,
            margin=margin,
            autosave_interval=autosave_interval,
            config_dir=config_dir,
            data_dir=data_dir,
            log_file=log_file,
            run_as=run_as,
            acl_plugin=acl_plugin,
            bridge_to=bridge_to,
            bridge_user=bridge_user,
            bridge_password_file=bridge_password_file,
            bridge_ca=bridge_ca,
            bridge_cert=bridge_cert,
            bridge_key=bridge_key,
            echo=typer.echo,
        )
    except (BrokerConfigError, OSError) as exc:
        fail(str(exc))


@broker_app.command("tls")
def broker_tls_cmd(
    out: Path = typer.Option(..., "--out", help="directory for ca.crt/ca.key, server.crt/server.key, clients/"),
    host: list[str] = typer.Option(
        [],
        "--host",
        help="broker host name or IP for the server certificate (repeatable); default 127.0.0.1 and localhost",
    ),
    client: list[str] = typer.Option(
        [], "--client", help="also issue a client certificate with this name (repeatable)"
    ),
    days: int = typer.Option(825, help="validity of the server and client certificates"),
    log_level: str = LOG_LEVEL,
) -> None:
    """Create a private CA, a server certificate and client certificates (keys 0600, never overwritten)."""
    configure_logging(log_level)
    from broker_bridge.broker_config import BrokerConfigError
    from cli.broker import broker_tls

    try:
        broker_tls(out, hosts=host or ["127.0.0.1", "localhost"], clients=client, days=days, echo=typer.echo)
    except (BrokerConfigError, OSError) as exc:
        fail(str(exc))


@broker_app.command("plugin")
def broker_plugin_cmd(
    out: Path | None = typer.Option(None, "--out", help="folder for quantrac_acl.so (default: quantrac's cache)"),
) -> None:
    """Build the quantrac_acl Mosquitto plugin from its shipped source with cc (broker config points at it)."""
    from broker_bridge.broker_config import BrokerConfigError, build_acl_plugin

    try:
        typer.echo(f"built {build_acl_plugin(out)}")
    except (BrokerConfigError, OSError) as exc:
        fail(str(exc))


@broker_app.command("run")
def broker_run_cmd(
    config_dir: Path = typer.Option(..., "--config-dir", help="the folder `quantrac broker config --out` wrote"),
    log_level: str = LOG_LEVEL,
) -> None:
    """Mosquitto in the foreground with CONFIG_DIR/mosquitto.conf; SIGTERM stops it, SIGHUP reloads passwd/acl."""
    configure_logging(log_level)
    from cli.servers import RunError, broker_run

    try:
        code = broker_run(config_dir)
    except RunError as exc:
        fail(str(exc))
    raise typer.Exit(code=code)


@app.command("demo")
def demo(
    duration: float | None = typer.Option(None, help="stop by itself after this many seconds"),
    workdir: Path | None = typer.Option(None, help="where servers and stations keep their files"),
    report_every: float = typer.Option(15.0, help="seconds between reports"),
) -> None:
    """Run QuestDB, Mosquitto, three simulated stations, their agents and a collector; Ctrl-C stops all."""
    from cli.demo import run_demo

    raise typer.Exit(code=run_demo(duration=duration, workdir=workdir, report_every=report_every))


rejects_app = typer.Typer(help="Messages the collector refused: reasons, details, payloads.", no_args_is_help=True)
app.add_typer(rejects_app, name="rejects")
QUESTDB_PG = typer.Option("127.0.0.1:8812", "--questdb-pg", help="QuestDB PostgreSQL-wire host:port")
SINCE = typer.Option(
    None, "--since", help="from this time: ISO 8601 (UTC unless a zone is given) or an age: 30m, 24h, 7d"
)


@rejects_app.command("list")
def rejects_list(
    station: str | None = typer.Option(None, "--station", help="only rejects claiming this station"),
    reason: str | None = typer.Option(
        None, "--reason", help="only this reason, e.g. bad_signature, schema, unknown_station"
    ),
    since: str | None = SINCE,
    limit: int = typer.Option(50, "--limit", min=1, help="show the newest N"),
    questdb_pg: str = QUESTDB_PG,
) -> None:
    """The newest rejects, newest first: time (UTC), station, reason, detail, topic, payload SHA-256."""
    from cli.rejects import RejectsError, list_rejects, pg_conninfo

    try:
        list_rejects(pg_conninfo(questdb_pg), station=station, reason=reason, since=since, limit=limit, echo=typer.echo)
    except RejectsError as exc:
        fail(str(exc))


@rejects_app.command("export")
def rejects_export(
    out: Path = typer.Argument(..., help="file to write, or - for standard output"),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl (one JSON object per line) or csv"),
    station: str | None = typer.Option(None, "--station", help="only rejects claiming this station"),
    reason: str | None = typer.Option(None, "--reason", help="only this reason"),
    since: str | None = SINCE,
    until: str | None = typer.Option(None, "--until", help="before this time (same forms as --since)"),
    reject_store: Path | None = typer.Option(
        None, "--reject-store", help="the collector's --reject-store: write payloads over 64 KiB whole from it"
    ),
    questdb_pg: str = QUESTDB_PG,
) -> None:
    """Every matching reject, oldest first, with every field and its payload in base64."""
    from cli.rejects import RejectsError, export_rejects, pg_conninfo

    try:
        count = export_rejects(
            pg_conninfo(questdb_pg),
            "-" if str(out) == "-" else out,
            format=fmt,
            station=station,
            reason=reason,
            since=since,
            until=until,
            payload_store=reject_store,
        )
    except (RejectsError, OSError) as exc:
        fail(str(exc))
    if str(out) != "-":
        typer.echo(f"{count} reject{'s' if count != 1 else ''} written to {out}", err=True)


if __name__ == "__main__":
    app()
