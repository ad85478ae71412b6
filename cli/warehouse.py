"""``quantrac warehouse aggregate``: averages, VN_AQI, QCVN exceedances and alerts from the readings."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer

from cli.logging_setup import configure_logging

warehouse_app = typer.Typer(
    help="What the warehouse computes: averages, VN_AQI, exceedances, alerts.", no_args_is_help=True
)


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


@warehouse_app.command("aggregate")
def aggregate(
    questdb: str = typer.Option("127.0.0.1:9000", help="QuestDB HTTP host:port (ILP)"),
    questdb_pg: str = typer.Option("127.0.0.1:8812", help="QuestDB PostgreSQL-wire host:port"),
    settings: Path | None = typer.Option(None, help="aggregation settings (YAML, analysis/README.md)"),
    registry: Path | None = typer.Option(
        None, help="station registry: the stations' kinds (AQI, default limits) and logging intervals"
    ),
    broker: str | None = typer.Option(None, help="MQTT broker host:port for retained alerts"),
    webhook: str | None = typer.Option(None, help="URL every alert is POSTed to (JSON)"),
    webhook_secret_file: Path | None = typer.Option(None, help="file (mode 0600) with the webhook's HMAC secret"),
    poll_s: float = typer.Option(10.0, min=0.05, help="seconds between polls of touched_hours"),
    availability_poll_s: float = typer.Option(
        60.0,
        min=0,
        help="seconds between checks of the data's availability (silent stations, long 01/02, incomplete hours);"
        " 0: not in this process",
    ),
    settle_s: float = typer.Option(
        0.0, min=0, help="compute an hour only this long after it ended (late data are recomputed anyway)"
    ),
    name: str = typer.Option("aggregator", help="name of the durable watermark (one per aggregator)"),
    client_id: str = typer.Option("quantrac-aggregator", help="MQTT client id"),
    broker_user: str | None = typer.Option(None, "--broker-user"),
    broker_password_file: Path | None = typer.Option(None, "--broker-password-file"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """Recompute the hours the collector's commits touched, and everything built on them; send alerts."""
    configure_logging(log_level)
    from analysis.aggregator import Aggregator
    from analysis.availability import AvailabilityMonitor
    from analysis.delivery import AlertDelivery
    from analysis.settings import Settings
    from broker_bridge.session import BrokerAddress
    from collector.registry import RegistryError, StationRegistry
    from configuration.errors import ConfigError
    from store.questdb_server import QuestDBEndpoints

    try:
        endpoints = QuestDBEndpoints.at(questdb_pg, http=questdb)
        loaded = Settings.load(settings)
        kinds_source = StationRegistry(registry) if registry is not None else None
        if kinds_source is not None:
            kinds_source.reload_if_changed()  # a broken registry fails now, with its file:line
        secret = None
        if webhook_secret_file is not None:
            if webhook_secret_file.stat().st_mode & 0o077:
                _fail(f"{webhook_secret_file} is readable by others: chmod 600 it")
            secret = webhook_secret_file.read_bytes().strip()
        address = None
        if broker is not None:
            address = BrokerAddress.parse(broker).with_credentials(broker_user, broker_password_file)
    except (ConfigError, RegistryError, ValueError, OSError) as exc:
        _fail(str(exc))

    def kinds():
        if kinds_source is None:
            return {}
        kinds_source.reload_if_changed()
        return kinds_source.kinds()

    def intervals():  # the registry's logging intervals: the expected count of each hour
        if kinds_source is None:
            return {}
        kinds_source.reload_if_changed()
        return kinds_source.intervals()

    delivery = None
    if webhook or address is not None:
        delivery = AlertDelivery(
            endpoints.pg_conninfo,
            endpoints.ilp_conf,
            webhook_url=webhook,
            webhook_secret=secret,
            broker=address,
            client_id=client_id,
        )
    aggregator = Aggregator(
        endpoints.pg_conninfo,
        endpoints.ilp_conf,
        loaded,
        kinds,
        station_intervals=intervals,
        name=name,
        settle_s=settle_s,
        on_alerts=delivery.submit if delivery else None,
        channels=delivery.channels if delivery else None,
    )
    monitor = AvailabilityMonitor(
        endpoints.pg_conninfo,
        endpoints.ilp_conf,
        loaded,
        channels=delivery.channels if delivery else None,
        on_alerts=delivery.submit if delivery else None,
    )
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    aggregator.start()
    threads = []
    if availability_poll_s > 0:
        monitor.start()
        threads.append(
            threading.Thread(target=monitor.run, args=(stop, availability_poll_s), daemon=True, name="availability")
        )
        threads[-1].start()
    if delivery is not None:
        delivery.load_pending()
        threads.append(threading.Thread(target=delivery.run, args=(stop,), daemon=True, name="alert-delivery"))
        threads[-1].start()
    try:
        aggregator.run(stop, poll_s)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        if delivery is not None:
            delivery.close()


@warehouse_app.command("run")
def run(
    data_dir: Path = typer.Option(..., "--data-dir", help="QuestDB's root (-d): conf/server.conf, db/, questdb.log"),
    host: str = typer.Option("127.0.0.1", help="address QuestDB listens on (keep loopback unless firewalled)"),
    http_port: int = typer.Option(9000, help="HTTP port: REST, web console and ILP over HTTP (the collector's writes)"),
    pg_port: int = typer.Option(8812, help="PostgreSQL-wire port (queries, the schema)"),
    min_http_port: int = typer.Option(9003, help="QuestDB's minimal HTTP server (health)"),
    heap: str = typer.Option("1g", help="Java heap (-Xmx), e.g. 4g"),
    commit_mode: str = typer.Option("nosync", help="cairo.commit.mode: nosync (QuestDB's default), async or sync"),
    jar: Path | None = typer.Option(None, help="QuestDB 9.3.4 jar (default: found, else fetched with mvn)"),
    fetch: bool = typer.Option(True, help="fetch org.questdb:questdb:9.3.4 with mvn when no jar is found"),
    log_level: str = typer.Option("info", "--log-level"),
) -> None:
    """QuestDB 9.3.4 in the foreground with the settings the pipeline relies on, and the schema; SIGTERM stops it."""
    configure_logging(log_level)
    from cli.servers import RunError, warehouse_run

    try:
        code = warehouse_run(
            data_dir,
            host=host,
            http_port=http_port,
            pg_port=pg_port,
            min_http_port=min_http_port,
            heap=heap,
            commit_mode=commit_mode,
            jar=jar,
            fetch=fetch,
        )
    except (RunError, ValueError) as exc:
        _fail(str(exc))
    raise typer.Exit(code=code)


@warehouse_app.command("fetch-jar")
def fetch_jar(
    dest: Path | None = typer.Option(None, help="folder for questdb-9.3.4.jar (default: quantrac's cache)"),
) -> None:
    """Fetch the QuestDB 9.3.4 jar with Maven (mvn dependency:copy) before `warehouse run` needs it."""
    from store.questdb_server import fetch_questdb_jar

    try:
        typer.echo(f"fetched {fetch_questdb_jar(dest)}")
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        _fail(str(exc))
