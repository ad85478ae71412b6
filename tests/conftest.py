"""Shared fixtures: real QuestDB and Mosquitto servers (no mocks, never skipped).

If a server cannot start, the fixture raises ``ServerStartError`` (with the
tail of the server log) and the test errors - it is never skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from broker_bridge.mosquitto_server import MosquittoServer
from store.questdb_server import QuestDBServer

# label -> seconds until ready; reported at the end of the run
_STARTUP_TIMES: list[tuple[str, float]] = []


def record_startup(label: str, seconds: float | None) -> None:
    if seconds is not None:
        _STARTUP_TIMES.append((label, seconds))


@pytest.fixture(scope="session")
def questdb_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuestDBServer]:
    """One QuestDB for the whole session (ILP auto-create off, loopback, free ports)."""
    server = QuestDBServer(tmp_path_factory.mktemp("questdb"))
    server.start()
    record_startup("QuestDB (session fixture)", server.started_in_s)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_questdb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., QuestDBServer]]:
    """Factory for extra, test-private QuestDB servers (started; stopped at teardown)."""
    servers: list[QuestDBServer] = []

    def _make(root: Path | None = None, **kwargs: object) -> QuestDBServer:
        server = QuestDBServer(root or tmp_path_factory.mktemp("questdb-private"), **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        server.start()
        record_startup("QuestDB (private)", server.started_in_s)
        return server

    try:
        yield _make
    finally:
        for s in reversed(servers):
            s.stop()


@pytest.fixture
def make_mosquitto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., MosquittoServer]]:
    """Factory: ``make_mosquitto(root=None, **MosquittoServer kwargs)`` -> started broker.

    Every broker made here is stopped at teardown.
    """
    servers: list[MosquittoServer] = []

    def _make(root: Path | None = None, **kwargs: object) -> MosquittoServer:
        server = MosquittoServer(root or tmp_path_factory.mktemp("mosquitto"), **kwargs)  # type: ignore[arg-type]
        servers.append(server)
        server.start()
        record_startup("Mosquitto", server.started_in_s)
        return server

    try:
        yield _make
    finally:
        for s in reversed(servers):
            s.stop()


@pytest.fixture
def mosquitto_server(make_mosquitto: Callable[..., MosquittoServer], tmp_path: Path) -> MosquittoServer:
    """A fresh broker per test (anonymous, loopback, persistence in tmp_path/mosquitto)."""
    return make_mosquitto(tmp_path / "mosquitto")


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # noqa: ANN001
    if not _STARTUP_TIMES:
        return
    terminalreporter.section("server start-up times")
    by_label: dict[str, list[float]] = {}
    for label, secs in _STARTUP_TIMES:
        by_label.setdefault(label, []).append(secs)
    for label, values in by_label.items():
        if len(values) == 1:
            terminalreporter.write_line(f"{label}: ready in {values[0]:.2f} s")
        else:
            terminalreporter.write_line(
                f"{label}: {len(values)} starts, min {min(values):.2f} s, max {max(values):.2f} s"
            )


@pytest.fixture(scope="session")
def warehouse(questdb_server: QuestDBServer):
    """The session's QuestDB with quantrac's schema; tests keep apart by unique station ids."""
    from store.schema import ensure_schema

    ensure_schema(questdb_server.endpoints.pg_conninfo)
    return questdb_server.endpoints


@pytest.fixture
def make_collector(warehouse):
    """Factory: an in-process collector on a broker, flushing in a thread; stopped at teardown."""
    import threading
    import time

    from broker_bridge.session import BrokerAddress
    from collector.service import Collector, CollectorConfig

    running = []

    def _make(broker_port: int, registry: Path, client_id: str, broker=None, **overrides) -> Collector:
        """``broker``: a BrokerAddress (credentials, TLS) instead of the plain ``broker_port``."""
        config = CollectorConfig(
            broker=broker or BrokerAddress("127.0.0.1", broker_port),
            client_id=client_id,
            registry_path=str(registry),
            ilp_conf=warehouse.ilp_conf,
            pg_conninfo=warehouse.pg_conninfo,
            **overrides,
        )
        instance = Collector(config)
        stop = threading.Event()
        instance.start()
        thread = threading.Thread(target=instance.run, args=(stop,), daemon=True)
        thread.start()
        running.append((instance, stop, thread))
        assert instance.connected.wait(10), "collector did not connect to the broker"
        time.sleep(0.3)  # let the SUBACK land before tests publish
        return instance

    yield _make
    for instance, stop, thread in running:
        stop.set()
        with instance.intake.cond:  # wake the run loop now, not at its next idle time-out (1 s per collector)
            instance.intake.cond.notify_all()
        thread.join(10)
        instance.stop()
