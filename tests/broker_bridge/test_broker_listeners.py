"""Issue 11, broker side: an attacker holding one station's password, on EVERY listener.

Each test runs once against the plain loopback listener and once against the
TLS listener of the same generated mosquitto.conf, with the real Mosquitto
2.0.11 and the quantrac_acl plugin that scripts/bootstrap.sh builds.  Some
attackers are Debian's own mosquitto_pub/mosquitto_sub, a client nobody here
wrote.  What each test proves is listed in docs/security.md.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from broker_bridge.broker_config import MAX_PACKET_SIZE, MESSAGE_SIZE_LIMIT, TlsListener, generate_broker_config
from broker_bridge.envelope import MAX_ENVELOPE_BYTES
from broker_bridge.mosquitto_server import find_mosquitto
from broker_bridge.topics import command_topic, data_subscription, data_topic, status_topic
from supervisor import free_port, wait_until
from tests.broker_bridge.test_broker_security import (  # noqa: F401  (fixtures)
    COLLECTOR,
    NOT_AUTHORIZED,
    STATION_A,
    STATION_B,
    SecuredBroker,
    connected,
    drain,
    make_secured,
    probes,
)

SHARED = data_subscription("collectors")
LISTENERS = ["plain", "tls"]


def mosquitto_tool(name: str) -> str:
    tool = shutil.which(name) or f"/usr/bin/{name}"
    assert Path(tool).is_file(), f"{name} missing: run scripts/bootstrap.sh (installs mosquitto-clients)"
    return tool


def tool_args(broker: SecuredBroker, user: str, tls: bool) -> list[str]:
    """Connection options for mosquitto_pub/_sub: the station's own password file, MQTT v5."""
    password = broker.config.credential_file(user).read_text().strip()  # test broker only: fine on argv
    args = ["-h", "127.0.0.1", "-V", "mqttv5", "-u", user, "-P", password]
    if tls:
        return args + ["-p", str(broker.tls_port), "--cafile", str(broker.pki.ca_cert)]
    return args + ["-p", str(broker.port)]


def publish_retained(probe, topic: str, payload: bytes):
    """Like Probe.publish, with the retain flag set: the PUBACK's reason code."""
    info = probe.client.publish(topic, payload, qos=1, retain=True)
    with probe._cond:
        assert probe._cond.wait_for(lambda: info.mid in probe._pubacks, 5), f"no PUBACK for {topic}"
        return probe._pubacks.pop(info.mid)


def subscribed(broker: SecuredBroker, connections_before: int) -> bool:
    """True once station B's mosquitto_sub has connected since ``connections_before`` connections."""
    return broker.server.log_path.read_text().count(f"u'{STATION_B}'") > connections_before


@pytest.fixture(params=LISTENERS)
def listener(request) -> str:
    return request.param


@pytest.fixture
def broker(make_secured) -> SecuredBroker:
    return make_secured(tls=True)  # both listeners in one config, as `quantrac broker config` writes it


# -- every security option on every listener ----------------------------------------------


def test_every_listener_carries_its_own_security_options(broker: SecuredBroker) -> None:
    lines = [line for line in broker.config.conf_file.read_text().splitlines() if line and not line.startswith("#")]
    starts = [i for i, line in enumerate(lines) if line.startswith("listener ")]
    assert len(starts) == 2
    assert not any(
        line.startswith("use_username_as_clientid") for line in lines[: starts[0]]
    )  # nothing on the default listener
    for begin, end in zip(starts, starts[1:] + [len(lines)]):
        assert "use_username_as_clientid true" in lines[begin:end], lines[begin]


def test_a_station_cannot_kick_the_collector_or_take_over_its_session(
    broker: SecuredBroker, probes, listener: str
) -> None:
    """Station A's password and the collector's client id, on this listener: the
    collector stays connected, keeps its persistent session and every queued batch."""
    tls = listener == "tls"
    collector_id = "quantrac-collector"
    collector = connected(probes, broker.address(COLLECTOR, tls=tls), client_id=collector_id, persistent=True)
    assert not collector.subscribe(SHARED)[0].is_failure

    # online: Debian's mosquitto_pub with the collector's id and a persistent session
    subprocess.run(
        [
            mosquitto_tool("mosquitto_pub"),
            *tool_args(broker, STATION_A, tls),
            "-i",
            collector_id,
            "-c",
            "-x",
            "3600",
            "-q",
            "1",
            "-t",
            status_topic(STATION_A),
            "-m",
            "takeover",
        ],
        check=True,
        timeout=10,
        capture_output=True,
    )
    with pytest.raises(queue.Empty):
        collector.disconnects.get(timeout=0.5)  # not kicked

    collector.close()  # offline: the broker queues for it
    station = connected(probes, broker.address(STATION_A, tls=tls))
    for payload in (b"m1", b"m2"):
        assert station.publish(data_topic(STATION_A), payload).value == 0
    station.close()  # one user, one client id: the next connection as A would replace it anyway
    intruder = connected(probes, broker.address(STATION_A, tls=tls), client_id=collector_id, persistent=True)
    assert intruder.session_present is False  # a session of its own, not the collector's
    assert intruder.subscribe(SHARED)[0].value == NOT_AUTHORIZED  # nor join the collectors' group

    back = connected(probes, broker.address(COLLECTOR, tls=tls), client_id=collector_id, persistent=True)
    assert back.session_present is True
    assert intruder.publish(data_topic(STATION_A), b"m3").value == 0
    assert [back.messages.get(timeout=5).payload for _ in range(3)] == [b"m1", b"m2", b"m3"]
    assert intruder.messages.empty() and back.disconnects.empty()


# -- no $share for stations -----------------------------------------------------------------


def test_a_station_cannot_join_the_collectors_shared_subscription(broker: SecuredBroker, probes, listener: str) -> None:
    tls = listener == "tls"
    collector = connected(probes, broker.address(COLLECTOR, tls=tls))
    assert not collector.subscribe(SHARED)[0].is_failure

    denied = subprocess.run(
        [mosquitto_tool("mosquitto_sub"), *tool_args(broker, STATION_B, tls), "-q", "1", "-t", SHARED, "-W", "5"],
        timeout=10,
        capture_output=True,
        text=True,
    )
    assert "denied" in denied.stdout + denied.stderr, (denied.returncode, denied.stdout, denied.stderr)

    intruder = connected(probes, broker.address(STATION_B, tls=tls))  # stays connected while the batches flow
    assert intruder.subscribe(SHARED)[0].value == NOT_AUTHORIZED  # SUBACK 0x87, by quantrac_acl
    assert intruder.subscribe(f"$share/other/{data_topic(STATION_A)}")[0].value == NOT_AUTHORIZED
    assert not intruder.subscribe(command_topic(STATION_B))[0].is_failure  # its own commands: still fine

    station = connected(probes, broker.address(STATION_A, tls=tls))
    batches = [f"batch-{n}".encode() for n in range(20)]
    for payload in batches:
        assert station.publish(data_topic(STATION_A), payload).value == 0
    assert [collector.messages.get(timeout=5).payload for _ in batches] == batches  # all N
    assert drain(collector.messages) == [] and drain(intruder.messages) == []
    assert broker.server.log_path.read_text().count(f"denied shared subscription '{SHARED}' to user '{STATION_B}'") == 2


# -- no retained messages on data topics ------------------------------------------------------


def test_retained_data_is_refused_while_retained_status_and_wills_still_work(
    broker: SecuredBroker, probes, listener: str
) -> None:
    tls = listener == "tls"
    station = connected(probes, broker.address(STATION_A, tls=tls))
    assert publish_retained(station, data_topic(STATION_A), b"retained batch").value == NOT_AUTHORIZED
    station.close()
    denied = subprocess.run(
        [
            mosquitto_tool("mosquitto_pub"),
            *tool_args(broker, STATION_A, tls),
            "-q",
            "1",
            "-r",
            "-t",
            data_topic(STATION_A),
            "-m",
            "retained by mosquitto_pub",
        ],
        timeout=10,
        capture_output=True,
        text=True,
    )
    assert "Not authorized" in denied.stdout + denied.stderr, (denied.stdout, denied.stderr)
    subprocess.run(
        [
            mosquitto_tool("mosquitto_pub"),
            *tool_args(broker, STATION_A, tls),
            "-q",
            "1",
            "-r",
            "-t",
            status_topic(STATION_A),
            "-m",
            "online",
        ],
        check=True,
        timeout=10,
        capture_output=True,
    )
    # a retained will on the station's status topic (and one on its data topic), sent when the connection dies
    dying = {}
    for topic in (status_topic(STATION_B), data_topic(STATION_B)):
        seen = broker.server.log_path.read_text().count(f"u'{STATION_B}'")
        dying[topic] = subprocess.Popen(
            [
                mosquitto_tool("mosquitto_sub"),
                *tool_args(broker, STATION_B, tls),
                "-t",
                command_topic(STATION_B),
                "--will-topic",
                topic,
                "--will-payload",
                "offline",
                "--will-qos",
                "1",
                "--will-retain",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        wait_until(
            lambda seen=seen: subscribed(broker, seen),
            timeout=5,
            what="the will's client connected",
        )
        dying[topic].send_signal(signal.SIGKILL)  # no DISCONNECT: the broker must publish the will
        dying[topic].wait(timeout=5)
        time.sleep(0.3)  # the broker notices the closed socket in its next loop

    late = connected(probes, broker.address(COLLECTOR, tls=tls))  # subscribes after all of the above
    late.subscribe("quantrac/v1/+/status")
    late.subscribe("quantrac/v1/+/data")
    got = {}
    while True:
        try:
            m = late.messages.get(timeout=1.0)
        except queue.Empty:
            break
        got[m.topic] = (m.payload, m.retain)
    assert got == {status_topic(STATION_A): (b"online", True), status_topic(STATION_B): (b"offline", True)}
    assert "denied retained publish on 'quantrac/v1/HCM_WW_002/data'" in broker.server.log_path.read_text()


# -- bounded payloads ---------------------------------------------------------------------------


def test_an_80_mb_publish_is_refused_and_reaches_nobody(
    broker: SecuredBroker, probes, listener: str, tmp_path: Path
) -> None:
    tls = listener == "tls"
    assert MESSAGE_SIZE_LIMIT == MAX_ENVELOPE_BYTES < MAX_PACKET_SIZE
    collector = connected(probes, broker.address(COLLECTOR, tls=tls))
    collector.subscribe(data_subscription())
    station = connected(probes, broker.address(STATION_A, tls=tls))

    largest = b"x" * MAX_ENVELOPE_BYTES  # exactly the envelope's limit still passes
    assert station.publish(data_topic(STATION_A), largest).value == 0
    assert collector.messages.get(timeout=10).payload == largest
    # One byte more: message_size_limit answers PUBACK 0x95 "Packet too large".  (paho 2.1 calls
    # that PUBACK malformed, 0x95 not being a PUBACK reason in MQTT 5, and reconnects; hence mosquitto_pub.)
    over_file = tmp_path / "over.bin"
    over_file.write_bytes(largest + b"x")
    over = subprocess.run(
        [
            mosquitto_tool("mosquitto_pub"),
            *tool_args(broker, STATION_B, tls),
            "-q",
            "1",
            "-t",
            data_topic(STATION_B),
            "-f",
            str(over_file),
        ],
        timeout=20,
        capture_output=True,
        text=True,
    )
    assert "Publish 1 failed: Packet too large" in over.stdout + over.stderr, (over.stdout, over.stderr)

    huge = b"x" * (80 * 1024 * 1024)
    station.client.publish(data_topic(STATION_A), huge, qos=1)  # paho does not enforce the CONNACK's maximum
    reason = station.disconnects.get(timeout=30)  # max_packet_size: refused from the header, connection closed
    assert reason.is_failure, reason
    station.close()  # paho would re-send the queued QoS 1 message on every reconnect
    with pytest.raises(queue.Empty):
        collector.messages.get(timeout=1.0)
    log = broker.server.log_path.read_text()
    assert f"Client {STATION_A} disconnected due to oversize packet." in log, log[-2000:]

    after = connected(probes, broker.address(STATION_A, tls=tls))  # the broker is fine, the station may reconnect
    assert after.publish(data_topic(STATION_A), b"small").value == 0
    assert collector.messages.get(timeout=5).payload == b"small"


# -- only the listeners asked for -------------------------------------------------------------------


def test_a_tls_only_config_opens_no_plain_port(tmp_path: Path) -> None:
    """Before: use_username_as_clientid written with no listener line before it went to
    Mosquitto's default listener, which then opened a plain 1883 on every interface."""
    from broker_bridge.broker_config import create_pki

    pki = create_pki(tmp_path / "tls")
    tls_port = free_port()
    config = generate_broker_config(
        tmp_path / "out",
        [STATION_A],
        plain_listener=None,
        tls=TlsListener(pki.ca_cert, pki.server_cert, pki.server_key, port=tls_port, host="127.0.0.1"),
        data_dir=tmp_path / "broker" / "data",
        log_file=tmp_path / "broker" / "mosquitto.log",
        run_as=None,
    )
    log = tmp_path / "broker" / "mosquitto.log"
    (tmp_path / "broker" / "data").mkdir(parents=True)
    proc = subprocess.Popen(
        [str(find_mosquitto()), "-c", str(config.conf_file)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    try:
        wait_until(lambda: "running" in log.read_text(), timeout=10, what="Mosquitto running")
        opened = [
            line.rsplit("port ", 1)[-1].rstrip(".")
            for line in log.read_text().splitlines()
            if "listen socket on port" in line
        ]
        assert opened and set(opened) == {str(tls_port)}, opened
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_the_plugin_rules_survive_a_reload(broker: SecuredBroker, probes, listener: str) -> None:
    """SIGHUP re-registers acl_file's check; the plugin's must still run first (it is never reloaded)."""
    tls = listener == "tls"
    reloads = broker.server.log_path.read_text().count("Reloading config.")
    os.kill(broker.server.pid, signal.SIGHUP)
    wait_until(
        lambda: broker.server.log_path.read_text().count("Reloading config.") > reloads, timeout=5, what="the reload"
    )
    intruder = connected(probes, broker.address(STATION_B, tls=tls))
    assert intruder.subscribe(SHARED)[0].value == NOT_AUTHORIZED
    collector = connected(probes, broker.address(COLLECTOR, tls=tls))
    assert not collector.subscribe(SHARED)[0].is_failure
    station = connected(probes, broker.address(STATION_A, tls=tls))
    assert publish_retained(station, data_topic(STATION_A), b"retained").value == NOT_AUTHORIZED
    assert station.publish(data_topic(STATION_A), b"plain").value == 0
    assert collector.messages.get(timeout=5).payload == b"plain"
