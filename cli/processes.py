"""Command lines for quantrac's own processes, shared by the demo and the tests."""

from __future__ import annotations

import sys
from pathlib import Path

from supervisor.process import ManagedProcess


def quantrac(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "cli.main", *map(str, args)]


def _ports(port_overrides: dict[str, int] | None) -> list[str]:
    return [arg for device, port in (port_overrides or {}).items() for arg in ("--port", f"{device}={port}")]


def _profiles_dirs(dirs: tuple[Path, ...]) -> list[str]:
    return [arg for d in dirs for arg in ("--profiles-dir", str(d))]


def sim_process(
    station_file: Path,
    truth: Path,
    log: Path,
    port_overrides: dict[str, int] | None = None,
    profiles_dirs: tuple[Path, ...] = (),
) -> ManagedProcess:
    argv = quantrac(
        "sim", "run", station_file, "--truth", truth, *_ports(port_overrides), *_profiles_dirs(profiles_dirs)
    )
    return ManagedProcess(argv, log_path=log, name=f"sim:{Path(station_file).stem}")


def agent_process(
    station_file: Path,
    key: Path,
    broker: str,
    outbox: Path,
    log: Path,
    port_overrides: dict[str, int] | None = None,
    collector_keys: tuple[Path, ...] = (),
    receipt_timeout_s: float | None = None,
    profiles_dirs: tuple[Path, ...] = (),
) -> ManagedProcess:
    argv = quantrac(
        "agent", "run", station_file, "--key", key, "--broker", broker, "--outbox", outbox, *_ports(port_overrides),
        *_profiles_dirs(profiles_dirs),
        *(arg for k in collector_keys for arg in ("--collector-key", k)),
        *(["--receipt-timeout-s", str(receipt_timeout_s)] if receipt_timeout_s is not None else []),
    )  # fmt: skip
    return ManagedProcess(argv, log_path=log, name=f"agent:{Path(station_file).stem}")


def collector_process(
    registry: Path,
    broker: str,
    questdb: str,
    questdb_pg: str,
    log: Path,
    client_id: str = "quantrac-collector-1",
    share_group: str | None = None,
    max_pending: int | None = None,
    key: Path | None = None,
    resend_retry_s: float | None = None,
    metrics_port: int | None = None,
) -> ManagedProcess:
    argv = quantrac(
        "collector",
        "run",
        "--registry",
        registry,
        "--broker",
        broker,
        "--questdb",
        questdb,
        "--questdb-pg",
        questdb_pg,
        "--client-id",
        client_id,
        *(["--share-group", share_group] if share_group else []),
        *(["--max-pending", str(max_pending)] if max_pending else []),
        *(["--key", key] if key is not None else []),
        *(["--resend-retry-s", str(resend_retry_s)] if resend_retry_s is not None else []),
        *(["--metrics-port", str(metrics_port)] if metrics_port is not None else []),
    )
    return ManagedProcess(argv, log_path=log, name=f"collector:{client_id}")


def aggregator_process(
    questdb: str, questdb_pg: str, registry: Path, log: Path, poll_s: float = 10.0, availability_poll_s: float = 60.0
) -> ManagedProcess:
    """`quantrac warehouse aggregate`: averages, VN_AQI, exceedances and availability alerts."""
    argv = quantrac(
        "warehouse", "aggregate", "--questdb", questdb, "--questdb-pg", questdb_pg, "--registry", registry,
        "--poll-s", str(poll_s), "--availability-poll-s", str(availability_poll_s),
    )  # fmt: skip
    return ManagedProcess(argv, log_path=log, name="aggregator")


def api_process(questdb_pg: str, port: int, log: Path, keys: Path | None = None) -> ManagedProcess:
    """`quantrac api serve`: the REST API, the SensorThings view and the public page."""
    argv = quantrac("api", "serve", "--pg", questdb_pg, "--port", str(port), *(["--keys", keys] if keys else []))
    return ManagedProcess(argv, log_path=log, name="api")


def relay_process(config: Path, log: Path) -> ManagedProcess:
    return ManagedProcess(
        quantrac("bridge", "forward", "--config", config), log_path=log, name=f"relay:{Path(config).stem}"
    )


def tt10_bridge_process(
    sources: Path,
    root: Path,
    broker: str,
    key: Path,
    log: Path,
    registry: Path | None = None,
    bridge: str | None = None,
    questdb: str | None = None,
    hold_s: float | None = None,
    client_id: str | None = None,
    broker_user: str | None = None,
    broker_password_file: Path | None = None,
    tls_ca: Path | None = None,
) -> ManagedProcess:
    """`quantrac bridge tt10 serve`: the TT10 ingest bridge (FTP/FTPS, SFTP, watch, pull) as a process."""
    argv = quantrac(
        "bridge", "tt10", "serve", "--sources", sources, "--root", root, "--broker", broker, "--key", key,
        *(["--registry", registry] if registry is not None else []),
        *(["--bridge", bridge] if bridge is not None else []),
        *(["--questdb", questdb] if questdb is not None else []),
        *(["--hold-s", str(hold_s)] if hold_s is not None else []),
        *(["--client-id", client_id] if client_id is not None else []),
        *(["--broker-user", broker_user] if broker_user is not None else []),
        *(["--broker-password-file", broker_password_file] if broker_password_file is not None else []),
        *(["--tls-ca", tls_ca] if tls_ca is not None else []),
    )  # fmt: skip
    return ManagedProcess(argv, log_path=log, name=f"tt10-bridge:{Path(root).name}")
