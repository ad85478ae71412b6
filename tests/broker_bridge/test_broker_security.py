"""The generated broker configuration against the real Mosquitto: users, ACL, TLS, sizing.

Every test starts its own broker from the exact mosquitto.conf that
``generate_broker_config`` wrote (plain listener on loopback plus, where
needed, a TLS listener), on free ports under tmp_path.
"""

from __future__ import annotations

import base64
import os
import queue
import signal
import ssl
import stat
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml

from broker_bridge.broker_config import (
    GeneratedBrokerConfig,
    QueueSizing,
    TlsListener,
    create_pki,
    generate_broker_config,
    hash_password,
    read_password_file,
    render_security_conf,
    verify_password,
)
from broker_bridge.keys import write_new_key
from broker_bridge.mosquitto_server import GeneratedConfigServer, MosquittoServer
from broker_bridge.probe import NO_MATCHING_SUBSCRIBERS, NOT_AUTHORIZED, Probe, drain
from broker_bridge.session import BrokerAddress
from broker_bridge.topics import data_subscription, data_topic, status_topic
from cli.broker import broker_config
from collector.registry import add_station
from supervisor import free_port, wait_until
from tests.conftest import record_startup
from tests.helpers import require_tool

STATION_A = "HN_AIR_001"
STATION_B = "HCM_WW_002"
COLLECTOR = "quantrac-collector"
AGGREGATOR = "quantrac-aggregator"


# -- a broker running the generated configuration --------------------------------------


GeneratedConfigBroker = GeneratedConfigServer  # the name the other tests import


class SecuredBroker:
    def __init__(
        self,
        tmp_path: Path,
        stations: list[str],
        tls: bool,
        require_certificate: bool,
        bridge_users: dict[str, list[str]] | None = None,
    ) -> None:
        self.tmp_path = tmp_path
        self.bridge_users = bridge_users  # the registry's bridges: (TT10 ingest bridges) -> bound stations
        self.root = tmp_path / "broker"
        self.out = tmp_path / "broker-config"
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.pki = create_pki(tmp_path / "tls", clients=[STATION_A]) if tls else None
        self.require_certificate = require_certificate
        self.config = self.generate(stations)
        self.server = GeneratedConfigBroker(self.root, self.port, self.config.conf_file)

    def generate(self, stations: list[str], rotate: tuple[str, ...] = ()) -> GeneratedBrokerConfig:
        tls = None
        if self.pki is not None:
            tls = TlsListener(
                self.pki.ca_cert,
                self.pki.server_cert,
                self.pki.server_key,
                port=self.tls_port,
                host="127.0.0.1",
                require_certificate=self.require_certificate,
            )
        return generate_broker_config(
            self.out,
            stations,
            rotate=rotate,
            plain_listener=("127.0.0.1", self.port),
            tls=tls,
            autosave_interval=5,
            data_dir=self.root / "data",
            log_file=self.root / "mosquitto.log",
            run_as=None,  # the broker runs as the test's user, never as 'mosquitto'
            bridge_users=self.bridge_users,
        )

    def address(
        self, user: str | None, *, tls: bool = False, ca: Path | None = None, client_cert: str | None = None
    ) -> BrokerAddress:
        """Credentials exactly as an agent or collector reads them (--broker-password-file)."""
        port = self.tls_port if tls else self.port
        address = BrokerAddress("127.0.0.1", port)
        if user is not None:
            address = address.with_credentials(user, self.config.credential_file(user))
        if tls:
            cert, key = self.pki.clients[client_cert] if client_cert else (None, None)
            address = address.with_tls(ca or self.pki.ca_cert, cert, key)
        return address


@pytest.fixture
def make_secured(tmp_path: Path) -> Iterator[Callable[..., SecuredBroker]]:
    brokers: list[SecuredBroker] = []

    def _make(
        stations=(STATION_A, STATION_B), tls: bool = False, require_certificate: bool = False, bridge_users=None
    ) -> SecuredBroker:
        broker = SecuredBroker(tmp_path, list(stations), tls, require_certificate, bridge_users)
        brokers.append(broker)
        broker.server.start()
        record_startup("Mosquitto (generated secure config)", broker.server.started_in_s)
        return broker

    try:
        yield _make
    finally:
        for b in brokers:
            b.server.stop()


# -- clients that report what the broker answered (broker_bridge/probe.py) ---------------------


@pytest.fixture
def probes() -> Iterator[Callable[[BrokerAddress], Probe]]:
    made: list[Probe] = []

    def _probe(address: BrokerAddress, **kwargs) -> Probe:
        p = Probe(address, **kwargs)
        made.append(p)
        return p

    try:
        yield _probe
    finally:
        for p in made:
            p.close()


def connected(probes, address: BrokerAddress, **kwargs) -> Probe:
    p = probes(address, **kwargs)
    rc = p.connect()
    assert not rc.is_failure, f"{address.username} could not connect: {rc}"
    return p


# -- users and ACL -------------------------------------------------------------------------


def test_station_publishes_its_own_topics_but_cannot_pose_as_another(make_secured, probes) -> None:
    broker = make_secured()
    collector = connected(probes, broker.address(COLLECTOR))
    assert not collector.subscribe("quantrac/v1/#")[0].is_failure  # wider than its ACL: reads still filtered
    station = connected(probes, broker.address(STATION_A))

    assert station.publish(data_topic(STATION_A), b"own-1").value == 0  # PUBACK: Success
    forged = station.publish(data_topic(STATION_B), b"forged")
    assert forged.value == NOT_AUTHORIZED, forged  # Mosquitto 2.0.11: PUBACK 0x87 Not authorized
    assert station.publish(status_topic(STATION_B), b"forged status").value == NOT_AUTHORIZED
    assert station.publish("quantrac/v1/data", b"outside its prefix").value == NOT_AUTHORIZED
    assert station.publish(status_topic(STATION_A), b"own-status").value == 0

    # One connection's messages arrive in order: once the last one is here,
    # the forged ones would have arrived before it had they been delivered.
    received = [collector.messages.get(timeout=5) for _ in range(2)]
    assert [(m.topic, m.payload) for m in received] == [
        (data_topic(STATION_A), b"own-1"),
        (status_topic(STATION_A), b"own-status"),
    ]
    assert drain(collector.messages) == []


def test_station_cannot_read_other_stations(make_secured, probes) -> None:
    broker = make_secured()
    collector = connected(probes, broker.address(COLLECTOR))
    collector.subscribe(data_subscription())
    spy = connected(probes, broker.address(STATION_B))
    # Mosquitto 2.0.11 grants every SUBSCRIBE and filters reads on delivery.
    assert not spy.subscribe(data_topic(STATION_A))[0].is_failure
    assert not spy.subscribe("#")[0].is_failure

    station = connected(probes, broker.address(STATION_A))
    assert station.publish(data_topic(STATION_A), b"private").value == 0
    assert collector.messages.get(timeout=5).payload == b"private"  # the message went out to subscribers
    with pytest.raises(queue.Empty):
        spy.messages.get(timeout=0.5)


def test_anonymous_wrong_password_and_borrowed_password_are_refused(make_secured, probes) -> None:
    broker = make_secured()
    assert probes(BrokerAddress("127.0.0.1", broker.port)).connect().value == NOT_AUTHORIZED

    wrong = BrokerAddress("127.0.0.1", broker.port, STATION_A, "not-the-password")
    assert probes(wrong).connect().value == NOT_AUTHORIZED

    a_password = broker.address(STATION_A).password
    borrowed = BrokerAddress("127.0.0.1", broker.port, STATION_B, a_password)
    assert probes(borrowed).connect().value == NOT_AUTHORIZED

    assert not probes(broker.address(STATION_A)).connect().is_failure  # the right one still works


def test_collector_reads_through_a_shared_subscription_and_cannot_publish(make_secured, probes) -> None:
    broker = make_secured()
    collector = connected(probes, broker.address(COLLECTOR))
    shared = data_subscription("collectors")
    assert shared == "$share/collectors/quantrac/v1/+/data"
    assert not collector.subscribe(shared)[0].is_failure
    station = connected(probes, broker.address(STATION_B))

    assert station.publish(data_topic(STATION_B), b"batch").value == 0
    message = collector.messages.get(timeout=5)
    assert (message.topic, message.payload) == (data_topic(STATION_B), b"batch")

    assert collector.publish(data_topic(STATION_B), b"collector forgery").value == NOT_AUTHORIZED
    assert collector.publish(status_topic(STATION_A), b"collector forgery").value == NOT_AUTHORIZED
    assert collector.publish(f"quantrac/v1/{COLLECTOR}/data", b"own name").value == NOT_AUTHORIZED
    with pytest.raises(queue.Empty):
        collector.messages.get(timeout=0.5)


def test_a_station_cannot_take_over_or_empty_the_collectors_session(make_secured, probes) -> None:
    """With a station's password and the collector's client id, Mosquitto 2.0.11 would hand over
    the collector's persistent session and drop every queued message the station may not read;
    use_username_as_clientid keeps each user in a session of its own."""
    broker = make_secured()
    collector_id = "quantrac-collector-1"
    collector = connected(probes, broker.address(COLLECTOR), client_id=collector_id, persistent=True)
    collector.subscribe(data_subscription("collectors"))
    collector.close()  # offline: the broker queues for it

    station = connected(probes, broker.address(STATION_A))
    for payload in (b"m1", b"m2"):
        assert station.publish(data_topic(STATION_A), payload).value == 0  # the offline session matches
    intruder = connected(probes, broker.address(STATION_B), client_id=collector_id, persistent=True)
    assert intruder.session_present is False

    back = connected(probes, broker.address(COLLECTOR), client_id=collector_id, persistent=True)
    assert back.session_present is True
    assert station.publish(data_topic(STATION_A), b"m3").value == 0
    assert [back.messages.get(timeout=5).payload for _ in range(3)] == [b"m1", b"m2", b"m3"]
    assert back.disconnects.empty() and intruder.messages.empty()


def test_mosquitto_checks_share_reads_against_the_plain_topic(tmp_path: Path, probes) -> None:
    """Why render_acl has no $share lines: an ACL naming only the $share form grants nothing."""
    users = {"reader": "reader-pw", "writer": "writer-pw"}
    passwd = tmp_path / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{u}:{hash_password(p)}\n" for u, p in users.items())
    acl = tmp_path / "acl"
    acl.write_text("user reader\ntopic read $share/g/quantrac/v1/+/data\n\nuser writer\ntopic write quantrac/v1/#\n")
    server = MosquittoServer(tmp_path / "broker", allow_anonymous=False, extra_conf=render_security_conf(passwd, acl))
    server.start()
    try:
        reader = connected(probes, BrokerAddress("127.0.0.1", server.port, "reader", users["reader"]))
        assert not reader.subscribe("$share/g/quantrac/v1/+/data")[0].is_failure  # granted ...
        writer = connected(probes, BrokerAddress("127.0.0.1", server.port, "writer", users["writer"]))
        assert writer.publish(data_topic(STATION_A), b"x").value == 0
        with pytest.raises(queue.Empty):  # ... but delivers nothing
            reader.messages.get(timeout=1.0)
    finally:
        server.stop()


# -- TLS -------------------------------------------------------------------------------------


def test_tls_with_the_right_ca_connects_and_another_ca_fails(make_secured, probes, tmp_path: Path) -> None:
    broker = make_secured(tls=True)
    collector = connected(probes, broker.address(COLLECTOR, tls=True))
    collector.subscribe(data_subscription("collectors"))
    station = connected(probes, broker.address(STATION_A, tls=True))
    assert station.publish(data_topic(STATION_A), b"over tls").value == 0
    assert collector.messages.get(timeout=5).payload == b"over tls"

    stranger = create_pki(tmp_path / "other-ca")
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        probes(broker.address(STATION_A, tls=True, ca=stranger.ca_cert)).connect()


def test_tls_require_certificate_refuses_a_client_without_one(make_secured, probes) -> None:
    broker = make_secured(tls=True, require_certificate=True)
    with_cert = connected(probes, broker.address(STATION_A, tls=True, client_cert=STATION_A))
    # nobody subscribes here: Mosquitto answers 0x10 No matching subscribers, a success code
    assert with_cert.publish(data_topic(STATION_A), b"mutual tls").value == NO_MATCHING_SUBSCRIBERS

    without = probes(broker.address(STATION_A, tls=True))
    # TLS 1.3 lets the client finish its side of the handshake before the
    # server checks for a certificate; the refusal arrives as an alert that
    # closes the connection, so no CONNACK ever comes.
    try:
        without.client.connect("127.0.0.1", broker.tls_port)
    except ssl.SSLError as exc:  # TLS 1.2 fails inside the handshake instead
        assert "handshake failure" in str(exc) or "certificate required" in str(exc)
    else:
        without.client.loop_start()
        without.disconnects.get(timeout=5)
        assert without.connacks.empty()
    wait_until(
        lambda: "peer did not return a certificate" in broker.server.log_path.read_text(),
        timeout=5,
        what="Mosquitto logging the missing client certificate",
    )


def test_pki_files_and_names(tmp_path: Path) -> None:
    from cryptography import x509

    pki = create_pki(tmp_path / "tls", hosts=["127.0.0.1", "broker.example.vn"], clients=["HN_AIR_001"])
    for key in (pki.ca_key, pki.server_key, pki.clients["HN_AIR_001"][1]):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["broker.example.vn"]
    # a second call reuses the CA and keys instead of replacing them
    ca_before = pki.ca_cert.read_bytes()
    again = create_pki(tmp_path / "tls", clients=["HN_AIR_001", "HCM_WW_002"])
    assert again.ca_cert.read_bytes() == ca_before
    assert again.issued == [tmp_path / "tls" / "clients" / "HCM_WW_002.crt"]


# -- the files themselves ------------------------------------------------------------------


def conf_values(text: str) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            values.setdefault(key, []).append(value)
    return values


def test_generated_config_sizes_queues_persists_often_and_keeps_secrets_private(make_secured) -> None:
    broker = make_secured(tls=True)
    conf = conf_values(broker.config.conf_file.read_text())
    assert int(conf["max_queued_messages"][0]) >= 100_000  # Mosquitto's default 1000 drops during an outage
    assert int(conf["max_queued_bytes"][0]) >= 100_000 * 1024
    assert 0 < int(conf["autosave_interval"][0]) <= 10  # default 1800 s
    assert conf["persistence"] == ["true"]
    assert conf["allow_anonymous"] == ["false"]
    assert conf["listener"] == [f"{broker.port} 127.0.0.1", f"{broker.tls_port} 127.0.0.1"]
    assert conf["password_file"] == [str(broker.out.resolve() / "passwd")]

    assert stat.S_IMODE(broker.config.password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(broker.config.credentials_dir.stat().st_mode) == 0o700
    hashes = read_password_file(broker.config.password_file)
    assert sorted(hashes) == sorted([COLLECTOR, AGGREGATOR, STATION_A, STATION_B])
    for user, encoded in hashes.items():
        path = broker.config.credential_file(user)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        password = path.read_text().strip()
        assert len(password) >= 40 and password not in broker.config.password_file.read_text()
        assert verify_password(password, encoded)

    # 2,000 stations, one batch a minute, a 72 h outage, margin 2
    sizing = QueueSizing(stations=2000, batches_per_minute=1, outage_hours=72, batch_bytes=4096, margin=2)
    assert sizing.expected_messages == 8_640_000
    assert sizing.max_queued_messages == 17_280_000
    assert sizing.max_queued_bytes == 17_280_000 * 4096


def test_hashes_are_the_ones_mosquitto_passwd_writes(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    fd = os.open(passwd, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.close(fd)
    tool = require_tool("mosquitto_passwd", package="mosquitto")
    # a throw-away test password: fine on a command line
    subprocess.run([tool, "-b", str(passwd), "probe", "test-only-password"], check=True)
    encoded = read_password_file(passwd)["probe"]
    assert encoded.startswith("$7$101$")
    assert verify_password("test-only-password", encoded)
    assert not verify_password("test-only-passwore", encoded)
    _, _, iterations, salt, _ = encoded.split("$")
    assert hash_password("test-only-password", iterations=int(iterations), salt=base64.b64decode(salt)) == encoded


def test_rerun_keeps_passwords_rotation_replaces_one_and_sighup_applies_it(make_secured, probes) -> None:
    broker = make_secured(stations=[STATION_A, STATION_B])
    passwd_before = broker.config.password_file.read_text()
    old_b = broker.address(STATION_B)
    a_before = broker.config.credential_file(STATION_A).read_text()

    station_c = "DN_STACK_003"
    rerun = broker.generate([STATION_A, STATION_B, station_c])
    assert rerun.created == [station_c] and rerun.rotated == []
    assert broker.config.credential_file(STATION_A).read_text() == a_before
    # unchanged users keep their password-file lines byte for byte
    assert broker.config.password_file.read_text().startswith(passwd_before)

    rotated = broker.generate([STATION_A, STATION_B, station_c], rotate=(STATION_B,))
    assert rotated.rotated == [STATION_B] and rotated.created == []
    new_b = broker.address(STATION_B)
    assert new_b.password != old_b.password
    assert broker.config.credential_file(STATION_A).read_text() == a_before

    assert probes(broker.address(station_c)).connect().value == NOT_AUTHORIZED  # not loaded yet
    os.kill(broker.server.pid, signal.SIGHUP)  # Mosquitto re-reads passwd and acl
    # SIGHUP is handled in the broker's next loop iteration, not synchronously
    collector = connected(probes, broker.address(COLLECTOR))
    collector.subscribe(data_subscription())
    new_station = wait_until(
        lambda: connected(probes, broker.address(station_c)),
        timeout=5,
        interval=0.1,
        what="the new station accepted after SIGHUP",
    )
    assert new_station.publish(data_topic(station_c), b"hello").value == 0  # its ACL block is live too
    assert collector.messages.get(timeout=5).topic == data_topic(station_c)
    assert probes(old_b).connect().value == NOT_AUTHORIZED
    assert not probes(new_b).connect().is_failure
    assert not probes(broker.address(STATION_A)).connect().is_failure


def test_cli_config_from_registry_never_prints_passwords(tmp_path: Path) -> None:
    registry = tmp_path / "registry.yaml"
    for station_id in (STATION_A, STATION_B):
        add_station(registry, station_id, write_new_key(tmp_path / "keys" / f"{station_id}.key").public_key)
    doc = yaml.safe_load(registry.read_text())
    doc["stations"][STATION_B]["enabled"] = False
    registry.write_text(yaml.safe_dump(doc))

    lines: list[str] = []
    out = tmp_path / "out"
    result = broker_config(out, registry=registry, stations=["EXTRA_9"], outage_hours=48, echo=lines.append)
    printed = "\n".join(lines)
    assert sorted(read_password_file(result.password_file)) == sorted([COLLECTOR, AGGREGATOR, STATION_A, "EXTRA_9"])
    assert f"disabled in the registry, no broker access: {STATION_B}" in printed
    assert "max_queued_messages" in printed and "48 h" in printed
    for path in (out / "credentials").iterdir():
        assert path.read_text().strip() not in printed
    assert "WARNING: no TLS listener" in printed


def test_the_collector_writes_receipts_and_each_station_reads_only_its_own(make_secured, probes) -> None:
    from broker_bridge.topics import receipt_topic

    broker = make_secured()
    station_a = connected(probes, broker.address(STATION_A))
    station_b = connected(probes, broker.address(STATION_B))
    for station in (station_a, station_b):
        assert not station.subscribe("quantrac/v1/+/receipt")[0].is_failure  # granted; reads filtered on delivery
    collector = connected(probes, broker.address(COLLECTOR))
    assert collector.publish(receipt_topic(STATION_A), b"receipt for A").value == 0
    message = station_a.messages.get(timeout=5)
    assert (message.topic, message.payload) == (receipt_topic(STATION_A), b"receipt for A")
    with pytest.raises(queue.Empty):
        station_b.messages.get(timeout=0.5)
    # A station cannot write receipts, neither its own nor another's.
    assert station_a.publish(receipt_topic(STATION_A), b"self-receipt").value == NOT_AUTHORIZED
    assert station_b.publish(receipt_topic(STATION_A), b"forged receipt").value == NOT_AUTHORIZED


def test_the_aggregator_publishes_retained_alerts_that_each_station_reads_only_for_itself(make_secured, probes) -> None:
    from broker_bridge.topics import alert_topic, receipt_topic

    broker = make_secured()
    assert (broker.out / "credentials" / f"{AGGREGATOR}.password").stat().st_mode & 0o777 == 0o600
    aggregator = connected(probes, broker.address(AGGREGATOR))
    assert aggregator.publish(alert_topic(STATION_A), b"alert for A", retain=True).value in (0, NO_MATCHING_SUBSCRIBERS)
    # Retained: a station subscribing afterwards gets it, and only its own, even through a wildcard.
    station_a = connected(probes, broker.address(STATION_A))
    station_b = connected(probes, broker.address(STATION_B))
    for station in (station_a, station_b):
        assert not station.subscribe("quantrac/v1/+/alert")[0].is_failure  # granted; reads filtered on delivery
    message = station_a.messages.get(timeout=5)
    assert (message.topic, message.payload, message.retain) == (alert_topic(STATION_A), b"alert for A", True)
    with pytest.raises(queue.Empty):
        station_b.messages.get(timeout=0.5)
    # The aggregator writes alerts only; nobody else writes them.
    for topic in (data_topic(STATION_A), status_topic(STATION_A), receipt_topic(STATION_A)):
        assert aggregator.publish(topic, b"not an alert").value == NOT_AUTHORIZED, topic
    assert station_a.publish(alert_topic(STATION_A), b"self-alert").value == NOT_AUTHORIZED
    assert station_b.publish(alert_topic(STATION_A), b"forged alert").value == NOT_AUTHORIZED
    collector = connected(probes, broker.address(COLLECTOR))
    assert collector.publish(alert_topic(STATION_A), b"collector alert").value == NOT_AUTHORIZED
    # The aggregator reads nothing, not even the alerts it wrote.
    assert not aggregator.subscribe("quantrac/v1/#")[0].is_failure
    with pytest.raises(queue.Empty):
        aggregator.messages.get(timeout=0.5)


def test_cli_config_says_to_copy_only_when_the_broker_reads_the_files_elsewhere(tmp_path: Path) -> None:
    """Written where Mosquitto will read them (no --config-dir): nothing to copy. With --config-dir the
    files name that folder, so they must be copied there."""
    out = tmp_path / "broker"
    lines: list[str] = []
    broker_config(out, stations=[STATION_A], echo=lines.append)
    install = next(line for line in lines if line.startswith("install:"))
    assert "copy mosquitto.conf" not in install and " to copy" not in install, install
    assert f"where they were written, in {out.resolve()}" in install
    assert f"start Mosquitto with -c {(out / 'mosquitto.conf').resolve()}" in install
    assert "to user mosquitto with mode 0600" in install

    lines.clear()
    broker_config(out, stations=[STATION_A], config_dir=Path("/etc/mosquitto/quantrac"), echo=lines.append)
    install = next(line for line in lines if line.startswith("install:"))
    assert f"copy mosquitto.conf, passwd and acl from {out.resolve()} to /etc/mosquitto/quantrac" in install
    assert "/etc/mosquitto/quantrac/passwd" in (out / "mosquitto.conf").read_text()  # why they must be copied
