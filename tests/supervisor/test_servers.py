"""Real-server tests for the process supervision layer (no mocks)."""

from __future__ import annotations

import queue
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from questdb import QuestDBError, Sender, TimestampNanos

from broker_bridge.mosquitto_server import MosquittoServer, mqtt_connack
from store.questdb_server import QuestDBServer
from supervisor import ManagedProcess, ServerStartError, free_port, wait_until

# --------------------------------------------------------------------------- helpers


def _sql(server: QuestDBServer, query: str, params: tuple = ()) -> list[tuple]:
    with psycopg.connect(server.endpoints.pg_conninfo, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _table_exists(server: QuestDBServer, name: str) -> bool:
    return _sql(server, "SELECT count() FROM tables() WHERE table_name = %s", (name,))[0][0] > 0


def _count(server: QuestDBServer, table: str) -> int:
    return _sql(server, f'SELECT count() FROM "{table}"')[0][0]


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie is dead, just not reaped


class _V5Client:
    """Minimal synchronous wrapper around a paho MQTT v5 client."""

    def __init__(self, broker: MosquittoServer, client_id: str) -> None:
        self.broker = broker
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.session_present: bool | None = None
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda *_a: self._subscribed.set()

    def _on_connect(self, _client, _userdata, flags, reason_code, _properties) -> None:
        assert not reason_code.is_failure, reason_code
        self.session_present = flags.session_present
        self._connected.set()

    def connect(self, *, clean_start: bool, session_expiry: int = 3600) -> _V5Client:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        self.client.connect(self.broker.host, self.broker.port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        assert self._connected.wait(5), "no CONNACK"
        return self

    def subscribe(self, topic: str, qos: int = 1) -> None:
        self.client.subscribe(topic, qos=qos)
        assert self._subscribed.wait(5), "no SUBACK"

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        info = self.client.publish(topic, payload, qos=qos)
        info.wait_for_publish(5)
        assert info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _park_offline_subscriber(broker: MosquittoServer, client_id: str, topic: str) -> None:
    # clean_start=False even on the very first connect: Mosquitto 2.0.11 only
    # writes a session to mosquitto.db if the client's *latest* CONNECT had
    # clean_start=0, so a v5 session created with clean_start=1 (+ expiry)
    # lives in memory but is lost across a broker restart.
    sub = _V5Client(broker, client_id).connect(clean_start=False)
    sub.subscribe(topic, qos=1)
    sub.close()


def _publish_once(broker: MosquittoServer, topic: str, payload: bytes) -> None:
    pub = _V5Client(broker, f"pub-{uuid.uuid4().hex[:8]}").connect(clean_start=True, session_expiry=0)
    pub.publish(topic, payload, qos=1)
    pub.close()


def _resume_and_receive(broker: MosquittoServer, client_id: str) -> mqtt.MQTTMessage:
    sub = _V5Client(broker, client_id)
    try:
        sub.connect(clean_start=False)
        assert sub.session_present, "persistent session was lost"
        return sub.messages.get(timeout=5)
    finally:
        sub.close()


# --------------------------------------------------------------------------- QuestDB


def test_questdb_ping_and_pg_wire(questdb_server: QuestDBServer) -> None:
    with urllib.request.urlopen(questdb_server.endpoints.ping_url, timeout=5) as resp:
        assert resp.status == 204
    assert _sql(questdb_server, "SELECT 1") == [(1,)]
    assert questdb_server.started_in_s is not None and questdb_server.started_in_s > 0


def test_questdb_ilp_auto_create_is_off(questdb_server: QuestDBServer) -> None:
    unknown = f"no_such_table_{uuid.uuid4().hex[:8]}"
    with Sender.from_conf(questdb_server.endpoints.ilp_conf) as sender:
        sender.row(unknown, symbols={"station": "s1"}, columns={"v": 1.0}, at=TimestampNanos.now())
        with pytest.raises(QuestDBError):
            sender.flush()
    assert not _table_exists(questdb_server, unknown)

    known = f"ilp_known_{uuid.uuid4().hex[:8]}"
    _sql(
        questdb_server,
        f"CREATE TABLE {known} (station SYMBOL, v DOUBLE, ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY WAL",
    )
    with Sender.from_conf(questdb_server.endpoints.ilp_conf) as sender:
        sender.row(known, symbols={"station": "s1"}, columns={"v": 1.0, "surprise": 2.0}, at=TimestampNanos.now())
        with pytest.raises(QuestDBError):
            sender.flush()
    with Sender.from_conf(questdb_server.endpoints.ilp_conf) as sender:
        sender.row(known, symbols={"station": "s1"}, columns={"v": 1.0}, at=TimestampNanos.now())
        sender.flush()
    wait_until(lambda: _count(questdb_server, known) == 1, timeout=10, what="WAL apply")
    cols = {r[0] for r in _sql(questdb_server, f"SELECT \"column\" FROM table_columns('{known}')")}
    assert cols == {"station", "v", "ts"}


@pytest.mark.slow  # stops and restarts QuestDB
def test_questdb_restart_keeps_data(make_questdb) -> None:
    server: QuestDBServer = make_questdb()
    ports = server.endpoints
    _sql(server, "CREATE TABLE survivor (v DOUBLE, ts TIMESTAMP) TIMESTAMP(ts) PARTITION BY DAY WAL")
    _sql(server, "INSERT INTO survivor VALUES (1.5, now()), (2.5, now())")
    wait_until(lambda: _count(server, "survivor") == 2, timeout=10, what="WAL apply")
    first_pid = server.pid

    server.stop()
    assert not server.running
    server.start()

    assert server.pid != first_pid
    assert server.endpoints == ports  # same ports, same root
    assert _count(server, "survivor") == 2
    assert _sql(server, "SELECT sum(v) FROM survivor") == [(4.0,)]


def test_questdb_missing_jar_is_a_clear_error(tmp_path: Path) -> None:
    server = QuestDBServer(tmp_path, jar=tmp_path / "nope.jar")
    with pytest.raises(FileNotFoundError, match="make setup"):
        server.start()


# --------------------------------------------------------------------------- Mosquitto


def test_mosquitto_conf_overrides_lossy_defaults(mosquitto_server: MosquittoServer) -> None:
    conf = dict(
        line.split(None, 1) for line in mosquitto_server.conf_path.read_text().splitlines() if line and line[0] != "#"
    )
    assert int(conf["max_queued_messages"]) >= 1_000_000  # default 1000, then silent drops
    assert int(conf["max_queued_bytes"]) > 0
    assert int(conf["autosave_interval"]) <= 10  # default 1800 s
    assert conf["persistence"] == "true"
    assert Path(conf["persistence_location"]) == mosquitto_server.data_dir
    assert "user" in conf
    assert mqtt_connack(mosquitto_server.host, mosquitto_server.port) == 0


def test_mosquitto_offline_queue_survives_restart(mosquitto_server: MosquittoServer) -> None:
    broker = mosquitto_server
    payload = uuid.uuid4().bytes
    _park_offline_subscriber(broker, "collector-test", "stations/+/telemetry")
    _publish_once(broker, "stations/s1/telemetry", payload)

    broker.stop()  # SIGTERM: mosquitto saves its in-memory database
    assert broker.persistence_file.stat().st_size > 0
    broker.start()

    msg = _resume_and_receive(broker, "collector-test")
    assert msg.payload == payload
    assert msg.qos == 1
    assert msg.topic == "stations/s1/telemetry"


def test_mosquitto_autosave_survives_crash(make_mosquitto) -> None:
    broker: MosquittoServer = make_mosquitto(autosave_interval=1)
    payload = uuid.uuid4().bytes
    _park_offline_subscriber(broker, "collector-crash", "stations/#")
    _publish_once(broker, "stations/s2/telemetry", payload)
    acked_ns = time.time_ns()

    # a snapshot written after the PUBACK necessarily contains the message
    wait_until(
        lambda: broker.persistence_file.exists() and broker.persistence_file.stat().st_mtime_ns > acked_ns,
        timeout=10,
        what="periodic autosave",
    )
    broker.kill()  # SIGKILL: no shutdown save
    broker.start()

    assert _resume_and_receive(broker, "collector-crash").payload == payload


def test_mosquitto_bad_config_reports_log_tail(make_mosquitto) -> None:
    with pytest.raises(ServerStartError) as info:
        make_mosquitto(extra_conf="this_is_not_an_option 42")
    assert "this_is_not_an_option" in str(info.value)  # mosquitto's own complaint, from the log tail


# --------------------------------------------------------------------------- supervisor


def test_stop_escalates_to_sigkill(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "print('ar' + 'med', flush=True); time.sleep(60)"
    )
    proc = ManagedProcess([sys.executable, "-c", code], log_path=tmp_path / "p.log").start()
    wait_until(lambda: "\narmed" in proc.log_path.read_text(), timeout=10, what="child ready", process=proc)
    t0 = time.monotonic()
    assert proc.stop(timeout=0.5) == -9
    assert time.monotonic() - t0 < 5
    assert not proc.running


def test_child_dies_with_parent(tmp_path: Path) -> None:
    parent_code = textwrap.dedent(
        f"""
        import sys, time
        from supervisor import ManagedProcess
        p = ManagedProcess(
            [sys.executable, "-c", "import time; time.sleep(60)"], log_path={str(tmp_path / "c.log")!r}
        ).start()
        print(p.pid, flush=True)
        time.sleep(60)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    try:
        child_pid = int(parent.stdout.readline())
        assert _pid_alive(child_pid)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout.close()
    wait_until(lambda: not _pid_alive(child_pid), timeout=5, what="orphaned child to die")


def test_wait_until_fails_fast_when_process_exits(tmp_path: Path) -> None:
    proc = ManagedProcess([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], log_path=tmp_path / "x.log")
    proc.start()
    t0 = time.monotonic()
    with pytest.raises(ServerStartError, match="(?s)status 3.*boom"):
        wait_until(lambda: False, timeout=30, what="never", process=proc)
    assert time.monotonic() - t0 < 10


def test_free_port_is_bindable() -> None:
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_free_ports_are_distinct_and_never_ephemeral() -> None:
    """An ephemeral port can be handed to an outgoing connection before the server binds it."""
    from pathlib import Path

    from supervisor.process import free_ports

    low, high = (int(v) for v in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    ports = free_ports(200)
    assert len(set(ports)) == 200
    assert not [p for p in ports if low <= p <= high or p < 10_000]
