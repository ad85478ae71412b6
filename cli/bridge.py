"""`quantrac bridge ...`: processes that carry a province's data on to the national level.

`forward` runs the store-and-forward relay (broker_bridge/forward/); `tt10 files` lists what the TT10
ingest bridge made of every file it received (broker_bridge/tt10/ingest/), from its ledger.
"""

from __future__ import annotations

import json
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path

import typer

from cli.logging_setup import configure_logging

bridge_app = typer.Typer(help="Bridges: province-to-national forwarding, TT10 files.", no_args_is_help=True)
tt10_bridge_app = typer.Typer(
    help="The TT10 ingest bridge: stations' TXT files into the warehouse.", no_args_is_help=True
)
bridge_app.add_typer(tt10_bridge_app, name="tt10")


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@bridge_app.command("forward")
def forward(
    config: Path = typer.Option(..., "--config", help="relay file (YAML); see broker_bridge/forward/relay.sample.yaml"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
) -> None:
    """Relay the province broker's signed batches to the national broker through a durable outbox, unchanged."""
    configure_logging(log_level)
    from broker_bridge.envelope import verifier
    from broker_bridge.forward.config import load_relay_file
    from broker_bridge.forward.relay import Relay, RelaySettings
    from broker_bridge.keys import KeyFileError, key_id, load_public_key
    from configuration.errors import ConfigError
    from edge_agent.outbox import RetentionPolicy

    try:
        spec = load_relay_file(config)
        settings = RelaySettings(
            stations=tuple(spec.stations),
            province=spec.province.address(),
            national=spec.national.address(),
            outbox_dir=spec.outbox_dir,
            client_id=spec.client_id,
            retention=RetentionPolicy(
                spec.retention_days,
                int(spec.max_mb_per_station * 1024 * 1024),
                spec.overflow,
                require_receipts=bool(spec.receipt_keys),  # then only a receipted batch is safe to drop
                receipt_timeout_s=spec.receipt_timeout_s,
            ),
            window=spec.window,
            receipt_keys={key_id(k): verifier(k) for k in map(load_public_key, spec.receipt_keys)},
            pass_receipts=spec.pass_receipts,
        )
    except (ConfigError, KeyFileError, ValueError) as exc:
        _fail(str(exc))
    relay = Relay(settings)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    relay.start()
    try:
        relay.run(stop)
    finally:
        relay.stop()


def _utc(ns: int | None) -> str | None:
    if ns is None:
        return None
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@tt10_bridge_app.command("files")
def tt10_files(
    root: Path = typer.Option(..., "--root", help="the bridge's directory (holds ledger.sqlite, archive/, outbox/)"),
    station: str | None = typer.Option(None, "--station", help="only this station's files"),
    limit: int = typer.Option(200, "--limit", help="the newest N files (0: all)"),
    as_json: bool = typer.Option(False, "--json", help="one JSON object per file"),
) -> None:
    """Every file the bridge received and what became of it: accepted (n readings), held, refused, duplicate,
    superseded, with the reasons and each refused line (number, raw text, reason)."""
    from broker_bridge.tt10.ingest.ledger import Ledger

    path = root / "ledger.sqlite"
    if not path.is_file():
        _fail(f"{path}: no ledger here; --root is the bridge's directory (IngestSettings.root)")
    ledger = Ledger(path)
    try:
        for row in ledger.files(station, limit or None):
            refused = [{"line": r.line, "raw": r.raw, "reason": r.reason} for r in ledger.refused_of(row.id)]
            if as_json:
                typer.echo(
                    json.dumps(
                        {
                            "upload": row.id, "station": row.station, "name": row.name, "sha256": row.sha256,
                            "account": row.account, "transport": row.transport, "peer": row.peer,
                            "received": _utc(row.received_ns), "size": row.size, "interrupted": row.interrupted,
                            "state": row.state, "readings": row.readings, "refused": refused,
                            "reasons": list(row.reasons), "converted": row.converted_ns is not None,
                            "first_seq": row.first_seq, "last_seq": row.last_seq,
                            "duplicate_of": row.duplicate_of, "superseded_by": row.superseded_by,
                            "hold_until": _utc(row.hold_until_ns),
                        },
                        ensure_ascii=False,
                    )
                )  # fmt: skip
                continue
            what = ""
            if row.state == "accepted":
                what = f" {row.readings} readings" + (f", {len(refused)} line(s) refused" if refused else "")
            elif row.state == "held":
                what = f" until {_utc(row.hold_until_ns)}"
            typer.echo(
                f"#{row.id} {_utc(row.received_ns)} {row.station} {row.name} ({row.transport} {row.account},"
                f" {row.size} bytes, sha256 {row.sha256[:12]}): {row.state.upper()}{what}"
            )
            for reason in row.reasons:
                if not reason.startswith("line "):
                    typer.echo(f"    {reason}")
            for line in refused:
                typer.echo(f"    line {line['line']}: {line['raw']!r}: {line['reason']}")
    finally:
        ledger.close()


@tt10_bridge_app.command("serve")
def tt10_serve(
    sources: Path = typer.Option(
        ..., "--sources", help="the sources file (YAML): ftp/sftp/watch/pull; broker_bridge/tt10/sources/"
    ),
    root: Path = typer.Option(..., "--root", help="the bridge's directory: archive/, ledger.sqlite, outbox/"),
    broker: str = typer.Option(..., "--broker", help="the broker the bridge publishes to, host:port"),
    key: Path = typer.Option(..., "--key", help="the bridge's own signing key (the registry binds it to stations)"),
    registry: Path | None = typer.Option(
        None, "--registry", help="station registry: the stations this bridge serves and their tt10 accounts"
    ),
    bridge: str | None = typer.Option(None, "--bridge", help="this bridge's name in the registry's bridges:"),
    user: str | None = typer.Option(
        None,
        "--broker-user",
        "--user",
        help="MQTT user name: the bridge's name, whose user `quantrac broker config --registry` makes",
    ),
    password_file: Path | None = typer.Option(
        None, "--broker-password-file", "--password-file", help="file holding the MQTT password (mode 0600)"
    ),
    tls_ca: Path | None = typer.Option(
        None, "--tls-ca", help="CA certificate the broker's certificate must chain to (enables TLS)"
    ),
    tls_cert: Path | None = typer.Option(None, "--tls-cert", help="client certificate (optional, with --tls-key)"),
    tls_key: Path | None = typer.Option(None, "--tls-key", help="client certificate's private key"),
    questdb: str | None = typer.Option(
        None, "--questdb", help="QuestDB HTTP host:port for the tt10_files table (default: the ledger only)"
    ),
    hold_s: float = typer.Option(600.0, "--hold-s", help="how long an incomplete file waits to be completed"),
    collector_key: list[Path] = typer.Option(
        [],
        "--collector-key",
        help="a collector's public key (repeatable): its receipts make batches delivered; one not covered in"
        " time is sent again",
    ),
    client_id: str = typer.Option("quantrac-tt10-bridge", "--client-id", help="MQTT client id (persistent session)"),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error"),
) -> None:
    """Receive TT10 files (FTP/FTPS, SFTP, watched folders, FTP pull), archive every one, and publish the
    readings of each accepted file as signed batches on its station's topic."""
    import dataclasses

    configure_logging(log_level)
    from broker_bridge.envelope import verifier
    from broker_bridge.keys import KeyFileError, key_id, load_public_key, load_signing_key
    from broker_bridge.session import BrokerAddress
    from broker_bridge.tt10.ingest.service import IngestService
    from broker_bridge.tt10.ingest.settings import IngestSettings, StationSettings
    from broker_bridge.tt10.sources.accounts import accounts_from_mapping
    from broker_bridge.tt10.sources.config import load_sources_file, serve_sources
    from collector.registry import RegistryError, load_bridges, parse_registry, tt10_accounts
    from configuration.errors import ConfigError
    from edge_agent.outbox import RetentionPolicy
    from store.questdb_server import QuestDBEndpoints

    try:
        config = load_sources_file(sources)
        signing_key = load_signing_key(key)
        stations = None
        if registry is not None:
            if bridge is None:
                _fail("--registry needs --bridge: the name of this bridge in the registry's bridges: section")
            bridges = load_bridges(registry)
            if bridge not in bridges:
                _fail(f"{registry}: no bridge {bridge!r} in bridges: (has {sorted(bridges) or 'none'})")
            served = bridges[bridge]
            if signing_key.key_id not in served.keys:
                _fail(f"{key}: key {signing_key.key_id} is not one of bridge {bridge}'s keys in {registry}")
            stations = {s: StationSettings() for s in served.stations}
            if config.model.accounts_in_registry:
                entries = parse_registry(registry.read_text(), str(registry))
                mine = {a: e for a, e in tt10_accounts(entries).items() if e["station"] in stations}
                clash = sorted(set(mine) & set(config.accounts))
                if clash:
                    _fail(f"accounts {clash} are in both {sources} and {registry}: keep each in one place")
                more = accounts_from_mapping(mine, homes_dir=config.model.homes_dir, source=str(registry))
                config = dataclasses.replace(config, accounts={**config.accounts, **more})
        elif config.model.accounts_in_registry:
            _fail(f"{sources}: accounts_in_registry is true: give --registry and --bridge")
        foreign = sorted({a.station for a in config.accounts.values()} - set(stations or ()))
        if stations is not None and foreign:
            _fail(f"accounts for stations {foreign} that bridge {bridge} does not serve (registry bridges:)")
        address = BrokerAddress.parse(broker).with_credentials(user, password_file).with_tls(tls_ca, tls_cert, tls_key)
        receipt_keys = {key_id(k): verifier(k) for k in map(load_public_key, collector_key)}
        settings = IngestSettings(
            root=root,
            receipt_keys=receipt_keys,
            outbox_retention=RetentionPolicy(require_receipts=bool(receipt_keys)),
            broker=address,
            stations=stations,
            hold_s=hold_s,
            client_id=client_id,
            ilp_conf=QuestDBEndpoints.at("127.0.0.1:8812", questdb).ilp_conf if questdb else None,
        )
    except (ConfigError, RegistryError, KeyFileError, ValueError) as exc:
        _fail(str(exc))
    service = IngestService(settings, signing_key)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    service.start()
    worker = threading.Thread(target=service.run, args=(stop,), name="tt10-ingest", daemon=True)
    worker.start()
    try:
        running = serve_sources(config, service.sink)
    except (OSError, ConfigError) as exc:  # a port taken, a certificate unreadable: say which, stop cleanly
        stop.set()
        worker.join(30)
        service.stop()
        _fail(f"{sources}: the sources could not start: {exc}")
    try:
        stop.wait()
    finally:
        running.stop()  # no new file first; then the worker converts what it has and stops
        worker.join(30)
        service.stop()
