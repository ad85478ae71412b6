"""`quantrac bridge ...`: processes that carry a province's data on to the national level.

`forward` runs the store-and-forward relay (broker_bridge/forward/). The TT10 file bridge
joins this group later.
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from cli.logging_setup import configure_logging

bridge_app = typer.Typer(
    help="Bridges: province-to-national forwarding (and, later, TT10 files).", no_args_is_help=True
)


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
