"""``quantrac api serve`` and ``quantrac api key add|revoke|list``: the REST API and its agencies' keys."""

from __future__ import annotations

from pathlib import Path

import typer

from cli.logging_setup import configure_logging
from store.station_state import DEFAULT_GRACE_S

api_app = typer.Typer(help="The REST API (api/README.md): serve it, manage the agencies' keys.", no_args_is_help=True)
key_app = typer.Typer(help="Agencies' API keys (stored as scrypt hashes in a 0600 file).", no_args_is_help=True)
api_app.add_typer(key_app, name="key")

KEYS_HELP = "the keys file (JSON, mode 0600; created if missing)"


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@api_app.command("serve")
def serve(
    pg: str = typer.Option("127.0.0.1:8812", "--pg", help="QuestDB PostgreSQL-wire host:port"),
    host: str = typer.Option("127.0.0.1", help="address to listen on"),
    port: int = typer.Option(8080, min=1, max=65535, help="port to listen on"),
    keys: Path | None = typer.Option(None, help="the agencies' keys file (quantrac api key add); none: public only"),
    public_rate: int = typer.Option(600, min=1, help="requests a minute per client address without a key"),
    pool_size: int = typer.Option(16, min=1, help="connections to QuestDB kept open"),
    failed_key_rate: int = typer.Option(
        10, min=1, help="wrong keys a minute per client address before 429 (each wrong key costs a scrypt)"
    ),
    latest_max_age: float = typer.Option(
        1.0, min=0.0, help="seconds the shared latest-of-all answer is reused (its as_of says when it was read)"
    ),
    offline_grace: float = typer.Option(
        DEFAULT_GRACE_S, min=0.0, help="seconds past its largest logging interval before a silent station is offline"
    ),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Serve /v1 (OpenAPI at /openapi.json, docs at /docs) and the public page (/page/) until SIGINT or SIGTERM."""
    configure_logging(log_level)
    import structlog

    from api.app import ApiConfig
    from api.keys import KeyFileError
    from api.public_page import BundleMissing
    from api.server import make_server
    from store.questdb_server import QuestDBEndpoints

    try:
        conninfo = QuestDBEndpoints.at(pg).pg_conninfo
        server = make_server(
            ApiConfig(
                conninfo,
                keys,
                public_rate,
                pool_size,
                failed_keys_per_minute=failed_key_rate,
                latest_max_age_s=latest_max_age,
                offline_grace_s=offline_grace,
            ),
            host,
            port,
        )
    except (KeyFileError, BundleMissing, ValueError) as exc:
        _fail(str(exc))
    structlog.get_logger("api").info(
        "api_serving",
        url=f"http://{host}:{port}/v1",
        docs=f"http://{host}:{port}/docs",
        page=f"http://{host}:{port}/page/",
    )
    server.run()


@key_app.command("add")
def key_add(
    agency: str = typer.Argument(..., help="who the key is for, e.g. 'DONRE Ha Noi'"),
    keys: Path = typer.Option(..., help=KEYS_HELP),
    rate: int = typer.Option(600, min=1, help="requests a minute this key may make"),
) -> None:
    """Make a key; it is printed once (give it to the agency) and only its hash is kept."""
    from api.keys import KeyFileError, add

    try:
        entry, secret = add(keys, agency, rate)
    except KeyFileError as exc:
        _fail(str(exc))
    typer.echo(f"id {entry.id} for {entry.agency} ({entry.rate_per_minute}/min); the key, shown only now:")
    typer.echo(secret)


@key_app.command("revoke")
def key_revoke(key_id: str = typer.Argument(...), keys: Path = typer.Option(..., help=KEYS_HELP)) -> None:
    """Revoke a key by its id; a running server refuses it from its next request on."""
    from api.keys import KeyFileError, revoke

    try:
        entry = revoke(keys, key_id)
    except (KeyFileError, KeyError) as exc:
        _fail(str(exc))
    typer.echo(f"revoked {entry.id} ({entry.agency}) at {entry.revoked}")


@key_app.command("list")
def key_list(keys: Path = typer.Option(..., help=KEYS_HELP)) -> None:
    """Every key: id, agency, rate, created, revoked (never the key)."""
    from api.keys import KeyFileError, load

    try:
        entries = load(keys)
    except KeyFileError as exc:
        _fail(str(exc))
    for e in entries.values():
        state = f"revoked {e.revoked}" if e.revoked else "active"
        typer.echo(f"{e.id}\t{e.agency}\t{e.rate_per_minute}/min\tcreated {e.created}\t{state}")
