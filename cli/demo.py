"""``quantrac demo``: the whole data path on one machine, every server started here.

QuestDB and Mosquitto on free ports -> three simulated stations (ambient air,
wastewater, stack) -> one agent each -> one collector -> a report read back
from QuestDB over the PostgreSQL wire; beside them the aggregator (means,
VN_AQI, exceedances, availability) and the API with its public page.
Ctrl-C stops everything it started.
"""

from __future__ import annotations

import signal
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import typer

from broker_bridge.keys import write_new_key
from broker_bridge.mosquitto_server import MosquittoServer
from cli.processes import agent_process, aggregator_process, api_process, collector_process, sim_process
from collector.registry import MetadataEdit, add_station
from station_profiles.loader import load_station
from store.queries import parameter_summaries, reject_counts
from store.questdb_server import QuestDBServer
from store.schema import ensure_schema
from supervisor.process import ManagedProcess, free_port

STATIONS_DIR = Path(__file__).resolve().parents[1] / "station_profiles" / "stations"
DEMO_STATION_FILES = ("demo_air_01.yaml", "demo_ww_01.yaml", "demo_stack_01.yaml")
# Where the demo's stations are drawn on the public page (Hà Nội, Bắc Ninh, Hải Phòng): invented places.
DEMO_PLACES = {
    "demo_air_01.yaml": ("HN", 21.0278, 105.8342),
    "demo_ww_01.yaml": ("BN", 21.1861, 106.0763),
    "demo_stack_01.yaml": ("HP", 20.8449, 106.6881),
}


def default_workdir() -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(__file__).resolve().parents[1] / ".cache" / "demo-runs" / stamp


def run_demo(duration: float | None, workdir: Path | None, report_every: float) -> int:
    workdir = Path(workdir or default_workdir())
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    started: list[ManagedProcess] = []
    questdb = QuestDBServer(workdir / "questdb")
    mosquitto = MosquittoServer(workdir / "mosquitto")
    t0 = time.monotonic()
    try:
        typer.echo(f"working directory: {workdir}")
        mosquitto.start()
        typer.echo(f"mosquitto ready on 127.0.0.1:{mosquitto.port} ({mosquitto.started_in_s:.1f} s)")
        questdb.start()
        endpoints = questdb.endpoints
        typer.echo(f"questdb ready ({questdb.started_in_s:.1f} s); web console: {endpoints.console_url}")
        ensure_schema(endpoints.pg_conninfo)
        broker = f"127.0.0.1:{mosquitto.port}"
        registry = workdir / "registry.yaml"
        # The collector signs receipts; the agents keep every batch until one covers it.
        collector_key = workdir / "keys" / "collector.key"
        write_new_key(collector_key)
        station_ids = []
        for name in DEMO_STATION_FILES:
            station_file = STATIONS_DIR / name
            station = load_station(station_file)
            station_id = station.station.id
            station_ids.append(station_id)
            key_path = workdir / "keys" / f"{station_id}.key"
            key = write_new_key(key_path)
            province, lat, lon = DEMO_PLACES[name]
            place = MetadataEdit(name=station.station.name, province_code=province, latitude=lat, longitude=lon)
            add_station(registry, station_id, key.public_key, kind=station.station.kind, metadata=place)
            ports = {device.id: free_port() for device in station.devices}
            logs = workdir / "logs"
            sim = sim_process(
                station_file, workdir / f"{station_id}.truth.jsonl", logs / f"sim-{station_id}.log", ports
            )
            agent = agent_process(
                station_file,
                key_path,
                broker,
                workdir / f"{station_id}.outbox.sqlite",
                logs / f"agent-{station_id}.log",
                ports,
                collector_keys=(collector_key.with_suffix(".pub"),),
            )
            for process in (sim, agent):
                started.append(process.start())
        collector = collector_process(
            registry,
            broker,
            f"127.0.0.1:{endpoints.http_port}",
            f"127.0.0.1:{endpoints.pg_port}",
            workdir / "logs" / "collector.log",
            key=collector_key,
        )
        started.append(collector.start())
        aggregator = aggregator_process(
            f"127.0.0.1:{endpoints.http_port}",
            f"127.0.0.1:{endpoints.pg_port}",
            registry,
            workdir / "logs" / "aggregator.log",
        )
        started.append(aggregator.start())
        api_port = free_port()
        started.append(api_process(f"127.0.0.1:{endpoints.pg_port}", api_port, workdir / "logs" / "api.log").start())
        typer.echo(
            f"started {len(station_ids)} stations ({', '.join(station_ids)}), their agents, a collector,"
            " the aggregator and the API"
        )
        typer.echo(
            f"API: http://127.0.0.1:{api_port}/v1/stations (docs: /docs, SensorThings: /sta/v1.1);"
            f" public page: http://127.0.0.1:{api_port}/page/ (hourly AQI once an hour has ended)"
        )
        typer.echo("Ctrl-C stops every process the demo started.\n")
        return _report_loop(
            endpoints.pg_conninfo, endpoints.console_url, station_ids, started, stop, duration, report_every, t0
        )
    finally:
        for process in reversed(started):
            process.stop(timeout=15)
        questdb.stop()
        mosquitto.stop()
        typer.echo(f"stopped every process; data and logs kept in {workdir}")


def _report_loop(conninfo, console_url, station_ids, processes, stop, duration, report_every, t0) -> int:
    deadline = None if duration is None else time.monotonic() + duration
    all_seen_at = None
    next_report = time.monotonic() + min(report_every, 10.0)
    while not stop.is_set():
        if deadline is not None and time.monotonic() >= deadline:
            break
        dead = [p for p in processes if not p.running]
        if dead:
            for process in dead:
                typer.secho(
                    f"{process.name} exited with {process.returncode}; see {process.log_path}",
                    fg=typer.colors.RED,
                    err=True,
                )
            return 1
        if all_seen_at is None:
            seen = {s.station for s in parameter_summaries(conninfo)}
            if set(station_ids) <= seen:
                all_seen_at = time.monotonic() - t0
                typer.echo(f"rows from all {len(station_ids)} stations in QuestDB {all_seen_at:.1f} s after start")
        if time.monotonic() >= next_report:
            _print_report(conninfo, console_url)
            next_report = time.monotonic() + report_every
        stop.wait(0.5)
    _print_report(conninfo, console_url)
    return 0 if all_seen_at is not None else 1


def _print_report(conninfo: str, console_url: str) -> None:
    summaries = parameter_summaries(conninfo)
    now = datetime.now(UTC).strftime("%H:%M:%S")
    typer.echo(f"\n== readings in QuestDB at {now} UTC ==")
    typer.echo(
        f"{'station':<15} {'device':<7} {'parameter':<9} {'rows':>6} {'latest':>12} {'unit':<7} {'st':<3} "
        f"{'qc':<3} {'latest ts (UTC)':<16} qc check"
    )
    for s in summaries:
        value = "-" if s.latest_value is None else f"{s.latest_value:.3f}"
        qc = "-" if s.latest_qc_flag is None else str(s.latest_qc_flag)
        typer.echo(
            f"{s.station:<15} {s.device:<7} {s.parameter:<9} {s.rows:>6} {value:>12} "
            f"{s.latest_unit:<7} {s.latest_status:<3} "
            f"{qc:<3} {s.latest_ts:%H:%M:%S.%f} {s.latest_qc_check}"
        )
    rejects = reject_counts(conninfo)
    if rejects:
        typer.echo("rejects: " + ", ".join(f"{st or '?'}/{reason}: {n}" for (st, reason), n in sorted(rejects.items())))
    typer.echo(
        "st: the analyzer's status (00 measuring, 01 calibrating, 02 error); qc: QARTOD flag"
        " (1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing)"
    )
    typer.echo(f"web console: {console_url}")
