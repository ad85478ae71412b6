"""``quantrac warehouse run`` and ``quantrac broker run``: QuestDB and Mosquitto in the foreground (service managers).

Each starts its server as a supervised child (``supervisor``'s ``ServerProcess``, as the demo
does), waits until it answers, logs one ``*_ready`` event, and then stays until SIGTERM or
SIGINT, which stop the server cleanly (QuestDB closes its tables, Mosquitto saves its
database) and exit 0.  A server that dies on its own makes the command exit 1, so systemd's
``Restart=`` starts both again.  ``broker run`` passes SIGHUP on (``systemctl reload``: new
passwords and ACL).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from supervisor.server import ServerProcess

log = structlog.get_logger("cli.servers")

# A server stopped by our SIGTERM: 0, or 128 + 15 (the JVM after its shutdown hooks), or killed by it.
CLEAN_STOP = (0, 128 + signal.SIGTERM, -signal.SIGTERM)


class RunError(Exception):
    """What to tell the user in one line (exit 2): a missing program, a missing file, a port taken."""


def _serve(
    server: ServerProcess,
    what: str,
    start: Callable[[], None],
    ready: Callable[[], dict],
    stop_timeout: float,
    on_hup: Callable[[], None] | None = None,
) -> int:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    if on_hup is not None:
        signal.signal(signal.SIGHUP, lambda *_: on_hup())
    try:
        start()
    except Exception as exc:  # noqa: BLE001 - a server that did not start (or a schema not made): say why, exit 1
        log.error(f"{what}_start_failed", error=str(exc))
        server.stop(stop_timeout)
        return 1
    log.info(f"{what}_ready", pid=server.pid, started_in_s=round(server.started_in_s or 0, 2), **ready())
    while not stop.wait(0.5):
        if not server.running:
            log.error(f"{what}_exited", exit_code=server.stop(), log=str(server.log_path))
            return 1
    code = server.stop(stop_timeout)
    log.info(f"{what}_stopped", exit_code=code, log=str(server.log_path))
    return 0 if code in CLEAN_STOP else 1


def warehouse_run(
    data_dir: Path,
    *,
    host: str = "127.0.0.1",
    http_port: int = 9000,
    pg_port: int = 8812,
    min_http_port: int = 9003,
    heap: str = "1g",
    commit_mode: str = "nosync",
    jar: Path | None = None,
    fetch: bool = True,
    start_timeout: float = 120.0,
) -> int:
    """QuestDB 9.3.4 rooted at ``data_dir`` (its ``conf/server.conf`` rewritten by ``store.questdb_server``),
    then ``store.schema.ensure_schema``; returns the exit code."""
    from store.questdb_server import QuestDBServer, check_java, fetch_questdb_jar, find_questdb_jar
    from store.schema import ensure_schema

    try:
        java = check_java()
        if jar is None:
            try:
                jar = find_questdb_jar()
            except FileNotFoundError:
                if not fetch:
                    raise
                log.info("questdb_jar_fetching", how="mvn dependency:copy")
                jar = fetch_questdb_jar()
                log.info("questdb_jar_fetched", jar=str(jar))
        elif not jar.is_file():
            raise FileNotFoundError(f"--jar {jar} is not a file")
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
    except (FileNotFoundError, RuntimeError, OSError) as exc:
        raise RunError(str(exc)) from exc
    server = QuestDBServer(
        data_dir,
        http_port=http_port,
        pg_port=pg_port,
        min_http_port=min_http_port,
        jar=jar,
        heap=heap,
        commit_mode=commit_mode,
        host=host,
    )

    def start() -> None:
        server.start(timeout=start_timeout)
        ensure_schema(server.endpoints.pg_conninfo)

    def ready() -> dict:
        e = server.endpoints
        return {
            "data_dir": str(server.root),
            "conf": str(server.conf_path),
            "http": f"{e.host}:{e.http_port}",
            "ilp": f"{e.host}:{e.http_port} (ILP over HTTP)",
            "pg": f"{e.host}:{e.pg_port}",
            "jar": str(jar),
            "java": str(java),
            "schema": "ensured",
        }

    return _serve(server, "warehouse", start, ready, stop_timeout=60.0)


def broker_run(config_dir: Path, *, start_timeout: float = 30.0) -> int:
    """Mosquitto with ``config_dir/mosquitto.conf`` (``quantrac broker config --out config_dir``); the exit code."""
    from broker_bridge.mosquitto_server import ConfiguredMosquitto

    try:
        server = ConfiguredMosquitto(Path(config_dir) / "mosquitto.conf")
        binary = server.binary
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise RunError(str(exc)) from exc

    def ready() -> dict:
        listeners = [f"{host}:{port}{' (TLS)' if tls else ''}" for host, port, tls in server.listeners]
        return {
            "conf": str(server.conf_path),
            "listeners": listeners,
            "persistence": str(server.persistence_file),
            "log": str(server.log_path),
            "mosquitto": str(binary),
        }

    def reload() -> None:
        log.info("broker_reload", signal="SIGHUP")
        server.reload()

    return _serve(server, "broker", lambda: server.start(timeout=start_timeout), ready, 30.0, on_hup=reload)
